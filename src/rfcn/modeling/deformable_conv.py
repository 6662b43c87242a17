"""Deformable conv5 (Deformable ConvNets, Dai et al., ICCV 2017, §2.1; v2: Zhu et al., CVPR 2019).

:func:`make_conv5_deformable` turns the 3x3 convolutions of a ResNet's conv5 blocks (``conv2`` of
a Bottleneck, both convs of a BasicBlock) into :class:`DeformableConv2d`: the same weights,
stride, padding and dilation, with each kernel tap sampling at a learned offset from its
regular place. The offsets (v1), and for v2 also sigmoid masks that scale each tap, come from a
zero-initialised sibling 3x3 conv on the block's input, as in the original code (same kernel,
stride, padding and dilation as the conv it steers; ``offset_groups`` groups of channels share
one set of offsets, 4 in the original R-FCN). At the start a v1 conv is therefore exactly the
plain conv; a v2 conv starts with every mask at sigmoid(0) = 0.5, as in DCNv2.

The conversion keeps the conv's parameter names (``layer4.0.conv2.weight``), so ImageNet weights
load before or after it; only ``*.offset_conv.*`` start fresh.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rfcn.errors import UserError
from rfcn.ops.deform_conv import deform_conv2d

DEFORMABLE_CONV_VERSIONS = ("v1", "v2")


class OffsetConv2d(nn.Conv2d):
    """A convolution that predicts deformable offsets (and v2 masks); the optimiser finds these
    by type to apply ``train.offset_lr_factor``. Build them with :meth:`zeros`."""

    @classmethod
    def zeros(
        cls, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], **conv: Any
    ) -> OffsetConv2d:
        """Zero weights and bias, built without consuming random numbers (the CPU generator's
        state is restored): adding one leaves the random initialisation of every other layer
        unchanged, so a deformable model starts with the same weights as a plain one of the
        same seed."""
        with torch.random.fork_rng(devices=[]):
            layer = cls(in_channels, out_channels, kernel_size, **conv)
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
        return layer


class DeformableConv2d(nn.Module):
    """A deformable version of ``conv``: ``(B, C_in, H, W) -> (B, C_out, Ho, Wo)`` as ``conv``.

    Args:
        conv: the plain convolution; its weight (and bias) Parameters are taken over.
        version: "v1" (offsets) or "v2" (offsets and sigmoid masks).
        offset_groups: groups of input channels that share one set of offsets.
    """

    def __init__(self, conv: nn.Conv2d, version: str, offset_groups: int) -> None:
        super().__init__()
        if version not in DEFORMABLE_CONV_VERSIONS:
            raise ValueError(f"version must be one of {DEFORMABLE_CONV_VERSIONS}, got {version!r}")
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("only ungrouped, zero-padded convolutions can be made deformable")
        self.weight = conv.weight
        self.bias = conv.bias
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.version = version
        self.offset_groups = offset_groups
        taps = conv.kernel_size[0] * conv.kernel_size[1]
        # Per tap and group: a (dy, dx) pair, and for v2 a mask logit after all the pairs.
        self.num_offsets = 2 * offset_groups * taps
        outputs = self.num_offsets + (offset_groups * taps if version == "v2" else 0)
        self.offset_conv = OffsetConv2d.zeros(
            conv.in_channels,
            outputs,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
        )

    def forward(self, features: Tensor) -> Tensor:
        steering = self.offset_conv(features)  # (B, 2 G taps [+ G taps], Ho, Wo)
        offsets, mask = steering[:, : self.num_offsets], None
        if self.version == "v2":
            mask = steering[:, self.num_offsets :].sigmoid()
        return deform_conv2d(
            features,
            offsets,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            mask,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"version={self.version!r}, offset_groups={self.offset_groups}"
        )


def make_conv5_deformable(conv5: nn.Sequential, version: str, offset_groups: int) -> None:
    """Replace every 3x3 conv of the ResNet blocks of ``conv5`` by a :class:`DeformableConv2d`
    (in place), keeping its weights, stride and dilation.

    Raises:
        UserError: ``offset_groups`` does not divide a converted conv's input channels.
    """
    for block in conv5:
        for name, layer in list(block.named_children()):
            if isinstance(layer, nn.Conv2d) and layer.kernel_size == (3, 3):
                if offset_groups < 1 or layer.in_channels % offset_groups:
                    raise UserError(
                        "model.deformable_conv5_groups",
                        f"{offset_groups} offset groups do not divide the {layer.in_channels} "
                        "input channels of a conv5 3x3 convolution",
                    )
                setattr(block, name, DeformableConv2d(layer, version, offset_groups))
