"""Recall of ground-truth objects, overall and of the small ones (the small-object benchmark).

An object counts as found when a detection of its class matches it under the VOC rules at the
IoU threshold (:func:`rfcn.evaluation.voc.match_class_detections`: detections taken by score, each
matching at most one object), considering every detection the model returned (up to its
``detections_per_img`` above its ``score_thresh``): the recall at the end of the VOC
precision/recall curve. Difficult objects are left out, as in the VOC AP.

"Small" is COCO's threshold applied to the box: area below 32² px (VOC boxes, 1-based inclusive,
so an ``xmin..xmax`` box is ``xmax - xmin + 1`` wide). COCO's own AP_small uses the annotation's
``area``, which for the synthetic shapes is the visible pixels rather than the box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rfcn.evaluation.results_files import Detections, voc_class_detections
from rfcn.evaluation.voc import ImageGroundTruth, match_class_detections

SMALL_AREA = 32.0**2


def object_recall(
    ground_truth: Mapping[str, ImageGroundTruth],
    detections: Detections,
    class_names: Sequence[str],
    iou_thresh: float = 0.5,
    small_area: float = SMALL_AREA,
) -> dict[str, float | int | None]:
    """Recall over the split's objects and over those with a box area below ``small_area``.

    Args:
        ground_truth: the split (:func:`rfcn.evaluation.voc.load_voc_ground_truth`).
        detections: ``{image_id: {"boxes": (N, 4), "scores": (N,), "labels": (N,)}}`` in the
            project's 0-based pixels (as :func:`rfcn.evaluation.evaluator.evaluate_detections`).
        class_names: the C foreground names, ``class_names[label - 1]``.

    Returns:
        ``{"recall", "recall_small"}`` (None when there is no such object) and the counts
        ``{"objects", "small_objects"}`` they are taken over.
    """
    by_class = voc_class_detections(detections, class_names)
    found = {
        image_id: np.zeros(len(image.names), dtype=bool) for image_id, image in ground_truth.items()
    }
    for name in class_names:
        matches = match_class_detections(ground_truth, name, by_class[name], iou_thresh)
        for image_id, matched in matches.found.items():
            found[image_id] |= matched
    hits = {"all": 0, "small": 0}
    totals = {"all": 0, "small": 0}
    for image_id, image in ground_truth.items():
        boxes = image.boxes
        areas = (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0)
        counted = ~image.difficult
        small = counted & (areas < small_area)
        for group, members in (("all", counted), ("small", small)):
            totals[group] += int(members.sum())
            hits[group] += int((found[image_id] & members).sum())
    return {
        "recall": hits["all"] / totals["all"] if totals["all"] else None,
        "recall_small": hits["small"] / totals["small"] if totals["small"] else None,
        "objects": totals["all"],
        "small_objects": totals["small"],
    }
