"""COCO box AP and AR through pycocotools (the reference implementation), by name.

pycocotools prints its progress and summary on stdout; here that goes away unless
``verbose`` is set.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rfcn.data.coco import check_instances, read_coco_json
from rfcn.errors import UserError
from rfcn.files import printable_path

# The order of COCOeval.stats.
COCO_METRIC_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)

COCO_METRIC_DESCRIPTIONS = {
    "AP": "precision IoU=0.50:0.95 area=all    maxDets=100",
    "AP50": "precision IoU=0.50      area=all    maxDets=100",
    "AP75": "precision IoU=0.75      area=all    maxDets=100",
    "APs": "precision IoU=0.50:0.95 area=small  maxDets=100",
    "APm": "precision IoU=0.50:0.95 area=medium maxDets=100",
    "APl": "precision IoU=0.50:0.95 area=large  maxDets=100",
    "AR1": "recall    IoU=0.50:0.95 area=all    maxDets=1",
    "AR10": "recall    IoU=0.50:0.95 area=all    maxDets=10",
    "AR100": "recall    IoU=0.50:0.95 area=all    maxDets=100",
    "ARs": "recall    IoU=0.50:0.95 area=small  maxDets=100",
    "ARm": "recall    IoU=0.50:0.95 area=medium maxDets=100",
    "ARl": "recall    IoU=0.50:0.95 area=large  maxDets=100",
}


@contextlib.contextmanager
def _pycocotools_output(verbose: bool) -> Iterator[None]:
    """pycocotools' prints go to stdout when ``verbose``, nowhere otherwise."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_coco_ground_truth(path: str | Path, verbose: bool = False) -> COCO:
    """A pycocotools ``COCO`` index of an instances JSON, with errors that name the file."""
    dataset = read_coco_json(path)
    if not isinstance(dataset, dict) or not all(
        isinstance(dataset.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise UserError(path, "COCO annotations need lists 'images', 'annotations', 'categories'")
    check_instances(dataset, printable_path(path))
    coco = COCO()
    coco.dataset = dataset
    with _pycocotools_output(verbose):
        coco.createIndex()
    return coco


def coco_image_ids(coco_gt: COCO) -> dict[str, int]:
    """Our image id -> COCO image id: the id itself as text, the file name, or its stem."""
    lookup: dict[str, int] = {}
    for image in coco_gt.dataset["images"]:
        file_name = str(image.get("file_name", ""))
        if file_name:
            lookup[Path(file_name).stem] = image["id"]
            lookup[file_name] = image["id"]
    for image in coco_gt.dataset["images"]:
        lookup[str(image["id"])] = image["id"]
    return lookup


def coco_category_ids(coco_gt: COCO) -> dict[str, int]:
    """Category name -> COCO category id."""
    return {category["name"]: category["id"] for category in coco_gt.dataset["categories"]}


def _check_ids(coco_gt: COCO, results: Sequence[Mapping[str, Any]]) -> None:
    images = set(coco_gt.getImgIds())
    categories = set(coco_gt.getCatIds())
    for index, record in enumerate(results):
        if record["image_id"] not in images:
            raise ValueError(f"entry {index}: image_id {record['image_id']} is not annotated")
        if record["category_id"] not in categories:
            raise ValueError(f"entry {index}: category_id {record['category_id']} is unknown")


def evaluate_coco(
    coco_gt: COCO, results: Sequence[Mapping[str, Any]], verbose: bool = False
) -> dict[str, float | None]:
    """pycocotools' 12 box metrics by name (:data:`COCO_METRIC_NAMES`), fractions in 0..1.

    Args:
        coco_gt: the ground truth (:func:`load_coco_ground_truth`).
        results: COCO results records (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        verbose: let pycocotools print its progress and summary table.

    A metric pycocotools cannot compute (it reports -1, e.g. APs with no small objects) is None.
    Raises ValueError when a record names an image or category the ground truth lacks.
    """
    _check_ids(coco_gt, results)
    with _pycocotools_output(verbose):
        if results:
            coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))  # loadRes edits its input
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": coco_gt.dataset["images"],
                "categories": coco_gt.dataset["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {
        name: (float(value) if value >= 0 else None)
        for name, value in zip(COCO_METRIC_NAMES, evaluator.stats, strict=True)
    }
