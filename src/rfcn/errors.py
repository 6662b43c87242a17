"""User-facing errors: bad input files, bad configs, bad command-line values.

The CLI turns a :class:`UserError` into one line on stderr, ``error: <file>: <problem>``,
and exit code 2, with no traceback: the user can fix the input, not the code.
"""

from __future__ import annotations

import warnings
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


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite at ``iteration`` (counted from 1)."""

    def __init__(self, iteration: int, loss: float) -> None:
        self.iteration = iteration
        self.loss = loss
        super().__init__(
            f"iteration {iteration}",
            f"loss is {loss}: training diverged; lower train.base_lr or set train.max_grad_norm",
        )

    def __reduce__(self) -> tuple[type[TrainingDiverged], tuple[int, float]]:
        return type(self), (self.iteration, self.loss)


class DataWarning(UserWarning):
    """A problem in one file of a dataset that a reader worked around (a box dropped, an image
    left out); ``rfcn data`` collects these into its list of problems.

    Args:
        source: the file (printable) the problem is in.
        problem: what is wrong and what the reader did about it.
    """

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


def raise_or_warn(error: UserError, lenient: bool, outcome: str) -> None:
    """Raise ``error``; or, when ``lenient``, warn it as a :class:`DataWarning` that ends with
    what the caller does instead (``outcome``, e.g. "image left out") and return."""
    if not lenient:
        raise error
    warnings.warn(DataWarning(error.source, f"{error.problem}; {outcome}"), stacklevel=3)


def first_line(exc: BaseException) -> str:
    """``exc`` as one line for a :class:`UserError`: its message's first line, else its type.

    Library errors about a bad file (torch.load, onnxruntime, urllib) can run to paragraphs;
    the user gets the line that names the problem.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
