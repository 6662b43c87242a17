"""PASCAL VOC layout: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, ``ImageSets/Main/*.txt``.

:func:`read_voc_annotation` returns an XML file's content as written (1-based inclusive
pixel boxes), the raw form the VOC evaluator needs. :class:`VOCDetection` joins several
``(root, split)`` pairs (VOC 2007 + 2012) and converts boxes to the project's convention
``(xmin - 1, ymin - 1, xmax, ymax)`` (continuous 0-based pixels; detectron2's rule).

Class names (label ``l`` is ``class_names[l - 1]``):

1. given ones (the config's ``data.class_names``), in that order; an object of any other
   class is an error naming the file and the class;
2. otherwise, when every object's class is a PASCAL VOC class, the 20 VOC classes in their
   standard order (so labels match every VOC model, whichever classes a subset contains);
3. otherwise the sorted set of class names found in the annotations.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rfcn.data.dataset import DetectionDataset, ImageRecord, Transform, sanitize_boxes
from rfcn.data.images import MAX_IMAGE_PIXELS
from rfcn.errors import UserError, raise_or_warn
from rfcn.files import PathLike, printable_path

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

# Tried after JPEGImages/<id>.jpg and the XML's <filename>, for datasets saved in other formats.
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: ``box`` is (xmin, ymin, xmax, ymax) as in the file (1-based, inclusive)."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool
    truncated: bool


@dataclass(frozen=True)
class VocAnnotation:
    """One annotation file: the image's file name and size, and its objects."""

    filename: str
    width: int
    height: int
    objects: list[VocObject]


def read_voc_annotation(xml_path: PathLike) -> VocAnnotation:
    """Parse a VOC XML file, keeping values as written.

    A missing ``<filename>`` defaults to ``<xml stem>.jpg``; missing ``<difficult>`` and
    ``<truncated>`` mean 0.

    Raises:
        UserError: naming the file and the field, for malformed XML, a missing size, name or
            bndbox field, or a size or coordinate that is not a finite non-negative number.
    """
    path = Path(os.fsdecode(xml_path))
    shown = printable_path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise UserError(shown, "annotation file not found") from None
    except ET.ParseError as exc:
        raise UserError(shown, f"malformed XML: {exc}") from None
    except OSError as exc:
        raise UserError(shown, f"cannot read annotation file: {exc}") from None
    size = root.find("size")
    if size is None:
        raise UserError(shown, "missing <size>")
    width = _positive_int(size, "width", shown, "", "size/")
    height = _positive_int(size, "height", shown, "", "size/")
    filename = (root.findtext("filename") or "").strip() or f"{path.stem}.jpg"
    objects = [_read_object(node, i, shown) for i, node in enumerate(root.iter("object"), 1)]
    return VocAnnotation(filename=filename, width=width, height=height, objects=objects)


def _read_object(node: ET.Element, number: int, shown: str) -> VocObject:
    where = f"object {number}: "
    name = (node.findtext("name") or "").strip()
    if not name:
        raise UserError(shown, f"{where}missing <name>")
    bndbox = node.find("bndbox")
    if bndbox is None:
        raise UserError(shown, f"{where}missing <bndbox>")
    xmin, ymin, xmax, ymax = (
        _number(bndbox, key, shown, where, "bndbox/") for key in ("xmin", "ymin", "xmax", "ymax")
    )
    return VocObject(
        name=name,
        box=(xmin, ymin, xmax, ymax),
        difficult=_flag(node, "difficult", shown, where),
        truncated=_flag(node, "truncated", shown, where),
    )


def _number(parent: ET.Element, key: str, shown: str, where: str, tag: str) -> float:
    """The number in ``parent``'s child ``key``; messages name it ``<where><tag><key>``."""
    field = f"{where}<{tag}{key}>"
    text = parent.findtext(key)
    if text is None or not text.strip():
        raise UserError(shown, f"missing {field}")
    try:
        value = float(text)
    except ValueError:
        raise UserError(shown, f"{field} is not a number: {text.strip()!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(shown, f"{field} must be a finite number >= 0, got {text.strip()}")
    return value


def _positive_int(parent: ET.Element, key: str, shown: str, where: str, tag: str) -> int:
    value = _number(parent, key, shown, where, tag)
    if value < 1 or value != int(value):
        raise UserError(shown, f"{where}<{tag}{key}> must be a positive integer, got {value:g}")
    return int(value)


def _flag(parent: ET.Element, key: str, shown: str, where: str) -> bool:
    text = (parent.findtext(key) or "0").strip() or "0"
    if text not in ("0", "1"):
        raise UserError(shown, f"{where}<{key}> must be 0 or 1, got {text!r}")
    return text == "1"


@dataclass(frozen=True)
class VocImage:
    """One entry of a split: where its files are and what its XML says."""

    image_id: str
    xml_path: Path
    image_path: Path
    annotation: VocAnnotation


def read_voc_split(root: PathLike, split: str, lenient: bool = False) -> list[VocImage]:
    """Parse every annotation listed in ``root/ImageSets/Main/<split>.txt`` and find its image.

    Lines may carry a second column (the per-class split files' ``1``/``-1``); only the first
    is read. The image is ``JPEGImages/<id>.jpg``, else the XML's ``<filename>``, else
    ``<id>`` with another common suffix. ``lenient``: an image whose annotation is missing or
    bad, or whose image file is missing, is left out with a :class:`DataWarning` instead.

    Raises:
        UserError: the split file is missing; unless ``lenient``, an annotation or an image is
            missing, or an XML is bad.
    """
    root = Path(os.fsdecode(root))
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    try:
        lines = split_file.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except FileNotFoundError:
        available = sorted(p.stem for p in split_file.parent.glob("*.txt"))
        known = f"; splits there: {', '.join(available)}" if available else ""
        raise UserError(printable_path(split_file), f"split file not found{known}") from None
    except OSError as exc:
        raise UserError(printable_path(split_file), f"cannot read split file: {exc}") from None
    ids = [line.split()[0] for line in lines if line.strip()]
    images = []
    for image_id in ids:
        xml_path = root / "Annotations" / f"{image_id}.xml"
        try:
            annotation = read_voc_annotation(xml_path)
            image_path = _find_image(root / "JPEGImages", image_id, annotation.filename, xml_path)
        except UserError as exc:
            raise_or_warn(exc, lenient, "image left out")
            continue
        images.append(VocImage(image_id, xml_path, image_path, annotation))
    return images


def _find_image(folder: Path, image_id: str, filename: str, xml_path: Path) -> Path:
    candidates = [folder / f"{image_id}.jpg", folder / Path(filename).name]
    candidates += [folder / f"{image_id}{suffix}" for suffix in _IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        printable_path(candidates[0]),
        f"image file not found (annotation {printable_path(xml_path)}; also tried "
        f"{Path(filename).name} and other suffixes)",
    )


def voc_class_names(annotations: Iterable[VocAnnotation]) -> list[str]:
    """The class list rule 2 or 3 of the module docstring picks for these annotations."""
    found = {obj.name for annotation in annotations for obj in annotation.objects}
    if found <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(found)


class VOCDetection(DetectionDataset):
    """VOC-layout images of one or more ``(root, split)`` pairs, joined in order.

    Args:
        sources: ``(root, split)`` pairs, joined in order, e.g.
            ``[("VOC2007", "trainval"), ("VOC2012", "trainval")]``.
        class_names: see the module docstring; None or empty: from the data.
        keep_difficult: keep objects marked difficult (evaluation targets flag them in
            ``target["difficult"]``; training drops them unless ``use_difficult``).
        transform: training augmentation.
        max_pixels: larger images are refused.
        lenient: leave out, with a :class:`DataWarning` each, images with a missing or bad
            annotation or image file and objects of unknown classes, instead of raising.
    """

    def __init__(
        self,
        sources: Sequence[tuple[PathLike, str]],
        class_names: Sequence[str] | None = None,
        keep_difficult: bool = True,
        transform: Transform | None = None,
        max_pixels: int = MAX_IMAGE_PIXELS,
        lenient: bool = False,
    ) -> None:
        images = [i for root, split in sources for i in read_voc_split(root, split, lenient)]
        names = list(class_names) if class_names else voc_class_names(i.annotation for i in images)
        label_of = {name: label for label, name in enumerate(names, 1)}
        records = [_to_record(image, label_of, keep_difficult, lenient) for image in images]
        super().__init__(records, names, transform, max_pixels)


def _to_record(
    image: VocImage, label_of: dict[str, int], keep_difficult: bool, lenient: bool
) -> ImageRecord:
    annotation = image.annotation
    shown = printable_path(image.xml_path)
    for obj in annotation.objects:
        if obj.name not in label_of:
            unknown = UserError(shown, f"unknown class {obj.name!r} (known: {', '.join(label_of)})")
            raise_or_warn(unknown, lenient, "object left out")
    objects = [
        obj
        for obj in annotation.objects
        if obj.name in label_of and (keep_difficult or not obj.difficult)
    ]
    raw = torch.tensor([obj.box for obj in objects], dtype=torch.float32).reshape(-1, 4)
    # VOC boxes are 1-based and inclusive: pixel columns xmin..xmax span [xmin - 1, xmax).
    boxes = raw - torch.tensor([1.0, 1.0, 0.0, 0.0])
    shown_boxes = ["(" + ", ".join(f"{v:g}" for v in obj.box) + ")" for obj in objects]
    boxes, keep = sanitize_boxes(boxes, annotation.height, annotation.width, shown, shown_boxes)
    labels = torch.tensor([label_of[obj.name] for obj in objects], dtype=torch.int64)
    difficult = torch.tensor([obj.difficult for obj in objects], dtype=torch.bool)
    return ImageRecord(
        image_id=image.image_id,
        path=image.image_path,
        source=shown,
        height=annotation.height,
        width=annotation.width,
        boxes=boxes[keep],
        labels=labels[keep],
        difficult=difficult[keep],
    )
