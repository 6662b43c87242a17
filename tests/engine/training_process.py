"""Helpers for tests that run ``rfcn train`` as a real process and send it signals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from rfcn.config import Config, config_to_dict

# ``rfcn`` as a process, deterministic (runs that must agree bitwise do) on one thread.
PRELUDE = (
    "import sys, torch; torch.use_deterministic_algorithms(True); torch.set_num_threads(1); "
    "from rfcn.cli import main; sys.exit(main(sys.argv[1:]))"
)


def rfcn_command(*args: object) -> list[str]:
    return [sys.executable, "-c", PRELUDE, *(str(arg) for arg in args)]


def write_config(cfg: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


def start_rfcn(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``rfcn ARGS`` as a process (see :data:`PRELUDE`), its output captured."""
    return subprocess.Popen(
        rfcn_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def start_training(
    config: Path, out: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``rfcn train --config CONFIG --out OUT --no-progress [--set OVERRIDES]``."""
    args: list[object] = ["train", "--config", config, "--out", out, "--no-progress"]
    if overrides:
        args += ["--set", *overrides]
    return start_rfcn(*args, env=env)


def wait_for_log(
    out: Path, iteration: int, process: subprocess.Popen[str], timeout: float = 120
) -> None:
    """Block until ``out/metrics.jsonl`` has logged ``iteration`` (the run is inside its loop)."""
    deadline = time.monotonic() + timeout
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.is_file():
            lines = metrics.read_text().splitlines()
            done = [json.loads(line).get("iteration") for line in lines if line.endswith("}")]
            if iteration in done:
                return
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"iteration {iteration} not logged in {timeout} s")


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err
