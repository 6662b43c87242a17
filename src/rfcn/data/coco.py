"""COCO layout: one JSON file (``images``, ``annotations``, ``categories``) and an image folder.

Category ids become contiguous labels 1..C (``category_ids[label - 1]`` is the COCO id, for
writing results); class names are the categories' names in id order, unless given. Boxes go
from COCO's ``[x, y, w, h]`` (continuous 0-based pixels) to x1,y1,x2,y2 = (x, y, x + w, y + h).
Crowd boxes (``iscrowd: 1``) are left out of training targets and kept, flagged
``difficult`` (to be ignored), in evaluation targets; the COCO evaluator reads the JSON itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rfcn.data.dataset import DetectionDataset, ImageRecord, Transform, sanitize_boxes
from rfcn.data.images import MAX_IMAGE_PIXELS
from rfcn.errors import UserError, raise_or_warn
from rfcn.files import PathLike, printable_path, read_json


class _Annotation(NamedTuple):
    xywh: list[float]
    label: int
    crowd: bool
    shown: str  # how warnings name the box


def read_coco_json(json_path: PathLike) -> dict[str, Any]:
    """Load a COCO annotation file as a dict.

    Raises:
        UserError: the file is missing, unreadable, not JSON, or not a JSON object.
    """
    data = read_json(json_path, "COCO annotation file")
    if not isinstance(data, dict):
        raise UserError(
            printable_path(json_path), "expected a JSON object with images, annotations, categories"
        )
    return data


# What pycocotools reads from an instances file to index it and score boxes against it.
_EVALUATION_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "images": {"id": int},
    "categories": {"id": int, "name": str},
    "annotations": {
        "id": int, "image_id": int, "category_id": int, "bbox": list, "area": (int, float)
    },
}  # fmt: skip


def check_instances(data: dict[str, Any], shown: str) -> None:
    """Check that an instances dict has every key pycocotools reads to score boxes against it
    (it fails with a bare ``KeyError`` on a missing one).

    Raises:
        UserError: naming the file (``shown``), the entry and the key.
    """
    for section, keys in _EVALUATION_KEYS.items():
        for i, item in enumerate(_list(data, section, shown)):
            where = f"{section}[{i}]"
            for key, kind in keys.items():
                _field(item, key, kind, shown, where)
            if section == "annotations":
                _check_bbox(item["bbox"], shown, where)


class COCODetection(DetectionDataset):
    """The images of one COCO JSON file, in ascending image id order.

    Args:
        json_path: the annotation file.
        image_dir: the folder ``file_name`` is relative to.
        class_names: None or empty: the categories' names in id order; otherwise the label
            order, and it must name exactly the file's categories.
        keep_crowd: keep crowd boxes, flagged difficult (evaluation); training drops them.
        transform: training augmentation.
        max_pixels: larger images are refused.
        lenient: leave out, with a :class:`DataWarning` each, bad entries of ``images`` and
            ``annotations`` and images whose file is missing, instead of raising.

    Attributes:
        coco_image_ids: the numeric COCO id of every image (``image_ids`` holds them as text).
        category_ids: ``category_ids[label - 1]`` is the COCO category id of ``label``.

    Raises:
        UserError: naming the file and the key, for a missing key, a value of the wrong type,
            an unknown image or category id, or a missing image file (``lenient``: only for
            problems of the whole file: malformed JSON, no ``images``, bad ``categories``).
    """

    def __init__(
        self,
        json_path: PathLike,
        image_dir: PathLike,
        class_names: Sequence[str] | None = None,
        keep_crowd: bool = True,
        transform: Transform | None = None,
        max_pixels: int = MAX_IMAGE_PIXELS,
        lenient: bool = False,
    ) -> None:
        shown = printable_path(json_path)
        data = read_coco_json(json_path)
        categories = _read_categories(data, shown)
        names, self.category_ids = _label_order(categories, class_names, shown)
        label_of_category = {cid: label for label, cid in enumerate(self.category_ids, 1)}
        images = _read_images(data, shown, lenient)
        boxes_of = _read_annotations(data, shown, images, label_of_category, lenient)
        folder = Path(os.fsdecode(image_dir))
        records = []
        for image_id, image in sorted(images.items()):
            try:
                boxes = boxes_of.get(image_id, [])
                records.append(_to_record(image_id, image, boxes, folder, shown, keep_crowd))
            except UserError as exc:
                raise_or_warn(exc, lenient, "image left out")
        self.coco_image_ids = [int(record.image_id) for record in records]
        super().__init__(records, names, transform, max_pixels)


def _field(item: Any, key: str, kind: type | tuple[type, ...], shown: str, where: str) -> Any:
    """``item[key]``, checked to be of ``kind`` (bool is never taken for a number)."""
    if not isinstance(item, dict):
        raise UserError(shown, f"{where}: expected a JSON object, got {type(item).__name__}")
    if key not in item:
        raise UserError(shown, f"{where}: missing key {key!r}")
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise UserError(shown, f"{where}.{key}: expected {names}, got {value!r}")
    return value


def _list(data: dict[str, Any], key: str, shown: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        problem = "missing" if value is None else f"expected a list, got {type(value).__name__}"
        raise UserError(shown, f"key {key!r}: {problem}")
    return value


def _read_categories(data: dict[str, Any], shown: str) -> dict[int, str]:
    categories: dict[int, str] = {}
    for i, item in enumerate(_list(data, "categories", shown)):
        where = f"categories[{i}]"
        category_id = _field(item, "id", int, shown, where)
        if category_id in categories:
            raise UserError(shown, f"{where}.id: duplicate category id {category_id}")
        categories[category_id] = _field(item, "name", str, shown, where)
    if not categories:
        raise UserError(shown, "key 'categories': no categories")
    return categories


def _label_order(
    categories: dict[int, str], class_names: Sequence[str] | None, shown: str
) -> tuple[list[str], list[int]]:
    """Class names and ``category_ids[label - 1]`` in label order."""
    if not class_names:
        ids = sorted(categories)
        return [categories[cid] for cid in ids], ids
    id_of = {name: cid for cid, name in categories.items()}
    unknown = sorted(set(id_of) - set(class_names))
    if unknown:
        raise UserError(shown, f"categories: unknown class {unknown[0]!r} (not in class_names)")
    missing = [name for name in class_names if name not in id_of]
    if missing:
        raise UserError(shown, f"categories: no category named {missing[0]!r} from class_names")
    return list(class_names), [id_of[name] for name in class_names]


def _read_images(data: dict[str, Any], shown: str, lenient: bool) -> dict[int, dict[str, Any]]:
    """``{image id: {"file_name", "width", "height"}}``; ``lenient``: bad entries left out."""
    images: dict[int, dict[str, Any]] = {}
    for i, item in enumerate(_list(data, "images", shown)):
        try:
            image_id, image = _read_image(item, f"images[{i}]", shown, images)
        except UserError as exc:
            raise_or_warn(exc, lenient, "image left out")
            continue
        images[image_id] = image
    return images


def _read_image(
    item: Any, where: str, shown: str, images: dict[int, dict[str, Any]]
) -> tuple[int, dict[str, Any]]:
    """One entry of ``images``, checked against the ids read before it."""
    image_id = _field(item, "id", int, shown, where)
    if image_id in images:
        raise UserError(shown, f"{where}.id: duplicate image id {image_id}")
    size = {key: _field(item, key, int, shown, where) for key in ("width", "height")}
    for key, value in size.items():
        if value <= 0:
            raise UserError(shown, f"{where}.{key}: must be positive, got {value}")
    return image_id, {"file_name": _field(item, "file_name", str, shown, where), **size}


def _read_annotations(
    data: dict[str, Any],
    shown: str,
    images: dict[int, dict[str, Any]],
    label_of_category: dict[int, int],
    lenient: bool,
) -> dict[int, list[_Annotation]]:
    """The annotations of each image id; ``lenient``: bad entries left out.

    A file without ``annotations`` (COCO's image-info files for test-dev) has no boxes.
    """
    boxes_of: dict[int, list[_Annotation]] = {}
    annotations = _list(data, "annotations", shown) if "annotations" in data else []
    for i, item in enumerate(annotations):
        try:
            image_id, annotation = _read_annotation(
                item, f"annotations[{i}]", shown, images, label_of_category
            )
        except UserError as exc:
            raise_or_warn(exc, lenient, "annotation left out")
            continue
        boxes_of.setdefault(image_id, []).append(annotation)
    return boxes_of


def _check_bbox(bbox: list[Any], shown: str, where: str) -> None:
    if len(bbox) != 4 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox
    ):
        raise UserError(shown, f"{where}.bbox: expected 4 finite numbers, got {bbox!r}")


def _read_annotation(
    item: Any,
    where: str,
    shown: str,
    images: dict[int, dict[str, Any]],
    label_of_category: dict[int, int],
) -> tuple[int, _Annotation]:
    """One entry of ``annotations``: its image id and the annotation."""
    image_id = _field(item, "image_id", int, shown, where)
    if image_id not in images:
        raise UserError(shown, f"{where}.image_id: no image with id {image_id}")
    category_id = _field(item, "category_id", int, shown, where)
    if category_id not in label_of_category:
        raise UserError(shown, f"{where}.category_id: no category with id {category_id}")
    bbox = _field(item, "bbox", list, shown, where)
    _check_bbox(bbox, shown, where)
    crowd = item.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):
        raise UserError(shown, f"{where}.iscrowd: expected 0 or 1, got {crowd!r}")
    xywh, label = [float(v) for v in bbox], label_of_category[category_id]
    return image_id, _Annotation(xywh, label, bool(crowd), f"{where}.bbox {bbox}")


def _to_record(
    image_id: int,
    image: dict[str, Any],
    annotations: list[_Annotation],
    folder: Path,
    shown: str,
    keep_crowd: bool,
) -> ImageRecord:
    path = folder / image["file_name"]
    if not path.is_file():
        raise UserError(printable_path(path), f"image file not found (listed in {shown})")
    kept = [a for a in annotations if keep_crowd or not a.crowd]
    xywh = torch.tensor([a.xywh for a in kept], dtype=torch.float32).reshape(-1, 4)
    boxes = torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), dim=1)
    height, width = image["height"], image["width"]
    boxes, keep = sanitize_boxes(boxes, height, width, shown, [a.shown for a in kept])
    labels = torch.tensor([a.label for a in kept], dtype=torch.int64)
    crowd = torch.tensor([a.crowd for a in kept], dtype=torch.bool)
    return ImageRecord(
        image_id=str(image_id),
        path=path,
        source=shown,
        height=height,
        width=width,
        boxes=boxes[keep],
        labels=labels[keep],
        difficult=crowd[keep],
    )
