"""Results files: VOC text files and COCO JSON, conversions, exact round trips, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rfcn.errors import UserError
from rfcn.evaluation.results_files import (
    coco_results,
    find_voc_results,
    read_coco_results,
    read_voc_results,
    voc_class_detections,
    write_coco_results,
    write_voc_results,
)

CLASSES = ["cat", "dog"]


def random_detections(seed: int, images: int = 5) -> dict[str, dict[str, torch.Tensor]]:
    """Model-like float32 outputs: 0-based boxes, scores in (0, 1), labels 1..2."""
    generator = torch.Generator().manual_seed(seed)
    detections = {}
    for index in range(images):
        count = index % 4 * 3
        xy = torch.rand(count, 2, generator=generator) * 300
        wh = torch.rand(count, 2, generator=generator) * 100 + 1
        detections[f"{index:06d}"] = {
            "boxes": torch.cat([xy, xy + wh], dim=1),
            "scores": torch.rand(count, generator=generator),
            "labels": torch.randint(1, 3, (count,), generator=generator),
        }
    return detections


def test_voc_lines_are_one_based_pixels(tmp_path: Path) -> None:
    detections = {
        "000005": {
            "boxes": np.array([[0.0, 9.0, 10.0, 20.5]]),
            "scores": np.array([0.75]),
            "labels": np.array([2]),
        }
    }
    paths = write_voc_results(tmp_path, voc_class_detections(detections, CLASSES), "det_")
    assert [p.name for p in paths] == ["det_cat.txt", "det_dog.txt"]
    assert (tmp_path / "det_cat.txt").read_text() == ""  # every class gets its file
    assert (tmp_path / "det_dog.txt").read_text() == "000005 0.75 1.0 10.0 10.0 20.5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det_cat.txt", "det_dog.txt"]


def test_voc_files_round_trip_bit_exactly(tmp_path: Path) -> None:
    grouped = voc_class_detections(random_detections(0), CLASSES)
    write_voc_results(tmp_path, grouped)
    files = find_voc_results(tmp_path, CLASSES)
    assert sum(len(d.image_ids) for d in grouped.values()) > 10
    for name in CLASSES:
        back = read_voc_results(files[name])
        assert back.image_ids == grouped[name].image_ids
        assert back.scores.tobytes() == grouped[name].scores.tobytes()
        assert back.boxes.tobytes() == grouped[name].boxes.tobytes()


def test_grouping_keeps_image_then_detection_order() -> None:
    detections = {
        "b": {"boxes": np.zeros((3, 4)), "scores": [0.1, 0.2, 0.3], "labels": [1, 2, 1]},
        "a": {"boxes": np.zeros((1, 4)), "scores": [0.4], "labels": [1]},
    }
    grouped = voc_class_detections(detections, CLASSES)
    assert grouped["cat"].image_ids == ("b", "b", "a")
    np.testing.assert_array_equal(grouped["cat"].scores, [0.1, 0.3, 0.4])
    assert grouped["dog"].image_ids == ("b",)


def test_labels_outside_the_classes_are_rejected() -> None:
    bad = {"a": {"boxes": np.zeros((1, 4)), "scores": [0.5], "labels": [3]}}
    with pytest.raises(ValueError, match=r"labels must lie in 1\.\.2"):
        voc_class_detections(bad, CLASSES)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("000001 0.5 1 2 3", "line 2: expected <image_id> <score>"),
        ("000001 high 1 2 3 4", "line 2: expected"),
        ("000001 0.5 1 2 3 4 5", "line 2: expected"),
        ("000001 nan 1 2 3 4", "line 2: numbers must be finite"),
    ],
)
def test_malformed_voc_lines_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "comp4_det_test_cat.txt"
    path.write_text(f"000001 0.9 1 2 3 4\n{line}\n")
    with pytest.raises(UserError, match=problem) as caught:
        read_voc_results(path)
    assert caught.value.source == str(path)


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "r_cat.txt"
    path.write_text("\n000001 0.9 1 2 3 4\n\n")
    assert read_voc_results(path).image_ids == ("000001",)


def test_prefix_is_found_even_when_class_names_share_suffixes(tmp_path: Path) -> None:
    classes = ["light", "traffic_light"]
    for name in [*classes, "extra"]:
        (tmp_path / f"comp4_det_test_{name}.txt").write_text("")
    (tmp_path / "notes.txt").write_text("")
    files = find_voc_results(tmp_path, classes)
    assert {name: path.name for name, path in files.items()} == {
        "extra": "comp4_det_test_extra.txt",
        "light": "comp4_det_test_light.txt",
        "traffic_light": "comp4_det_test_traffic_light.txt",
    }
    by_prefix = find_voc_results(tmp_path / "comp4_det_test_", classes)
    assert by_prefix == files


def test_ambiguous_or_missing_results_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "run1_cat.txt").write_text("")
    (tmp_path / "run2_cat.txt").write_text("")
    with pytest.raises(UserError, match="several prefixes: run1_, run2_"):
        find_voc_results(tmp_path, ["cat"])
    with pytest.raises(UserError, match="no results files"):
        find_voc_results(tmp_path, ["dog"])
    with pytest.raises(UserError, match="results file not found"):
        read_voc_results(tmp_path / "run1_dog.txt")


def test_coco_records_map_ids_and_use_xywh(tmp_path: Path) -> None:
    detections = {
        "000139": {
            "boxes": torch.tensor([[10.0, 20.0, 15.5, 40.0]]),
            "scores": torch.tensor([0.5]),
            "labels": torch.tensor([2]),
        }
    }
    records = coco_results(detections, CLASSES, {"000139": 139}, {"cat": 17, "dog": 18})
    assert records == [
        {"image_id": 139, "category_id": 18, "bbox": [10.0, 20.0, 5.5, 20.0], "score": 0.5}
    ]
    with pytest.raises(ValueError, match="not among the COCO categories"):
        coco_results(detections, CLASSES, {"000139": 139}, {"cat": 17})
    with pytest.raises(ValueError, match="not in the COCO annotations"):
        coco_results(detections, CLASSES, {}, {"cat": 17, "dog": 18})


def test_coco_json_round_trips_exactly(tmp_path: Path) -> None:
    detections = random_detections(1)
    image_ids = {image_id: int(image_id) + 1 for image_id in detections}
    records = coco_results(detections, CLASSES, image_ids, {"cat": 1, "dog": 2})
    path = tmp_path / "results.json"
    write_coco_results(path, records)
    assert read_coco_results(path) == records
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[{", "malformed JSON at line 1"),
        ('{"a": 1}', "must be a JSON list"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}]', "entry 0"),
        ('[{"image_id": "1", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]', "entry 0"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]', "entry 0"),
    ],
)
def test_malformed_coco_results_are_user_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(UserError, match=problem) as caught:
        read_coco_results(path)
    assert caught.value.source == str(path)
