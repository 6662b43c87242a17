"""A small-object copy of a VOC dataset: its photos shrunk and laid out as mosaics.

Real photographs of a class rarely show it small, and a detector's small-object behaviour is
what this copy measures. Every canvas (``canvas`` x ``canvas`` px) holds several photos of one
source split, each shrunk so that its objects' longer sides fall in ``object_px`` (16 to 48 px
by default, one to three cells of a stride-16 score map at 384 px), on a background made from
another photo of the same split, enlarged and blurred until nothing in it is recognisable.

- Splits follow the source photos: training canvases use only the source's training split,
  test canvases only its test split, so no photo is in both (``mosaic.json`` lists them).
- Each photo's scale is drawn log-uniformly in the range that puts all its objects inside
  ``object_px``; where no scale does (objects of very different sizes), the largest object
  gets the largest size. Photos are used in turn from a shuffled list, so each appears about
  equally often, at a new scale and place each time. Tiles do not overlap.
- Boxes are the source's scaled into the canvas; the copy is in VOC layout (``train``,
  ``trainval`` and ``test`` splits) with a COCO instances JSON per split
  (:data:`rfcn.data.writers.COCO_JSON`; ``area`` is the box's), so VOC mAP, COCO AP (incl.
  AP_small) and the small-object recall all serve.

A tile's edge is a cue real small objects lack; it is the same for every detector compared.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from rfcn.data.dataset import ImageRecord
from rfcn.data.images import read_rgb_array
from rfcn.data.voc import VOCDetection
from rfcn.data.writers import (
    COCO_JSON,
    WrittenImage,
    WrittenObject,
    coco_instances,
    replace_folder,
    voc_annotation_xml,
)
from rfcn.errors import UserError

MANIFEST_NAME = "mosaic.json"
TRAIN_SPLIT = "train"
TEST_SPLIT = "test"
_GAP = 4  # px kept free between tiles
_PLACEMENT_TRIES = 30
_BACKGROUND_BLUR = 0.06  # Gaussian radius of the background, as a fraction of the canvas side


@dataclass(frozen=True)
class MosaicSettings:
    """What the copy looks like (all sizes in pixels).

    Attributes:
        canvas: side of every square canvas.
        object_px: smallest and largest longer side of a shrunk object.
        photos_per_canvas: fewest and most photos tried on a canvas.
        train_canvases, test_canvases: canvases per split.
        source_train_split, source_test_split: the source splits they take photos from.
        seed: of every random choice; the same settings give the same files.
    """

    canvas: int = 384
    object_px: tuple[int, int] = (16, 48)
    photos_per_canvas: tuple[int, int] = (3, 8)
    train_canvases: int = 400
    test_canvases: int = 100
    source_train_split: str = "train"
    source_test_split: str = "val"
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`UserError` naming the first setting no canvas could be made with."""
        smallest, largest = self.object_px
        fewest, most = self.photos_per_canvas
        if not 1 <= smallest <= largest < self.canvas:
            raise UserError(
                "--object-px",
                f"needs 1 <= smallest <= largest < canvas side, got {[smallest, largest]}",
            )
        if not 1 <= fewest <= most:
            raise UserError("--photos", f"needs 1 <= fewest <= most, got {[fewest, most]}")
        if self.train_canvases <= 0 or self.test_canvases <= 0:
            raise UserError("--canvases", "needs a positive number of canvases per split")
        if self.source_train_split == self.source_test_split:
            raise UserError(
                "--source-splits", "training and test photos must come from two different splits"
            )


def shrink_scale(
    longer_sides: np.ndarray, object_px: tuple[int, int], rng: np.random.Generator
) -> float:
    """A scale that puts every object's longer side (``(N,)`` px, N >= 1) inside ``object_px``,
    drawn log-uniformly; the largest object at the largest size when no scale fits all."""
    smallest, largest = object_px
    low = smallest / float(longer_sides.min())
    high = largest / float(longer_sides.max())
    if low >= high:
        return high
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _tile(record: ImageRecord, scale: float) -> tuple[Image.Image, np.ndarray]:
    """The photo shrunk by ``scale`` and its ``(N, 4)`` boxes in tile pixels."""
    photo = Image.fromarray(read_rgb_array(record.path))
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    # the boxes follow the pixels' actual scale, which rounding moved slightly
    sx, sy = size[0] / photo.width, size[1] / photo.height
    boxes = record.boxes.numpy().astype(np.float64) * np.array([sx, sy, sx, sy])
    return photo.resize(size, Image.Resampling.LANCZOS), boxes


def _background(record: ImageRecord, canvas: int) -> Image.Image:
    photo = Image.fromarray(read_rgb_array(record.path)).resize((canvas, canvas))
    return photo.filter(ImageFilter.GaussianBlur(radius=_BACKGROUND_BLUR * canvas))


def _free_spot(
    taken: list[tuple[int, int, int, int]],
    width: int,
    height: int,
    canvas: int,
    rng: np.random.Generator,
) -> tuple[int, int] | None:
    """A top-left corner where a ``width x height`` tile keeps ``_GAP`` px from every taken
    tile ``(x1, y1, x2, y2)``, or None when random tries find none."""
    if width > canvas or height > canvas:
        return None
    for _ in range(_PLACEMENT_TRIES):
        left = int(rng.integers(0, canvas - width + 1))
        top = int(rng.integers(0, canvas - height + 1))
        right, bottom = left + width, top + height
        if all(
            right + _GAP <= x1 or x2 + _GAP <= left or bottom + _GAP <= y1 or y2 + _GAP <= top
            for x1, y1, x2, y2 in taken
        ):
            return left, top
    return None


class _PhotoQueue:
    """The split's annotated photos in a shuffled order, reshuffled after each pass."""

    def __init__(self, records: list[ImageRecord], rng: np.random.Generator) -> None:
        self.records = [r for r in records if len(r.boxes)]
        if not self.records:
            raise UserError("--source", "the split holds no annotated object")
        self.rng = rng
        self.order: list[int] = []

    def next(self) -> ImageRecord:
        if not self.order:
            self.order = self.rng.permutation(len(self.records)).tolist()
        return self.records[self.order.pop()]


def _canvas(
    queue: _PhotoQueue, settings: MosaicSettings, class_names: list[str], rng: np.random.Generator
) -> tuple[Image.Image, list[WrittenObject], list[str]]:
    """One canvas, its objects and the ids of the photos on it."""
    canvas = _background(queue.next(), settings.canvas)
    taken: list[tuple[int, int, int, int]] = []
    objects: list[WrittenObject] = []
    used: list[str] = []
    fewest, most = settings.photos_per_canvas
    for _ in range(int(rng.integers(fewest, most + 1))):
        record = queue.next()
        boxes = record.boxes.numpy()
        longer = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        tile, tile_boxes = _tile(record, shrink_scale(longer, settings.object_px, rng))
        spot = _free_spot(taken, tile.width, tile.height, settings.canvas, rng)
        if spot is None:
            continue
        left, top = spot
        canvas.paste(tile, (left, top))
        taken.append((left, top, left + tile.width, top + tile.height))
        used.append(record.image_id)
        shifted = np.rint(tile_boxes + np.array([left, top, left, top])).astype(int)
        for (x1, y1, x2, y2), label, difficult in zip(
            shifted.tolist(), record.labels.tolist(), record.difficult.tolist(), strict=True
        ):
            x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
            box = (x1, y1, x2, y2)
            name = class_names[label - 1]
            objects.append(WrittenObject(name, box, (x2 - x1) * (y2 - y1), difficult))
    return canvas, objects, used


def write_mosaic_dataset(source: Path, out: Path, settings: MosaicSettings) -> dict[str, Any]:
    """Write the small-object copy of the VOC dataset at ``source`` into ``out`` (replaced as a
    whole, see :func:`rfcn.data.writers.replace_folder`); returns what ``mosaic.json`` holds.

    Raises:
        UserError: bad settings or source data, or an ``out`` that holds something other than
            a mosaic copy (never deleted).
    """
    settings.check()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise UserError(out, "folder exists and is not a mosaic copy; choose another folder")
    train_photos = VOCDetection([(source, settings.source_train_split)])
    class_names = train_photos.class_names
    test_photos = VOCDetection([(source, settings.source_test_split)], class_names)
    photos = {TRAIN_SPLIT: train_photos.records, TEST_SPLIT: test_photos.records}
    canvases = {TRAIN_SPLIT: settings.train_canvases, TEST_SPLIT: settings.test_canvases}
    manifest: dict[str, Any] = {
        "source": str(source),
        "settings": asdict(settings),
        "class_names": class_names,
    }

    def write(folder: Path) -> None:
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "annotations"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for code, split in enumerate((TRAIN_SPLIT, TEST_SPLIT)):
            rng = np.random.default_rng([settings.seed, code])
            queue = _PhotoQueue(photos[split], rng)
            written, used = [], set()
            for index in range(canvases[split]):
                image, objects, on_canvas = _canvas(queue, settings, class_names, rng)
                entry = WrittenImage(
                    f"{split}_{index:06d}", settings.canvas, settings.canvas, objects
                )
                image.save(folder / "JPEGImages" / f"{entry.image_id}.jpg", quality=92)
                xml = voc_annotation_xml(entry, folder="mosaic")
                (folder / "Annotations" / f"{entry.image_id}.xml").write_bytes(xml)
                written.append(entry)
                used.update(on_canvas)
            listing = "".join(f"{entry.image_id}\n" for entry in written)
            split_files = [split] + (["trainval"] if split == TRAIN_SPLIT else [])
            for name in split_files:
                (folder / "ImageSets" / "Main" / f"{name}.txt").write_text(
                    listing, encoding="utf-8"
                )
            coco = coco_instances(written, class_names)
            (folder / COCO_JSON.format(split=split)).write_text(json.dumps(coco), encoding="utf-8")
            manifest[split] = _split_summary(written, used)
        (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    replace_folder(out, write)
    return json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))


def _split_summary(written: list[WrittenImage], photos: set[str]) -> dict[str, Any]:
    """Canvases, objects, the objects' longer sides and the source photos of one split."""
    sides = [max(o.box[2] - o.box[0], o.box[3] - o.box[1]) for i in written for o in i.objects]
    return {
        "canvases": len(written),
        "objects": len(sides),
        "longer_side_px": {
            "min": int(min(sides)),
            "median": float(np.median(sides)),
            "max": int(max(sides)),
        }
        if sides
        else None,
        "source_photos": sorted(photos),
    }
