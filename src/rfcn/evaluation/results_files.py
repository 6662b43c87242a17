"""Standard detection results files: VOC ``<prefix><classname>.txt`` files and COCO results JSON.

In-memory detections, as the model returns them and :func:`rfcn.evaluation.evaluator.
evaluate_detections` takes them, are ``{image_id: {"boxes": (N, 4), "scores": (N,),
"labels": (N,)}}`` with 0-based continuous ``x1, y1, x2, y2`` boxes and labels in ``1..C``
(``class_names[label - 1]``); tensors or arrays.

VOC results files hold one line per detection, ``<image_id> <score> <x1> <y1> <x2> <y2>``, in VOC
1-based pixels: our box ``(x1, y1, x2, y2)`` is written as ``(x1 + 1, y1 + 1, x2, y2)``.
COCO results are ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` with
``w = x2 - x1`` (COCO boxes are continuous, as ours).

Numbers are written with Python's shortest round-trip ``repr``, so reading a file gives back
exactly the float64 values that were written, and scoring a file equals scoring in memory to
the last bit. Writes are atomic (a temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rfcn.errors import UserError
from rfcn.evaluation.voc import ClassDetections
from rfcn.files import read_json, write_text

Detections = Mapping[Any, Mapping[str, Any]]

VOC_LINE_FORMAT = "<image_id> <score> <x1> <y1> <x2> <y2>"


def _as_numpy(value: Any, dtype: type) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _image_arrays(
    image_id: Any, outputs: Mapping[str, Any], num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(N, 4)`` float64 boxes, ``(N,)`` float64 scores and ``(N,)`` int64 labels of one image."""
    boxes = _as_numpy(outputs["boxes"], np.float64).reshape(-1, 4)
    scores = _as_numpy(outputs["scores"], np.float64).reshape(-1)
    labels = _as_numpy(outputs["labels"], np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"image {image_id}: boxes, scores and labels differ in length")
    if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(f"image {image_id}: labels must lie in 1..{num_classes}")
    return boxes, scores, labels


def voc_class_detections(
    detections: Detections, class_names: Sequence[str]
) -> dict[str, ClassDetections]:
    """Group in-memory detections by class, in VOC pixels (``x1 + 1, y1 + 1, x2, y2``).

    Every class gets an entry (maybe empty); detections keep the order of the images and,
    within an image, the order given.
    """
    grouped: dict[str, tuple[list[str], list[np.ndarray], list[np.ndarray]]] = {
        name: ([], [], []) for name in class_names
    }
    for image_id, outputs in detections.items():
        boxes, scores, labels = _image_arrays(image_id, outputs, len(class_names))
        voc_boxes = boxes + np.array([1.0, 1.0, 0.0, 0.0])
        for label in np.unique(labels):
            mine = labels == label
            ids, class_scores, class_boxes = grouped[class_names[label - 1]]
            ids.extend([str(image_id)] * int(mine.sum()))
            class_scores.append(scores[mine])
            class_boxes.append(voc_boxes[mine])
    return {
        name: ClassDetections(
            tuple(ids),
            np.concatenate([np.zeros(0), *scores]),
            np.concatenate([np.zeros((0, 4)), *boxes]),
        )
        for name, (ids, scores, boxes) in grouped.items()
    }


def write_voc_results(
    folder: str | Path, detections: Mapping[str, ClassDetections], prefix: str = "comp4_det_test_"
) -> list[Path]:
    """Write one ``<prefix><classname>.txt`` file per class (empty when it has no detections)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dets in detections.items():
        lines = []
        for image_id, score, box in zip(dets.image_ids, dets.scores, dets.boxes, strict=True):
            if not image_id or len(image_id.split()) != 1:
                raise ValueError(f"image id {image_id!r} cannot be written to a VOC results file")
            numbers = " ".join(repr(float(v)) for v in (score, *box))
            lines.append(f"{image_id} {numbers}\n")
        path = Path(folder) / f"{prefix}{name}.txt"
        write_text(path, "".join(lines))
        paths.append(path)
    return paths


def find_voc_results(path: str | Path, class_names: Sequence[str]) -> dict[str, Path]:
    """The VOC results file of each class, found by their common prefix.

    ``path`` is either a folder holding ``<prefix><classname>.txt`` files, whose prefix (empty
    or ending in ``_``) is the one most of ``class_names`` have a file with, or the prefix
    itself as a path (``results/comp4_det_test_``). Files with that prefix for classes not in
    ``class_names`` are included too. Returns ``{class name: file}``; a class with no file is
    missing from it.
    """
    path = Path(path)
    if path.is_dir():
        folder = path
        stems = sorted(p.stem for p in folder.glob("*.txt") if p.is_file())
        votes: dict[str, set[str]] = {}
        for stem in stems:
            for name in class_names:
                prefix = stem[: len(stem) - len(name)]
                if stem.endswith(name) and (prefix == "" or prefix.endswith("_")):
                    votes.setdefault(prefix, set()).add(name)
        if not votes:
            raise UserError(
                folder, f"no results files named <prefix>_<class>.txt for {', '.join(class_names)}"
            )
        most = max(len(found) for found in votes.values())
        best = sorted(prefix for prefix, found in votes.items() if len(found) == most)
        if len(best) > 1:
            raise UserError(folder, f"results files with several prefixes: {', '.join(best)}")
        prefix = best[0]
    elif path.is_file():
        raise UserError(path, "give the folder of the results files (or their prefix), not a file")
    else:
        folder, prefix = path.parent, path.name
        if not folder.is_dir():
            raise UserError(path, "no such results folder or prefix")
    return {
        file.stem[len(prefix) :]: file
        for file in sorted(folder.glob(f"{prefix}*.txt"))
        if file.is_file() and len(file.stem) > len(prefix)
    }


def _parse_voc_line(path: Path, number: int, line: str) -> tuple[str, list[float]]:
    fields = line.split()
    try:
        if len(fields) != 6:
            raise ValueError
        values = [float(field) for field in fields[1:]]
    except ValueError:
        raise UserError(
            path, f"line {number}: expected {VOC_LINE_FORMAT}, got {line.strip()!r}"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise UserError(path, f"line {number}: numbers must be finite, got {line.strip()!r}")
    return fields[0], values


def read_voc_results(path: str | Path) -> ClassDetections:
    """Read one VOC results file (blank lines are skipped); errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(path, "results file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(path, f"cannot read results file: {exc}") from None
    parsed = [
        _parse_voc_line(path, number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    return ClassDetections(
        tuple(image_id for image_id, _ in parsed),
        np.array([values[0] for _, values in parsed], dtype=np.float64).reshape(-1),
        np.array([values[1:] for _, values in parsed], dtype=np.float64).reshape(-1, 4),
    )


def coco_results(
    detections: Detections,
    class_names: Sequence[str],
    image_ids: Mapping[str, int],
    category_ids: Mapping[str, int],
) -> list[dict[str, Any]]:
    """In-memory detections as COCO results records.

    Args:
        image_ids: our image id (as ``str``) -> COCO image id.
        category_ids: class name -> COCO category id.
    """
    missing = [name for name in class_names if name not in category_ids]
    if missing:
        raise ValueError(f"classes not among the COCO categories: {missing}")
    results = []
    for image_id, outputs in detections.items():
        if str(image_id) not in image_ids:
            raise ValueError(f"image {image_id!r} is not in the COCO annotations")
        coco_image = image_ids[str(image_id)]
        boxes, scores, labels = _image_arrays(image_id, outputs, len(class_names))
        for (x1, y1, x2, y2), score, label in zip(
            boxes.tolist(), scores.tolist(), labels.tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": coco_image,
                    "category_id": category_ids[class_names[label - 1]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    return results


def write_coco_results(path: str | Path, results: Sequence[Mapping[str, Any]]) -> None:
    """Write COCO results records as a JSON list (the folder must exist)."""
    write_text(path, json.dumps(list(results)) + "\n")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_coco_results(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a COCO results JSON; errors name the file and the bad entry."""
    path = Path(path)
    records = read_json(path, "results file")
    if not isinstance(records, list):
        raise UserError(path, "COCO results must be a JSON list of detections")
    for index, record in enumerate(records):
        valid = (
            isinstance(record, dict)
            and isinstance(record.get("image_id"), int)
            and isinstance(record.get("category_id"), int)
            and isinstance(record.get("bbox"), list)
            and len(record["bbox"]) == 4
            and all(_is_number(v) for v in record["bbox"])
            and _is_number(record.get("score"))
        )
        if not valid:
            raise UserError(
                path,
                f"entry {index}: expected {{image_id: int, category_id: int, "
                f"bbox: [x, y, w, h], score: number}}, got {json.dumps(record)[:200]}",
            )
    return records
