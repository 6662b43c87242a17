"""Deformable conv5: which convs change, their start, their weights, and the ImageNet load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from rfcn.errors import UserError
from rfcn.modeling.backbone import build_backbone
from rfcn.modeling.deformable_conv import DeformableConv2d, OffsetConv2d


def _deformable(backbone: nn.Module) -> dict[str, DeformableConv2d]:
    return {n: m for n, m in backbone.conv5.named_modules() if isinstance(m, DeformableConv2d)}


def test_every_3x3_conv5_conv_becomes_deformable_with_its_stride_and_dilation() -> None:
    basic = build_backbone("resnet18", deformable_conv5="v1")
    converted = _deformable(basic)
    assert sorted(converted) == ["0.conv1", "0.conv2", "1.conv1", "1.conv2"]
    assert [converted[n].dilation for n in sorted(converted)] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert basic.conv5_channels == 512
    with torch.device("meta"):
        bottleneck = build_backbone("resnet101", deformable_conv5="v2")
    converted = _deformable(bottleneck)
    assert sorted(converted) == ["0.conv2", "1.conv2", "2.conv2"]  # the three conv5 blocks
    assert [c.dilation for c in converted.values()] == [(1, 1), (2, 2), (2, 2)]
    # Offsets (2 per tap and group) and v2 masks (1 per tap and group) from a sibling conv
    # with the same kernel, stride, padding and dilation.
    sibling = converted["1.conv2"].offset_conv
    assert isinstance(sibling, OffsetConv2d)
    assert sibling.out_channels == 3 * 4 * 9 and sibling.in_channels == 512
    assert (sibling.kernel_size, sibling.padding, sibling.dilation) == ((3, 3), (2, 2), (2, 2))
    not_atrous = build_backbone("resnet18", atrous=False, deformable_conv5="v1")
    assert _deformable(not_atrous)["0.conv1"].stride == (2, 2)


def test_v1_starts_as_the_plain_conv5_and_v2_at_half_the_taps() -> None:
    torch.manual_seed(0)
    plain = build_backbone("resnet18", frozen_bn=False, freeze_at=0).eval()
    torch.manual_seed(0)
    deformable = build_backbone("resnet18", frozen_bn=False, freeze_at=0, deformable_conv5="v1")
    deformable.eval()
    images = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(deformable(images), plain(images), rtol=1e-4, atol=1e-4)
    conv = plain.conv5[1].conv2
    features = torch.randn(1, 512, 6, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = conv(features)
        torch.testing.assert_close(
            DeformableConv2d(conv, "v2", 4)(features), 0.5 * expected, rtol=1e-4, atol=1e-4
        )


def test_offsets_move_the_taps() -> None:
    conv = nn.Conv2d(4, 3, 3, padding=1, bias=False)
    deformable = DeformableConv2d(conv, "v1", offset_groups=1)
    with torch.no_grad():
        deformable.offset_conv.bias[1::2] = 1.0  # every tap one pixel to the right (dx = 1)
    features = torch.randn(1, 4, 5, 6, generator=torch.Generator().manual_seed(3))
    shifted = torch.cat((features[..., 1:], torch.zeros(1, 4, 5, 1)), dim=-1)
    with torch.no_grad():
        # Column 0 aside: its left taps read column 0 here, the shifted map's zero padding there.
        torch.testing.assert_close(deformable(features)[..., 1:], conv(shifted)[..., 1:])


def test_imagenet_weights_load_and_keep_their_names(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = resnet18()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", pretrained=str(path), deformable_conv5="v2")
    torch.testing.assert_close(backbone.conv5[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.testing.assert_close(backbone.conv5[0].conv1.weight, reference.layer4[0].conv1.weight)
    names = set(backbone.conv5.state_dict())
    assert {"0.conv1.weight", "1.conv2.weight", "1.conv2.offset_conv.weight"} <= names
    offsets = [m for m in backbone.modules() if isinstance(m, OffsetConv2d)]
    assert len(offsets) == 4 and not any(p.any() for m in offsets for p in m.parameters())


def test_offset_groups_must_divide_the_channels() -> None:
    with pytest.raises(UserError, match="deformable_conv5_groups"):
        build_backbone("resnet18", deformable_conv5="v1", deformable_groups=3)
    with pytest.raises(ValueError, match="version"):
        DeformableConv2d(nn.Conv2d(4, 4, 3), "v3", 1)
