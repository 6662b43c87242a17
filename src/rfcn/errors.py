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

    def __reduce__(self) -> tuple[type[UserError], tuple[str, str]]:
        # Rebuilt from both parts when it crosses a process boundary (a parallel run's error).
        return type(self), (self.source, self.problem)
