"""Position-sensitive RoI pooling (paper §2, Eq. 1), vectorised pure PyTorch.

Shapes: features ``(B, k*k*D, H, W)``; rois ``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` in
input-image pixels (continuous 0-based coordinates, the project's box convention); output
``(K, D, k, k)``. Channel layout is class-major, as the original layer and torchvision: input
channel ``(c * k + i) * k + j`` holds class ``c``, bin row ``i``, bin column ``j``, and only that
channel feeds output ``[:, c, i, j]``.

Mode ``"pool"`` — Eq. (1),
``r_c(i, j) = 1/n * sum_{(x, y) in bin(i, j)} z_{i,j,c}(x + x0, y + y0)``, with the original
R-FCN layer's bin arithmetic:

* each RoI coordinate is rounded to the nearest image pixel (halves up, ``floor(v + 0.5)``; the
  same as the original layer's C ``round`` for the non-negative coordinates of clipped boxes),
  then multiplied by ``spatial_scale``;
* no ``+1`` on the RoI end: the original layer took 0-based *inclusive* ends and added 1; our boxes
  carry exclusive ends (``x2`` = inclusive end + 1, see the brief's VOC rule), so ``round(x2)`` is
  already the original ``round(x2_inclusive) + 1`` and the same box gives the same bins;
* RoI width/height in feature cells ``max(end - start, 0.1)`` (the original's guard against 0);
* bin ``(i, j)`` spans rows ``floor(y0 + i*h/k) .. ceil(y0 + (i+1)*h/k)`` (end exclusive) and
  columns ``floor(x0 + j*w/k) .. ceil(x0 + (j+1)*w/k)``, each clamped to ``[0, H]`` / ``[0, W]``
  (as the original layer in forward and backward);
* the average covers the in-map pixels of the bin; a bin with no in-map pixel gives 0.

Bin sums come from a summed-area table (integral image) of the features, computed in float64 so
that differences of large prefix sums keep float32 accuracy on large maps: each bin is its four
corners with signs and ``1/area``, so the cost is one O(B*C*H*W) table plus O(K*k^2*D) sums
whatever the RoI size.

Mode ``"align"`` — bilinear, as torchvision's ``ps_roi_align`` / RoIAlign ``aligned=True``:
RoI start/end ``v * spatial_scale - 0.5`` (no rounding, no minimum size); each bin averages
``sampling_ratio**2`` bilinear samples at the centres of a regular sub-grid. A sample whose
point lies outside ``[-1, H] x [-1, W]`` contributes 0 but still counts in the average; a point
inside that band is clamped to the map (coordinates below 0 become 0, at or past the last
row/column use that row/column), torchvision's convention. Each bin is then a weighted sum of
the ``(2 * sampling_ratio)**2`` map pixels its samples' bilinear taps read.

Mode ``"align_max"`` — Light-Head R-CNN's PSRoIAlign (Li et al. 2017, §3.2), with the
arithmetic of its public kernel (``lib_psalign_pooling/psalign_pooling_op_gpu.cu.cc``):
RoI start/end ``v * spatial_scale`` (no ``-0.5``, no rounding), RoI size ``max(end - start, 0)``;
sample ``(s_y, s_x)`` of bin ``(i, j)`` at ``start + bin * (i + (s + 0.5) / sampling_ratio)``;
each sample reads its four neighbours ``floor(.)`` and ``floor(.) + 1`` bilinearly, a neighbour
outside the map reading 0 (no clamping); the bin is the **maximum** of its ``sampling_ratio**2``
samples (the first one on ties), and its gradient goes to that sample's taps only. One
deliberate difference: where a sample falls exactly on a pixel row or column, the kernel's taps
``floor`` and ``ceil`` coincide and it counts that pixel twice (the value doubles there, a jump
of the interpolant); here the interpolant stays continuous. Everywhere else the numbers are the
kernel's.

All modes are thus weighted sums of rows of a bin-major table (``align_max``: one a sample,
then a maximum), in which the D class scores one bin reads at one pixel are contiguous.
Coordinates, taps and weights are computed in float64, so bin edges do not depend on the
feature dtype; no gradient flows to ``rois``. Eagerly (CPU or
CUDA) one ``embedding_bag`` call computes all the sums without materialising the gathered rows
(faster than torchvision's ``ps_roi_align`` kernel and than gathering the corner rows first,
as ``rfcn benchmark`` shows). Its backward pass skips
the bins whose gradient is all zero: with OHEM (paper §2) only the B selected of the N pooled
RoIs carry one, so the backward cost follows B. :func:`ps_roi_vote` pools and averages the k²
bins (the vote) with the same numbers, and its backward pass goes from the ``(K, D)`` vote
gradient to the table rows without the ``(K, D, k, k)`` bin gradient (0.81× the time of pooling,
averaging and their backward at the demo's sizes). While exporting, tracing or compiling, the same
sums run as plain gathers, products and sums (the tests check both against float64 loops).
torchvision's ``ps_roi_pool`` is never used: it rounds in feature coordinates, forces a minimum
size of one cell and clamps bin ends to ``H - 1`` in forward (so the last row and column are
never pooled), none of which is Eq. (1) with the original layer's arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

MODES = ("pool", "align", "align_max")
# The bilinear modes, which take sampling_ratio² samples per bin.
SAMPLED_MODES = ("align", "align_max")

# The original layer's lower bound on the RoI size in feature cells (avoids empty RoIs).
MIN_ROI_SIZE = 0.1


def ps_roi_pool(
    features: Tensor,
    rois: Tensor,
    output_size: int,
    spatial_scale: float,
    mode: str = "pool",
    sampling_ratio: int = 2,
) -> Tensor:
    """Pool each RoI's k×k bins, bin (i, j) from its own channel group (paper Eq. 1).

    Args:
        features: ``(B, k*k*D, H, W)`` position-sensitive score maps, class-major channels.
        rois: ``(K, 5)`` ``[batch_index, x1, y1, x2, y2]`` in input-image pixels.
        output_size: k, bins per side.
        spatial_scale: feature cells per input pixel (1/16 for a stride-16 map).
        mode: ``"pool"`` (exact Eq. 1 average), ``"align"`` (average of bilinear samples) or
            ``"align_max"`` (Light-Head R-CNN's maximum of bilinear samples).
        sampling_ratio: samples per bin side in the bilinear modes (>= 1); unused by ``"pool"``.

    Returns:
        ``(K, D, k, k)`` pooled scores, dtype of ``features``.
    """
    k = output_size
    if mode == "align_max":
        _check_arguments(features, rois, k, mode, sampling_ratio)
        return _max_of_samples(features, rois, k, spatial_scale, sampling_ratio)
    table, index, weights = _bin_sums(features, rois, k, spatial_scale, mode, sampling_ratio)
    return _pooled(table, index, weights, features.dtype)


def ps_roi_vote(
    features: Tensor,
    rois: Tensor,
    output_size: int,
    spatial_scale: float,
    mode: str = "pool",
    sampling_ratio: int = 2,
) -> Tensor:
    """Pool each RoI's k×k bins (:func:`ps_roi_pool`) and average them: the vote (paper §2).

    Exactly ``ps_roi_pool(...).mean(dim=(2, 3))``, forward and backward. While training eagerly
    the backward pass spreads each RoI's vote gradient over its bins' table rows directly,
    skipping the RoIs without one, instead of building the ``(K, D, k, k)`` bin gradient,
    transposing it to the bin-major table order and searching it for non-zero bins.

    Returns:
        ``(K, D)`` average of the k² pooled scores, dtype of ``features``.
    """
    k = output_size
    if mode == "align_max":  # the maximum's backward already reaches only the chosen samples
        return ps_roi_pool(features, rois, k, spatial_scale, mode, sampling_ratio).mean(dim=(2, 3))
    table, index, weights = _bin_sums(features, rois, k, spatial_scale, mode, sampling_ratio)
    if table.requires_grad and torch.is_grad_enabled() and _eager():
        return _VotedRows.apply(table, index, weights, features.dtype)
    return _pooled(table, index, weights, features.dtype).mean(dim=(2, 3))


class PSRoIPool(nn.Module):
    """Module form of :func:`ps_roi_pool`: ``(B, k*k*D, H, W), (K, 5) -> (K, D, k, k)``."""

    def __init__(
        self, output_size: int, spatial_scale: float, mode: str = "pool", sampling_ratio: int = 2
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.mode = mode
        self.sampling_ratio = sampling_ratio

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return ps_roi_pool(
            features, rois, self.output_size, self.spatial_scale, self.mode, self.sampling_ratio
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"mode={self.mode!r}, sampling_ratio={self.sampling_ratio}"
        )


def _check_arguments(
    features: Tensor, rois: Tensor, k: int, mode: str, sampling_ratio: int
) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if k < 1:
        raise ValueError(f"output_size must be >= 1, got {k}")
    if mode in SAMPLED_MODES and sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1, got {sampling_ratio}")
    check_pooling_inputs(features, rois, k)


def check_pooling_inputs(features: Tensor, rois: Tensor, k: int) -> None:
    """ValueError unless ``features`` is ``(B, k*k*D, H, W)`` and ``rois`` ``(K, 5)``."""
    if torch.jit.is_tracing():
        return  # sizes are traced tensors here; comparing them would bake the answer in
    if features.dim() != 4 or features.shape[1] % (k * k) != 0:
        raise ValueError(
            f"features must be (B, k*k*D, H, W) with k={k}, got {tuple(features.shape)}"
        )
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be (K, 5), got {tuple(rois.shape)}")


def _weighted_rows(table: Tensor, index: Tensor, weights: Tensor) -> Tensor:
    """``(N, D)`` weighted sums of rows: ``out[n] = sum_t weights[n, t] * table[index[n, t]]``.

    Args:
        table: ``(R, D)`` rows of D class scores (a bin-major map or summed-area table).
        index: ``(N, T)`` int64 rows read by each of N bins.
        weights: ``(N, T)`` their weights, dtype of ``table``.

    Eagerly, one ``embedding_bag`` call sums the rows without materialising the ``(N, T, D)``
    gathered values (:class:`_WeightedRows`); while exporting, tracing or compiling the same sum
    runs as a gather, a product and a sum.
    """
    if _eager():
        return _WeightedRows.apply(table, index, weights)
    values = table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[-1])
    return (values * weights.unsqueeze(-1)).sum(dim=1)


def _rows_with_gradient(grad: Tensor) -> Tensor:
    """``(N',)`` indices of the rows of an ``(N, D)`` output gradient (one row a bin, or one a
    RoI's vote) that are not all zero.

    With OHEM (paper §2) the loss reads only the B selected of the N pooled RoIs, so every bin
    of the others has an exactly zero gradient and its backward work can be skipped without
    changing a sum.
    """
    return grad.ne(0).any(dim=1).nonzero().squeeze(1)


class _WeightedRows(torch.autograd.Function):
    """:func:`_weighted_rows` as ``embedding_bag``, whose backward scatters only the bins with
    a gradient onto the table rows they read (no gradient to ``index`` or ``weights``)."""

    @staticmethod
    def forward(table: Tensor, index: Tensor, weights: Tensor) -> Tensor:  # type: ignore[override]
        return functional.embedding_bag(index, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        table, index, weights = inputs
        ctx.save_for_backward(index, weights)
        ctx.table_rows = table.shape[0]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        index, weights = ctx.saved_tensors
        bins = _rows_with_gradient(grad)
        per_row = weights[bins].unsqueeze(-1) * grad[bins].unsqueeze(1)  # (N', T, D)
        return _table_gradient(ctx.table_rows, index[bins], per_row), None, None


class _VotedRows(torch.autograd.Function):
    """``_pooled(table, index, weights, dtype).mean(dim=(2, 3))``: the forward pass as written,
    the backward pass from the ``(K, D)`` vote gradient straight to the table rows.

    The mean and the cast give each of a RoI's k² bins the same row ``grad / k²`` (in the
    votes' dtype, then the table's), so the products and their order are those of
    :class:`_WeightedRows`'s backward through those operations, and so is the gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        table: Tensor, index: Tensor, weights: Tensor, dtype: torch.dtype
    ) -> Tensor:
        return _pooled(table, index, weights, dtype).mean(dim=(2, 3))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        table, index, weights, _ = inputs
        ctx.save_for_backward(index, weights)
        ctx.table_shape = table.shape
        ctx.table_dtype = table.dtype

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        index, weights = ctx.saved_tensors
        k = index.shape[1]
        bin_grad = (grad / (k * k)).to(ctx.table_dtype)  # (K, D), each bin's row
        rois = _rows_with_gradient(bin_grad)
        per_row = weights[rois].unsqueeze(-1) * bin_grad[rois].view(-1, 1, 1, 1, grad.shape[1])
        table_grad = _table_gradient(ctx.table_shape[:-1].numel(), index[rois], per_row)
        return table_grad.view(ctx.table_shape), None, None, None


def _table_gradient(table_rows: int, index: Tensor, per_row: Tensor) -> Tensor:
    """``(R, D)`` table gradient: ``per_row (..., T, D)`` added onto the rows ``index (..., T)``
    read, in their order."""
    table_grad = per_row.new_zeros(table_rows, per_row.shape[-1])
    return table_grad.index_add_(0, index.reshape(-1), per_row.reshape(-1, per_row.shape[-1]))


def _bin_major(features: Tensor, k: int) -> Tensor:
    """``(B, k*k*D, H, W) -> (B, H, W, k*k, D)``: the D class scores read by one bin at one pixel
    become one contiguous row, so each bin sums whole rows instead of scattered scalars."""
    batch, channels, height, width = features.shape
    # Class-major channels: (B, C, H, W) -> (B, D, k*k, H, W).
    by_class = features.reshape(batch, channels // (k * k), k * k, height, width)
    return by_class.permute(0, 3, 4, 2, 1)


def _table_rows(
    batch_index: Tensor, rows: Tensor, cols: Tensor, map_height: int, map_width: int
) -> Tensor:
    """``(K, k, k, T_r, T_c)`` rows of a flattened bin-major ``(B*Hm*Wm*k*k, D)`` table read by
    bin (i, j) of each RoI at every (row tap, column tap) pair.

    ``batch_index`` is ``(K,)``; ``rows`` ``(K, k, T_r)`` pixel rows read by bin row i and
    ``cols`` ``(K, k, T_c)`` pixel columns read by bin column j, int64 in the table's range.
    """
    k, row_taps = rows.shape[1:]
    col_taps = cols.shape[-1]
    pixel = (batch_index.view(-1, 1, 1, 1, 1) * map_height + rows.view(-1, k, 1, row_taps, 1)) * (
        map_width
    ) + cols.view(-1, 1, k, 1, col_taps)  # (K, k, k, T_r, T_c)
    bin_index = torch.arange(k * k, device=rows.device).view(1, k, k, 1, 1)
    return pixel * (k * k) + bin_index


def _pooled(table: Tensor, index: Tensor, weights: Tensor, dtype: torch.dtype) -> Tensor:
    """``(K, D, k, k)`` bin values of dtype ``dtype`` from a ``(B, Hm, Wm, k*k, D)`` bin-major
    table, ``(K, k, k, T)`` table rows and ``(K, k, k, T)`` weights (table dtype)."""
    num_rois, k, _, taps = index.shape
    num_classes = table.shape[-1]
    sums = _weighted_rows(
        table.reshape(-1, num_classes), index.reshape(-1, taps), weights.reshape(-1, taps)
    )
    return sums.view(num_rois, k, k, num_classes).permute(0, 3, 1, 2).to(dtype)


def _bin_sums(
    features: Tensor, rois: Tensor, k: int, spatial_scale: float, mode: str, sampling_ratio: int
) -> tuple[Tensor, Tensor, Tensor]:
    """What each bin sums: a ``(B, Hm, Wm, k*k, D)`` bin-major table, the ``(K, k, k, T)`` int64
    rows of its flattened ``(B*Hm*Wm*k*k, D)`` form each bin reads and their ``(K, k, k, T)``
    weights (table dtype). Raises ValueError on arguments neither mode can pool with."""
    _check_arguments(features, rois, k, mode, sampling_ratio)
    if mode == "pool":
        return _exact_bin_sums(features, rois, k, spatial_scale)
    return _bilinear_bin_sums(features, rois, k, spatial_scale, sampling_ratio)


def _exact_bin_sums(
    features: Tensor, rois: Tensor, k: int, spatial_scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. (1) average over integer-pixel bins, from a float64 summed-area table: each bin sums
    its four table corners with signs (+, -, -, +) and weight ``1/area`` (0 for a bin with no
    in-map pixel)."""
    height, width = features.shape[-2:]
    coords = rois[:, 1:].detach().to(torch.float64)
    scaled = torch.floor(coords + 0.5) * spatial_scale  # (K, 4) x1, y1, x2, y2 in feature cells
    x0, y0, x1, y1 = scaled.unbind(dim=1)
    row_start, row_end = _integer_bin_edges(y0, y1, k, height)  # (K, k) each
    col_start, col_end = _integer_bin_edges(x0, x1, k, width)
    rows = torch.stack((row_start, row_end), dim=-1)  # (K, k, 2)
    cols = torch.stack((col_start, col_end), dim=-1)
    corners = _table_rows(rois[:, 0].to(torch.int64), rows, cols, height + 1, width + 1)
    area = (row_end - row_start).view(-1, k, 1) * (col_end - col_start).view(-1, 1, k)
    inverse_area = torch.where(area > 0, 1.0 / area.clamp(min=1).to(torch.float64), 0.0)
    # S(start, start) - S(start, end) - S(end, start) + S(end, end), the corners' tap order.
    weights = torch.stack((inverse_area, -inverse_area, -inverse_area, inverse_area), dim=-1)
    return _summed_area_table(features, k), corners.flatten(-2), weights


def _eager() -> bool:
    """Not exporting, tracing or compiling (where only plain operations may run)."""
    return not (
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )


def _summed_area_table(features: Tensor, k: int) -> Tensor:
    """``(B, k*k*D, H, W) -> (B, H+1, W+1, k*k, D)`` float64 bin-major summed-area table:
    ``table[b, y, x]`` is the sum of rows ``< y`` and columns ``< x``, so row and column 0 are
    zeros and every clamped bin edge in ``[0, H]`` / ``[0, W]`` indexes it directly.

    float64 so that differences of large prefix sums keep float32 accuracy on large maps. While
    training eagerly, :class:`_SummedAreaTable` gives its gradient in fewer operations than
    autograd through the cumulative sums.
    """
    if features.requires_grad and torch.is_grad_enabled() and _eager():
        return _SummedAreaTable.apply(features, k)
    return _prefix_sums(features, k)


def _prefix_sums(features: Tensor, k: int) -> Tensor:
    """The plain operations of :func:`_summed_area_table` (autograd can differentiate them)."""
    bin_major = _bin_major(features, k)
    batch, height, width, bins, num_classes = bin_major.shape
    table = bin_major.new_zeros(
        (batch, height + 1, width + 1, bins, num_classes), dtype=torch.float64
    )
    # One converting copy into a contiguous table, then cumulative sums in place: five times
    # faster than cumsum(dtype=float64) over the permuted maps and concatenating the zeros.
    table[:, 1:, 1:] = bin_major
    return table.cumsum_(dim=1).cumsum_(dim=2)


class _SummedAreaTable(torch.autograd.Function):
    """:func:`_summed_area_table` with a hand-written backward pass: feature pixel (y, x) feeds
    the table entries (y', x') with y' > y and x' > x, so its gradient sums those, the total
    minus the inclusive prefix sum along each axis (half autograd's time through the cumsums)."""

    @staticmethod
    def forward(features: Tensor, k: int) -> Tensor:  # type: ignore[override]
        return _prefix_sums(features, k)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        features, _ = inputs
        ctx.features_shape = features.shape
        ctx.features_dtype = features.dtype

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        batch, channels, height, width = ctx.features_shape
        for axis, size in ((1, height), (2, width)):
            prefix = grad.cumsum(dim=axis)
            grad = prefix.narrow(axis, size, 1) - prefix.narrow(axis, 0, size)
        features_grad = grad.permute(0, 4, 3, 1, 2).reshape(batch, channels, height, width)
        return features_grad.to(ctx.features_dtype), None


def _integer_bin_edges(start: Tensor, end: Tensor, k: int, size: int) -> tuple[Tensor, Tensor]:
    """``(K, k)`` first and one-past-last pixel of each bin along one axis, clamped to [0, size].

    ``start``/``end`` are ``(K,)`` float64 RoI edges in feature cells; same arithmetic order
    as the original layer (``i * bin_size + start``) so edge cases round the same way.
    """
    bin_size = ((end - start).clamp(min=MIN_ROI_SIZE) / k).unsqueeze(1)  # (K, 1)
    index = torch.arange(k, dtype=torch.float64, device=start.device)
    first = torch.floor(index * bin_size + start.unsqueeze(1))
    last = torch.ceil((index + 1) * bin_size + start.unsqueeze(1))
    first = first.clamp(min=0, max=size).to(torch.int64)
    last = last.clamp(min=0, max=size).to(torch.int64)
    return first, last


def _bilinear_bin_sums(
    features: Tensor, rois: Tensor, k: int, spatial_scale: float, sampling_ratio: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Average of ``sampling_ratio**2`` bilinear samples per bin (RoIAlign, aligned=True): each
    bin sums the ``(2s)**2`` map pixels its samples' taps read, with the product of the row and
    column tap weights over ``s**2``."""
    height, width = features.shape[-2:]
    coords = rois[:, 1:].detach().to(torch.float64) * spatial_scale - 0.5
    x0, y0, x1, y1 = coords.unbind(dim=1)
    rows, row_weights = _bilinear_taps(y0, y1, k, sampling_ratio, height)  # (K, k, 2s)
    cols, col_weights = _bilinear_taps(x0, x1, k, sampling_ratio, width)
    taps = _table_rows(rois[:, 0].to(torch.int64), rows, cols, height, width)
    weights = row_weights.view(-1, k, 1, rows.shape[-1], 1) * col_weights.view(
        -1, 1, k, 1, cols.shape[-1]
    )  # (K, k, k, 2s, 2s)
    weights = (weights / (sampling_ratio * sampling_ratio)).to(features.dtype)
    return _bin_major(features, k), taps.flatten(-2), weights.flatten(-2)


def _bilinear_taps(
    start: Tensor, end: Tensor, k: int, sampling_ratio: int, size: int
) -> tuple[Tensor, Tensor]:
    """Pixel indices and weights of the bilinear taps of each bin's samples along one axis.

    ``start``/``end`` are ``(K,)`` float64 RoI edges in (half-pixel-shifted) feature
    coordinates. Returns ``(K, k, 2*sampling_ratio)`` int64 indices and float64 weights: for
    sample ``s`` of bin ``i``, taps ``2s`` (low pixel) and ``2s+1`` (high pixel). Samples outside
    ``[-1, size]`` get weight 0 on both taps.
    """
    bin_size = ((end - start) / k).view(-1, 1, 1)  # (K, 1, 1)
    bin_index = torch.arange(k, dtype=torch.float64, device=start.device).view(1, k, 1)
    sample_index = torch.arange(sampling_ratio, dtype=torch.float64, device=start.device)
    point = (
        start.view(-1, 1, 1)
        + bin_index * bin_size
        + (sample_index + 0.5).view(1, 1, -1) * bin_size / sampling_ratio
    )  # (K, k, s)
    inside = ((point >= -1) & (point <= size)).to(torch.float64)
    point = point.clamp(min=0)
    low = torch.floor(point)
    at_last = low >= size - 1
    low = torch.where(at_last, torch.full_like(low, size - 1), low)
    high = torch.where(at_last, low, low + 1)
    frac = torch.where(at_last, torch.zeros_like(point), point - low)
    indices = torch.stack((low, high), dim=-1).to(torch.int64).flatten(-2)  # (K, k, 2s)
    weights = (torch.stack((1 - frac, frac), dim=-1) * inside.unsqueeze(-1)).flatten(-2)
    return indices, weights


def _max_of_samples(
    features: Tensor, rois: Tensor, k: int, spatial_scale: float, sampling_ratio: int
) -> Tensor:
    """Mode ``"align_max"``: ``(K, D, k, k)``, each bin the maximum of its ``sampling_ratio**2``
    bilinear samples (module docstring). Each sample is a weighted sum of its four taps' rows
    of the bin-major table (:func:`_weighted_rows`, so the backward pass skips the samples the
    maximum did not choose)."""
    height, width = features.shape[-2:]
    num_rois, num_classes = rois.shape[0], features.shape[1] // (k * k)
    samples = sampling_ratio * sampling_ratio
    coords = rois[:, 1:].detach().to(torch.float64) * spatial_scale
    x0, y0, x1, y1 = coords.unbind(dim=1)
    rows, row_weights = _zero_padded_taps(y0, y1, k, sampling_ratio, height)  # (K, k, s, 2)
    cols, col_weights = _zero_padded_taps(x0, x1, k, sampling_ratio, width)
    taps = _table_rows(
        rois[:, 0].to(torch.int64), rows.flatten(-2), cols.flatten(-2), height, width
    )
    weights = row_weights.view(-1, k, 1, 2 * sampling_ratio, 1) * col_weights.view(
        -1, 1, k, 1, 2 * sampling_ratio
    )  # (K, k, k, 2s, 2s), tap (2 s_y + a, 2 s_x + b)
    # (K, k, k, s_y, a, s_x, b) -> (K, k, k, s_y, s_x, a, b): one sample's four taps together.
    taps = taps.view(-1, k, k, sampling_ratio, 2, sampling_ratio, 2).transpose(4, 5)
    weights = weights.view(-1, k, k, sampling_ratio, 2, sampling_ratio, 2).transpose(4, 5)
    values = _weighted_rows(
        _bin_major(features, k).reshape(-1, num_classes),
        taps.reshape(-1, 4),
        weights.reshape(-1, 4).to(features.dtype),
    )  # (K * k * k * s², D)
    # max(dim) keeps the first maximum, as the kernel's strict ">", and sends the gradient there.
    best = values.view(num_rois, k, k, samples, num_classes).max(dim=3).values  # (K, k, k, D)
    return best.permute(0, 3, 1, 2).to(features.dtype)


def _zero_padded_taps(
    start: Tensor, end: Tensor, k: int, sampling_ratio: int, size: int
) -> tuple[Tensor, Tensor]:
    """Pixel indices and weights of the two bilinear taps of each sample along one axis, for
    ``"align_max"``: ``(K, k, s, 2)`` int64 indices ``floor(p)``, ``floor(p) + 1`` and float64
    weights ``1 - frac``, ``frac``; a tap outside ``[0, size - 1]`` gets weight 0 (its index is
    clamped into the map only so that it can be gathered).

    ``start``/``end`` are ``(K,)`` float64 RoI edges in feature cells; the sample positions follow
    the kernel's order of operations, ``start + bin * (i + (1 / s) * (p + 0.5))``.
    """
    bin_size = ((end - start).clamp(min=0) / k).view(-1, 1, 1)  # (K, 1, 1)
    bin_index = torch.arange(k, dtype=torch.float64, device=start.device).view(1, k, 1)
    sample_index = torch.arange(sampling_ratio, dtype=torch.float64, device=start.device)
    offset = (1.0 / sampling_ratio) * (sample_index + 0.5)  # (s,)
    point = start.view(-1, 1, 1) + bin_size * (bin_index + offset)  # (K, k, s)
    low = torch.floor(point)
    frac = point - low
    taps = torch.stack((low, low + 1), dim=-1)  # (K, k, s, 2)
    weights = torch.stack((1 - frac, frac), dim=-1) * ((taps >= 0) & (taps <= size - 1))
    return taps.clamp(min=0, max=size - 1).to(torch.int64), weights
