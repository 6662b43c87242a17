"""Writing generated datasets: VOC annotation files, COCO instances JSON, whole-folder replacement.

The generated datasets (:mod:`rfcn.data.synthetic`, :mod:`rfcn.data.mosaic`) are written in VOC
layout with the same boxes again as a COCO instances JSON per split, so the VOC reader, the VOC
metric and COCO AP all serve. Boxes here are integer ``(x1, y1, x2, y2)`` in continuous 0-based
pixels (the project's convention); VOC files receive them 1-based and inclusive.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

COCO_JSON = "annotations/instances_{split}.json"  # where a split's COCO ground truth lies


@dataclass(frozen=True)
class WrittenObject:
    """One annotated object: its class ``name``, ``box`` ``(x1, y1, x2, y2)`` in continuous
    pixels, ``area`` in pixels (COCO's ``area``, which sorts objects into small / medium /
    large: the visible pixels where known, else the box's) and VOC's ``difficult`` flag
    (COCO's ``iscrowd``: ignored by both metrics)."""

    name: str
    box: tuple[int, int, int, int]
    area: int
    difficult: bool = False


@dataclass(frozen=True)
class WrittenImage:
    """One image of a split: its id (file ``<image_id>.jpg``), size and objects."""

    image_id: str
    width: int
    height: int
    objects: Sequence[WrittenObject]


def voc_annotation_xml(image: WrittenImage, folder: str) -> bytes:
    """A PASCAL VOC annotation; boxes become 1-based inclusive (the reader undoes it)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = f"{image.image_id}.jpg"
    size_node = ET.SubElement(root, "size")
    for name, value in (("width", image.width), ("height", image.height), ("depth", 3)):
        ET.SubElement(size_node, name).text = str(value)
    for obj in image.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = str(int(obj.difficult))
        box = ET.SubElement(node, "bndbox")
        x1, y1, x2, y2 = obj.box
        for name, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, name).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def coco_instances(
    images: Sequence[WrittenImage], class_names: Sequence[str]
) -> dict[str, list[dict[str, object]]]:
    """A COCO instances dict of one split; boxes ``[x, y, w, h]`` in the same continuous pixels,
    category ids ``1..C`` in the order of ``class_names``."""
    category_of = {name: number for number, name in enumerate(class_names, start=1)}
    entries, annotations = [], []
    for number, image in enumerate(images, start=1):
        entries.append(
            {
                "id": number,
                "file_name": f"{image.image_id}.jpg",
                "width": image.width,
                "height": image.height,
            }
        )
        for obj in image.objects:
            x1, y1, x2, y2 = obj.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": category_of[obj.name],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": obj.area,
                    "iscrowd": int(obj.difficult),
                }
            )
    categories = [{"id": number, "name": name} for name, number in category_of.items()]
    return {"images": entries, "annotations": annotations, "categories": categories}


def replace_folder(root: Path, write: Callable[[Path], None]) -> None:
    """Make ``root`` what ``write(folder)`` writes into an empty folder, in one step.

    ``write`` fills a temporary sibling folder, which then replaces ``root`` (if any), so an
    interrupted run never leaves a half-written dataset at ``root``.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write(staging)
        if root.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{root.name}.old.", dir=root.parent))
            os.replace(root, retired / root.name)
            os.replace(staging, root)
            shutil.rmtree(retired)
        else:
            os.replace(staging, root)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
