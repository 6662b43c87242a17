"""A slow float64 loop for deformable PS-RoI pooling, written from the issue's description of the
original MXNet operator (test reference).

One RoI, output channel, bin and sample at a time, with the original's order of operations for
bin positions and its bilinear read (taps ``floor`` and ``ceil``). Built from torch scalar
operations, so autograd through it gives reference gradients for the features and the offsets.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def c_round(value: float) -> float:
    """C's ``round``: halves away from zero."""
    return math.copysign(math.floor(abs(value) + 0.5), value)


def _bilinear(plane: Tensor, y: Tensor | float, x: Tensor | float) -> Tensor:
    """The original's read at a point already clamped into the map: taps floor and ceil."""
    y_low, y_high = math.floor(_value(y)), math.ceil(_value(y))
    x_low, x_high = math.floor(_value(x)), math.ceil(_value(x))
    dy, dx = y - y_low, x - x_low
    return (
        (1 - dx) * (1 - dy) * plane[y_low, x_low]
        + (1 - dx) * dy * plane[y_high, x_low]
        + dx * (1 - dy) * plane[y_low, x_high]
        + dx * dy * plane[y_high, x_high]
    )


def _value(number: Tensor | float) -> float:
    return float(number.detach()) if isinstance(number, Tensor) else number


def _clamp(value: Tensor | float, high: float) -> Tensor | float:
    if isinstance(value, Tensor):
        return value.clamp(min=0.0, max=high)
    return min(max(value, 0.0), high)


def reference_deform_ps_roi_pool(
    features: Tensor,
    rois: Tensor,
    offsets: Tensor | None,
    k: int,
    spatial_scale: float,
    sampling_ratio: int,
    trans_std: float,
    part_size: int | None = None,
    samples: list[tuple[float, float]] | None = None,
) -> Tensor:
    """``(K, D, k, k)`` in float64; differentiable in ``features`` and ``offsets`` (float64).

    ``samples``, if given, receives the ``(x, y)`` of every sample before the skip test.
    """
    height, width = features.shape[-2:]
    num_outputs = features.shape[1] // (k * k)
    parts = k if part_size is None else part_size
    groups = 1 if offsets is None else offsets.shape[1] // 2
    rows = []
    for r, (batch, *box) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (c_round(v) * spatial_scale - 0.5 for v in box)
        roi_w, roi_h = max(x2 - x1, 0.1), max(y2 - y1, 0.1)
        bin_w, bin_h = roi_w / k, roi_h / k
        sub_w, sub_h = bin_w / sampling_ratio, bin_h / sampling_ratio
        channels = []
        for d in range(num_outputs):
            group = d // (num_outputs // groups)
            bins = []
            for i in range(k):
                for j in range(k):
                    w_start: Tensor | float = j * bin_w + x1
                    h_start: Tensor | float = i * bin_h + y1
                    if offsets is not None:
                        part_i, part_j = i * parts // k, j * parts // k
                        w_start = (
                            w_start + offsets[r, 2 * group, part_i, part_j] * trans_std * roi_w
                        )
                        h_start = (
                            h_start + offsets[r, 2 * group + 1, part_i, part_j] * trans_std * roi_h
                        )
                    plane = features[int(batch), (d * k + i) * k + j]
                    total: Tensor | float = 0.0
                    count = 0
                    for sy in range(sampling_ratio):
                        for sx in range(sampling_ratio):
                            w = w_start + sx * sub_w
                            h = h_start + sy * sub_h
                            if samples is not None:
                                samples.append((_value(w), _value(h)))
                            if not (-0.5 <= _value(w) <= width - 0.5):
                                continue
                            if not (-0.5 <= _value(h) <= height - 0.5):
                                continue
                            total = total + _bilinear(
                                plane, _clamp(h, height - 1.0), _clamp(w, width - 1.0)
                            )
                            count += 1
                    value = total / count if count else features.new_zeros(())
                    bins.append(torch.as_tensor(value, dtype=torch.float64))
            channels.append(torch.stack(bins).view(k, k))
        rows.append(torch.stack(channels))
    if not rows:
        return features.new_zeros(0, num_outputs, k, k, dtype=torch.float64)
    return torch.stack(rows)
