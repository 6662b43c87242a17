"""Preemption: SIGTERM and SIGUSR1 stop training at an iteration boundary after saving its
state, with a line that says how to resume and exit code 128 + the signal's number."""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from training_process import finish, start_rfcn, start_training, wait_for_log, write_config

from rfcn.engine.checkpoint import load_checkpoint
from rfcn.engine.preemption import TrainingStopped, stop_signals_caught
from rfcn.engine.stage_run import IterationEnd
from rfcn.engine.trainer import train


def test_sigterm_then_resume_gives_the_uninterrupted_weights(
    make_config: Callable, tmp_path: Path
) -> None:
    config = write_config(make_config(), tmp_path / "tiny.yaml")
    straight = start_training(config, tmp_path / "straight")
    preempted = start_training(config, tmp_path / "preempted")
    wait_for_log(tmp_path / "preempted", 2, preempted)
    preempted.send_signal(signal.SIGTERM)
    code, _, err = finish(preempted)
    assert code == 143, err
    assert len(err.splitlines()) == 1 and err.startswith("stopped by SIGTERM at iteration "), err
    stopped_at = int(err.split("at iteration ")[1].split(";")[0])
    state = load_checkpoint(tmp_path / "preempted" / "last.pt")
    assert state["iteration"] == stopped_at and 2 <= stopped_at < 6
    assert not (tmp_path / "preempted" / "model_final.pt").exists()
    # The printed command resumes the run.
    resume = shlex.split(err.split("resume with: ")[1])
    assert resume[:2] == ["rfcn", "train"] and "--resume" in resume
    code, _, err = finish(start_rfcn(*resume[1:]))
    assert code == 0, err
    assert finish(straight)[0] == 0
    weights = load_checkpoint(tmp_path / "preempted" / "model_final.pt")["model"]
    for name, value in load_checkpoint(tmp_path / "straight" / "model_final.pt")["model"].items():
        assert torch.equal(weights[name], value), name


def test_sigusr1_stops_at_the_next_iteration_boundary(
    make_config: Callable, tmp_path: Path
) -> None:
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def signal_at_two(event: IterationEnd) -> None:
        weights[event.iteration] = {k: v.clone() for k, v in event.model.state_dict().items()}
        if event.iteration == 2:
            os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(TrainingStopped, match="SIGUSR1 at iteration 2") as stopped:
        train(make_config(), tmp_path, progress=False, callbacks=[signal_at_two])
    assert stopped.value.exit_code == 138 and list(weights) == [1, 2]
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["iteration"] == 2
    for name, value in weights[2].items():
        assert torch.equal(state["model"][name], value), name
    # The handlers are put back when training ends.
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_ctrl_c_is_a_stop_with_exit_code_130(make_config: Callable, tmp_path: Path) -> None:
    def interrupt(event: IterationEnd) -> None:
        raise KeyboardInterrupt

    with pytest.raises(TrainingStopped, match="SIGINT at iteration 1") as stopped:
        train(make_config(), tmp_path, progress=False, callbacks=[interrupt])
    assert stopped.value.exit_code == 130
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 1


def test_stop_signals_only_set_the_flag_inside() -> None:
    with stop_signals_caught() as request:
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
