"""Deformable convolution (Deformable ConvNets v1, and v2's modulated form), exportable.

Two implementations of the same arithmetic, tested equal:

- :func:`torchvision.ops.deform_conv2d`, compiled kernels; used on CUDA in eager mode;
- :func:`deform_conv2d_decomposed`, plain tensor operations: bilinear sampling of every kernel
  tap (``grid_sample``, ONNX ``GridSample``) and one matrix product with the weights. Used while
  exporting (``rfcn export``: torchvision's op has no ONNX form, this one runs in onnxruntime as
  ordinary ops), and on the CPU, where it measured faster than torchvision's kernel: on a
  conv5 3x3 conv of ResNet-101 at 600x800 (512 channels, 38x50 map, dilation 2, 4 offset
  groups), forward 0.039 s vs 0.119 s and backward 0.091 s vs 0.809 s (the plain conv: 0.024 s
  and 0.055 s; medians of 5, 2-core Intel Xeon, torch 2.14.1, torchvision 0.29.1).

Gradients agree too, except for the derivative in an offset that puts a tap exactly on the
edge of the band where reads fade to zero (``-1`` or ``size``): torchvision takes it as 0 there.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from rfcn.ops.bilinear import sample_bilinear
from rfcn.ops.boxes import is_exporting


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution: torchvision's kernel on CUDA, else the decomposition.

    Shapes in the module docstring; returns ``(B, O, Ho, Wo)``.
    """
    if input.is_cuda and not is_exporting():
        return torchvision.ops.deform_conv2d(
            input, offset, weight, bias, stride, padding, dilation, mask
        )
    return deform_conv2d_decomposed(input, offset, weight, bias, stride, padding, dilation, mask)


def deform_conv2d_decomposed(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """:func:`deform_conv2d` as bilinear sampling and a matrix product (pure PyTorch).

    Memory: the sampled columns ``(B, C * kh * kw, Ho * Wo)``, as an im2col convolution.
    """
    batch, channels, height, width = input.shape
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    taps = kernel_h * kernel_w
    out_h, out_w = offset.shape[-2:]
    offset_groups = offset.shape[1] // (2 * taps)
    # Tap (u, v) of output (p, q) reads y = p * stride - pad + u * dilation (+ offset); dims
    # (B * G, taps, Ho, Wo) after adding the offsets, (taps, Ho, 1) and (taps, 1, Wo) before.
    # Positions in float32 at least: in bf16, 37.7 would be read at 37.75.
    positions = offset.new_empty(0, dtype=torch.promote_types(offset.dtype, torch.float32))
    rows = _tap_positions(out_h, kernel_h, stride[0], padding[0], dilation[0], positions)
    cols = _tap_positions(out_w, kernel_w, stride[1], padding[1], dilation[1], positions)
    rows = rows.repeat_interleave(kernel_w, dim=0).unsqueeze(-1)  # (taps, Ho, 1), tap u*kw + v
    cols = cols.repeat(kernel_h, 1).unsqueeze(-2)  # (taps, 1, Wo)
    shifts = offset.reshape(batch * offset_groups, taps, 2, out_h, out_w).to(positions.dtype)
    sampled = sample_bilinear(
        input.reshape(batch * offset_groups, channels // offset_groups, height, width),
        cols + shifts[:, :, 1],
        rows + shifts[:, :, 0],
    )  # (B * G, C / G, taps, Ho, Wo)
    if mask is not None:
        sampled = sampled * mask.reshape(batch * offset_groups, 1, taps, out_h, out_w)
    groups = channels // group_channels
    # Columns (B, groups, C/groups * taps, Ho*Wo), ordered as the flattened weight (c, u, v).
    columns = sampled.reshape(batch, groups, group_channels * taps, out_h * out_w)
    kernels = weight.reshape(groups, out_channels // groups, group_channels * taps)
    output = (kernels @ columns).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        output = output + bias.view(1, -1, 1, 1)
    return output


def _tap_positions(
    size: int, kernel: int, stride: int, padding: int, dilation: int, like: Tensor
) -> Tensor:
    """``(kernel, size)``: input coordinate ``o * stride - padding + t * dilation`` read by kernel
    tap ``t`` of output ``o`` along one axis, without offsets (dtype and device of ``like``)."""
    outputs = torch.arange(size, dtype=like.dtype, device=like.device) * stride - padding
    tap = torch.arange(kernel, dtype=like.dtype, device=like.device) * dilation
    return tap.unsqueeze(-1) + outputs
