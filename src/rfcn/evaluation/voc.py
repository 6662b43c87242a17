"""PASCAL VOC detection AP per class and mAP, as the VOC devkit and py-faster-rcnn compute them.

Everything here works in VOC pixel coordinates: boxes are ``(N, 4)`` float64
``xmin, ymin, xmax, ymax``, 1-based and inclusive, so a box is ``xmax - xmin + 1`` pixels wide
(the devkit's "+1" rule). Ground truth comes from the XML files as written; detections in our
0-based continuous convention become ``(x1 + 1, y1 + 1, x2, y2)`` first
(:func:`rfcn.evaluation.results_files.voc_class_detections`), which makes the devkit's IoU equal
to the continuous IoU of ``(x1, y1, x2, y2)`` with ``(xmin - 1, ymin - 1, xmax, ymax)``.

Matching (Everingham et al., "The PASCAL VOC Challenge", IJCV 2010): detections of one class
are taken in order of decreasing score; each is matched to the ground-truth box of its image
it overlaps most; it is a true positive when that overlap reaches the IoU threshold and the box
is not yet taken, a false positive when the box is taken (a duplicate) or the overlap is too
small, and neither when the box is ``difficult``. Difficult boxes do not count among the
positives either.

Where the references disagree, this module chooses and says so:

- IoU threshold: ``overlap >= iou_thresh`` as the official MATLAB devkit's ``VOCevaldet.m``
  (which the original R-FCN MATLAB code calls); py-faster-rcnn's ``voc_eval`` uses ``>``.
- Equal scores keep their input order (a stable sort), as MATLAB's ``sort`` in the devkit;
  py-faster-rcnn's ``np.argsort`` leaves ties in an unspecified order.
- The 11-point metric samples recall at exactly ``k / 10``; py-faster-rcnn's
  ``np.arange(0, 1.1, 0.1)`` yields 0.30000000000000004, 0.6000000000000001 and
  0.7000000000000001, so a recall of exactly 0.3, 0.6 or 0.7 misses its level there. It also
  sums the eleven precisions before dividing by 11, so a perfect curve gives exactly 1.
- A class with no non-difficult ground truth has no AP (``None``) and is left out of the mAP
  (as COCO does); the devkit divides by zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfcn.data.voc import read_voc_split
from rfcn.evaluation.scores import Evaluation, PrecisionRecall


@dataclass(frozen=True)
class ImageGroundTruth:
    """The annotated objects of one image.

    Attributes:
        names: ``M`` class names.
        boxes: ``(M, 4)`` float64 VOC boxes (1-based, inclusive).
        difficult: ``(M,)`` bool.
    """

    names: tuple[str, ...]
    boxes: np.ndarray
    difficult: np.ndarray


@dataclass(frozen=True)
class ClassDetections:
    """All detections of one class over a split, in the order they were produced.

    Attributes:
        image_ids: ``D`` image ids.
        scores: ``(D,)`` float64 confidences.
        boxes: ``(D, 4)`` float64 VOC boxes (1-based, inclusive).
    """

    image_ids: tuple[str, ...]
    scores: np.ndarray
    boxes: np.ndarray


def load_voc_ground_truth(root: str | Path, split: str) -> dict[str, ImageGroundTruth]:
    """Ground truth of the VOC-layout split ``ROOT/ImageSets/Main/<split>.txt``.

    Boxes stay as the XML files give them (1-based, inclusive), as the devkit reads them.
    Returns the images in split order.
    """
    ground_truth = {}
    for image in read_voc_split(root, split):
        objects = image.annotation.objects
        ground_truth[image.image_id] = ImageGroundTruth(
            names=tuple(obj.name for obj in objects),
            boxes=np.array([obj.box for obj in objects], dtype=np.float64).reshape(-1, 4),
            difficult=np.array([obj.difficult for obj in objects], dtype=bool),
        )
    return ground_truth


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Average precision from a precision/recall curve.

    Args:
        recall: ``(D,)`` non-decreasing recall after each ranked detection.
        precision: ``(D,)`` precision after each ranked detection.
        use_07_metric: the VOC2007 11-point metric (mean of the interpolated precision at recall
            0, 0.1, ..., 1) instead of the VOC2010+ area under the interpolated curve.
    """
    if use_07_metric:
        interpolated = []
        for level in np.arange(11) / 10.0:
            reached = recall >= level
            interpolated.append(float(precision[reached].max()) if reached.any() else 0.0)
        # sum, then divide: a perfect curve gives exactly 1 (adding eleven 1/11 gives 1 + 2e-16)
        return math.fsum(interpolated) / 11.0
    # interpolated precision: the best precision at this or any higher recall
    padded_recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.concatenate(([0.0], precision, [0.0]))
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(padded_recall[1:] != padded_recall[:-1])
    return float(np.sum((padded_recall[steps + 1] - padded_recall[steps]) * envelope[steps + 1]))


def voc_box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` VOC box with ``(M, 4)`` VOC boxes, with the devkit's "+1" widths."""
    inter_w = np.maximum(np.minimum(others[:, 2], box[2]) - np.maximum(others[:, 0], box[0]) + 1, 0)
    inter_h = np.maximum(np.minimum(others[:, 3], box[3]) - np.maximum(others[:, 1], box[1]) + 1, 0)
    intersection = inter_w * inter_h
    area = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
    other_areas = (others[:, 2] - others[:, 0] + 1.0) * (others[:, 3] - others[:, 1] + 1.0)
    return intersection / (area + other_areas - intersection)


def unknown_images(
    ground_truth: Mapping[str, ImageGroundTruth], detections: ClassDetections
) -> list[str]:
    """Up to five image ids of ``detections`` that ``ground_truth`` lacks, sorted."""
    return sorted(set(detections.image_ids) - ground_truth.keys())[:5]


@dataclass(frozen=True)
class ClassMatches:
    """How one class's ranked detections matched its ground truth (VOC rules, module docstring).

    Attributes:
        true_positive, false_positive: ``(D,)`` 0/1 per detection, in decreasing score order.
        num_positives: the class's non-difficult ground-truth boxes.
        found: per image, ``(M,)`` bool over ALL its annotated objects: True where an object
            of this class was matched by a true positive (other classes' objects stay False).
    """

    true_positive: np.ndarray
    false_positive: np.ndarray
    num_positives: int
    found: dict[str, np.ndarray]


def match_class_detections(
    ground_truth: Mapping[str, ImageGroundTruth],
    class_name: str,
    detections: ClassDetections,
    iou_thresh: float = 0.5,
) -> ClassMatches:
    """Match one class's detections to its ground-truth boxes as the VOC devkit does.

    Raises ValueError when a detection names an image that is not in ``ground_truth``.
    """
    mine: dict[str, np.ndarray] = {}
    num_positives = 0
    for image_id, image in ground_truth.items():
        mine[image_id] = np.flatnonzero([name == class_name for name in image.names])
        num_positives += int(np.count_nonzero(~image.difficult[mine[image_id]]))
    unknown = unknown_images(ground_truth, detections)
    if unknown:
        raise ValueError(f"{class_name}: detections for images not in the split: {unknown}")

    found = {
        image_id: np.zeros(len(image.names), dtype=bool) for image_id, image in ground_truth.items()
    }
    order = np.argsort(-detections.scores, kind="stable")
    true_positive = np.zeros(len(order))
    false_positive = np.zeros(len(order))
    for rank, index in enumerate(order):
        image_id = detections.image_ids[index]
        image, objects = ground_truth[image_id], mine[image_id]
        best_iou, best = -np.inf, -1
        if len(objects):
            overlaps = voc_box_iou(detections.boxes[index], image.boxes[objects])
            best = int(objects[np.argmax(overlaps)])
            best_iou = overlaps.max()
        if best_iou >= iou_thresh:
            if image.difficult[best]:
                continue
            if found[image_id][best]:
                false_positive[rank] = 1.0
            else:
                true_positive[rank] = 1.0
                found[image_id][best] = True
        else:
            false_positive[rank] = 1.0
    return ClassMatches(true_positive, false_positive, num_positives, found)


def voc_class_curve(
    ground_truth: Mapping[str, ImageGroundTruth],
    class_name: str,
    detections: ClassDetections,
    iou_thresh: float = 0.5,
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(recall, precision)``, each ``(D,)``, after each of one class's ranked detections over
    the images of ``ground_truth`` (py-faster-rcnn's ``voc_eval``).

    Returns None when the class has no non-difficult ground-truth box.
    Raises ValueError when a detection names an image that is not in ``ground_truth``.
    """
    matches = match_class_detections(ground_truth, class_name, detections, iou_thresh)
    if matches.num_positives == 0:
        return None
    true_positive = np.cumsum(matches.true_positive)
    false_positive = np.cumsum(matches.false_positive)
    recall = true_positive / matches.num_positives
    precision = true_positive / np.maximum(true_positive + false_positive, np.finfo(np.float64).eps)
    return recall, precision


def voc_class_ap(
    ground_truth: Mapping[str, ImageGroundTruth],
    class_name: str,
    detections: ClassDetections,
    iou_thresh: float = 0.5,
    use_07_metric: bool = True,
) -> float | None:
    """AP of one class (:func:`voc_class_curve`, then :func:`voc_ap`); None without ground truth.

    Raises ValueError when a detection names an image that is not in ``ground_truth``.
    """
    curve = voc_class_curve(ground_truth, class_name, detections, iou_thresh)
    return None if curve is None else voc_ap(*curve, use_07_metric)


def evaluate_voc(
    ground_truth: Mapping[str, ImageGroundTruth],
    detections: Mapping[str, ClassDetections],
    class_names: Sequence[str],
    iou_thresh: float = 0.5,
    use_07_metric: bool = True,
) -> Evaluation:
    """AP per class and their mean, ``{"mAP": float | None, "AP": {name: float | None}}``, and
    the precision-recall curve of every class with ground truth.

    A class missing from ``detections`` has no detections (AP 0 when it has ground truth).
    The mAP averages the classes that have ground truth; it is None when none has.
    """
    empty = ClassDetections((), np.zeros(0), np.zeros((0, 4)))
    ap: dict[str, float | None] = {}
    curves: dict[str, PrecisionRecall] = {}
    for name in class_names:
        curve = voc_class_curve(ground_truth, name, detections.get(name, empty), iou_thresh)
        if curve is None:
            ap[name] = None
            continue
        ap[name] = voc_ap(*curve, use_07_metric)
        curves[name] = PrecisionRecall(*curve, ap[name])
    scored = [value for value in ap.values() if value is not None]
    # fsum: the mean does not depend on the order the classes come in
    mean = math.fsum(scored) / len(scored) if scored else None
    return Evaluation({"mAP": mean, "AP": ap}, curves)
