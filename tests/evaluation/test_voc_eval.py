"""VOC AP against hand-worked precision/recall curves and a literal loop reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfcn.evaluation.results_files import voc_class_detections
from rfcn.evaluation.voc import (
    ClassDetections,
    ImageGroundTruth,
    evaluate_voc,
    voc_ap,
    voc_box_iou,
    voc_class_ap,
    voc_class_curve,
)

BOX_A = (1.0, 1.0, 10.0, 10.0)  # VOC pixels: 10 x 10
BOX_B = (21.0, 21.0, 40.0, 30.0)
BOX_C = (51.0, 5.0, 60.0, 20.0)


def gt(*objects: tuple[str, tuple[float, ...], bool]) -> ImageGroundTruth:
    return ImageGroundTruth(
        names=tuple(name for name, _, _ in objects),
        boxes=np.array([box for _, box, _ in objects], dtype=np.float64).reshape(-1, 4),
        difficult=np.array([difficult for _, _, difficult in objects], dtype=bool),
    )


def dets(*items: tuple[str, float, tuple[float, ...]]) -> ClassDetections:
    return ClassDetections(
        tuple(image_id for image_id, _, _ in items),
        np.array([score for _, score, _ in items], dtype=np.float64),
        np.array([box for _, _, box in items], dtype=np.float64).reshape(-1, 4),
    )


def ap_both(ground_truth, detections, cls="cat", iou=0.5) -> tuple[float | None, float | None]:
    return (
        voc_class_ap(ground_truth, cls, detections, iou, use_07_metric=True),
        voc_class_ap(ground_truth, cls, detections, iou, use_07_metric=False),
    )


def test_perfect_detector_scores_one() -> None:
    ground_truth = {
        "a": gt(("cat", BOX_A, False), ("cat", BOX_B, False)),
        "b": gt(("cat", BOX_C, False), ("dog", BOX_A, False)),
    }
    detections = dets(("a", 0.3, BOX_A), ("a", 0.9, BOX_B), ("b", 0.5, BOX_C))
    assert ap_both(ground_truth, detections) == (1.0, 1.0)


def test_duplicate_is_a_false_positive() -> None:
    # ranked: TP, duplicate (FP), TP; 2 positives.
    # recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # 11-point: levels 0..0.5 reach precision 1, levels 0.6..1 reach 2/3 -> (6 + 5 * 2/3) / 11.
    # area: 1/2 * 1 + 1/2 * 2/3.
    ground_truth = {"a": gt(("cat", BOX_A, False)), "b": gt(("cat", BOX_B, False))}
    detections = dets(("a", 0.9, BOX_A), ("a", 0.8, BOX_A), ("b", 0.7, BOX_B))
    ap07, ap = ap_both(ground_truth, detections)
    assert ap07 == pytest.approx(28 / 33, abs=1e-12)
    assert ap == pytest.approx(5 / 6, abs=1e-12)
    recall, precision = voc_class_curve(ground_truth, "cat", detections)
    assert recall.tolist() == [0.5, 0.5, 1.0]
    assert precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3], abs=1e-15)
    curve = evaluate_voc(ground_truth, {"cat": detections}, ["cat"], use_07_metric=False).curves
    assert curve["cat"].recall.tolist() == recall.tolist() and curve["cat"].ap == ap


def test_eleven_point_and_area_differ_as_hand_computed() -> None:
    # 3 positives, ranked TP, FP, TP, third object missed.
    # recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3.
    # 11-point: 0, .1, .2, .3 -> 1; .4, .5, .6 -> 2/3; .7 .. 1 -> 0: (4 + 2) / 11.
    # area: 1/3 * 1 + 1/3 * 2/3 = 5/9.
    ground_truth = {"a": gt(("cat", BOX_A, False), ("cat", BOX_B, False), ("cat", BOX_C, False))}
    detections = dets(("a", 0.9, BOX_A), ("a", 0.8, (70.0, 70.0, 80.0, 80.0)), ("a", 0.7, BOX_B))
    ap07, ap = ap_both(ground_truth, detections)
    assert ap07 == pytest.approx(6 / 11, abs=1e-12)
    assert ap == pytest.approx(5 / 9, abs=1e-12)


def test_eleven_point_levels_are_exact_tenths() -> None:
    # recall reaches exactly 0.7 at precision 1: levels 0, 0.1, ..., 0.7 count (8 of 11).
    # (np.arange(0, 1.1, 0.1) would put the 0.7 level at 0.7000000000000001 and give 7/11.)
    recall = np.arange(1, 8) / 10.0
    assert voc_ap(recall, np.ones(7), use_07_metric=True) == pytest.approx(8 / 11, abs=1e-12)
    assert voc_ap(recall, np.ones(7), use_07_metric=False) == pytest.approx(0.7, abs=1e-12)


def test_difficult_objects_neither_help_nor_hurt() -> None:
    ground_truth = {"a": gt(("cat", BOX_A, False), ("cat", BOX_B, True))}
    hit = ("a", 0.5, BOX_A)
    on_difficult = ("a", 0.9, BOX_B)  # ranked first: as a false positive it would halve AP
    assert ap_both(ground_truth, dets(hit)) == (1.0, 1.0)  # missing it is no false negative
    assert ap_both(ground_truth, dets(on_difficult, hit)) == (1.0, 1.0)
    assert ap_both(ground_truth, dets(on_difficult, on_difficult, hit)) == (1.0, 1.0)
    # the same box, not difficult, is a positive: missing it halves recall
    not_difficult = {"a": gt(("cat", BOX_A, False), ("cat", BOX_B, False))}
    assert ap_both(not_difficult, dets(hit))[1] == pytest.approx(0.5)


def test_a_class_of_only_difficult_objects_has_no_ap() -> None:
    ground_truth = {"a": gt(("cat", BOX_A, True))}
    assert ap_both(ground_truth, dets(("a", 0.9, BOX_A))) == (None, None)


def test_iou_at_the_threshold_is_a_hit_as_in_the_devkit() -> None:
    # VOC pixels (+1 widths): BOX_A covers 10 x 10 = 100; (1, 1, 10, 5) covers 10 x 5 = 50
    # inside it, so IoU is exactly 0.5 (without the +1 it would be 36 / 81).
    half = (1.0, 1.0, 10.0, 5.0)
    assert voc_box_iou(np.array(half), np.array([BOX_A]))[0] == 0.5
    ground_truth = {"a": gt(("cat", BOX_A, False))}
    assert ap_both(ground_truth, dets(("a", 0.9, half)), iou=0.5) == (1.0, 1.0)
    assert ap_both(ground_truth, dets(("a", 0.9, half)), iou=0.51) == (0.0, 0.0)
    assert ap_both(ground_truth, dets(("a", 0.9, (1.0, 1.0, 10.0, 6.0))), iou=0.5) == (1.0, 1.0)


def test_our_boxes_become_voc_pixels_before_matching() -> None:
    # 0-based continuous (0, 0, 10, 5) is VOC (1, 1, 10, 5): IoU 0.5 with BOX_A, as above; read
    # as VOC pixels unconverted it would overlap 50 / 116 < 0.5
    grouped = voc_class_detections(
        {
            "a": {
                "boxes": torch.tensor([[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 10.0]]),
                "scores": torch.tensor([0.9, 0.8]),
                "labels": torch.tensor([1, 2]),
            }
        },
        ["cat", "dog"],
    )
    np.testing.assert_array_equal(grouped["cat"].boxes, [[1.0, 1.0, 10.0, 5.0]])
    np.testing.assert_array_equal(grouped["dog"].boxes, [BOX_A])
    ground_truth = {"a": gt(("cat", BOX_A, False), ("dog", BOX_A, False))}
    assert voc_class_ap(ground_truth, "cat", grouped["cat"], 0.5) == 1.0
    assert voc_class_ap(ground_truth, "cat", grouped["cat"], 0.51) == 0.0
    assert voc_class_ap(ground_truth, "dog", grouped["dog"], 0.5) == 1.0


def test_equal_scores_keep_their_input_order() -> None:
    ground_truth = {"a": gt(("cat", BOX_A, False))}
    miss, hit = ("a", 0.5, BOX_C), ("a", 0.5, BOX_A)
    assert ap_both(ground_truth, dets(miss, hit))[1] == pytest.approx(0.5)
    assert ap_both(ground_truth, dets(hit, miss))[1] == 1.0


def test_images_without_detections_and_classes_without_ground_truth() -> None:
    ground_truth = {
        "a": gt(("cat", BOX_A, False)),
        "b": gt(("cat", BOX_B, False)),
        "c": gt(),
    }
    detections = {"cat": dets(("a", 0.9, BOX_A)), "bird": dets(("c", 0.9, BOX_A))}
    for use_07, cat_ap in ((True, 6 / 11), (False, 0.5)):
        metrics = evaluate_voc(
            ground_truth, detections, ["cat", "bird", "dog"], 0.5, use_07_metric=use_07
        ).metrics
        assert metrics["AP"]["cat"] == pytest.approx(cat_ap, abs=1e-12)
        assert metrics["AP"]["bird"] is None  # no ground truth: no AP, not in the mAP
        assert metrics["AP"]["dog"] is None
        assert metrics["mAP"] == metrics["AP"]["cat"]
    assert evaluate_voc({"c": gt()}, {}, ["cat"]).metrics["mAP"] is None


def test_a_class_with_ground_truth_and_no_detections_scores_zero() -> None:
    ground_truth = {"a": gt(("cat", BOX_A, False), ("dog", BOX_B, False))}
    evaluation = evaluate_voc(ground_truth, {"cat": dets(("a", 0.9, BOX_A))}, ["cat", "dog"])
    assert evaluation.metrics == {"mAP": 0.5, "AP": {"cat": 1.0, "dog": 0.0}}
    assert evaluation.curves["dog"].recall.size == 0 and evaluation.curves["dog"].ap == 0.0


def test_detections_on_unknown_images_are_rejected() -> None:
    with pytest.raises(ValueError, match="not in the split"):
        voc_class_ap({"a": gt(("cat", BOX_A, False))}, "cat", dets(("zzz", 0.9, BOX_A)))


def reference_ap(ground_truth, cls, detections, iou_thresh, use_07) -> float | None:
    """The devkit's loops written out literally with Python lists (py-faster-rcnn's `>`)."""
    positives = sum(
        1
        for image in ground_truth.values()
        for name, hard in zip(image.names, image.difficult, strict=True)
        if name == cls and not hard
    )
    if positives == 0:
        return None
    used: set[tuple[str, int]] = set()
    order = sorted(range(len(detections.scores)), key=lambda i: -detections.scores[i])
    tp, fp = [], []
    for i in order:
        image = ground_truth[detections.image_ids[i]]
        bx1, by1, bx2, by2 = detections.boxes[i]
        best, best_j = -1.0, -1
        for j, (name, (gx1, gy1, gx2, gy2)) in enumerate(
            zip(image.names, image.boxes, strict=True)
        ):
            if name != cls:
                continue
            iw = max(min(bx2, gx2) - max(bx1, gx1) + 1, 0.0)
            ih = max(min(by2, gy2) - max(by1, gy1) + 1, 0.0)
            union = (bx2 - bx1 + 1) * (by2 - by1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1) - iw * ih
            if iw * ih / union > best:
                best, best_j = iw * ih / union, j
        key = (detections.image_ids[i], best_j)
        if best > iou_thresh and image.difficult[best_j]:
            continue
        hit = best > iou_thresh and key not in used
        if hit:
            used.add(key)
        tp.append(1 if hit else 0)
        fp.append(0 if hit else 1)
    recall, precision, tps, fps = [], [], 0, 0
    for t, f in zip(tp, fp, strict=True):
        tps, fps = tps + t, fps + f
        recall.append(tps / positives)
        precision.append(tps / (tps + fps))
    if use_07:
        return (
            sum(
                max([p for r, p in zip(recall, precision, strict=True) if r >= k / 10], default=0.0)
                for k in range(11)
            )
            / 11
        )
    area, previous = 0.0, 0.0
    for k, r in enumerate(recall):
        area += (r - previous) * max(precision[k:])
        previous = r
    return area


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_literal_loop_reference_on_random_cases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ground_truth = {}
    for image in range(8):
        count = int(rng.integers(0, 5))
        xy = rng.uniform(1, 60, size=(count, 2)).round()
        wh = rng.uniform(5, 40, size=(count, 2)).round()
        ground_truth[f"im{image}"] = ImageGroundTruth(
            names=tuple(rng.choice(["cat", "dog"], size=count)),
            boxes=np.concatenate([xy, xy + wh], axis=1),
            difficult=rng.random(count) < 0.2,
        )
    items = []
    for image_id, image in ground_truth.items():
        for box in image.boxes:  # near-hits and duplicates
            for _ in range(int(rng.integers(0, 3))):
                items.append((image_id, float(rng.random()), tuple(box + rng.normal(0, 3, 4))))
        for _ in range(int(rng.integers(0, 3))):  # background
            xy = rng.uniform(1, 80, 2)
            items.append((image_id, float(rng.random()), (*xy, *(xy + rng.uniform(3, 30, 2)))))
    detections = dets(*items)
    for use_07 in (True, False):
        for iou in (0.3, 0.5, 0.7):
            expected = reference_ap(ground_truth, "cat", detections, iou, use_07)
            actual = voc_class_ap(ground_truth, "cat", detections, iou, use_07)
            assert actual == pytest.approx(expected, abs=1e-12)
