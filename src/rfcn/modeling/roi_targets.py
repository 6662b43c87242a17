"""Training RoIs of the head and their targets (paper §2 "Training").

Proposals are detached (approximate joint training) and the ground-truth boxes appended to them
(py-faster-rcnn's proposal target layer). A RoI is positive at IoU >= 0.5 with a ground-truth box,
background at IoU in ``[bg_iou_low, 0.5)``, ignored below ``bg_iou_low``. With OHEM every
non-ignored RoI is kept (all N are scored, then the hardest selected); without it a
``batch_per_image`` mini-batch at ``positive_fraction`` is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rfcn.modeling.matching import IGNORE, Matcher, sample_balanced
from rfcn.ops.box_coder import BoxCoder
from rfcn.ops.boxes import box_iou


@dataclass
class RoiTargets:
    """The head's training RoIs of a batch, image by image.

    Attributes:
        rois: ``(K, 5)`` ``[image index, x1, y1, x2, y2]`` in network-input pixels.
        labels: ``(K,)`` int64 in 0..C (0 background).
        target_deltas: ``(K, 4)`` encoded ground truth of positives, zeros elsewhere.
        counts: RoIs per image (image b owns the next ``counts[b]`` rows).
    """

    rois: Tensor
    labels: Tensor
    target_deltas: Tensor
    counts: list[int]


def assign_roi_targets(
    proposals: list[Tensor],
    gt_boxes: list[Tensor],
    gt_labels: list[Tensor],
    matcher: Matcher,
    box_coder: BoxCoder,
    sampling: tuple[int, float] | None,
) -> RoiTargets:
    """Label the proposals ``[(P_b, 4)]`` against ``gt_boxes [(G_b, 4)]`` / ``gt_labels [(G_b,)]``.

    ``sampling`` is ``(batch_per_image, positive_fraction)``, or None to keep every
    non-ignored RoI (OHEM).
    """
    rois, labels, targets, counts = [], [], [], []
    for image, (boxes, classes, candidates) in enumerate(
        zip(gt_boxes, gt_labels, proposals, strict=True)
    ):
        candidates = torch.cat((candidates.detach(), boxes.to(candidates.dtype)))  # (P + G, 4)
        matches = matcher(box_iou(boxes, candidates))  # (P + G,)
        if sampling is None:
            picked = torch.nonzero(matches != IGNORE).flatten()
        else:
            picked = torch.cat(sample_balanced(matches, *sampling))
        picked_matches = matches[picked]
        positive = picked_matches >= 0
        image_labels = torch.zeros_like(picked_matches)
        image_targets = candidates.new_zeros(picked.numel(), 4)
        matched = picked_matches[positive]
        image_labels[positive] = classes[matched]
        image_targets[positive] = box_coder.encode(boxes[matched], candidates[picked][positive])
        image_column = candidates.new_full((picked.numel(), 1), image)
        rois.append(torch.cat((image_column, candidates[picked]), dim=1))
        labels.append(image_labels)
        targets.append(image_targets)
        counts.append(picked.numel())
    return RoiTargets(torch.cat(rois), torch.cat(labels), torch.cat(targets), counts)
