"""COCO reader on a JSON written here: label mapping, xywh boxes, crowd handling, bad files."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from rfcn.data.coco import COCODetection, check_instances
from rfcn.errors import DataWarning, UserError


def _coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 7, "file_name": "b.jpg", "width": 40, "height": 30},
            {"id": 3, "file_name": "a.png", "width": 20, "height": 30},
            {"id": 9, "file_name": "c.jpg", "width": 16, "height": 16},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [2, 3, 10.5, 4], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [30, 20, 20, 20], "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 40, 30], "iscrowd": 1},
            {"id": 4, "image_id": 3, "category_id": 1, "bbox": [5, 5, 0, 10]},
        ],
    }


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "b.jpg")
    Image.new("L", (20, 30)).save(tmp_path / "images" / "a.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "images" / "c.jpg")
    _write_json(tmp_path, _coco())
    return tmp_path


def _write_json(root: Path, data: Any) -> Path:
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path


def _load(root: Path, **kwargs) -> COCODetection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return COCODetection(root / "instances.json", root / "images", **kwargs)


def test_categories_map_to_contiguous_labels_in_id_order(coco_root: Path) -> None:
    dataset = _load(coco_root)
    assert dataset.class_names == ["person", "dog"]
    assert dataset.category_ids == [1, 18]
    assert dataset.coco_image_ids == [3, 7, 9]
    assert dataset.image_ids == ["3", "7", "9"]
    assert dataset.image_sizes == [(30, 20), (30, 40), (16, 16)]


def test_xywh_to_xyxy_clipped_and_crowd_kept_as_difficult_for_evaluation(coco_root: Path) -> None:
    dataset = _load(coco_root, keep_crowd=True)
    image, target = dataset[1]
    assert image.shape == (3, 30, 40)
    expected = torch.tensor([[2.0, 3, 12.5, 7], [30, 20, 40, 30], [0, 0, 40, 30]])
    torch.testing.assert_close(target["boxes"], expected)
    assert target["labels"].tolist() == [2, 1, 1]
    assert target["difficult"].tolist() == [False, False, True]
    assert target["image_id"] == "7"


def test_crowd_left_out_of_training_targets(coco_root: Path) -> None:
    _, target = _load(coco_root, keep_crowd=False)[1]
    assert target["labels"].tolist() == [2, 1]
    assert not target["difficult"].any()


def test_zero_width_box_dropped_with_warning_and_empty_image(coco_root: Path) -> None:
    with pytest.warns(UserWarning, match=r"annotations\[3\]\.bbox \[5, 5, 0, 10\]"):
        dataset = COCODetection(coco_root / "instances.json", coco_root / "images")
    _, target = dataset[0]
    assert target["boxes"].shape == (0, 4)
    _, empty = dataset[2]  # no annotations at all
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == torch.int64


def test_given_class_names_order_labels(coco_root: Path) -> None:
    dataset = _load(coco_root, class_names=["dog", "person"])
    assert dataset.category_ids == [18, 1]
    _, target = dataset[1]
    assert target["labels"].tolist() == [1, 2, 2]
    with pytest.raises(UserError, match="unknown class 'person'"):
        _load(coco_root, class_names=["dog"])
    with pytest.raises(UserError, match="no category named 'cat'"):
        _load(coco_root, class_names=["dog", "person", "cat"])


def test_image_info_file_without_annotations(coco_root: Path) -> None:
    data = _coco()
    del data["annotations"]
    _write_json(coco_root, data)
    dataset = _load(coco_root)
    assert all(len(dataset[i][1]["boxes"]) == 0 for i in range(len(dataset)))


def _broken(edit: str) -> dict[str, Any]:
    data = copy.deepcopy(_coco())
    if edit == "image id str":
        data["images"][0]["id"] = "7"
    elif edit == "no file_name":
        del data["images"][1]["file_name"]
    elif edit == "bool width":
        data["images"][0]["width"] = True
    elif edit == "negative height":
        data["images"][0]["height"] = -3
    elif edit == "bbox text":
        data["annotations"][0]["bbox"] = [1, 2, "3", 4]
    elif edit == "bbox nan":
        data["annotations"][0]["bbox"] = [1, 2, float("nan"), 4]
    elif edit == "bbox short":
        data["annotations"][0]["bbox"] = [1, 2, 3]
    elif edit == "unknown category":
        data["annotations"][0]["category_id"] = 99
    elif edit == "unknown image":
        data["annotations"][0]["image_id"] = 99
    elif edit == "no categories":
        del data["categories"]
    elif edit == "images not a list":
        data["images"] = {"id": 1}
    elif edit == "annotation not an object":
        data["annotations"][1] = [1, 2]
    elif edit == "crowd 2":
        data["annotations"][0]["iscrowd"] = 2
    elif edit == "duplicate image id":
        data["images"][1]["id"] = 7
    return data


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ("image id str", r"images\[0\]\.id: expected int, got '7'"),
        ("no file_name", r"images\[1\]: missing key 'file_name'"),
        ("bool width", r"images\[0\]\.width: expected int"),
        ("negative height", r"images\[0\]\.height: must be positive"),
        ("bbox text", r"annotations\[0\]\.bbox: expected 4 finite numbers"),
        ("bbox nan", r"annotations\[0\]\.bbox: expected 4 finite numbers"),
        ("bbox short", r"annotations\[0\]\.bbox"),
        ("unknown category", r"annotations\[0\]\.category_id: no category with id 99"),
        ("unknown image", r"annotations\[0\]\.image_id: no image with id 99"),
        ("no categories", "key 'categories': missing"),
        ("images not a list", "key 'images': expected a list"),
        ("annotation not an object", r"annotations\[1\]: expected a JSON object"),
        ("crowd 2", r"annotations\[0\]\.iscrowd"),
        ("duplicate image id", "duplicate image id 7"),
    ],
)
def test_bad_json_names_file_and_key(coco_root: Path, edit: str, problem: str) -> None:
    path = _write_json(coco_root, _broken(edit))
    with pytest.raises(UserError, match=problem) as caught:
        _load(coco_root)
    assert caught.value.source == str(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{", "malformed JSON"), ("[1, 2]", "expected a JSON object"), ("NaN", "expected a JSON")],
)
def test_unreadable_json(coco_root: Path, text: str, problem: str) -> None:
    (coco_root / "instances.json").write_text(text)
    with pytest.raises(UserError, match=problem):
        _load(coco_root)


def test_missing_json_and_missing_image(coco_root: Path) -> None:
    with pytest.raises(UserError, match="annotation file not found"):
        COCODetection(coco_root / "nope.json", coco_root / "images")
    (coco_root / "images" / "c.jpg").unlink()
    with pytest.raises(UserError, match="image file not found") as caught:
        _load(coco_root)
    assert caught.value.source.endswith("c.jpg")


def test_lenient_reading_leaves_out_bad_entries_with_a_warning_each(coco_root: Path) -> None:
    data = _coco()
    data["images"].append({"id": 11, "file_name": "d.jpg", "width": -4, "height": 8})
    data["annotations"][1]["category_id"] = 99
    data["annotations"].append({"id": 5, "image_id": 3, "category_id": 1, "bbox": "wide"})
    path = _write_json(coco_root, data)
    (coco_root / "images" / "c.jpg").unlink()
    with pytest.warns(DataWarning) as caught:
        dataset = COCODetection(path, coco_root / "images", lenient=True)
    problems = [(w.message.source, w.message.problem) for w in caught]
    shown = str(path)
    assert problems == [
        (shown, "images[3].width: must be positive, got -4; image left out"),
        (shown, "annotations[1].category_id: no category with id 99; annotation left out"),
        (shown, "annotations[4].bbox: expected list, got 'wide'; annotation left out"),
        (shown, "dropping zero-area or inverted box annotations[3].bbox [5, 5, 0, 10]"),
        (
            str(coco_root / "images" / "c.jpg"),
            f"image file not found (listed in {shown}); image left out",
        ),
    ]
    assert dataset.coco_image_ids == [3, 7]
    assert dataset.records[1].labels.tolist() == [2, 1]  # image 7: the dog and the crowd box
    assert dataset.records[1].difficult.tolist() == [False, True]


def test_check_instances_names_what_pycocotools_would_miss() -> None:
    data = _coco()
    for number, annotation in enumerate(data["annotations"], 1):
        annotation["area"] = 10.0 * number
    check_instances(data, "i.json")  # width, height and file names are not needed to score
    data["annotations"][2]["area"] = "big"
    with pytest.raises(UserError) as caught:
        check_instances(data, "i.json")
    assert str(caught.value) == "i.json: annotations[2].area: expected int or float, got 'big'"
    data["annotations"][2]["area"] = 5
    data["annotations"][0]["bbox"] = [1, 2, 3]
    with pytest.raises(UserError, match=r"annotations\[0\]\.bbox: expected 4 finite numbers"):
        check_instances(data, "i.json")
