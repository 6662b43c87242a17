"""The detection dataset behind every format: image records in memory, pixels loaded on demand
(and, with :meth:`DetectionDataset.keep_decoded_images`, kept once decoded).

Each reader (:mod:`rfcn.data.voc`, :mod:`rfcn.data.coco`) parses its annotation files once into
:class:`ImageRecord` objects; :class:`DetectionDataset` then serves
``dataset[i] -> (image (3, H, W) float32 in 0..1, target)`` with
``target = {"boxes": (N, 4) float32 x1,y1,x2,y2, "labels": (N,) int64 in 1..C,
"difficult": (N,) bool, "image_id": str}``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rfcn.data.images import MAX_IMAGE_PIXELS, read_rgb_array, rgb_tensor
from rfcn.errors import DataWarning, UserError
from rfcn.files import printable_path
from rfcn.ops.boxes import clip_boxes, nonempty_boxes

Target = dict[str, Any]


class Transform(Protocol):
    """A training augmentation: ``(image, target, generator) -> (image, target)``.

    All randomness must come from ``generator`` (None: torch's global generator), so a
    loader that seeds it per sample makes every run reproducible.
    """

    def __call__(
        self, image: Tensor, target: Target, generator: torch.Generator | None
    ) -> tuple[Tensor, Target]: ...


@dataclass(frozen=True)
class ImageRecord:
    """One annotated image, as parsed from its annotation file.

    Attributes:
        image_id: the id results are reported under (VOC: file stem; COCO: the numeric id).
        path: the image file.
        source: the annotation file (printable), named in warnings.
        height, width: the image size the annotation states.
        boxes: ``(N, 4)`` float32 x1,y1,x2,y2, already clipped to ``width`` x ``height``.
        labels: ``(N,)`` int64 in 1..C.
        difficult: ``(N,)`` bool; objects to ignore in evaluation (VOC difficult, COCO crowd).
    """

    image_id: str
    path: Path
    source: str
    height: int
    width: int
    boxes: Tensor
    labels: Tensor
    difficult: Tensor


def sanitize_boxes(
    boxes: Tensor, height: int, width: int, source: str, shown_boxes: Sequence[str]
) -> tuple[Tensor, Tensor]:
    """Clip ``(N, 4)`` boxes to the image and find those left with no area.

    Zero-area or inverted boxes, and boxes wholly outside the image, are reported with
    a :class:`DataWarning` naming ``source`` and the box as the file wrote it (``shown_boxes[i]``).

    Returns:
        ``(clipped (N, 4), keep (N,) bool)``.
    """
    valid = nonempty_boxes(boxes, 0.0)
    clipped = clip_boxes(boxes, height, width)
    inside = nonempty_boxes(clipped, 0.0)
    for i in torch.nonzero(~(valid & inside)).flatten().tolist():
        why = "zero-area or inverted" if not valid[i] else f"outside the {width}x{height} image"
        warnings.warn(DataWarning(source, f"dropping {why} box {shown_boxes[i]}"), stacklevel=2)
    return clipped, valid & inside


class DetectionDataset(Dataset):
    """Images and their boxes, labels and difficult flags (see the module docstring).

    Args:
        records: the parsed images.
        class_names: the C foreground class names; label ``l`` is ``class_names[l - 1]``.
        transform: training augmentation (None for evaluation).
        max_pixels: larger images are refused (:func:`rfcn.data.images.read_rgb_array`).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        transform: Transform | None = None,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        self.records = list(records)
        self.class_names = list(class_names)
        self.transform = transform
        self.max_pixels = max_pixels
        self._decoded: dict[int, np.ndarray] | None = None

    def keep_decoded_images(self) -> None:
        """From now on keep each image's decoded pixels after its first read, so that later
        epochs neither read nor decode the file again: ``H * W * 3`` bytes an image (uint8), in
        every data-loading worker process that reads it (each keeps its own)."""
        if self._decoded is None:
            self._decoded = {}

    def drop_unreadable(self) -> dict[str, str]:
        """Leave out the images that cannot be read or decoded (each is decoded once, here);
        returns them, file -> problem."""
        dropped: dict[str, str] = {}
        kept = []
        for record in self.records:
            try:
                read_rgb_array(record.path, self.max_pixels)
            except UserError as error:
                dropped[error.source] = error.problem
            else:
                kept.append(record)
        self.records = kept
        return dropped

    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_ids(self) -> list[str]:
        return [record.image_id for record in self.records]

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` of every image as its annotation states (no pixels read)."""
        return [(record.height, record.width) for record in self.records]

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        return self.load(index, generator=None)

    def load(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, Target]:
        """Image ``index`` and its target, augmented with randomness drawn from ``generator``."""
        record = self.records[index]
        image = rgb_tensor(self._rgb_pixels(index))
        boxes, labels, difficult = record.boxes, record.labels, record.difficult
        height, width = image.shape[-2:]
        if (height, width) != (record.height, record.width):
            # Trust the pixels: the annotation's size is often stale (resized or rotated files).
            problem = (
                f"states image size {record.width}x{record.height} but "
                f"{printable_path(record.path)} is {width}x{height}; boxes clipped to the image"
            )
            warnings.warn(DataWarning(record.source, problem), stacklevel=2)
            boxes = clip_boxes(boxes, height, width)
            keep = nonempty_boxes(boxes, 0.0)
            boxes, labels, difficult = boxes[keep], labels[keep], difficult[keep]
        target: Target = {
            "boxes": boxes.clone(),
            "labels": labels.clone(),
            "difficult": difficult.clone(),
            "image_id": record.image_id,
        }
        if self.transform is not None:
            image, target = self.transform(image, target, generator)
        return image, target

    def _rgb_pixels(self, index: int) -> np.ndarray:
        """``(H, W, 3)`` uint8 pixels of image ``index``, from memory when kept."""
        if self._decoded is None:
            return read_rgb_array(self.records[index].path, self.max_pixels)
        pixels = self._decoded.get(index)
        if pixels is None:
            pixels = read_rgb_array(self.records[index].path, self.max_pixels)
            self._decoded[index] = pixels
        return pixels
