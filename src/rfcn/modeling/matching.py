"""Assigning anchors / RoIs to ground-truth boxes, and sampling a balanced mini-batch of them."""

from __future__ import annotations

import torch
from torch import Tensor

# Values of a match vector besides ground-truth indices (>= 0).
BACKGROUND = -1
IGNORE = -2


class Matcher:
    """Match each candidate to the ground-truth box it overlaps most.

    A candidate whose best IoU is ``>= fg_iou`` is foreground (matched to that box), one in
    ``[bg_iou_low, bg_iou_high)`` is background, anything else is ignored. With
    ``allow_low_quality``, every ground-truth box also claims the candidates that overlap it best
    (ties included), even below ``fg_iou`` (Faster R-CNN §3.1.2, condition (i) for the RPN).

    Args:
        fg_iou: foreground threshold (RPN 0.7, head 0.5).
        bg_iou_high: background upper bound, exclusive (RPN 0.3, head 0.5).
        bg_iou_low: background lower bound, inclusive (head: ``roi_bg_iou_low``; 0 keeps all).
        allow_low_quality: keep each box's best candidates as foreground.
    """

    def __init__(
        self,
        fg_iou: float,
        bg_iou_high: float,
        bg_iou_low: float = 0.0,
        allow_low_quality: bool = False,
    ) -> None:
        if not bg_iou_low <= bg_iou_high <= fg_iou:
            raise ValueError(
                f"need bg_iou_low <= bg_iou_high <= fg_iou, got {bg_iou_low}, {bg_iou_high}, "
                f"{fg_iou}"
            )
        self.fg_iou = fg_iou
        self.bg_iou_high = bg_iou_high
        self.bg_iou_low = bg_iou_low
        self.allow_low_quality = allow_low_quality

    def __call__(self, iou: Tensor) -> Tensor:
        """``iou (G, N)`` (ground truth x candidates) -> ``(N,)`` int64 matches.

        Each entry is the matched ground-truth index, :data:`BACKGROUND` or :data:`IGNORE`.
        With no ground truth (``G == 0``) every candidate with ``bg_iou_low <= 0`` is background.
        """
        num_candidates = iou.shape[1]
        if iou.shape[0] == 0:
            fill = BACKGROUND if self.bg_iou_low <= 0 else IGNORE
            return torch.full((num_candidates,), fill, dtype=torch.int64, device=iou.device)
        best_iou, best_gt = iou.max(dim=0)  # (N,), (N,)
        is_background = (best_iou >= self.bg_iou_low) & (best_iou < self.bg_iou_high)
        is_ignored = (best_iou < self.bg_iou_low) | (
            (best_iou >= self.bg_iou_high) & (best_iou < self.fg_iou)
        )
        matches = torch.where(is_background, BACKGROUND, best_gt)
        matches = torch.where(is_ignored, IGNORE, matches)
        if self.allow_low_quality:
            best_per_gt = iou.max(dim=1, keepdim=True).values  # (G, 1)
            # A box with no overlap at all claims nothing (as torchvision and detectron2).
            is_best = (iou == best_per_gt) & (best_per_gt > 0)  # (G, N)
            claimed = is_best.any(dim=0)  # (N,)
            # A claimed candidate is matched to the box it overlaps most, as the others.
            matches = torch.where(claimed, best_gt, matches)
        return matches


def sample_balanced(
    matches: Tensor, batch_size: int, positive_fraction: float
) -> tuple[Tensor, Tensor]:
    """Random foreground and background indices for one image's mini-batch.

    Takes at most ``round(batch_size * positive_fraction)`` foreground candidates
    (``matches >= 0``) and fills the rest of ``batch_size`` with background ones
    (``matches == BACKGROUND``); ignored candidates are never taken. Uses the global torch RNG.

    Returns:
        ``(positive_indices (P,), negative_indices (Q,))``, int64, ``P + Q <= batch_size``.
    """
    positive = torch.nonzero(matches >= 0).flatten()
    negative = torch.nonzero(matches == BACKGROUND).flatten()
    num_positive = min(positive.numel(), round(batch_size * positive_fraction))
    num_negative = min(negative.numel(), batch_size - num_positive)
    pick_positive = torch.randperm(positive.numel(), device=matches.device)[:num_positive]
    pick_negative = torch.randperm(negative.numel(), device=matches.device)[:num_negative]
    return positive[pick_positive], negative[pick_negative]
