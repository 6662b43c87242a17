"""Stopping a training run cleanly when it is asked to: Ctrl-C, and the signals a cluster sends.

SIGTERM is what SLURM, Kubernetes and spot instances send before they kill a job; SIGUSR1 is
what SLURM's ``--signal=USR1@<seconds>`` sends ahead of the time limit. While
:func:`stop_signals_caught` is active they only set a flag (:class:`StopRequest`), which the
trainer reads at the next iteration boundary; under ``torchrun`` the processes agree on it
with one all-reduce there, so every rank stops after the same iteration. The trainer then saves
its state and raises :class:`TrainingStopped`; ``rfcn train`` prints how to resume and exits
with ``128 + the signal's number``, as a shell reports a process killed by it: 130 for Ctrl-C
(SIGINT), 143 for SIGTERM, 138 for SIGUSR1.

An image that cannot be read is the other fault that must not lose the run: the trainer saves
its state, then raises :class:`ResumableError`, and ``rfcn train`` prints the error with the
command that resumes once the file is fixed.

With data workers (``data.workers``), a SIGTERM sent to the whole job also ends them
(:func:`data_worker_signals`); the trainer then saves and stops at once, as on Ctrl-C.

Ctrl-C keeps Python's own handling: a KeyboardInterrupt wherever the run is (an interactive
user wants it to stop now), which the trainer turns into a :class:`TrainingStopped` after
saving.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from rfcn.errors import UserError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """The stop signal received so far (``signal_number``, 0: none)."""

    def __init__(self) -> None:
        self.signal_number = 0

    def handle(self, signal_number: int, frame: FrameType | None) -> None:
        """The signal handler: note the signal; the trainer stops at the iteration's end."""
        self.signal_number = signal_number


@contextlib.contextmanager
def stop_signals_caught() -> Iterator[StopRequest]:
    """Inside, :data:`STOP_SIGNALS` set the yielded request's flag instead of ending the
    process; on exit the previous handlers come back.

    Python lets only the main thread install handlers; elsewhere (a run started from a worker
    thread) the signals keep their previous meaning and the request is never set.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.signal(number, request.handle) for number in STOP_SIGNALS}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def data_worker_signals(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: SIGUSR1 sent to the whole job (SLURM's ``--signal``
    without ``B:``) is ignored, so the workers serve batches until the trainer stops at the
    boundary; SIGTERM keeps its default and ends a worker, since the DataLoader (and Python at
    exit) ends its workers with SIGTERM. A SIGTERM sent to the whole job thus reaches the
    trainer as a dead worker, which it treats as the stop it announces."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on a signal after saving its state (``last.pt``).

    A KeyboardInterrupt, so that whatever treats Ctrl-C as "stop, no traceback" treats a
    preemption the same way.

    Attributes:
        signal_number: the signal (``signal.SIGINT`` for Ctrl-C).
        iteration: iterations done over all stages when it stopped.
        exit_code: ``128 + signal_number``, what a shell reports for a process the signal
            killed.
    """

    def __init__(self, signal_number: int, iteration: int) -> None:
        self.signal_number = signal_number
        self.iteration = iteration
        self.exit_code = 128 + signal_number
        super().__init__(f"{self.signal_name} at iteration {iteration}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal_number).name


class ResumableError(UserError):
    """``error`` (an image that cannot be read), met after ``iteration`` iterations over all
    stages and after the training state was saved: fix the input, then resume."""

    def __init__(self, error: UserError, iteration: int) -> None:
        super().__init__(error.source, error.problem)
        self.iteration = iteration

    def __reduce__(self) -> tuple[type[ResumableError], tuple[UserError, int]]:
        return type(self), (UserError(self.source, self.problem), self.iteration)
