"""COCO metrics: equal to pycocotools called directly (the reference), by name, silent."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rfcn.errors import UserError
from rfcn.evaluation.coco import COCO_METRIC_NAMES, evaluate_coco, load_coco_ground_truth
from rfcn.evaluation.evaluator import evaluate_detections

# (image id, category id, x, y, w, h): small (< 32^2), medium and large boxes, two categories
# with ids that are not 1..C, one image with no objects.
GT_BOXES = [
    (1, 3, 10.0, 10.0, 20.0, 20.0),
    (1, 7, 40.0, 30.0, 50.0, 50.0),
    (2, 3, 5.0, 5.0, 120.0, 100.0),
    (2, 3, 130.0, 120.0, 40.0, 60.0),
    (2, 7, 150.0, 10.0, 25.0, 15.0),
    (5, 7, 20.0, 20.0, 150.0, 160.0),
]


def write_ground_truth(path: Path, boxes=GT_BOXES) -> Path:
    dataset = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},
            {"id": 2, "file_name": "b.jpg", "width": 200, "height": 200},
            {"id": 5, "file_name": "c.jpg", "width": 200, "height": 200},
            {"id": 9, "file_name": "empty.jpg", "width": 50, "height": 50},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {
                "id": index + 1,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            for index, (image_id, category_id, x, y, w, h) in enumerate(boxes)
        ],
    }
    path.write_text(json.dumps(dataset))
    return path


def noisy_results(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    results = []
    for image_id, category_id, x, y, w, h in GT_BOXES:
        for _ in range(int(rng.integers(0, 3))):  # near-hits and duplicates
            jitter = rng.normal(0, 0.1 * min(w, h), 4)
            box = [x + jitter[0], y + jitter[1], max(w + jitter[2], 1), max(h + jitter[3], 1)]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": box,
                    "score": rng.random(),
                }
            )
    for image_id in (1, 2, 9):  # background
        results.append(
            {"image_id": image_id, "category_id": 3, "bbox": [1, 1, 9, 9], "score": rng.random()}
        )
    return [
        {**r, "bbox": [float(v) for v in r["bbox"]], "score": float(r["score"])} for r in results
    ]


def pycocotools_stats(
    gt_path: Path, results: list[dict], category_ids: list[int] | None = None
) -> list[float]:
    """pycocotools used as its README shows; ``category_ids`` restricts it to those categories."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        if category_ids is not None:
            evaluator.params.catIds = category_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


@pytest.mark.parametrize("seed", range(3))
def test_equals_pycocotools_called_directly(tmp_path: Path, seed: int) -> None:
    gt_path = write_ground_truth(tmp_path / "gt.json")
    results = noisy_results(seed)
    expected = pycocotools_stats(gt_path, results)
    metrics = evaluate_coco(load_coco_ground_truth(gt_path), results).metrics
    assert list(metrics) == [*COCO_METRIC_NAMES, "per_class"]
    assert [metrics[name] for name in COCO_METRIC_NAMES] == expected
    assert 0.0 < metrics["AP"] < 1.0


@pytest.mark.parametrize("seed", range(3))
def test_per_class_ap_equals_pycocotools_run_on_that_class_alone(tmp_path: Path, seed: int) -> None:
    gt_path = write_ground_truth(tmp_path / "gt.json")
    results = noisy_results(seed)
    evaluation = evaluate_coco(load_coco_ground_truth(gt_path), results)
    per_class = evaluation.metrics["per_class"]
    assert list(per_class) == ["cat", "dog"]
    for name, category_id in (("cat", 3), ("dog", 7)):
        alone = pycocotools_stats(gt_path, results, [category_id])
        assert [per_class[name][key] for key in ("AP", "AP50", "AP75")] == pytest.approx(
            alone[:3], abs=1e-12
        )
        curve = evaluation.curves[name]
        assert curve.recall.tolist() == pytest.approx(np.linspace(0, 1, 101).tolist())
        # the curve averages the precision over the IoUs: its mean over recall is the AP
        assert float(curve.precision.mean()) == pytest.approx(curve.ap, abs=1e-12)
        assert curve.ap == per_class[name]["AP"]


def test_perfect_detections_score_one(tmp_path: Path) -> None:
    gt_path = write_ground_truth(tmp_path / "gt.json")
    results = [
        {"image_id": i, "category_id": c, "bbox": [x, y, w, h], "score": 1.0}
        for i, c, x, y, w, h in GT_BOXES
    ]
    metrics = evaluate_coco(load_coco_ground_truth(gt_path), results).metrics
    per_class = metrics.pop("per_class")
    assert per_class == {
        name: dict.fromkeys(("AP", "AP50", "AP75"), 1.0) for name in ("cat", "dog")
    }
    # AR1 keeps one detection per image: image 2 holds two cats, so cat recall is 2/3 and
    # the mean over the two categories (2/3 + 1) / 2.
    expected = {**dict.fromkeys(COCO_METRIC_NAMES, 1.0), "AR1": 5 / 6}
    assert metrics == pytest.approx(expected, abs=1e-12)


def test_undefined_metrics_are_none_and_no_detections_score_zero(tmp_path: Path) -> None:
    no_small = [box for box in GT_BOXES if box[4] * box[5] >= 32**2]
    gt_path = write_ground_truth(tmp_path / "gt.json", no_small)
    metrics = evaluate_coco(load_coco_ground_truth(gt_path), []).metrics
    assert metrics["APs"] is None and metrics["ARs"] is None
    assert all(metrics[name] == 0.0 for name in COCO_METRIC_NAMES if name not in ("APs", "ARs"))
    assert all(v == 0.0 for values in metrics["per_class"].values() for v in values.values())
    # A category with no ground truth has no AP, and no curve.
    only_cats = [box for box in GT_BOXES if box[1] == 3]
    gt_path = write_ground_truth(tmp_path / "cats.json", only_cats)
    evaluation = evaluate_coco(load_coco_ground_truth(gt_path), [])
    assert evaluation.metrics["per_class"]["dog"] == dict.fromkeys(("AP", "AP50", "AP75"))
    assert list(evaluation.curves) == ["cat"]


def test_in_memory_detections_map_names_and_file_stems(tmp_path: Path) -> None:
    gt_path = write_ground_truth(tmp_path / "gt.json")
    results = noisy_results(7)
    stems = {1: "a", 2: "b", 5: "c", 9: "empty"}
    labels = {3: 1, 7: 2}
    detections: dict[str, dict[str, list]] = {}
    for r in results:
        x, y, w, h = r["bbox"]
        image = detections.setdefault(
            stems[r["image_id"]], {"boxes": [], "scores": [], "labels": []}
        )
        image["boxes"].append([x, y, x + w, y + h])
        image["scores"].append(r["score"])
        image["labels"].append(labels[r["category_id"]])
    tensors = {
        key: {
            "boxes": torch.tensor(v["boxes"], dtype=torch.float64),
            "scores": torch.tensor(v["scores"], dtype=torch.float64),
            "labels": torch.tensor(v["labels"]),
        }
        for key, v in detections.items()
    }
    metrics = evaluate_detections(tensors, ["cat", "dog"], "coco", coco_annotations=gt_path).metrics
    expected = pycocotools_stats(gt_path, results)
    assert [metrics[name] for name in COCO_METRIC_NAMES] == pytest.approx(expected, abs=1e-12)


def test_pycocotools_prints_only_when_verbose(tmp_path: Path, capsys) -> None:
    gt_path = write_ground_truth(tmp_path / "gt.json")
    evaluate_coco(load_coco_ground_truth(gt_path), noisy_results(0))
    assert capsys.readouterr().out == ""
    evaluate_coco(load_coco_ground_truth(gt_path, verbose=True), noisy_results(0), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_unknown_ids_and_bad_annotation_files_are_reported(tmp_path: Path) -> None:
    gt = load_coco_ground_truth(write_ground_truth(tmp_path / "gt.json"))
    record = {"image_id": 1, "category_id": 3, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.5}
    with pytest.raises(ValueError, match="image_id 4 is not annotated"):
        evaluate_coco(gt, [{**record, "image_id": 4}])
    with pytest.raises(ValueError, match="category_id 1 is unknown"):
        evaluate_coco(gt, [{**record, "category_id": 1}])
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(UserError, match="need lists"):
        load_coco_ground_truth(bad)
    with pytest.raises(UserError, match="not found"):
        load_coco_ground_truth(tmp_path / "missing.json")
