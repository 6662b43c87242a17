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
that differences of large prefix sums keep float32 accuracy on large maps; the cost is one
O(B*C*H*W) table plus four O(K*D*k^2) gathers whatever the RoI size. In training the gradient
is computed directly (:class:`_ExactPool`): ``grad / area`` scattered onto the four corners of
each bin, then summed back through the table, the same numbers autograd would give through
the gathers and cumulative sums, with far fewer operations.

Mode ``"align"`` — bilinear, as torchvision's ``ps_roi_align`` / RoIAlign ``aligned=True``:
RoI start/end ``v * spatial_scale - 0.5`` (no rounding, no minimum size); each bin averages
``sampling_ratio**2`` bilinear samples at the centres of a regular sub-grid. A sample whose
point lies outside ``[-1, H] x [-1, W]`` contributes 0 but still counts in the average; a point
inside that band is clamped to the map (coordinates below 0 become 0, at or past the last
row/column use that row/column), torchvision's convention.

The pure-PyTorch code computes coordinates in float64, so bin edges do not depend on the feature
dtype. No gradient flows to ``rois``.

Fast path: in eager mode on CPU or CUDA with float32/float64 features, ``"align"`` calls
torchvision's compiled ``ps_roi_align``: same convention, same numbers (the tests check forward
and backward against the pure-PyTorch path; it computes coordinates in the features' dtype, which
moves float32 results by rounding error only), far less memory than gathering every sample.
Its CPU kernels are single-threaded, so the RoIs are split over threads, in forward and backward.

In training, both modes' backward passes skip the RoIs whose gradient is all zero: with OHEM
(paper §2) only the B selected of the N pooled RoIs carry one, so the backward cost follows B.
While exporting, tracing or compiling, and on other devices, the pure-PyTorch path runs.
torchvision's ``ps_roi_pool`` is never used: it rounds in feature coordinates, forces a minimum
size of one cell and clamps bin ends to ``H - 1`` in forward (so the last row and column are
never pooled), none of which is Eq. (1) with the original layer's arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
import torchvision  # noqa: F401  (registers the torch.ops.torchvision kernels)
from torch import Tensor, nn

MODES = ("pool", "align")

# The original layer's lower bound on the RoI size in feature cells (avoids empty RoIs).
MIN_ROI_SIZE = 0.1
# Fewer RoIs than this per thread are not worth starting threads for (a few hundred
# microseconds against about 40 per RoI of 21 classes at k = 7 on one core).
_MIN_ROIS_PER_THREAD = 64

_Result = TypeVar("_Result")


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
        mode: ``"pool"`` (exact Eq. 1 average) or ``"align"`` (bilinear samples).
        sampling_ratio: samples per bin side in ``"align"`` mode (>= 1); unused by ``"pool"``.

    Returns:
        ``(K, D, k, k)`` pooled scores, dtype of ``features``.
    """
    k = output_size
    _check_arguments(features, rois, k, mode, sampling_ratio)
    if mode == "pool":
        return _pool_exact(features, rois, k, spatial_scale)
    if _torchvision_align_applies(features):
        return _torchvision_align(
            features, rois.detach().to(features.dtype), k, spatial_scale, sampling_ratio
        )
    return _pool_bilinear(features, rois, k, spatial_scale, sampling_ratio)


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
    if mode == "align" and sampling_ratio < 1:
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


def _torchvision_align_applies(features: Tensor) -> bool:
    """Whether torchvision's compiled ``ps_roi_align`` can stand in for :func:`_pool_bilinear`.

    Not while exporting, tracing or compiling (the op has no ONNX form), and only where
    torchvision has kernels for the device and dtype.
    """
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if torch.onnx.is_in_onnx_export():
        return False
    return features.device.type in ("cpu", "cuda") and features.dtype in (
        torch.float32,
        torch.float64,
    )


def _torchvision_align(
    features: Tensor, rois: Tensor, k: int, spatial_scale: float, sampling_ratio: int
) -> Tensor:
    """torchvision's ``ps_roi_align`` kernels, on the CPU over several threads.

    Its CPU kernels run on one core, whatever torch's thread count, so at 2000 RoIs they are the
    part of an iteration that grows with the RoIs. They release the GIL, so chunks of the RoIs
    run at once in a thread pool, one per torch thread (:func:`_over_rois_in_threads`); with a
    gradient, :class:`_TorchvisionAlign` does the same in backward.
    """
    if torch.is_grad_enabled() and features.requires_grad:
        return _TorchvisionAlign.apply(features, rois, k, spatial_scale, sampling_ratio)[0]
    return _align_forward(features, rois, k, spatial_scale, sampling_ratio)[0]


def _align_forward(
    features: Tensor, rois: Tensor, k: int, spatial_scale: float, sampling_ratio: int
) -> tuple[Tensor, Tensor]:
    """``(K, D, k, k)`` pooled scores and the kernel's ``(K, D, k, k)`` channel of each."""

    def pool(chunk: Tensor) -> tuple[Tensor, Tensor]:
        # Grad mode is per thread: the op must not record a graph in a worker thread.
        with torch.no_grad():
            return torch.ops.torchvision.ps_roi_align(
                features, chunk, spatial_scale, k, k, sampling_ratio
            )

    pooled, channels = zip(*_over_rois_in_threads(pool, rois, features.device), strict=True)
    return torch.cat(pooled), torch.cat(channels)


def _over_rois_in_threads(
    function: Callable[[Tensor], _Result], rois: Tensor, device: torch.device
) -> list[_Result]:
    """``function`` of each chunk of ``rois``, one chunk per torch thread on the CPU (one call
    elsewhere, or for too few RoIs to be worth the threads)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or rois.shape[0] < threads * _MIN_ROIS_PER_THREAD:
        return [function(rois)]
    with ThreadPoolExecutor(threads) as executor:
        return list(executor.map(function, rois.tensor_split(threads)))


def _rois_with_gradient(grad: Tensor) -> Tensor:
    """``(K',)`` indices of the RoIs whose ``(K, D, k, k)`` output gradient is not all zero.

    With OHEM (paper §2) the loss reads only the B selected RoIs of the N pooled, so every other
    RoI's gradient is exactly zero and its backward work can be skipped without changing a sum.
    """
    return grad.flatten(1).ne(0).any(dim=1).nonzero().squeeze(1)


class _TorchvisionAlign(torch.autograd.Function):
    """:func:`_align_forward` with torchvision's backward kernel run only for the RoIs with a
    gradient, over chunks of them in threads; the chunks' feature gradients are summed."""

    @staticmethod
    def forward(  # type: ignore[override]
        features: Tensor, rois: Tensor, k: int, spatial_scale: float, sampling_ratio: int
    ) -> tuple[Tensor, Tensor]:
        return _align_forward(features, rois, k, spatial_scale, sampling_ratio)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        features, rois, k, spatial_scale, sampling_ratio = inputs
        ctx.save_for_backward(rois, output[1])
        ctx.mark_non_differentiable(output[1])
        ctx.arguments = (spatial_scale, k, k, sampling_ratio, *features.shape)

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _: Tensor) -> tuple[Tensor, None, None, None, None]:  # type: ignore[override]
        rois, channels = ctx.saved_tensors
        rows = _rois_with_gradient(grad)
        grad, rois, channels = grad[rows], rois[rows], channels[rows]

        def unpool(chunk: Tensor) -> Tensor:
            with torch.no_grad():
                return torch.ops.torchvision._ps_roi_align_backward(
                    grad[chunk], rois[chunk], channels[chunk], *ctx.arguments
                )

        index = torch.arange(len(rows), device=rows.device)
        partial = _over_rois_in_threads(unpool, index, grad.device)
        return torch.stack(partial).sum(dim=0), None, None, None, None


def _bin_major(features: Tensor, k: int) -> Tensor:
    """``(B, k*k*D, H, W) -> (B, H, W, k*k, D)``: the D class scores read by one bin at one pixel
    become one contiguous row, so each RoI gathers whole rows instead of scattered scalars."""
    batch, channels, height, width = features.shape
    # Class-major channels: (B, C, H, W) -> (B, D, k*k, H, W).
    by_class = features.reshape(batch, channels // (k * k), k * k, height, width)
    return by_class.permute(0, 3, 4, 2, 1)


def _sum_separable_taps(
    table: Tensor,
    batch_index: Tensor,
    rows: Tensor,
    row_weights: Tensor,
    cols: Tensor,
    col_weights: Tensor,
) -> Tensor:
    """Weighted sum of table rows at every (row tap, column tap) pair of every bin.

    Args:
        table: ``(B, Hm, Wm, k*k, D)`` bin-major maps.
        batch_index: ``(K,)`` int64 image of each RoI.
        rows, row_weights: ``(K, k, T)`` pixel rows read by bin row i and their weights.
        cols, col_weights: ``(K, k, T)`` pixel columns read by bin column j and their weights.

    Returns:
        ``(K, D, k, k)``: ``out[r, c, i, j] = sum_{p,q} row_weights[r, i, p] *
        col_weights[r, j, q] * table[b_r, rows[r, i, p], cols[r, j, q], i*k + j, c]``.
    """
    _, map_height, map_width, bins, num_classes = table.shape
    num_rois, k, taps = rows.shape
    pixel = (batch_index.view(-1, 1, 1, 1, 1) * map_height + rows.view(-1, k, 1, taps, 1)) * (
        map_width
    ) + cols.view(-1, 1, k, 1, taps)  # (K, k, k, T, T)
    bin_index = torch.arange(bins, device=table.device).view(1, k, k, 1, 1)
    table_row = (pixel * bins + bin_index).reshape(-1)
    values = table.reshape(-1, num_classes).index_select(0, table_row)
    values = values.view(num_rois, k, k, taps * taps, num_classes)
    weights = row_weights.view(-1, k, 1, taps, 1) * col_weights.view(-1, 1, k, 1, taps)
    weights = weights.reshape(num_rois, k, k, taps * taps).to(table.dtype)
    return torch.einsum("rijt,rijtd->rdij", weights, values)


def _pool_exact(features: Tensor, rois: Tensor, k: int, spatial_scale: float) -> Tensor:
    """Eq. (1) average over integer-pixel bins, from a float64 summed-area table.

    While training (a gradient is wanted, eagerly) :class:`_ExactPool` computes the gradient
    directly, which costs far fewer operations than autograd through the gather and the table;
    otherwise (inference, export) the same forward runs as plain operations.
    """
    height, width = features.shape[-2:]
    coords = rois[:, 1:].detach().to(torch.float64)
    scaled = torch.floor(coords + 0.5) * spatial_scale  # (K, 4) x1, y1, x2, y2 in feature cells
    x0, y0, x1, y1 = scaled.unbind(dim=1)
    row_start, row_end = _integer_bin_edges(y0, y1, k, height)  # (K, k) each
    col_start, col_end = _integer_bin_edges(x0, x1, k, width)
    corners = _corner_rows(
        rois[:, 0].to(torch.int64), row_start, row_end, col_start, col_end, height, width
    )  # (4, K, k, k)
    area = (row_end - row_start).view(-1, k, 1) * (col_end - col_start).view(-1, 1, k)
    inverse_area = torch.where(area > 0, 1.0 / area.clamp(min=1).to(torch.float64), 0.0)
    if features.requires_grad and torch.is_grad_enabled() and _eager():
        return _ExactPool.apply(features, corners, inverse_area, k)
    return _pool_from_table(_summed_area_table(features, k), corners, inverse_area).to(
        features.dtype
    )


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

    float64 so that differences of large prefix sums keep float32 accuracy on large maps.
    """
    bin_major = _bin_major(features, k)
    batch, height, width, bins, num_classes = bin_major.shape
    table = bin_major.new_zeros(
        (batch, height + 1, width + 1, bins, num_classes), dtype=torch.float64
    )
    # One converting copy into a contiguous table, then cumulative sums in place: five times
    # faster than cumsum(dtype=float64) over the permuted maps and concatenating the zeros.
    table[:, 1:, 1:] = bin_major
    return table.cumsum_(dim=1).cumsum_(dim=2)


def _corner_rows(
    batch_index: Tensor,
    row_start: Tensor,
    row_end: Tensor,
    col_start: Tensor,
    col_end: Tensor,
    height: int,
    width: int,
) -> Tensor:
    """``(4, K, k, k)`` rows of the flattened table ``(B*(H+1)*(W+1)*k*k, D)`` holding each
    bin's four corners, in the order (start, start), (start, end), (end, start), (end, end)
    (row, column). Edges are ``(K, k)`` int64 in ``[0, H]`` / ``[0, W]``."""
    k = row_start.shape[1]
    rows = torch.stack((row_start, row_end))  # (2, K, k)
    cols = torch.stack((col_start, col_end))
    pixel = (batch_index.view(1, 1, -1, 1, 1) * (height + 1) + rows.view(2, 1, -1, k, 1)) * (
        width + 1
    ) + cols.view(1, 2, -1, 1, k)  # (2, 2, K, k, k)
    bin_index = torch.arange(k * k, device=batch_index.device).view(1, 1, 1, k, k)
    return (pixel * (k * k) + bin_index).flatten(0, 1)


def _pool_from_table(table: Tensor, corners: Tensor, inverse_area: Tensor) -> Tensor:
    """``(K, D, k, k)`` float64 bin averages from the table, the corners and ``1/area``
    (``(K, k, k)``, 0 for bins with no in-map pixel)."""
    num_classes = table.shape[-1]
    values = table.reshape(-1, num_classes).index_select(0, corners.reshape(-1))
    values = values.view(*corners.shape, num_classes)  # (4, K, k, k, D)
    bin_sum = values[3] - values[1] - values[2] + values[0]
    return (bin_sum * inverse_area.unsqueeze(-1)).permute(0, 3, 1, 2)


class _ExactPool(torch.autograd.Function):
    """ "pool" mode with a hand-written backward pass (the forward is :func:`_pool_from_table`).

    Each output is ``sum_corners sign * table[corner] / area``, and the table is a double
    cumulative sum of the features, so the features' gradient is the signed scatter of
    ``grad / area`` onto the corners, then summed back over the table entries each feature
    pixel feeds (those below and to the right of it).
    """

    @staticmethod
    def forward(features: Tensor, corners: Tensor, inverse_area: Tensor, k: int) -> Tensor:  # type: ignore[override]
        table = _summed_area_table(features, k)
        return _pool_from_table(table, corners, inverse_area).to(features.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        features, corners, inverse_area, k = inputs
        ctx.save_for_backward(corners, inverse_area)
        ctx.k = k
        ctx.features_shape = features.shape
        ctx.features_dtype = features.dtype

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        corners, inverse_area = ctx.saved_tensors
        rows = _rois_with_gradient(grad)
        grad, corners, inverse_area = grad[rows], corners[:, rows], inverse_area[rows]
        k = ctx.k
        batch, channels, height, width = ctx.features_shape
        num_classes = channels // (k * k)
        # (K k k, D) float64 gradient of each bin's sum, rows in the order of the corners'.
        per_bin = (grad.permute(0, 2, 3, 1) * inverse_area.unsqueeze(-1)).contiguous()
        per_bin = per_bin.view(-1, num_classes)
        table_grad = per_bin.new_zeros(batch * (height + 1) * (width + 1) * k * k, num_classes)
        # A bin sum is S(end, end) - S(end, start) - S(start, end) + S(start, start) (the corner
        # order of _corner_rows). A negated copy, not alpha=-1: index_add_ is several times
        # slower with alpha != 1 on the CPU.
        negated = -per_bin
        for corner, source in zip(corners, (per_bin, negated, negated, per_bin), strict=True):
            table_grad.index_add_(0, corner.reshape(-1), source)
        table_grad = table_grad.view(batch, height + 1, width + 1, k * k, num_classes)
        # Feature pixel (y, x) feeds the table entries (y', x') with y' > y and x' > x, so its
        # gradient sums those: total minus the inclusive prefix sum, along each axis.
        for axis, size in ((1, height), (2, width)):
            prefix = table_grad.cumsum(dim=axis)
            table_grad = prefix.narrow(axis, size, 1) - prefix.narrow(axis, 0, size)
        features_grad = table_grad.permute(0, 4, 3, 1, 2).reshape(batch, channels, height, width)
        return features_grad.to(ctx.features_dtype), None, None, None


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


def _pool_bilinear(
    features: Tensor, rois: Tensor, k: int, spatial_scale: float, sampling_ratio: int
) -> Tensor:
    """Average of ``sampling_ratio**2`` bilinear samples per bin (RoIAlign, aligned=True)."""
    height, width = features.shape[-2:]
    coords = rois[:, 1:].detach().to(torch.float64) * spatial_scale - 0.5
    x0, y0, x1, y1 = coords.unbind(dim=1)
    rows, row_weights = _bilinear_taps(y0, y1, k, sampling_ratio, height)  # (K, k, 2s)
    cols, col_weights = _bilinear_taps(x0, x1, k, sampling_ratio, width)
    sample_sum = _sum_separable_taps(
        _bin_major(features, k), rois[:, 0].to(torch.int64), rows, row_weights, cols, col_weights
    )
    return sample_sum / (sampling_ratio * sampling_ratio)


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
