"""User-facing errors: bad input files, bad configs, bad command-line values.

The CLI turns a :class:`UserError` into one line on stderr, ``error: <file>: <problem>``,
and exit code 2, with no traceback: the user can fix the input, not the code.
"""

from __future__ import annotations

from os import PathLike


class UserError(Exception):
    """A problem with something the user gave us (a file, a config value, a flag).

    Args:
        source: the file (or config key, or flag) that is wrong; may be empty.
        problem: what is wrong with it, phrased for the user.
    """

    def __init__(self, source: str | PathLike[str] | None, problem: str) -> None:
        self.source = "" if source is None else str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


def first_line(exc: BaseException) -> str:
    """``exc`` as one line for a :class:`UserError`: its message's first line, else its type.

    Library errors about a bad file (torch.load, onnxruntime, urllib) can run to paragraphs;
    the user gets the line that names the problem.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
