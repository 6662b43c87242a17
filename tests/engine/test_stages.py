import pytest
import torch
from torch import nn

from rfcn.engine.stages import (
    ALTERNATING,
    END_TO_END,
    configure_stage,
    parameter_group,
    set_train_mode,
)


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1))
        self.conv5 = nn.Conv2d(4, 4, 1)


class _Detector(nn.Module):
    """The parameter layout of rfcn.modeling.rfcn.RFCN, in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Backbone()
        self.rpn = nn.Conv2d(4, 2, 1)
        self.head = nn.Conv2d(4, 2, 1)
        self.backbone.trunk[0].requires_grad_(False)  # as model.freeze_at does
        self.train_parts = ("rpn", "head")


def _trained_groups(stage_index: int) -> tuple[set[str], tuple[str, ...]]:
    model = _Detector()
    trainable = configure_stage(model, ALTERNATING[stage_index])
    ids = {id(p) for p in trainable}
    assert ids == {id(p) for p in model.parameters() if p.requires_grad}
    return {parameter_group(n) for n, p in model.named_parameters() if id(p) in ids}, (
        model.train_parts
    )


def test_groups_follow_the_module_names() -> None:
    assert parameter_group("backbone.trunk.4.0.conv1.weight") == "shared"
    assert parameter_group("backbone.conv5.0.conv1.weight") == "head"
    assert parameter_group("head.cls_conv.bias") == "head"
    assert parameter_group("rpn.conv.weight") == "rpn"
    with pytest.raises(ValueError, match="no training group"):
        parameter_group("extra.weight")


def test_four_steps_train_the_paper_parts() -> None:
    assert _trained_groups(0) == ({"shared", "rpn"}, ("rpn",))
    assert _trained_groups(1) == ({"shared", "head"}, ("head",))
    assert _trained_groups(2) == ({"rpn"}, ("rpn",))
    assert _trained_groups(3) == ({"head"}, ("head",))
    assert ALTERNATING[1].proposals_from == "step1_rpn"
    assert ALTERNATING[1].init_from is None  # from the initial weights, as step 1
    assert (ALTERNATING[2].init_from, ALTERNATING[3].proposals_from) == ("step2_rfcn", "step3_rpn")


def test_end_to_end_trains_everything_the_model_did_not_freeze() -> None:
    model = _Detector()
    trainable = configure_stage(model, END_TO_END[0])
    assert len(trainable) == sum(1 for p in model.parameters()) - 2  # trunk[0] weight and bias
    assert model.train_parts == ("rpn", "head")


def test_frozen_batch_norm_keeps_its_statistics() -> None:
    model = _Detector()
    model.backbone.trunk.append(nn.BatchNorm2d(4))
    model.head = nn.Sequential(nn.BatchNorm2d(4))
    configure_stage(model, ALTERNATING[3])  # step 4: the trunk is frozen, the head trains
    set_train_mode(model)
    frozen_bn, trained_bn = model.backbone.trunk[2], model.head[0]
    assert not frozen_bn.training and trained_bn.training and model.rpn.training
    before = frozen_bn.running_mean.clone()
    features = model.backbone.trunk(torch.rand(2, 3, 8, 8) + 1.0)
    trained_bn(features)
    assert torch.equal(frozen_bn.running_mean, before)
    assert not torch.equal(trained_bn.running_mean, torch.zeros(4))
