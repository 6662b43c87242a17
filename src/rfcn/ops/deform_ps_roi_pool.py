"""Deformable position-sensitive RoI pooling (Deformable ConvNets, Dai et al., ICCV 2017, §2.2).

Shapes: features ``(B, k*k*D, H, W)`` with class-major channels as :mod:`rfcn.ops.ps_roi_pool`
(channel ``(d * k + i) * k + j`` holds output channel ``d``, bin row ``i``, bin column ``j``);
rois ``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` in input-image pixels, exclusive ends (the
project's box convention); offsets ``(K, 2G, P, P)`` or None; output ``(K, D, k, k)``.

The arithmetic of the original MXNet operator (``DeformablePSROIPooling``), in our convention:

* RoI start ``round(x1) * s - 0.5`` and end ``round(x2) * s - 0.5``, with C's ``round`` (halves
  away from zero) and ``s`` the spatial scale. The original rounds an inclusive end and adds 1;
  our exclusive ``x2`` is that inclusive end + 1, so no ``+1`` here. Width and height are at
  least 0.1 feature cells.
* Output channel ``d`` uses offset group ``g = d // (D // G)``; bin ``(i, j)`` reads offset part
  ``(floor(i * P / k), floor(j * P / k))``; channel ``2g`` is the x offset, ``2g + 1`` the y one.
  Bin ``(i, j)`` starts at ``x = start + j * bin_w + dx * trans_std * roi_w`` (the same in y):
  the offsets are normalised by the RoI size (paper Eq. 6, ``gamma`` = ``trans_std``).
* Each bin takes ``sampling_ratio²`` samples at ``bin start + (p / sampling_ratio) * bin size``
  (the sub-bin starts, not their centres). A sample outside ``[-0.5, W - 0.5]`` (or
  ``[-0.5, H - 0.5]``) is skipped and not counted; the others are clamped to ``[0, W - 1]``
  (``[0, H - 1]``) and read bilinearly. A bin averages the samples it counted; none gives 0.
* Gradients reach ``features`` and ``offsets`` (through the bilinear weights), not ``rois``.
  Where a sample lies exactly on a pixel column or row, the original takes the derivative in
  offset as 0 (its two bilinear taps coincide, ``floor = ceil``) and this op the one-sided
  derivative towards the next pixel; everywhere else the gradients are the same.

Vectorised: every sample of every bin of every RoI is one point of a single ``grid_sample``
call (:func:`rfcn.ops.bilinear.sample_bilinear`). The images of the batch are stacked along
the height so that one call serves all of them; clamping keeps each sample inside its image.
Coordinates, and so which samples count, are computed in float64 (they do not depend on the
feature dtype); the clamped sample positions enter the sampler in the features' dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rfcn.ops.bilinear import sample_bilinear
from rfcn.ops.ps_roi_pool import MIN_ROI_SIZE, check_pooling_inputs

# Where a skipped sample is read: two pixels above and left of the maps, so that its bilinear
# taps (the floor and the floor + 1 of each coordinate) all fall outside them and read 0.
_OFF_MAP = -2.0


def deform_ps_roi_pool(
    features: Tensor,
    rois: Tensor,
    offsets: Tensor | None,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 4,
    trans_std: float = 0.1,
    part_size: int | None = None,
) -> Tensor:
    """Pool each RoI's k×k bins, shifted by ``offsets``, bin (i, j) from its own channels.

    Args:
        features: ``(B, k*k*D, H, W)`` position-sensitive maps, class-major channels.
        rois: ``(K, 5)`` ``[batch_index, x1, y1, x2, y2]`` in input-image pixels.
        offsets: ``(K, 2G, P, P)`` normalised bin offsets (x of group g in channel 2g, y in
            2g + 1), G dividing D; None for none (the same as all zeros).
        output_size: k, bins per side.
        spatial_scale: feature cells per input pixel (1/16 for a stride-16 map).
        sampling_ratio: samples per bin side (the original's ``sample_per_part``).
        trans_std: scale of the offsets (the paper's gamma): a bin moves by
            ``offset * trans_std * RoI size``.
        part_size: P, offset parts per side (default k).

    Returns:
        ``(K, D, k, k)`` pooled scores, dtype of ``features``.
    """
    k = output_size
    if k < 1:
        raise ValueError(f"output_size must be >= 1, got {k}")
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1, got {sampling_ratio}")
    check_pooling_inputs(features, rois, k)
    batch, channels, height, width = features.shape
    num_outputs = channels // (k * k)  # D
    groups = 1
    if offsets is not None:
        groups = _check_offsets(offsets, rois, num_outputs, k if part_size is None else part_size)

    coords = _c_round(rois[:, 1:].detach().to(torch.float64)) * spatial_scale - 0.5
    start, end = coords[:, :2], coords[:, 2:]  # (K, 2) x, y in feature cells
    roi_size = (end - start).clamp(min=MIN_ROI_SIZE)  # (K, 2) width, height
    shift_x = shift_y = None
    if offsets is not None:
        parts = offsets  # (K, 2G, P, P) -> (K, 2G, k, k): bin (i, j) reads part (iP/k, jP/k)
        if offsets.shape[-1] != k:
            part = torch.arange(k, device=offsets.device) * offsets.shape[-1] // k  # (k,)
            parts = offsets.index_select(2, part).index_select(3, part)
        # (K, 2G, k, k) -> (k_i, k_j, G, K, 2): the layout of the sampling grid below.
        parts = parts.to(torch.float64).unflatten(1, (groups, 2)).permute(3, 4, 1, 0, 2)
        shift_x = parts[..., 0] * trans_std * roi_size[:, 0]  # (k, k, G, K)
        shift_y = parts[..., 1] * trans_std * roi_size[:, 1]
    # Sample coordinates, dims (bin row i, bin column j, group g, RoI r, sample s):
    # x (1 or k, k, 1 or G, K, S), y (k, 1 or k, 1 or G, K, S).
    x = _sample_points(start[:, 0], roi_size[:, 0], shift_x, k, sampling_ratio, axis=1)
    y = _sample_points(start[:, 1], roi_size[:, 1], shift_y, k, sampling_ratio, axis=0)
    x_inside = (x >= -0.5) & (x <= width - 0.5)
    y_inside = (y >= -0.5) & (y <= height - 0.5)
    count = y_inside.sum(dim=-1) * x_inside.sum(dim=-1)  # (k, k, G, K) samples counted
    # The batch's images are stacked along the height: image b's row y is row b * H + y. A
    # skipped sample moves to _OFF_MAP, where all four bilinear taps lie outside the stacked
    # maps: it reads 0 and passes no gradient, so summing every sample sums the counted ones.
    image_row = rois[:, 0].detach().to(torch.float64) * height  # (K,)
    x = torch.where(x_inside, x.clamp(min=0, max=width - 1), _OFF_MAP)
    y = torch.where(y_inside, y.clamp(min=0, max=height - 1) + image_row.unsqueeze(-1), _OFF_MAP)
    # Positions and skips are decided in float64; the sampler reads in the features' dtype
    # (float32 for lower precisions).
    sampler_dtype = torch.promote_types(features.dtype, torch.float32)
    x, y = x.to(sampler_dtype), y.to(sampler_dtype)

    # (B, D, k*k, H, W) -> (k*k*G, D/G, B*H, W): one sampler entry per bin and offset group.
    maps = features.reshape(batch, groups, num_outputs // groups, k, k, height, width)
    maps = maps.permute(3, 4, 1, 2, 0, 5, 6).reshape(k * k * groups, -1, batch * height, width)
    # Dims (i, j, g, r) of the coordinates; (i, j, g) flatten into the sampler's entries.
    entries = (k, k, groups, rois.shape[0])
    sampled = sample_bilinear(
        maps,
        x.expand(*entries, sampling_ratio).flatten(0, 2).unsqueeze(-2),  # (k*k*G, K, 1, S_x)
        y.expand(*entries, sampling_ratio).flatten(0, 2).unsqueeze(-1),  # (k*k*G, K, S_y, 1)
    )  # (k*k*G, D/G, K, S_y, S_x)
    total = sampled.sum(dim=(-2, -1))  # (k*k*G, D/G, K)
    # A bin that counted no sample has a zero total: dividing by max(count, 1) gives 0.
    count = count.expand(entries).flatten(0, 2).clamp(min=1).unsqueeze(1).to(total.dtype)
    pooled = total / count
    return pooled.unflatten(0, (k, k, groups)).permute(4, 2, 3, 0, 1).reshape(-1, num_outputs, k, k)


def _c_round(values: Tensor) -> Tensor:
    """C's ``round``: halves away from zero (``torch.round`` rounds halves to even)."""
    return torch.sign(values) * torch.floor(values.abs() + 0.5)


def _sample_points(
    start: Tensor, size: Tensor, shift: Tensor | None, k: int, sampling_ratio: int, axis: int
) -> Tensor:
    """Sample coordinates along one axis, in the original operator's order of operations.

    Args:
        start, size: ``(K,)`` float64 RoI start and size (feature cells) along this axis.
        shift: ``(k, k, G, K)`` bin shifts ``offset * trans_std * size``, or None.
        axis: 0 for y (the bin row i indexes the start), 1 for x (the bin column j).

    Returns:
        ``((bin index) * bin + start + shift) + p * bin / sampling_ratio`` with dims
        ``(i, j, g, r, p)``: size 1 along the bin axis this one does not use and along g
        without offsets.
    """
    bin_size = size / k  # (K,)
    index = torch.arange(k, dtype=torch.float64, device=start.device)
    bin_start = index.unsqueeze(-1) * bin_size + start  # (k, K)
    bin_start = bin_start.view(1, k, 1, -1) if axis == 1 else bin_start.view(k, 1, 1, -1)
    if shift is not None:
        bin_start = bin_start + shift  # (k, k, G, K)
    step = torch.arange(sampling_ratio, dtype=torch.float64, device=start.device)
    return bin_start.unsqueeze(-1) + step * (bin_size / sampling_ratio).unsqueeze(-1)


def _check_offsets(offsets: Tensor, rois: Tensor, num_outputs: int, part_size: int) -> int:
    """The number of offset groups G, after checking ``offsets`` is ``(K, 2G, P, P)``."""
    if part_size < 1:
        raise ValueError(f"part_size must be >= 1, got {part_size}")
    if torch.jit.is_tracing():
        return offsets.shape[1] // 2
    if (
        offsets.dim() != 4
        or offsets.shape[0] != rois.shape[0]
        or offsets.shape[1] % 2
        or offsets.shape[2:] != (part_size, part_size)
    ):
        raise ValueError(
            f"offsets must be (K, 2G, P, P) with K={rois.shape[0]} and P={part_size}, "
            f"got {tuple(offsets.shape)}"
        )
    groups = offsets.shape[1] // 2
    if groups == 0 or num_outputs % groups:
        raise ValueError(f"{groups} offset groups do not divide the {num_outputs} output channels")
    return groups
