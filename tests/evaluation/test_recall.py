"""Object recall, overall and of small objects, against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from rfcn.evaluation.recall import object_recall
from rfcn.evaluation.voc import ImageGroundTruth

CLASSES = ("cat", "dog")


def _truth(*objects: tuple[str, tuple[float, float, float, float], bool]) -> ImageGroundTruth:
    """Objects as (name, VOC box 1-based inclusive, difficult)."""
    return ImageGroundTruth(
        names=tuple(name for name, _, _ in objects),
        boxes=np.array([box for _, box, _ in objects], dtype=np.float64).reshape(-1, 4),
        difficult=np.array([difficult for _, _, difficult in objects], dtype=bool),
    )


def _found(*items: tuple[int, float, tuple[float, float, float, float]]) -> dict:
    """Detections as (label, score, box in 0-based continuous pixels)."""
    return {
        "boxes": np.array([box for _, _, box in items], dtype=np.float32).reshape(-1, 4),
        "scores": np.array([score for _, score, _ in items], dtype=np.float32),
        "labels": np.array([label for label, _, _ in items], dtype=np.int64),
    }


GROUND_TRUTH = {
    # small: 20 x 20 = 400 px² and 31 x 32 = 992 < 1024; large: 32 x 32 = 1024 and 100 x 50
    "a": _truth(("cat", (1, 1, 20, 20), False), ("dog", (101, 1, 131, 32), False)),
    "b": _truth(("cat", (1, 1, 32, 32), False), ("dog", (51, 51, 150, 100), False)),
    "c": _truth(("cat", (201, 201, 210, 210), True)),  # difficult: never counted
}


def test_recall_counts_each_object_once_by_class_and_size() -> None:
    detections = {
        # the small cat, found twice (the duplicate finds nothing more); the small dog missed
        # by a detection labelled cat
        "a": _found(
            (1, 0.9, (0, 0, 20, 20)), (1, 0.8, (1, 0, 20, 20)), (1, 0.7, (100, 0, 131, 32))
        ),
        # the large cat at IoU 22 x 32 / 1024 = 0.6875; the large dog at IoU 0.49: missed
        "b": _found((1, 0.5, (10, 0, 32, 32)), (2, 0.4, (50, 50, 99, 100))),
        "c": _found((1, 0.9, (200, 200, 210, 210))),
    }
    recall = object_recall(GROUND_TRUTH, detections, CLASSES)
    assert recall == {"recall": 2 / 4, "recall_small": 1 / 2, "objects": 4, "small_objects": 2}


def test_threshold_and_no_detections() -> None:
    detections = {"b": _found((2, 0.4, (50, 50, 99, 100)))}  # IoU 50 x 50 / 5000 = 0.49
    assert object_recall(GROUND_TRUTH, detections, CLASSES, iou_thresh=0.5)["recall"] == 0.0
    assert object_recall(GROUND_TRUTH, detections, CLASSES, iou_thresh=0.45)["recall"] == 0.25
    assert object_recall(GROUND_TRUTH, {}, CLASSES)["recall_small"] == 0.0
    only_large = {"b": GROUND_TRUTH["b"]}
    assert object_recall(only_large, {}, CLASSES)["recall_small"] is None
    assert object_recall(GROUND_TRUTH, {}, CLASSES, small_area=2000.0)["small_objects"] == 3


def test_matches_the_end_of_the_voc_precision_recall_curve() -> None:
    """With one class, the recall is the last point of VOC's recall curve."""
    from rfcn.evaluation.results_files import voc_class_detections
    from rfcn.evaluation.voc import match_class_detections

    rng = np.random.default_rng(0)
    truth, detections = {}, {}
    for index in range(20):
        boxes = rng.uniform(0, 80, size=(3, 2))
        gt_boxes = np.concatenate([boxes + 1, boxes + rng.uniform(10, 40, size=(3, 2))], axis=1)
        truth[str(index)] = _truth(*[("cat", tuple(b), False) for b in gt_boxes])
        jitter = gt_boxes - [1, 1, 0, 0] + rng.normal(0, 4, size=(3, 4))
        detections[str(index)] = _found(
            *[(1, float(s), tuple(b)) for s, b in zip(rng.random(3), jitter, strict=True)]
        )
    matches = match_class_detections(truth, "cat", voc_class_detections(detections, ["cat"])["cat"])
    expected = matches.true_positive.sum() / matches.num_positives
    assert 0.0 < expected < 1.0
    assert object_recall(truth, detections, ["cat"])["recall"] == pytest.approx(expected)
