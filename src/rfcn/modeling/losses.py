"""Losses of the RPN and of the R-FCN head, and online hard example mining (paper §2 "Training").

Per-RoI losses are computed once for every RoI; OHEM is a pure selection over them
(:func:`ohem_select`), so hard examples cost no second forward pass (paper: "the backward pass
is performed over the selected examples only").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# The RPN's smooth-L1 transition point: py-faster-rcnn's sigma = 3. The head's is a setting
# (model.head_smooth_l1_beta).
RPN_SMOOTH_L1_BETA = 1.0 / 9.0


def smooth_l1(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    """Smooth-L1 summed over the last dimension: ``(N, 4)`` x ``(N, 4)`` -> ``(N,)``."""
    return F.smooth_l1_loss(pred, target, reduction="none", beta=beta).sum(dim=-1)


def rpn_losses(
    objectness: Tensor,
    labels: Tensor,
    pred_deltas: Tensor,
    target_deltas: Tensor,
) -> tuple[Tensor, Tensor]:
    """RPN losses over the sampled anchors of a batch (Faster R-CNN Eq. 1).

    Args:
        objectness: ``(S,)`` logits of the sampled anchors.
        labels: ``(S,)`` 1 for object, 0 for background.
        pred_deltas, target_deltas: ``(S, 4)``; only rows with label 1 contribute.

    Returns:
        ``(loss_cls, loss_box)``: binary cross-entropy averaged over the S anchors, and the
        positives' smooth-L1 (beta 1/9) summed and divided by S (the normalisation of
        torchvision; it balances the two terms as the paper's lambda = 10 with N_reg ~ 2400).
    """
    count = max(objectness.numel(), 1)
    loss_cls = F.binary_cross_entropy_with_logits(
        objectness, labels.to(objectness.dtype), reduction="sum"
    )
    positive = labels > 0
    loss_box = smooth_l1(pred_deltas[positive], target_deltas[positive], RPN_SMOOTH_L1_BETA).sum()
    return loss_cls / count, loss_box / count


def per_roi_losses(
    class_logits: Tensor,
    labels: Tensor,
    pred_deltas: Tensor,
    target_deltas: Tensor,
    box_beta: float,
) -> tuple[Tensor, Tensor]:
    """The head's loss of every RoI (paper Eq. 3 before averaging).

    Args:
        class_logits: ``(N, C + 1)`` voted logits.
        labels: ``(N,)`` int64 in 0..C (0 background).
        pred_deltas: ``(N, 4)`` deltas of the slot belonging to each RoI's label.
        target_deltas: ``(N, 4)``.
        box_beta: the smooth-L1 transition point; 1 is the original code's sigma = 1 (Fast
            R-CNN's smooth L1, Eq. 3 of that paper).

    Returns:
        ``(cls (N,), box (N,))``: cross-entropy, and smooth-L1 on foreground RoIs, zero on
        background ones (the paper's ``[c* > 0]``).
    """
    cls = F.cross_entropy(class_logits, labels, reduction="none")
    box = smooth_l1(pred_deltas, target_deltas, box_beta) * (labels > 0)
    return cls, box


def ohem_select(per_roi_losses: Tensor, batch: int) -> Tensor:
    """Indices of the ``batch`` largest losses of one image's ``(N,)`` RoIs (all if N <= batch).

    Ties are broken arbitrarily; the selected values are always the ``batch`` largest.
    The indices come in decreasing order of loss, int64, no gradient.
    """
    count = min(batch, per_roi_losses.numel())
    return torch.topk(per_roi_losses.detach(), count, sorted=True).indices


def head_losses(
    cls: Tensor, box: Tensor, selected: Tensor, box_weight: float
) -> tuple[Tensor, Tensor]:
    """Reduce per-RoI losses ``(N,)`` over the ``selected (S,)`` RoIs of the whole batch.

    Cross-entropy is averaged over the S RoIs and the box loss summed over them (only
    positives are non-zero) and divided by S: the original code's normalisation
    (softmax loss over valid labels; smooth-L1 with a fixed normaliser of B = 128 per image).
    Returns ``(loss_cls, box_weight * loss_box)``.
    """
    count = max(selected.numel(), 1)
    return cls[selected].sum() / count, box_weight * box[selected].sum() / count
