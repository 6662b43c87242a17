import copy

import pytest
import torch
from torch import nn

from rfcn.inference.fast_path import (
    AutocastModule,
    FrozenCompiledModule,
    autocast_submodules,
    compile_submodules,
    detection_agreement,
    prepare_for_inference,
)


class _TwoStage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def test_prepare_for_inference_freezes_and_converts_to_channels_last() -> None:
    model = prepare_for_inference(_TwoStage().train(), channels_last=True)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    weight = model.backbone[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()


def test_autocast_runs_in_bf16_and_returns_float32() -> None:
    torch.manual_seed(0)
    model = _TwoStage().eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        reference = model.backbone(x)
        autocast_submodules(model, ["backbone"], torch.bfloat16)
        assert isinstance(model.backbone, AutocastModule)
        out = model.backbone(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, reference)  # bf16 rounding happened
    torch.testing.assert_close(out, reference, atol=0.05, rtol=0.02)


def test_autocast_reaches_nested_submodules_and_keeps_attributes() -> None:
    model = _TwoStage()
    model.backbone.stride = 16
    autocast_submodules(model, ["backbone.0"], torch.bfloat16)
    assert isinstance(model.backbone[0], AutocastModule)
    assert model.backbone[0].out_channels == 8
    assert "backbone.0.module.weight" in model.state_dict()


def test_compile_submodules_wraps_the_named_child() -> None:
    model = _TwoStage()
    compile_submodules(model, ["head"])
    assert isinstance(model.head, FrozenCompiledModule)
    assert model.head.out_channels == 2  # attributes of the compiled module stay reachable
    assert hasattr(model.head.compiled, "_orig_mod")


def _dets(boxes, labels, scores):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores),
    }


def test_detection_agreement_hand_worked() -> None:
    reference = [
        _dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [1, 2, 1], [0.9, 0.8, 0.7])
    ]
    candidate = [
        _dets(
            # first: shifted 0.5 px; second: same box but another label; third: missing
            [[0.5, 0, 10.5, 10], [20, 20, 40, 40], [100, 100, 110, 110]],
            [1, 1, 1],
            [0.85, 0.8, 0.7],
        )
    ]
    result = detection_agreement(reference, candidate)
    assert result["reference_detections"] == 3
    assert result["candidate_detections"] == 3
    assert result["matched_fraction"] == pytest.approx(1 / 3)
    assert result["max_box_diff_px"] == pytest.approx(0.5)
    assert result["max_score_diff"] == pytest.approx(0.05)


def test_detection_agreement_identical_and_empty() -> None:
    dets = [_dets([[0, 0, 5, 5]], [3], [0.5]), _dets([], [], [])]
    result = detection_agreement(dets, dets)
    assert result["matched_fraction"] == 1.0
    assert result["max_box_diff_px"] == 0.0


@pytest.mark.parametrize(
    ("head", "convs"),
    [
        ("rfcn", ["backbone.trunk", "backbone.conv5", "rpn.head", "head.reduce", "head.cls_conv",
                  "head.box_conv"]),
        ("c4", ["backbone.trunk", "head.conv5", "rpn.head"]),
    ],
)  # fmt: skip
def test_optimize_for_inference_wraps_the_chosen_scope(head: str, convs: list[str]) -> None:
    from rfcn.config import ModelConfig
    from rfcn.inference.fast_path import BACKBONE_MODULES, optimize_for_inference, present_modules
    from rfcn.modeling.rfcn import build_model

    cfg = ModelConfig(
        backbone="resnet18", num_classes=2, k=3, head_channels=16, min_size=(64,), head=head
    )
    assert sorted(present_modules(build_model(cfg), [*convs, "head.missing"])) == sorted(convs)
    for scope in ("backbone", "convs"):
        model = optimize_for_inference(build_model(cfg), channels_last=True, bf16=scope)
        assert not model.training
        for name in convs:
            wrapped = scope == "convs" or name in BACKBONE_MODULES
            assert isinstance(model.get_submodule(name), AutocastModule) == wrapped
        with torch.inference_mode():
            detections = model([torch.rand(3, 64, 80)])
        assert detections[0]["boxes"].dtype == torch.float32
        assert detections[0]["scores"].dtype == torch.float32


@pytest.mark.slow
def test_frozen_compiled_module_matches_eager() -> None:
    torch.manual_seed(0)
    eager = _TwoStage().eval()
    compiled = compile_submodules(copy.deepcopy(eager), ["backbone"])
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), eager(x), atol=1e-5, rtol=1e-4)
