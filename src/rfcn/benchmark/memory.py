"""Resident memory over a long run: does a command's RSS grow with the work it has done?

The command runs in a child process exactly as a user runs it; this process reads the
child's resident set size (``VmRSS`` of ``/proc/<pid>/status``) every ``interval`` seconds,
together with how much of the work is done (iterations logged, images written), and
:func:`summarize` compares the RSS after a warm-up with the RSS at the end. A leak shows as
a growth proportional to the work (the least-squares slope, MiB per 1000 items); allocator
noise does not.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfcn.errors import UserError

_KIB_PER_MIB = 1024


@dataclass(frozen=True)
class Sample:
    """One reading: ``seconds`` since the start, items ``done``, resident memory in MiB."""

    seconds: float
    done: int
    rss_mib: float


def resident_mib(pid: int) -> float | None:
    """The resident memory of process ``pid`` in MiB; None once it has exited.

    Raises:
        UserError: this system has no ``/proc`` (the measurement needs Linux).
    """
    if not Path("/proc/self/status").exists():
        raise UserError("memcheck", "reading a process's memory needs Linux (/proc)")
    try:
        lines = Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmRSS:"):  # "VmRSS:   123456 kB"
            return int(line.split()[1]) / _KIB_PER_MIB
    return None  # a zombie has no VmRSS line


def watch(
    command: Sequence[str], progress: Callable[[], int], log: Path, interval: float = 0.5
) -> list[Sample]:
    """Run ``command`` to its end, sampling its RSS and ``progress()`` every ``interval`` s.

    Its stdout and stderr go to ``log`` (a pipe nobody reads would stall a long run).

    Raises:
        UserError: the command failed; the message ends with its last line of output.
    """
    samples: list[Sample] = []
    with log.open("w", encoding="utf-8") as output:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            while child.poll() is None:
                rss = resident_mib(child.pid)
                if rss is not None:
                    samples.append(Sample(time.perf_counter() - started, progress(), rss))
                time.sleep(interval)
        finally:
            if child.poll() is None:  # interrupted: do not leave the child running
                child.kill()
                child.wait()
    if child.returncode != 0:
        lines = log.read_text(encoding="utf-8").strip().splitlines()
        last = lines[-1] if lines else "no output"
        raise UserError(command[0], f"exited with status {child.returncode}: {last}")
    return samples


def summarize(samples: Sequence[Sample], warmup: int) -> dict[str, Any]:
    """The RSS after ``warmup`` items ("start"), at the last sample taken while the command
    still worked ("end": before its last items were reported, so saving results and exiting
    do not count as growth), and at its very last sample ("exit"); the peak; the growth from
    start to end; the least-squares slope of the RSS over the items done in between, in MiB
    per 1000 items; and a ``trace`` of ``[items done, RSS]`` at each tenth of the items after
    the warm-up (where any growth happened: steadily, or in a step).

    Raises:
        ValueError: no sample was taken after the warm-up (the run was too short).
    """
    after = [s for s in samples if s.done >= warmup]
    if not after:
        raise ValueError(f"no sample after the {warmup} warm-up items; run longer")
    working = [s for s in after if s.done < samples[-1].done] or after
    start, end = working[0], working[-1]
    done = [s.done for s in working]
    mean_done = sum(done) / len(done)
    mean_rss = sum(s.rss_mib for s in working) / len(working)
    spread = sum((d - mean_done) ** 2 for d in done)
    slope = 0.0
    if spread > 0:
        slope = sum((s.done - mean_done) * (s.rss_mib - mean_rss) for s in working) / spread
    return {
        "start_done": start.done,
        "start_rss_mib": round(start.rss_mib, 1),
        "end_done": end.done,
        "end_rss_mib": round(end.rss_mib, 1),
        "exit_rss_mib": round(samples[-1].rss_mib, 1),
        "peak_rss_mib": round(max(s.rss_mib for s in samples), 1),
        "growth_mib": round(end.rss_mib - start.rss_mib, 1),
        "slope_mib_per_1000": round(1000 * slope, 2),
        "samples": len(working),
        "seconds": round(samples[-1].seconds, 1),
        "trace": _trace(after, tenths=10),
    }


def _trace(samples: Sequence[Sample], tenths: int) -> list[list[float]]:
    """``[done, rss_mib]`` of the first sample at or past each of ``tenths`` even steps of the
    items done by the last sample, and of the last sample."""
    total = samples[-1].done
    picked: list[Sample] = []
    for step in range(tenths):
        target = total * step / tenths
        first = next(s for s in samples if s.done >= target)
        if not picked or first is not picked[-1]:
            picked.append(first)
    if picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    return [[s.done, round(s.rss_mib, 1)] for s in picked]
