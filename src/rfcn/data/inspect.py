"""A dataset before training on it: what is in a split, what is wrong with it (``rfcn data``).

:func:`inspect_split` reads a split through the training readers (:func:`rfcn.data.build.
build_dataset`), in their lenient mode, so that every problem they can report (a bad or missing
annotation, an unknown class, a zero-area or outside box, a missing image file) becomes a
:class:`Problem` naming its file instead of stopping at the first; it then decodes every image,
as training would, to find the unreadable ones. :func:`summarize` turns the result into plain
numbers (the JSON of ``rfcn data``), :func:`format_summary` into a table, and
:func:`sample_grid` draws sample images with their boxes.

Box sizes are ``sqrt(width * height)`` in pixels (an anchor of size s has area s²), aspect
ratios ``height / width`` (the anchors' convention, :mod:`rfcn.modeling.anchors`).
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from rfcn.config import DataConfig
from rfcn.data.build import build_dataset
from rfcn.data.dataset import DetectionDataset
from rfcn.errors import DataWarning, UserError
from rfcn.files import printable_path
from rfcn.visualize import draw_detections, image_grid, to_pil_image

# Histogram bin edges (the last bin is open): box sizes in pixels, and aspect ratios h/w with
# bins centred on 1/4, 1/2, 1, 2, 4 (edges at odd powers of sqrt(2)).
SIZE_EDGES = (0.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
RATIO_EDGES = tuple([0.0] + [2.0 ** (k / 2) for k in (-5, -3, -1, 1, 3, 5)])
THUMBNAIL_SIDE = 384  # longer side of each sample in the grid, in pixels


@dataclass(frozen=True)
class Problem:
    """Something wrong in one file: ``file`` (printable) and what is wrong with it."""

    file: str
    problem: str


@dataclass
class SplitInspection:
    """A split read leniently, with what went wrong.

    Attributes:
        dataset: the images and objects the readers kept (difficult objects and crowd boxes
            included, flagged in ``record.difficult``).
        problems: every problem, by file (a file's own in the order they were met).
        unreadable: the indices in ``dataset`` of images that do not decode.
    """

    dataset: DetectionDataset
    problems: list[Problem]
    unreadable: list[int]


def split_dataset_config(cfg: DataConfig, split: str) -> tuple[DataConfig, bool]:
    """The data config and ``train`` flag for which :func:`build_dataset` reads ``split`` with
    all its objects (difficult and crowd ones flagged) and no augmentation.

    ``split``: ``"train"`` (what training reads), ``"test"`` (what evaluation reads) or, for
    VOC-layout data, the name of another split of the first root (``ImageSets/Main/<NAME>.txt``).
    """
    data = copy.deepcopy(cfg)
    data.flip = False
    data.use_difficult = True
    if split == "train":
        if data.format != "coco":
            return data, True
        # The COCO training reader drops crowd boxes; the test reader keeps them, flagged.
        data.coco_test_json, data.coco_test_images = data.coco_train_json, data.coco_train_images
    elif split != "test":
        if data.format != "voc":
            raise UserError("--split", f"{data.format} data have only train and test, not {split}")
        data.test_split = split
    return data, False


def inspect_split(cfg: DataConfig, split: str, progress: bool = True) -> SplitInspection:
    """Read ``split`` (see :func:`split_dataset_config`) and decode each of its images.

    Raises:
        UserError: a problem no image can be read past (a missing split file, a malformed
            COCO JSON, a config setting).
    """
    data, train = split_dataset_config(cfg, split)
    problems: list[Problem] = []
    unreadable: list[int] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        dataset = build_dataset(data, train, lenient=True)
        for index in tqdm(range(len(dataset)), "decode", unit="img", disable=not progress):
            try:
                dataset.load(index, generator=None)
            except UserError as exc:
                problems.append(Problem(exc.source, exc.problem))
                unreadable.append(index)
    for caught_warning in caught:
        message = caught_warning.message
        if isinstance(message, DataWarning):
            problems.append(Problem(message.source, message.problem))
        else:  # not about the data: show it as it would have been shown
            warnings.showwarning(
                message, caught_warning.category, caught_warning.filename, caught_warning.lineno
            )
    problems.sort(key=lambda problem: problem.file)  # stable: a file's problems stay in order
    return SplitInspection(dataset, problems, unreadable)


def _histogram(values: np.ndarray, edges: Sequence[float]) -> dict[str, list]:
    """``{"edges": [...], "counts": [...]}``: bin i holds ``edges[i] <= v < edges[i + 1]``,
    the last bin everything from ``edges[-1]`` up."""
    bins = np.searchsorted(np.asarray(edges), values, side="right") - 1
    counts = np.bincount(bins, minlength=len(edges))
    return {"edges": list(edges), "counts": [int(c) for c in counts]}


def box_statistics(
    dataset: DetectionDataset, short_side: int, max_size: int
) -> dict[str, np.ndarray]:
    """Per object of ``dataset``: ``size`` (image pixels), ``size_at_input`` (after the model's
    resize to ``short_side``, capped at ``max_size`` for the longer side), ``ratio`` (h/w),
    ``label`` (1..C) and ``flagged`` (difficult or crowd); all ``(N,)`` arrays."""
    columns: dict[str, list[np.ndarray]] = {
        "size": [], "size_at_input": [], "ratio": [], "label": [], "flagged": []
    }  # fmt: skip
    for record in dataset.records:
        boxes = record.boxes.numpy().astype(np.float64).reshape(-1, 4)
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        size = np.sqrt(width * height)
        scale = min(
            short_side / min(record.height, record.width),
            max_size / max(record.height, record.width),
        )
        columns["size"].append(size)
        columns["size_at_input"].append(size * scale)
        columns["ratio"].append(height / width)
        columns["label"].append(record.labels.numpy())
        columns["flagged"].append(record.difficult.numpy())
    kinds = {"label": np.int64, "flagged": bool}
    return {
        name: np.concatenate(parts) if parts else np.zeros(0, kinds.get(name, np.float64))
        for name, parts in columns.items()
    }


def summarize(
    inspection: SplitInspection, flag_name: str, short_side: int, max_size: int
) -> dict[str, Any]:
    """The JSON summary of ``rfcn data`` (docs/own-data.md): counts per class, image sizes,
    box-size and aspect-ratio histograms, images without objects, and every problem.

    Args:
        inspection: from :func:`inspect_split`.
        flag_name: what the readers' ``difficult`` flag means here: ``"difficult"`` (VOC) or
            ``"crowd"`` (COCO).
        short_side, max_size: the model's test-time resize, for the sizes at the input.
    """
    dataset = inspection.dataset
    stats = box_statistics(dataset, short_side, max_size)
    classes = {
        name: {
            "objects": int((stats["label"] == label).sum()),
            flag_name: int(((stats["label"] == label) & stats["flagged"]).sum()),
        }
        for label, name in enumerate(dataset.class_names, 1)
    }
    widths = [record.width for record in dataset.records]
    heights = [record.height for record in dataset.records]
    return {
        "images": len(dataset),
        "objects": int(stats["label"].size),
        flag_name: int(stats["flagged"].sum()),
        "classes": classes,
        "images_without_objects": [r.image_id for r in dataset.records if r.labels.numel() == 0],
        "image_size": {
            "width": [min(widths, default=0), max(widths, default=0)],
            "height": [min(heights, default=0), max(heights, default=0)],
        },
        "box_size": _histogram(stats["size"], SIZE_EDGES),
        "box_size_at_input": {
            "short_side": short_side,
            "max_size": max_size,
            **_histogram(stats["size_at_input"], SIZE_EDGES),
        },
        "aspect_ratio": _histogram(stats["ratio"], RATIO_EDGES),
        "unreadable_images": [
            printable_path(dataset.records[i].path) for i in inspection.unreadable
        ],
        "problems": [{"file": p.file, "problem": p.problem} for p in inspection.problems],
    }


def _bin_labels(edges: Sequence[float], digits: int) -> list[str]:
    labels = [f"{low:.{digits}f}-{high:.{digits}f}" for low, high in itertools.pairwise(edges)]
    return [*labels, f">={edges[-1]:.{digits}f}"]


def _table(header: Sequence[str], columns: Sequence[Sequence[Any]]) -> list[str]:
    """Rows of text: the first column left-aligned, the others right-aligned."""
    cells = [[str(h), *map(str, column)] for h, column in zip(header, columns, strict=True)]
    widths = [max(map(len, column)) for column in cells]
    lines = []
    for row in zip(*cells, strict=True):
        aligned = [row[0].ljust(widths[0])]
        aligned += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(aligned))
    return lines


def format_summary(summary: dict[str, Any], flag_name: str) -> str:
    """``summary`` (from :func:`summarize`) as plain-text tables, problems last."""
    width, height = summary["image_size"]["width"], summary["image_size"]["height"]
    classes = summary["classes"]
    at_input = summary["box_size_at_input"]
    problems = summary["problems"]
    return "\n".join(
        [
            f"{summary['images']} images, {summary['objects']} objects "
            f"({summary[flag_name]} {flag_name}), "
            f"{len(summary['images_without_objects'])} images without objects",
            f"image sizes: width {width[0]}..{width[1]}, height {height[0]}..{height[1]}"
            if summary["images"]
            else "image sizes: no images",
            "",
            *_table(
                ("class", "objects", flag_name),
                (
                    list(classes),
                    [c["objects"] for c in classes.values()],
                    [c[flag_name] for c in classes.values()],
                ),
            ),
            "",
            *_table(
                ("box size (px)", "in image", f"at input {at_input['short_side']}"),
                (_bin_labels(SIZE_EDGES, 0), summary["box_size"]["counts"], at_input["counts"]),
            ),
            "",
            *_table(
                ("aspect ratio h/w", "boxes"),
                (_bin_labels(RATIO_EDGES, 2), summary["aspect_ratio"]["counts"]),
            ),
            "",
            f"problems: {len(problems)} ({len(summary['unreadable_images'])} unreadable images)",
            *[f"  {p['file']}: {p['problem']}" for p in problems],
        ]
    )


def sample_indices(inspection: SplitInspection, count: int) -> list[int]:
    """Up to ``count`` readable images spread evenly over the split, in order."""
    skip = set(inspection.unreadable)
    readable = [i for i in range(len(inspection.dataset)) if i not in skip]
    if len(readable) <= count:
        return readable
    return [readable[round(k * (len(readable) - 1) / max(count - 1, 1))] for k in range(count)]


def sample_grid(dataset: DetectionDataset, indices: Sequence[int], flag_name: str) -> Image.Image:
    """The images ``indices``, resized to :data:`THUMBNAIL_SIDE` on their longer side, with
    their boxes and class names drawn (difficult or crowd objects tagged so, in their own
    colour), tiled."""
    names = list(dataset.class_names)
    tagged = names + [f"{name} ({flag_name})" for name in names]
    thumbnails = []
    for index in indices:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # inspect_split listed them already
            image, target = dataset.load(index, generator=None)
        height, width = image.shape[-2:]
        scale = THUMBNAIL_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # Resized before drawing, so that lines and names keep a legible size.
        thumbnail = to_pil_image(image).resize(size, Image.Resampling.BILINEAR)
        labels = target["labels"] + len(names) * target["difficult"].long()
        boxes = target["boxes"] * scale
        thumbnails.append(draw_detections(thumbnail, boxes, labels, None, tagged))
    return image_grid(thumbnails, columns=math.ceil(math.sqrt(len(thumbnails))))
