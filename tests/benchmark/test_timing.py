import pytest
import torch

from rfcn.benchmark.timing import (
    memory_method,
    peak_memory_mib,
    summarize,
    time_call,
    time_side_by_side,
)

CPU = torch.device("cpu")


def test_summarize_hand_worked_quartiles() -> None:
    # inclusive quartiles of 1, 2, 3, 4, 10: positions 1 and 3 of 0..4 -> 2 and 4.
    stats = summarize([3.0, 1.0, 10.0, 2.0, 4.0])
    assert stats.median_ms == 3.0
    assert (stats.q1_ms, stats.q3_ms, stats.iqr_ms) == (2.0, 4.0, 2.0)
    assert stats.runs_ms == [3.0, 1.0, 10.0, 2.0, 4.0]
    assert stats.cpu_median_ms == 3.0  # no CPU times given: the wall-clock ones


def test_summarize_cpu_times_apart() -> None:
    stats = summarize([10.0, 30.0, 20.0], cpu_runs_ms=[5.0, 9.0, 7.0])
    assert (stats.median_ms, stats.cpu_median_ms) == (20.0, 7.0)


def test_summarize_one_and_two_runs() -> None:
    assert summarize([5.0]).iqr_ms == 0.0
    two = summarize([1.0, 3.0])  # interpolated a quarter and three quarters of the way
    assert (two.median_ms, two.q1_ms, two.q3_ms) == (2.0, 1.5, 2.5)


def test_time_call_warms_up_then_times_each_repeat() -> None:
    calls = []
    stats = time_call(lambda: calls.append(1), CPU, warmup=2, repeats=3)
    assert len(calls) == 5
    assert len(stats.runs_ms) == 3
    assert all(run >= 0 for run in stats.runs_ms)


def test_side_by_side_calls_take_turns_after_each_warms_up() -> None:
    calls: list[str] = []
    a, b = time_side_by_side(
        [lambda: calls.append("a"), lambda: calls.append("b")], CPU, warmup=2, repeats=3
    )
    assert calls == ["a", "a", "b", "b", "a", "b", "a", "b", "a", "b"]
    assert len(a.runs_ms) == len(b.runs_ms) == 3


def test_side_by_side_keeps_each_function_its_own_times() -> None:
    def spin(steps: int) -> None:
        total = 0
        for i in range(steps):
            total += i

    short, long = time_side_by_side(
        [lambda: spin(20_000), lambda: spin(400_000)], CPU, warmup=0, repeats=3
    )
    assert long.cpu_median_ms > 5 * short.cpu_median_ms  # 20x the work


def test_time_call_counts_cpu_time_of_busy_work() -> None:
    def spin() -> None:
        total = 0
        for i in range(200_000):
            total += i

    stats = time_call(spin, CPU, warmup=0, repeats=3)
    assert stats.cpu_median_ms > 0
    assert stats.cpu_median_ms <= stats.median_ms * 1.5  # one thread: CPU time <= wall time


def test_peak_memory_sees_a_large_allocation() -> None:
    if memory_method(CPU) == "unavailable":
        pytest.skip("no /proc/self/status VmHWM on this platform")
    size_mib = 200

    def allocate() -> None:
        block = torch.ones(size_mib * 2**20 // 4)  # float32, touched by ones()
        del block

    peak = peak_memory_mib(allocate, CPU)
    idle = peak_memory_mib(lambda: None, CPU)
    assert peak is not None and idle is not None
    assert peak["added_mib"] >= 0.9 * size_mib
    assert peak["peak_mib"] >= peak["added_mib"]
    assert idle["added_mib"] < 0.5 * size_mib
