"""From the head's raw outputs to detections: softmax, decode, clip, per-class NMS, top-n."""

from __future__ import annotations

import torch
from torch import Tensor

from rfcn.ops.box_coder import BoxCoder
from rfcn.ops.boxes import batched_nms_top, clip_boxes, nonempty_boxes, vote_boxes


def class_boxes(box_deltas: Tensor, box_mode: str, num_classes: int) -> Tensor:
    """The deltas each foreground class uses: ``(K, M, 4)`` -> ``(K, C, 4)`` (a view).

    Class-agnostic modes share one 4-vector (the foreground slot of "agnostic8") across classes.
    """
    if box_mode == "class":
        return box_deltas
    foreground = box_deltas[:, -1:]  # (K, 1, 4): slot 0 of "agnostic", slot 1 of "agnostic8"
    return foreground.expand(-1, num_classes, 4)


def postprocess_detections(
    class_logits: Tensor,
    box_deltas: Tensor,
    proposals: list[Tensor],
    image_sizes: list[tuple[int, int]],
    box_coder: BoxCoder,
    box_mode: str,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
    box_voting_iou: float = 0.0,
) -> list[dict[str, Tensor]]:
    """Detections per image in network-input pixels.

    Args:
        class_logits: ``(K, C + 1)`` for the concatenated proposals of all images.
        box_deltas: ``(K, M, 4)``.
        proposals: ``[(K_b, 4)]``, ``sum K_b = K``, in network-input pixels.
        image_sizes: ``(h_b, w_b)`` to clip to.
        box_coder: the head's coder (weights 10, 10, 5, 5).
        box_mode: the head's box mode.
        score_thresh: class probabilities at or below this are dropped.
        nms_thresh: IoU of the per-class NMS (0.3 in the paper).
        detections_per_img: the best this many are kept per image.
        box_voting_iou: above 0, each kept box becomes the score-weighted mean of its class's
            boxes overlapping it by at least this IoU (:func:`rfcn.ops.boxes.vote_boxes`).

    Returns:
        ``[{"boxes": (N, 4), "labels": (N,) int64 in 1..C, "scores": (N,)}]``, scores decreasing.
    """
    num_classes = class_logits.shape[1] - 1
    probabilities = class_logits.float().softmax(dim=1)[:, 1:]  # (K, C) float32, no background
    deltas = class_boxes(box_deltas, box_mode, num_classes)  # (K, C, 4)
    detections = []
    start = 0
    for image_proposals, (height, width) in zip(proposals, image_sizes, strict=True):
        end = start + image_proposals.shape[0]
        boxes = box_coder.decode(deltas[start:end], image_proposals)  # (K_b, C, 4)
        boxes = clip_boxes(boxes, height, width).reshape(-1, 4)  # (K_b C, 4), class fastest
        scores = probabilities[start:end].reshape(-1)  # (K_b C,)
        labels = torch.arange(1, num_classes + 1, device=scores.device).repeat(end - start)
        keep = (scores > score_thresh) & nonempty_boxes(boxes, 0.0)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms_top(
            boxes.float(), scores.float(), labels, nms_thresh, detections_per_img
        )
        kept_boxes = boxes[keep]
        if box_voting_iou > 0:
            kept_boxes = vote_boxes(keep, boxes.float(), scores.float(), labels, box_voting_iou)
        detections.append({"boxes": kept_boxes, "labels": labels[keep], "scores": scores[keep]})
        start = end
    return detections
