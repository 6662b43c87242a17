"""The box parameterisation of R-CNN (Girshick et al. 2014, appendix C), for the RPN and head.

A target box ``(x, y, w, h)`` (centre, size) relative to a reference box ``(xa, ya, wa, ha)`` is
``t = (wx (x - xa) / wa, wy (y - ya) / ha, ww log(w / wa), wh log(h / ha))``. The weights
``(wx, wy, ww, wh)`` play the role of py-faster-rcnn's target normalisation: ``(10, 10, 5, 5)``
equals its stds ``(0.1, 0.1, 0.2, 0.2)`` for the head, ``(1, 1, 1, 1)`` is the RPN's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# The largest log-scale a decoded box may take: a box at most 1000/16 times its reference
# (detectron2 and torchvision use the same bound), so exp() never overflows.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes as deltas from reference boxes and decode them back.

    Args:
        weights: ``(wx, wy, ww, wh)`` multipliers of the four deltas.
        scale_clamp: upper bound of the decoded ``dw, dh`` (after dividing by the weights).
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, targets: Tensor, references: Tensor) -> Tensor:
        """Deltas ``(N, 4)`` that turn ``references (N, 4)`` into ``targets (N, 4)``."""
        ref_w = references[:, 2] - references[:, 0]
        ref_h = references[:, 3] - references[:, 1]
        ref_x = references[:, 0] + 0.5 * ref_w
        ref_y = references[:, 1] + 0.5 * ref_h
        tgt_w = targets[:, 2] - targets[:, 0]
        tgt_h = targets[:, 3] - targets[:, 1]
        tgt_x = targets[:, 0] + 0.5 * tgt_w
        tgt_y = targets[:, 1] + 0.5 * tgt_h
        wx, wy, ww, wh = self.weights
        return torch.stack(
            (
                wx * (tgt_x - ref_x) / ref_w,
                wy * (tgt_y - ref_y) / ref_h,
                ww * torch.log(tgt_w / ref_w),
                wh * torch.log(tgt_h / ref_h),
            ),
            dim=1,
        )

    def decode(self, deltas: Tensor, references: Tensor) -> Tensor:
        """Boxes from ``deltas (N, ..., 4)`` applied to ``references (N, 4)``: ``(N, ..., 4)``.

        The middle dimensions (e.g. one set of deltas per class) share their row's reference box.
        Computed in the wider of the two dtypes, so half-precision deltas (autocast) still give
        float32 boxes for float32 references.
        """
        dtype = torch.promote_types(deltas.dtype, references.dtype)
        deltas, references = deltas.to(dtype), references.to(dtype)
        ref_w = references[:, 2] - references[:, 0]
        ref_h = references[:, 3] - references[:, 1]
        ref_x = references[:, 0] + 0.5 * ref_w
        ref_y = references[:, 1] + 0.5 * ref_h
        extra_dims = (1,) * (deltas.dim() - 2)
        ref_w, ref_h, ref_x, ref_y = (v.view(-1, *extra_dims) for v in (ref_w, ref_h, ref_x, ref_y))
        wx, wy, ww, wh = self.weights
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.scale_clamp)
        centre_x = dx * ref_w + ref_x
        centre_y = dy * ref_h + ref_y
        half_w = 0.5 * torch.exp(dw) * ref_w
        half_h = 0.5 * torch.exp(dh) * ref_h
        return torch.stack(
            (centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h), dim=-1
        )
