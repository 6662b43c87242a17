"""Slow, obviously-correct float64 loops for position-sensitive RoI pooling (test reference).

They follow the definitions in ``rfcn.ops.ps_roi_pool`` one bin and one pixel at a time, with the
same arithmetic order for bin edges, so they agree with the vectorised op to rounding error. The
bilinear loops are built from torch scalar operations, so autograd through them gives reference
gradients for the features.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def reference_ps_roi_pool(features: Tensor, rois: Tensor, k: int, spatial_scale: float) -> Tensor:
    """Eq. (1): mean of in-map pixels of bin (i, j) of channel (c*k+i)*k+j; 0 if none."""
    maps = features.detach().to(torch.float64)
    height, width = maps.shape[-2:]
    num_classes = maps.shape[1] // (k * k)
    out = torch.zeros(len(rois), num_classes, k, k, dtype=torch.float64)
    for r, (batch, *box) in enumerate(rois.tolist()):
        x0, y0, x1, y1 = (math.floor(v + 0.5) * spatial_scale for v in box)
        bin_h = max(y1 - y0, 0.1) / k
        bin_w = max(x1 - x0, 0.1) / k
        for i in range(k):
            top = min(max(math.floor(i * bin_h + y0), 0), height)
            bottom = min(max(math.ceil((i + 1) * bin_h + y0), 0), height)
            for j in range(k):
                left = min(max(math.floor(j * bin_w + x0), 0), width)
                right = min(max(math.ceil((j + 1) * bin_w + x0), 0), width)
                for c in range(num_classes):
                    plane = maps[int(batch), (c * k + i) * k + j]
                    total, count = 0.0, 0
                    for y in range(top, bottom):
                        for x in range(left, right):
                            total += plane[y, x].item()
                            count += 1
                    out[r, c, i, j] = total / count if count else 0.0
    return out


def reference_original_layer(
    features: Tensor, rois_inclusive: Tensor, k: int, spatial_scale: float
) -> Tensor:
    """The original R-FCN Caffe layer, transcribed: 0-based inclusive RoIs, C ``round``, ``+1``."""
    maps = features.detach().to(torch.float64)
    height, width = maps.shape[-2:]
    num_classes = maps.shape[1] // (k * k)

    def c_round(v: float) -> float:
        return math.copysign(math.floor(abs(v) + 0.5), v)

    out = torch.zeros(len(rois_inclusive), num_classes, k, k, dtype=torch.float64)
    for r, (batch, bx0, by0, bx1, by1) in enumerate(rois_inclusive.tolist()):
        x0 = c_round(bx0) * spatial_scale
        y0 = c_round(by0) * spatial_scale
        x1 = (c_round(bx1) + 1.0) * spatial_scale
        y1 = (c_round(by1) + 1.0) * spatial_scale
        bin_h = max(y1 - y0, 0.1) / k
        bin_w = max(x1 - x0, 0.1) / k
        for c in range(num_classes):
            for i in range(k):
                for j in range(k):
                    top = min(max(math.floor(i * bin_h + y0), 0), height)
                    bottom = min(max(math.ceil((i + 1) * bin_h + y0), 0), height)
                    left = min(max(math.floor(j * bin_w + x0), 0), width)
                    right = min(max(math.ceil((j + 1) * bin_w + x0), 0), width)
                    if bottom <= top or right <= left:
                        continue
                    region = maps[int(batch), (c * k + i) * k + j, top:bottom, left:right]
                    out[r, c, i, j] = region.sum() / ((bottom - top) * (right - left))
    return out


def _bilinear(plane: Tensor, y: float, x: float) -> Tensor | float:
    """RoIAlign's bilinear sample: 0 outside [-1, H] x [-1, W], clamped to the map inside it."""
    height, width = plane.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * plane[y_low, x_low]
        + hy * lx * plane[y_low, x_high]
        + ly * hx * plane[y_high, x_low]
        + ly * lx * plane[y_high, x_high]
    )


def reference_ps_roi_align(
    features: Tensor, rois: Tensor, k: int, spatial_scale: float, sampling_ratio: int
) -> Tensor:
    """Mean of sampling_ratio² bilinear samples per bin, RoI edges ``v * scale - 0.5``."""
    maps = features.to(torch.float64)
    num_classes = maps.shape[1] // (k * k)
    out = torch.zeros(len(rois), num_classes, k, k, dtype=torch.float64)
    for r, (batch, *box) in enumerate(rois.tolist()):
        x0, y0, x1, y1 = (v * spatial_scale - 0.5 for v in box)
        bin_h = (y1 - y0) / k
        bin_w = (x1 - x0) / k
        for c in range(num_classes):
            for i in range(k):
                for j in range(k):
                    plane = maps[int(batch), (c * k + i) * k + j]
                    total = 0.0
                    for sy in range(sampling_ratio):
                        y = y0 + i * bin_h + (sy + 0.5) * bin_h / sampling_ratio
                        for sx in range(sampling_ratio):
                            x = x0 + j * bin_w + (sx + 0.5) * bin_w / sampling_ratio
                            total += _bilinear(plane, y, x)
                    out[r, c, i, j] = total / sampling_ratio**2
    return out


def _zero_padded_bilinear(plane: Tensor, y: float, x: float) -> Tensor:
    """Light-Head R-CNN's read: taps floor and floor + 1 in each axis, weights ``1 - frac`` and
    ``frac``, a tap outside the map reading 0 (no clamping)."""
    height, width = plane.shape
    y_low, x_low = math.floor(y), math.floor(x)
    total = plane.new_zeros(())
    for tap_y, weight_y in ((y_low, 1.0 - (y - y_low)), (y_low + 1, y - y_low)):
        for tap_x, weight_x in ((x_low, 1.0 - (x - x_low)), (x_low + 1, x - x_low)):
            if 0 <= tap_y < height and 0 <= tap_x < width:
                total = total + weight_y * weight_x * plane[tap_y, tap_x]
    return total


def reference_ps_roi_align_max(
    features: Tensor, rois: Tensor, k: int, spatial_scale: float, sampling_ratio: int
) -> Tensor:
    """Light-Head R-CNN's PSAlignPool kernel: RoI edges ``v * scale`` (no -0.5), size
    ``max(end - start, 0)``, sample ``start + bin * (i + (1/s) * (p + 0.5))``, the bin the first
    of its largest samples (the kernel's strict ``>``)."""
    maps = features.to(torch.float64)
    num_classes = maps.shape[1] // (k * k)
    out = torch.zeros(len(rois), num_classes, k, k, dtype=torch.float64)
    for r, (batch, *box) in enumerate(rois.tolist()):
        x0, y0, x1, y1 = (v * spatial_scale for v in box)
        bin_h = max(y1 - y0, 0.0) / k
        bin_w = max(x1 - x0, 0.0) / k
        for c in range(num_classes):
            for i in range(k):
                for j in range(k):
                    plane = maps[int(batch), (c * k + i) * k + j]
                    best = None
                    for sy in range(sampling_ratio):
                        y = y0 + bin_h * (i + (1.0 / sampling_ratio) * (sy + 0.5))
                        for sx in range(sampling_ratio):
                            x = x0 + bin_w * (j + (1.0 / sampling_ratio) * (sx + 0.5))
                            value = _zero_padded_bilinear(plane, y, x)
                            if best is None or value.item() > best.item():
                                best = value
                    out[r, c, i, j] = best
    return out
