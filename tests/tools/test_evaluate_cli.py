"""``rfcn evaluate`` on VOC-layout and COCO fixtures, and the in-memory/results-file round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rfcn import cli
from rfcn.evaluation.evaluator import evaluate_detections, write_detections
from rfcn.evaluation.voc import load_voc_ground_truth

CLASSES = ["cat", "dog"]
BOX_A = (1, 1, 10, 10)  # VOC pixels as in the XML files
BOX_B = (21, 21, 40, 30)
BOX_C = (51, 5, 60, 20)


def write_voc_split(root: Path, split: str, images: dict[str, list[tuple]]) -> Path:
    """A VOC-layout folder: XML per image (objects ``(name, box, difficult)``), empty JPEGs."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for image_id, objects in images.items():
        xml = "".join(
            f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox>"
            f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            "</bndbox></object>"
            for name, (x1, y1, x2, y2), difficult in objects
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>100</width>"
            f"<height>100</height><depth>3</depth></size>{xml}</annotation>"
        )
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(images) + "\n")
    return root


def hand_fixture(root: Path) -> Path:
    return write_voc_split(
        root,
        "test",
        {
            "000001": [("cat", BOX_A, False), ("dog", BOX_B, False)],
            "000002": [("cat", BOX_C, True), ("dog", BOX_A, False)],
        },
    )


def zero_based(*boxes: tuple[int, int, int, int]) -> torch.Tensor:
    return torch.tensor([(x1 - 1, y1 - 1, x2, y2) for x1, y1, x2, y2 in boxes], dtype=torch.float32)


# cat: one hit; its difficult box is missed, which costs nothing -> AP 1.
# dog: hit (0.85), duplicate (0.8), hit (0.7) over 2 positives -> 11-point 28/33, area 5/6.
HAND_DETECTIONS = {
    "000001": {
        "boxes": zero_based(BOX_A, BOX_B, BOX_B),
        "scores": torch.tensor([0.9, 0.85, 0.8]),
        "labels": torch.tensor([1, 2, 2]),
    },
    "000002": {
        "boxes": zero_based(BOX_A),
        "scores": torch.tensor([0.7]),
        "labels": torch.tensor([2]),
    },
}


def rfcn(*argv: str | Path) -> int:
    """Run the ``rfcn`` command."""
    return cli.main([str(arg) for arg in argv])


def test_ground_truth_keeps_the_xml_boxes(tmp_path: Path) -> None:
    ground_truth = load_voc_ground_truth(hand_fixture(tmp_path), "test")
    assert list(ground_truth) == ["000001", "000002"]
    image = ground_truth["000002"]
    assert image.names == ("cat", "dog")
    np.testing.assert_array_equal(image.boxes, [BOX_C, BOX_A])
    np.testing.assert_array_equal(image.difficult, [True, False])


@pytest.mark.parametrize(("metric", "dog_ap"), [("voc07", 28 / 33), ("voc", 5 / 6)])
def test_prints_a_table_and_writes_json(tmp_path: Path, capsys, metric: str, dog_ap: float) -> None:
    root = hand_fixture(tmp_path / "voc")
    write_detections(HAND_DETECTIONS, CLASSES, metric, tmp_path / "results")
    out = tmp_path / "report" / "metrics.json"
    argv = ["evaluate", "--dataset", root, "--split", "test", "--metric", metric]
    assert rfcn(*argv, "--detections", tmp_path / "results", "--out", out) == 0
    table = capsys.readouterr().out
    assert "cat" in table and "dog" in table and "mAP" in table
    assert f"{dog_ap:.4f}" in table
    metrics = json.loads(out.read_text())
    assert metrics["AP"] == pytest.approx({"cat": 1.0, "dog": dog_ap}, abs=1e-12)
    assert metrics["mAP"] == pytest.approx((1 + dog_ap) / 2, abs=1e-12)
    # no temp file left; the curves beside the JSON
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.json", "pr_curves.png"]
    with Image.open(out.parent / "pr_curves.png") as figure:
        assert figure.format == "PNG" and figure.width > 400


def random_split(root: Path, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Random ground truth on disk and float32 detections around it (with ties and duplicates)."""
    rng = np.random.default_rng(seed)
    images, detections = {}, {}
    for index in range(12):
        count = int(rng.integers(0, 4))
        xy = rng.integers(1, 60, size=(count, 2))
        boxes = np.concatenate([xy, xy + rng.integers(5, 40, size=(count, 2))], axis=1)
        names = rng.choice(["cat", "dog", "bird"], size=count)  # bird: not a model class
        images[f"{index:06d}"] = [
            (name, tuple(box), bool(rng.random() < 0.2))
            for name, box in zip(names, boxes, strict=True)
        ]
        ours = boxes - np.array([1, 1, 0, 0])  # VOC pixels -> our 0-based boxes
        noisy = np.repeat(ours, 2, axis=0) + rng.normal(0, 2, (2 * count, 4))
        # IoU a hair above or below 0.5: any rounding in the files would flip these
        borderline = ours.astype(np.float64)
        fraction = 0.5 + rng.choice([-1e-4, 1e-4], size=count)
        borderline[:, 2] = ours[:, 0] + fraction * (ours[:, 2] - ours[:, 0])
        # one decimal: many equal scores, whose order both paths must keep alike; the
        # borderline boxes come first and carry their object's class
        scores = np.concatenate(
            [rng.integers(1, 10, 2 * count) / 10, 0.95 + rng.random(count) / 20]
        )
        labels = [*rng.integers(1, 3, 2 * count), *(1 + (names == "dog"))]
        detections[f"{index:06d}"] = {
            "boxes": torch.tensor(np.concatenate([noisy, borderline]), dtype=torch.float32),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels),
        }
    write_voc_split(root, "val", images)
    return detections


@pytest.mark.parametrize("metric", ["voc07", "voc"])
def test_in_memory_equals_results_files_round_trip(tmp_path: Path, metric: str) -> None:
    root = tmp_path / "voc"
    detections = random_split(root, seed=3)
    classes = [*CLASSES, "horse"]  # horse: no ground truth, so no AP
    in_memory = evaluate_detections(
        detections, classes, metric, dataset_root=root, split="val"
    ).metrics
    write_detections(detections, classes, metric, tmp_path / "results")
    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--dataset", root, "--split", "val", "--metric", metric, "--out", out]
    assert rfcn(*argv, "--detections", tmp_path / "results") == 0
    assert json.loads(out.read_text()) == in_memory  # to the last bit; bird is not scored
    assert in_memory["AP"]["horse"] is None
    assert 0.0 < in_memory["mAP"] < 1.0


def test_coco_in_memory_equals_results_file_round_trip(tmp_path: Path, capsys) -> None:
    detections = random_split(tmp_path / "voc", seed=4)
    gt = {
        "images": [{"id": int(i) + 1, "file_name": f"{i}.jpg"} for i in detections],
        "categories": [{"id": 5, "name": "cat"}, {"id": 6, "name": "dog"}],
        "annotations": [
            {
                "id": n,
                "image_id": 1 + n % len(detections),
                "category_id": 5 + n % 2,
                "bbox": [n, 2.0 * n, 10.0 + n, 20.0],
                "area": (10.0 + n) * 20.0,
                "iscrowd": 0,
            }
            for n in range(1, 30)
        ],
    }
    gt_path = tmp_path / "instances_val.json"
    gt_path.write_text(json.dumps(gt))
    in_memory = evaluate_detections(detections, CLASSES, "coco", coco_annotations=gt_path).metrics
    write_detections(
        detections, CLASSES, "coco", tmp_path / "results.json", coco_annotations=gt_path
    )
    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--dataset", tmp_path, "--split", "val", "--metric", "coco"]
    argv += ["--detections", tmp_path / "results.json", "--annotations", gt_path, "--out", out]
    assert rfcn(*argv) == 0
    assert json.loads(out.read_text()) == in_memory
    assert set(in_memory["per_class"]) == {"cat", "dog"}
    printed = capsys.readouterr().out
    assert "AP50" in printed
    assert any(
        line.split()[0] == "dog" and len(line.split()) == 4 for line in printed.splitlines() if line
    )
    assert (tmp_path / "pr_curves.png").is_file()


def test_malformed_results_line_exits_2(tmp_path: Path, capsys) -> None:
    root = hand_fixture(tmp_path / "voc")
    paths = write_detections(HAND_DETECTIONS, CLASSES, "voc07", tmp_path / "results")
    with paths[1].open("a") as handle:
        handle.write("000002 0.5 1 2 3\n")
    argv = ["evaluate", "--dataset", root, "--split", "test", "--metric", "voc07"]
    assert rfcn(*argv, "--detections", tmp_path / "results") == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {paths[1]}: line 4: expected <image_id> <score>")


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        (
            lambda d: (d / "comp4_det_test_cat.txt").write_text("000009 0.5 1 1 5 5\n"),
            [],
            "comp4_det_test_cat.txt: image ids not in split 'test': ['000009']",
        ),
        (lambda d: None, ["--iou", "1.5"], "--iou: must lie strictly between 0 and 1"),
        (lambda d: None, ["--detections", "results/none_"], "no results files"),
        (lambda d: None, ["--detections", "results/comp4_det_test_cat.txt"], "not a file"),
        (lambda d: None, ["--split", "nope"], "nope.txt: split file not found"),
    ],
)
def test_user_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, setup, extra, message
) -> None:
    root = hand_fixture(tmp_path / "voc")
    results = tmp_path / "results"
    write_detections(HAND_DETECTIONS, CLASSES, "voc", results)
    setup(results)
    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", "--dataset", root, "--split", "test", "--metric", "voc"]
    assert rfcn(*argv, "--detections", results, *extra) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error


def test_coco_rejects_iou_and_needs_its_annotations(tmp_path: Path, capsys) -> None:
    argv = ["evaluate", "--dataset", tmp_path, "--split", "val", "--metric", "coco"]
    argv += ["--detections", tmp_path / "results.json"]
    assert rfcn(*argv, "--iou", "0.5") == 2
    assert "--iou" in capsys.readouterr().err
    assert rfcn(*argv) == 2
    expected = tmp_path / "annotations" / "instances_val.json"
    assert f"error: {expected}: COCO annotation file not found" in capsys.readouterr().err


def test_annotated_classes_without_results_files_are_not_scored(tmp_path: Path, caplog) -> None:
    root = hand_fixture(tmp_path / "voc")
    results = tmp_path / "results"
    write_detections(HAND_DETECTIONS, CLASSES, "voc", results)
    (results / "comp4_det_test_dog.txt").unlink()
    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--dataset", root, "--split", "test", "--metric", "voc", "--out", out]
    assert rfcn(*argv, "--detections", results) == 0
    assert json.loads(out.read_text()) == {"mAP": 1.0, "AP": {"cat": 1.0}}
    assert "not scored, no results file for classes: dog" in caplog.text
