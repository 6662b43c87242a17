"""The training profile: stage clocks, backward attribution, and a real tiny training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from rfcn.benchmark import training_profile
from rfcn.benchmark.training_profile import (
    ACCUMULATE_STAGE,
    BACKWARD,
    STAGES,
    StageClock,
    backward_nodes,
    format_profile,
    profile_iterations,
    training_run,
)
from rfcn.cli import main
from rfcn.config import config_from_dict


def test_stage_clock_subtracts_nested_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([0.0, 1.0, 4.0, 10.0, 20.0, 22.0])  # seconds the fake clock reads, in order
    monkeypatch.setattr(training_profile.time, "perf_counter", lambda: next(ticks))
    clock = StageClock()
    with clock.stage("outer"), clock.stage("inner"):  # outer 0 .. 10 holds inner 1 .. 4
        pass
    assert clock.lap() == {"outer": 7.0, "inner": 3.0}
    with clock.stage("inner"):  # 20 .. 22
        pass
    assert clock.seconds == {"inner": 2.0}


def test_backward_nodes_belong_to_the_stage_of_their_forward() -> None:
    clock = StageClock()
    x = torch.randn(4, 4, requires_grad=True)
    w = torch.randn(4, 4, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        with clock.stage("setup"):
            # No gradient: this op sees the sequence number the matmul's node will take.
            offset = torch.ones(4) + 1
        with clock.stage("matmul"):
            y = x @ w
        with clock.stage("reduce"):
            z = (y * offset).sum()
        with clock.stage(BACKWARD):
            z.backward()
    stages = {name: stage for name, stage, _ in backward_nodes(list(profiler.events()))}
    assert stages["MmBackward0"] == "matmul"
    assert stages["MulBackward0"] == "reduce"
    assert stages["SumBackward0"] == "reduce"
    assert stages["torch::autograd::AccumulateGrad"] == ACCUMULATE_STAGE


def _tiny_synthetic(root: Path) -> dict:
    return {
        "model": {
            "backbone": "resnet18",
            "backbone_width": 16,
            "num_classes": 6,
            "k": 3,
            "head_channels": 16,
            "min_size": [64],
            "max_size": 64,
            "anchor_sizes": [16, 32],
            "anchor_ratios": [1.0],
            "rpn_pre_nms_train": 100,
            "rpn_post_nms_train": 20,
            "ohem_batch_per_image": 8,
            "frozen_bn": False,
            "freeze_at": 0,
        },
        "data": {
            "format": "synthetic",
            "roots": [str(root)],
            "workers": 0,
            "synthetic_train_images": 4,
            "synthetic_test_images": 1,
            "synthetic_image_size": 64,
        },
        "train": {"images_per_batch": 2, "base_batch": 2, "device": "cpu", "tensorboard": False},
    }


def test_profile_of_a_tiny_training_covers_every_stage(tmp_path: Path) -> None:
    cfg = config_from_dict(_tiny_synthetic(tmp_path / "data"))
    run = training_run(cfg, tmp_path / "run")
    step, backward = run.optimizer.step, torch.Tensor.backward
    result = profile_iterations(run, warmup=1, iterations=2)
    stages = result["stages"]
    assert set(stages) <= set(STAGES)
    for name in ("data loading + decoding", "backbone conv1-4", "PS-RoI pooling + voting"):
        assert stages[name]["forward_ms"] > 0
    assert stages["backbone conv1-4"]["backward_ms"] > 0
    assert stages.get("RPN proposals (decode, clip, NMS)", {}).get("backward_ms", 0.0) == 0.0
    shares = sum(stage["backward_ms"] for stage in stages.values())
    assert shares == pytest.approx(result["backward_ms"])
    covered = sum(stage["total_ms"] for stage in stages.values()) + result["rest_ms"]
    assert covered == pytest.approx(result["iteration_ms"])
    # Everything the profile wrapped is restored.
    assert "forward" not in vars(run.model) and "forward" not in vars(run.model.backbone.trunk)
    assert run.optimizer.step == step and torch.Tensor.backward is backward
    assert "| backbone conv1-4 |" in format_profile(result)


@pytest.mark.parametrize(
    ("head", "own_stages"),
    [
        ("light_head", ("light head separable conv (thin maps)", "PS-RoI pooling / PSRoIAlign")),
        ("c4", ("head (other)",)),
        ("torchvision", ("backbone conv1-4", "RPN convs")),
    ],
)
def test_profile_times_every_head(tmp_path: Path, head: str, own_stages: tuple[str, ...]) -> None:
    settings = _tiny_synthetic(tmp_path / "data")
    settings["model"].update(head=head, ps_roi_mode="align", light_head_mid_channels=8)
    run = training_run(config_from_dict(settings), tmp_path / "run")
    result = profile_iterations(run, warmup=1, iterations=1)
    for name in own_stages:
        assert result["stages"][name]["forward_ms"] > 0
    assert "forward" not in vars(run.model.head)


def test_profile_command_prints_and_writes_json(tmp_path: Path, capsys) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(_tiny_synthetic(tmp_path / "data")))  # JSON is YAML
    out = tmp_path / "profile.json"
    argv = ["profile", "--config", str(config), "--iterations", "1", "--warmup", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "| PS-RoI pooling + voting |" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["machine"]["cpu_model"] and "stages" in written
    assert main([*argv, "--iterations", "0"]) == 2
