"""The memory check: RSS read from /proc, a leaking child process seen as one, and the summary's
numbers worked by hand."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from rfcn.benchmark.memory import Sample, resident_mib, summarize, watch
from rfcn.cli import main
from rfcn.errors import UserError

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def test_summary_worked_by_hand() -> None:
    samples = [
        Sample(0.0, 0, 100.0),  # before the warm-up: only the peak sees it
        Sample(1.0, 10, 150.0),
        Sample(2.0, 20, 153.0),
        Sample(3.0, 30, 153.0),
        Sample(4.0, 40, 156.0),
    ]
    summary = summarize(samples, warmup=10)
    # "end" is the last sample before the final count (40), while the command still worked;
    # slope over (10, 150), (20, 153), (30, 153): mean (20, 152), sum dx dy = (-10)(-2) +
    # 0 + (10)(1) = 30, sum dx² = 200: 0.15 MiB an item
    assert summary == {
        "start_done": 10,
        "start_rss_mib": 150.0,
        "end_done": 30,
        "end_rss_mib": 153.0,
        "exit_rss_mib": 156.0,
        "peak_rss_mib": 156.0,
        "growth_mib": 3.0,
        "slope_mib_per_1000": 150.0,
        "samples": 3,
        "seconds": 4.0,
        "trace": [[10, 150.0], [20, 153.0], [30, 153.0], [40, 156.0]],
    }
    with pytest.raises(ValueError, match="no sample after the 50 warm-up items"):
        summarize(samples, warmup=50)


def test_resident_memory_of_this_process_and_of_none() -> None:
    status = Path("/proc/self/status").read_text()
    kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    assert resident_mib(os.getpid()) == pytest.approx(kib / 1024, rel=0.2)
    assert resident_mib(2**22 + 12345) is None  # above pid_max's default: no such process


def _child(tmp_path: Path, step_mib: int, fail: bool = False) -> list[str]:
    """A python child that does 12 steps of 0.1 s, each keeping ``step_mib`` MiB more (a leak
    when positive), and writes how many steps it has done."""
    script = (
        "import pathlib, sys, time\n"
        f"done, kept = pathlib.Path({str(tmp_path / 'done')!r}), []\n"
        "for step in range(1, 13):\n"
        f"    kept.append(bytearray({step_mib} * 2**20 + 1))\n"
        "    time.sleep(0.1)\n"
        "    done.write_text(str(step))\n"
        f"sys.exit('out of cheese' if {fail} else 0)\n"
    )
    return [sys.executable, "-c", script]


def _progress(tmp_path: Path):
    def done() -> int:
        path = tmp_path / "done"
        return int(path.read_text() or 0) if path.exists() else 0

    return done


def test_a_leaking_child_shows_as_growth_and_a_steady_one_does_not(tmp_path: Path) -> None:
    leaking = summarize(watch(_child(tmp_path, 8), _progress(tmp_path), tmp_path / "log", 0.05), 2)
    (tmp_path / "done").unlink()
    steady = summarize(watch(_child(tmp_path, 0), _progress(tmp_path), tmp_path / "log", 0.05), 2)
    # 8 MiB a step: 8000 MiB per 1000 steps, give or take the sampling
    assert 5000 < leaking["slope_mib_per_1000"] < 10000 and leaking["growth_mib"] > 40
    assert abs(steady["slope_mib_per_1000"]) < 500 and abs(steady["growth_mib"]) < 4


def test_a_failing_command_is_an_error_with_its_last_line(tmp_path: Path) -> None:
    command = _child(tmp_path, 0, fail=True)
    with pytest.raises(UserError, match="exited with status 1: out of cheese"):
        watch(command, _progress(tmp_path), tmp_path / "log", 0.05)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--images", "0"], "error: --images: must be positive, got 0\n"),
        (
            ["--iterations", "50", "--warmup", "50"],
            "error: --iterations: must exceed --warmup (50)\n",
        ),
        (["--record", "out.txt"], "error: out.txt: a record file must end in .json\n"),
    ],
)
def test_bad_flags_are_one_line_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["memcheck", *flags]) == 2
    assert capsys.readouterr().err == message
