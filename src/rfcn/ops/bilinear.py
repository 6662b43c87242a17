"""Bilinear reads of feature maps at pixel coordinates, through ``grid_sample``.

One compiled kernel on CPU and CUDA (forward and backward, for the maps and the coordinates),
and a single ``GridSample`` node in ONNX. The deformable operators
(:mod:`rfcn.ops.deform_ps_roi_pool`, :mod:`rfcn.ops.deform_conv`) read their samples here.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional


def sample_bilinear(maps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear samples of ``maps (N, C, H, W)`` at the points ``(x, y)``.

    Args:
        maps: ``(N, C, H, W)``.
        x, y: pixel coordinates (pixel centres at integers) that broadcast to ``(N, P, Q, ...)``,
            read in the dtype of ``maps``, or float32 for lower precisions (bf16 would move a
            point by a tenth of a pixel at 40). They are broadcast only after their conversion
            to the sampler's grid, so pass them unexpanded.

    Returns:
        ``(N, C, P, Q, ...)``, dtype of ``maps``: each point reads its four neighbours
        ``floor(.)`` and ``floor(.) + 1`` in each axis, weighted by the distances; a neighbour
        outside the map reads 0 (so a point at or beyond ``-1`` or ``size`` reads 0).
    """
    height, width = maps.shape[-2:]
    dtype = torch.promote_types(maps.dtype, torch.float32)
    # grid_sample's align_corners=False convention: -1 and 1 are the outer edges of the map,
    # so pixel x sits at (2x + 1) / W - 1; this keeps W = 1 (and H = 1) well defined.
    grid_x = (2 * x.to(dtype) + 1) / width - 1
    grid_y = (2 * y.to(dtype) + 1) / height - 1
    shape = torch.broadcast_shapes(grid_x.shape, grid_y.shape)
    grid = torch.stack((grid_x.expand(shape), grid_y.expand(shape)), dim=-1)  # (N, P, Q, .., 2)
    sampled = functional.grid_sample(
        maps.to(dtype),
        grid.flatten(2, -2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (N, C, P, Q * ...)
    return sampled.unflatten(-1, shape[2:]).to(maps.dtype)
