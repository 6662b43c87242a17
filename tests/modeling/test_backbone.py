import pytest
import torch
from torchvision.models import resnet18
from torchvision.ops import FrozenBatchNorm2d

from rfcn.errors import UserError
from rfcn.modeling.backbone import build_backbone


@pytest.mark.parametrize(("atrous", "stride"), [(True, 16), (False, 32)])
def test_resnet18_strides_and_channels(atrous, stride):
    backbone = build_backbone("resnet18", atrous=atrous).eval()
    with torch.no_grad():
        conv4, conv5 = backbone(torch.zeros(1, 3, 64, 96))
    assert backbone.stride == stride
    assert conv4.shape == (1, 256, 4, 6)
    assert conv5.shape == (1, 512, 64 // stride, 96 // stride)
    assert (backbone.conv4_channels, backbone.conv5_channels) == (256, 512)


def test_basic_block_atrous_conv5_dilates_all_but_the_first_conv():
    conv5 = build_backbone("resnet18", atrous=True).conv5
    convs = [conv5[0].conv1, conv5[0].conv2, conv5[1].conv1, conv5[1].conv2]
    assert [c.dilation for c in convs] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert conv5[0].downsample[0].stride == (1, 1) and conv5[0].conv1.stride == (1, 1)


def test_frozen_bn_and_freeze_at():
    backbone = build_backbone("resnet18", frozen_bn=True, freeze_at=2)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    stem_conv, layer1 = backbone.trunk[0], backbone.trunk[4]
    assert not stem_conv.weight.requires_grad
    assert not any(p.requires_grad for p in layer1.parameters())
    assert all(p.requires_grad for p in backbone.trunk[5].parameters())
    trainable = build_backbone("resnet18", frozen_bn=False, freeze_at=0)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trainable.modules())
    assert all(p.requires_grad for p in trainable.parameters())
    with pytest.raises(UserError, match=r"model\.freeze_at: must be 0, 1 or 2, got 3"):
        build_backbone("resnet18", freeze_at=3)


def test_loads_a_torchvision_state_dict_file(tmp_path):
    torch.manual_seed(0)
    reference = resnet18()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", pretrained=str(path), freeze_at=0)
    torch.testing.assert_close(backbone.trunk[0].weight, reference.conv1.weight)
    torch.testing.assert_close(backbone.conv5[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.testing.assert_close(backbone.trunk[1].running_mean, reference.bn1.running_mean)


def test_bad_weight_files_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_backbone("resnet18", pretrained=str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        build_backbone("resnet18", pretrained=str(garbage))
    wrong = tmp_path / "wrong.pth"
    torch.save(resnet18().state_dict(), wrong)
    with pytest.raises(UserError, match="do not fit"):
        build_backbone("resnet34", pretrained=str(wrong))


def test_resnet50_atrous_uses_torchvision_dilation():
    backbone = build_backbone("resnet50", atrous=True).eval()
    with torch.no_grad():
        conv4, conv5 = backbone(torch.zeros(1, 3, 64, 64))
    assert conv4.shape == (1, 1024, 4, 4) and conv5.shape == (1, 2048, 4, 4)
    assert backbone.conv5[1].conv2.dilation == (2, 2)


@pytest.mark.parametrize("atrous", [True, False])
@pytest.mark.parametrize(
    ("stage_channels", "expected"), [((), (16, 32, 64, 128)), ((8, 24, 40, 48), (8, 24, 40, 48))]
)
def test_narrow_resnet18_channels_and_strides(atrous, stage_channels, expected):
    backbone = build_backbone(
        "resnet18", atrous=atrous, frozen_bn=False, width=16, stage_channels=stage_channels
    ).eval()
    trunk_stages = [backbone.trunk[index] for index in (4, 5, 6)]  # layer1..layer3
    widths = [stage[-1].conv2.out_channels for stage in [*trunk_stages, backbone.conv5]]
    assert tuple(widths) == expected
    with torch.no_grad():
        conv4, conv5 = backbone(torch.zeros(1, 3, 64, 96))
    assert (backbone.conv4_channels, backbone.conv5_channels) == expected[2:]
    assert conv4.shape == (1, expected[2], 4, 6)
    assert conv5.shape == (1, expected[3], 64 // backbone.stride, 96 // backbone.stride)


def test_narrow_builder_at_width_64_is_torchvisions_resnet18():
    from torch import nn

    from rfcn.modeling.backbone import _narrow_basic_resnet

    ours = {
        k: v.shape
        for k, v in _narrow_basic_resnet("resnet18", 64, (), (), nn.BatchNorm2d)
        .state_dict()
        .items()
    }
    theirs = {k: v.shape for k, v in resnet18().state_dict().items() if not k.startswith("fc.")}
    assert ours == theirs


def test_narrow_width_needs_a_basic_block_net_and_no_imagenet_weights():
    with pytest.raises(UserError, match="resnet18 or resnet34"):
        build_backbone("resnet50", width=32)
    with pytest.raises(UserError, match="ImageNet"):
        build_backbone("resnet18", pretrained="imagenet", width=32)


@pytest.mark.parametrize(
    ("key", "name", "value", "problem"),
    [
        ("stage_channels", "resnet101", (64, 128, 256, 256), "needs resnet18 or resnet34, got"),
        ("stage_channels", "resnet18", (64, 128, 256), "needs four positive numbers"),
        ("stage_channels", "resnet18", (8, 8, 8, 0), "needs four positive numbers"),
        ("stage_blocks", "resnet50", (1, 1, 1, 1), "needs resnet18 or resnet34, got"),
        ("stage_blocks", "resnet18", (1, 1, 1), "needs four positive numbers"),
        ("stage_blocks", "resnet18", (1, 0, 1, 1), "needs four positive numbers"),
    ],
)
def test_stage_shapes_need_a_basic_block_net_and_four_numbers(key, name, value, problem):
    with pytest.raises(UserError, match=f"model.{key}: {problem}"):
        build_backbone(name, **{key: value})


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("stage_channels", (64, 128, 256, 256), "stage channels"),
        ("stage_blocks", (1, 1, 1, 1), "stage blocks"),
    ],
)
def test_stage_shapes_have_no_imagenet_weights(key, value, problem):
    with pytest.raises(UserError, match=f"no ImageNet weights .*{problem}"):
        build_backbone("resnet18", pretrained="imagenet", **{key: value})


@pytest.mark.parametrize("atrous", [True, False])
def test_stage_blocks_set_the_blocks_of_each_stage(atrous):
    backbone = build_backbone(
        "resnet18", atrous=atrous, frozen_bn=False, width=16, stage_blocks=(1, 2, 1, 3)
    ).eval()
    stages = [backbone.trunk[index] for index in (4, 5, 6)] + [backbone.conv5]
    assert [len(stage) for stage in stages] == [1, 2, 1, 3]
    with torch.no_grad():
        conv4, conv5 = backbone(torch.zeros(1, 3, 64, 96))
    assert conv4.shape == (1, 64, 4, 6)
    assert conv5.shape == (1, 128, 64 // backbone.stride, 96 // backbone.stride)
    # À trous: only the first conv of conv5 keeps dilation 1, every later 3x3 conv has 2.
    dilations = [conv.dilation for block in backbone.conv5 for conv in (block.conv1, block.conv2)]
    assert dilations == [(1, 1)] + [(2, 2) if atrous else (1, 1)] * 5


def test_one_block_a_stage_keeps_the_dilated_conv5():
    backbone = build_backbone("resnet18", frozen_bn=False, width=8, stage_blocks=(1, 1, 1, 1))
    (block,) = backbone.conv5
    assert block.conv1.stride == (1, 1) and block.conv2.dilation == (2, 2)
    assert backbone.stride == 16


def test_stage_blocks_of_resnet18_give_resnet18():
    ours = build_backbone("resnet18", frozen_bn=False, width=32, stage_blocks=(2, 2, 2, 2))
    default = build_backbone("resnet18", frozen_bn=False, width=32)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in default.state_dict().items()
    }
