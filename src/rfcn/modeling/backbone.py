"""ResNet backbones from torchvision, cut for R-FCN (paper §2 "Backbone architecture").

The average pool and the fc layer are removed. conv1..conv4 (stride 16) form the trunk shared
by the RPN and the head; conv5 feeds the head. By default conv5 is "à trous" (paper §2,
"the effective stride is reduced from 32 pixels to 16 pixels"): its first block has stride 1 and
its later 3x3 convolutions dilation 2, so the score maps keep stride 16. Optionally the 3x3
convolutions of conv5 are deformable (Deformable ConvNets, :mod:`rfcn.modeling.deformable_conv`).
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.ops import FrozenBatchNorm2d

from rfcn.errors import UserError
from rfcn.modeling.deformable_conv import make_conv5_deformable
from rfcn.modeling.pretrained import load_pretrained

# Blocks per stage of ResNet-18/34, for nets narrower than torchvision's.
_BASIC_STAGES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
TORCHVISION_WIDTH = 64  # channels of conv1 and res2 in torchvision's ResNets

_RESNETS = {
    "resnet18": (resnet.resnet18, resnet.ResNet18_Weights),
    "resnet34": (resnet.resnet34, resnet.ResNet34_Weights),
    "resnet50": (resnet.resnet50, resnet.ResNet50_Weights),
    "resnet101": (resnet.resnet101, resnet.ResNet101_Weights),
    "resnet152": (resnet.resnet152, resnet.ResNet152_Weights),
}


class ResNetBackbone(nn.Module):
    """``images (B, 3, H, W)`` -> ``conv4 (B, C4, H/16, W/16)``, ``conv5 (B, C5, H/s, W/s)``.

    ``s`` (:attr:`stride`) is 16 with à trous conv5, else 32. ``C4`` is 256 (ResNet-18/34) or
    1024, ``C5`` 512 or 2048.
    """

    def __init__(self, net: nn.Module, atrous: bool) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3
        )
        self.conv5 = net.layer4
        self.conv4_stride = 16
        self.stride = 16 if atrous else 32
        self.conv4_channels = _out_channels(net.layer3)
        self.conv5_channels = _out_channels(net.layer4)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        conv4 = self.trunk(images)
        return conv4, self.conv5(conv4)


def _out_channels(layer: nn.Sequential) -> int:
    last_block = layer[-1]
    last_conv = last_block.conv3 if isinstance(last_block, resnet.Bottleneck) else last_block.conv2
    return last_conv.out_channels


def _dilate_basic_conv5(layer4: nn.Sequential) -> None:
    """À trous conv5 for BasicBlock nets, which torchvision refuses to dilate.

    Follows torchvision's rule for Bottleneck nets: the first block loses its stride and keeps
    dilation 1 on its first 3x3 conv; every later 3x3 conv gets dilation 2 (padding 2, so the
    map size is unchanged).
    """
    first = layer4[0]
    first.conv1.stride = (1, 1)
    first.downsample[0].stride = (1, 1)
    dilated = [first.conv2] + [conv for block in layer4[1:] for conv in (block.conv1, block.conv2)]
    for conv in dilated:
        conv.dilation = (2, 2)
        conv.padding = (2, 2)


def _narrow_basic_resnet(
    name: str,
    width: int,
    stage_channels: tuple[int, ...],
    stage_blocks: tuple[int, ...],
    norm_layer: type[nn.Module],
) -> nn.Module:
    """ResNet-18/34 with ``width`` channels in conv1, ``stage_channels`` in res2..res5 (empty:
    ``width`` doubling per stage, as the original's 64) and ``stage_blocks`` blocks in them
    (empty: the ResNet's) instead of torchvision's: a cheaper trunk for CPU-sized experiments
    (the demo).

    Built from torchvision's ``BasicBlock``, with the attribute names of ``torchvision.models.
    resnet.ResNet`` (``conv1 bn1 relu maxpool layer1..layer4``) and its initialisation, so the
    rest of this module treats it as any other ResNet (it has no ``fc``).
    """
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = norm_layer(width)
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    in_channels = width
    widths = stage_channels or tuple(width * 2**stage for stage in range(4))
    for stage, blocks in enumerate(stage_blocks or _BASIC_STAGES[name]):
        channels, stride = widths[stage], 1 if stage == 0 else 2
        layer = []
        for index in range(blocks):
            downsample = None
            if index == 0 and (stride != 1 or in_channels != channels):
                downsample = nn.Sequential(
                    resnet.conv1x1(in_channels, channels, stride), norm_layer(channels)
                )
            layer.append(
                resnet.BasicBlock(
                    in_channels,
                    channels,
                    stride if index == 0 else 1,
                    downsample,
                    norm_layer=norm_layer,
                )
            )
            in_channels = channels
        setattr(net, f"layer{stage + 1}", nn.Sequential(*layer))
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return net


def build_backbone(
    name: str,
    pretrained: str | None = None,
    atrous: bool = True,
    frozen_bn: bool = True,
    freeze_at: int = 2,
    width: int = TORCHVISION_WIDTH,
    deformable_conv5: str = "none",
    deformable_groups: int = 4,
    stage_channels: tuple[int, ...] = (),
    stage_blocks: tuple[int, ...] = (),
) -> ResNetBackbone:
    """A ResNet backbone.

    Args:
        name: ``resnet18`` / ``34`` / ``50`` / ``101`` / ``152``.
        pretrained: None (random init), ``"imagenet"`` (torchvision's weights, downloaded once
            into the torch hub cache: :mod:`rfcn.modeling.pretrained`) or the path of a
            torchvision ResNet state-dict file.
        atrous: conv5 with stride 1 and dilation 2 (stride 16 maps); False keeps stride 32.
        frozen_bn: BatchNorm with fixed statistics and affine parameters (the original code).
        freeze_at: 0 trains everything, 1 freezes the stem, 2 the stem and conv2 (res2).
        width: channels of conv1 and res2 (64 in every torchvision ResNet); another width is
            offered for ResNet-18/34 only, and cannot load the ImageNet weights.
        deformable_conv5: "none", or "v1"/"v2" for deformable 3x3 convs in conv5 (after the
            weights load, which they keep).
        deformable_groups: offset groups of those deformable convs.
        stage_channels: channels of res2..res5; empty keeps the ResNet's (``width`` doubling
            per stage). Others are offered for ResNet-18/34 only, without the ImageNet weights.
        stage_blocks: residual blocks in res2..res5; empty keeps the ResNet's (2, 2, 2, 2 for
            ResNet-18). Others are offered as ``stage_channels`` are.
    """
    if name not in _RESNETS:
        raise UserError("model.backbone", f"unknown backbone {name!r}")
    if freeze_at not in (0, 1, 2):
        raise UserError("model.freeze_at", f"must be 0, 1 or 2, got {freeze_at}")
    norm_layer = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    is_bottleneck = name not in _BASIC_STAGES
    stage_shapes = {"stage_channels": stage_channels, "stage_blocks": stage_blocks}
    for key, value in stage_shapes.items():
        if value and (len(value) != 4 or min(value) <= 0):
            raise UserError(
                f"model.{key}",
                f"needs four positive numbers (res2 to res5) or none, got {list(value)}",
            )
        if value and is_bottleneck:
            raise UserError(f"model.{key}", f"needs resnet18 or resnet34, got {name}")
    if width != TORCHVISION_WIDTH or stage_channels or stage_blocks:
        if is_bottleneck or width <= 0:
            raise UserError(
                "model.backbone_width",
                f"{width} needs resnet18 or resnet34 and a positive width (got {name}); "
                f"the other ResNets come only at torchvision's width {TORCHVISION_WIDTH}",
            )
        if pretrained == "imagenet":
            shape = "".join(
                f" and {key.replace('_', ' ')} {list(value)}"
                for key, value in stage_shapes.items()
                if value
            )
            raise UserError(
                "model.pretrained", f"no ImageNet weights exist at width {width}{shape}"
            )
        net = _narrow_basic_resnet(name, width, stage_channels, stage_blocks, norm_layer)
    else:
        dilate = [False, False, atrous and is_bottleneck]
        net = _RESNETS[name][0](
            weights=None, norm_layer=norm_layer, replace_stride_with_dilation=dilate
        )
    if atrous and not is_bottleneck:
        _dilate_basic_conv5(net.layer4)
    if pretrained is not None:
        load_pretrained(net, pretrained, _RESNETS[name][1])
    if deformable_conv5 != "none":
        make_conv5_deformable(net.layer4, deformable_conv5, deformable_groups)
    stages = [(net.conv1, net.bn1), (net.layer1,)]
    for module in (m for stage in stages[:freeze_at] for m in stage):
        module.requires_grad_(False)
    return ResNetBackbone(net, atrous)
