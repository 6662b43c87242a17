"""Wall-clock statistics and peak-memory probes for the benchmark.

A measurement runs a callable a few times to warm up (allocator, oneDNN primitive caches, CUDA
kernels), then times each of ``repeats`` further calls and reports the median and the
interquartile range: medians resist the outliers a shared machine produces.

Peak memory on CUDA is ``torch.cuda.max_memory_allocated`` (tensors only, reset before the
measurement). On Linux CPUs it is the process's resident-set high-water mark, ``VmHWM`` in
``/proc/self/status``, reset through ``/proc/self/clear_refs`` (Linux >= 4.0) before the
measurement and reported as the rise over the resident set at that moment. ``tracemalloc``
would see none of torch's allocations, which bypass Python's allocator.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class TimingStats:
    """Milliseconds per call over the timed repeats (warm-up calls excluded).

    ``cpu_median_ms`` is the median process CPU time (all threads, user + system) per call:
    on a machine shared with other work it is far steadier than wall-clock time, which also
    counts the time spent waiting for a core.
    """

    median_ms: float
    q1_ms: float
    q3_ms: float
    iqr_ms: float
    runs_ms: list[float]
    cpu_median_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(runs_ms: list[float], cpu_runs_ms: list[float] | None = None) -> TimingStats:
    """Median and quartiles (``statistics.quantiles``, inclusive method: linear interpolation
    between order statistics, so the quartiles always lie within the runs)."""
    if not runs_ms:
        raise ValueError("need at least one timed run")
    if len(runs_ms) == 1:
        q1 = q3 = runs_ms[0]
    else:
        q1, _, q3 = statistics.quantiles(runs_ms, n=4, method="inclusive")
    return TimingStats(
        median_ms=statistics.median(runs_ms),
        q1_ms=q1,
        q3_ms=q3,
        iqr_ms=q3 - q1,
        runs_ms=list(runs_ms),
        cpu_median_ms=statistics.median(cpu_runs_ms if cpu_runs_ms else runs_ms),
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> TimingStats:
    """Run ``fn`` ``warmup`` times untimed, then time ``repeats`` calls (CUDA work synchronised)."""
    return time_side_by_side([fn], device, warmup, repeats)[0]


def time_side_by_side(
    fns: Sequence[Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> list[TimingStats]:
    """:func:`time_call` of every function, their timed calls taking turns (a, b, a, b, ...).

    On a shared machine a slow spell then falls on every case alike, so the ratio of two cases
    (2000 RoIs against 300) is not the ratio of two different minutes of the machine.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    runs_ms: list[list[float]] = [[] for _ in fns]
    cpu_runs_ms: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, wall, cpu in zip(fns, runs_ms, cpu_runs_ms, strict=True):
            _synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            _synchronize(device)
            wall.append((time.perf_counter() - start) * 1000.0)
            cpu.append((time.process_time() - cpu_start) * 1000.0)
    return [summarize(wall, cpu) for wall, cpu in zip(runs_ms, cpu_runs_ms, strict=True)]


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"{field} not in {_STATUS}")
    return int(match.group(1))


def memory_method(device: torch.device) -> str:
    """How :func:`peak_memory_mib` measures on ``device`` (recorded in the benchmark's JSON)."""
    if device.type == "cuda":
        return (
            "torch.cuda.max_memory_allocated (tensors) after reset_peak_memory_stats; "
            "added = peak - memory_allocated before"
        )
    if _STATUS.exists() and _CLEAR_REFS.exists():
        return (
            "process resident set: VmHWM of /proc/self/status after writing 5 to "
            "/proc/self/clear_refs; added = peak - VmRSS before (memory the allocator kept "
            "from earlier calls is not counted as added)"
        )
    return "unavailable"


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> dict[str, float] | None:
    """``{"peak_mib", "added_mib"}`` of one call of ``fn``; None where the platform cannot tell.

    ``peak_mib`` is the high-water mark during the call (CUDA: allocated tensors; CPU: the
    whole process's resident set), ``added_mib`` its rise over the level just before.
    """
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mib": peak / 2**20, "added_mib": (peak - before) / 2**20}
    if memory_method(device) == "unavailable":
        return None
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    return {"peak_mib": peak / 1024.0, "added_mib": max(peak - before, 0) / 1024.0}
