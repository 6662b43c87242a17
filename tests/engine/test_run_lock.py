"""One run per output folder: a second run refuses in one line; a killed run's lock is no lock."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from training_process import finish, start_training, wait_for_log, write_config

from rfcn.engine.run_lock import LOCK_FILE, run_lock
from rfcn.errors import UserError


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "run"
    refused = pytest.raises(UserError, match=rf"another training run \(pid {os.getpid()} on ")
    with run_lock(out), refused, run_lock(out):
        pass
    with run_lock(out):  # released: free again
        (out / "config.yaml").write_text("")
    assert [p.name for p in out.iterdir()] == ["config.yaml"]


def test_a_folder_the_lock_created_is_removed_when_left_empty(tmp_path: Path) -> None:
    with run_lock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_FILE).is_file()
    assert not (tmp_path / "run").exists()


def test_two_runs_into_one_folder_and_a_killed_runs_lock(
    make_config: Callable, tmp_path: Path
) -> None:
    config = write_config(make_config(train={"iterations": 200}), tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    first = start_training(config, out, "train.checkpoint_every=1")
    try:
        wait_for_log(out, 2, first)
        code, _, err = finish(start_training(config, out, "train.iterations=3", "--resume"))
        assert code == 2
        assert err == (
            f"error: {out}: another training run (pid {first.pid} on {os.uname().nodename}) "
            "is writing into this folder; wait for it, stop it, or choose another folder\n"
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / LOCK_FILE).is_file()  # left behind by the killed run, but held by no one
    code, _, err = finish(start_training(config, out, "train.iterations=3", "--resume"))
    assert code == 0, err
    assert not (out / LOCK_FILE).exists()
