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

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rfcn.data.coco import check_instances, read_coco_json
from rfcn.errors import UserError
from rfcn.evaluation.scores import Evaluation, PrecisionRecall
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

# The single IoU thresholds reported per class beside the 0.50:0.95 AP.
_IOUS = (("AP50", 0.5), ("AP75", 0.75))


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
) -> Evaluation:
    """pycocotools' 12 box metrics by name (:data:`COCO_METRIC_NAMES`), fractions in 0..1, with
    ``"per_class"``: ``{category name: {"AP", "AP50", "AP75"}}``, and every category's curve.

    Args:
        coco_gt: the ground truth (:func:`load_coco_ground_truth`).
        results: COCO results records (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        verbose: let pycocotools print its progress and summary table.

    A metric pycocotools cannot compute (it reports -1, e.g. APs with no small objects, or a
    category's AP without ground truth) is None.
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
    metrics: dict[str, Any] = {
        name: (float(value) if value >= 0 else None)
        for name, value in zip(COCO_METRIC_NAMES, evaluator.stats, strict=True)
    }
    per_class, curves = _per_category(coco_gt, evaluator)
    metrics["per_class"] = per_class
    return Evaluation(metrics, curves)


def _mean_precision(precision: np.ndarray) -> float | None:
    """The mean of the defined entries (pycocotools marks "no ground truth" with -1), as
    ``COCOeval.summarize`` averages them; None when none is defined."""
    defined = precision[precision > -1]
    return float(np.mean(defined)) if defined.size else None


def _per_category(
    coco_gt: COCO, evaluator: COCOeval
) -> tuple[dict[str, dict[str, float | None]], dict[str, PrecisionRecall]]:
    """AP, AP50 and AP75 of every category, as :meth:`COCOeval.summarize` computes the overall
    ones but over one category: area "all", 100 detections per image. The curve averages the
    precision over the IoU thresholds at each of the 101 recall levels, so its mean is the AP.
    """
    params = evaluator.params
    area = list(params.areaRngLbl).index("all")
    max_dets = list(params.maxDets).index(100)
    # precision: (IoU thresholds T, recall levels R, categories K, areas A, max detections M)
    precision = evaluator.eval["precision"][:, :, :, area, max_dets]  # (T, R, K)
    iou_index = {name: int(np.argmin(np.abs(params.iouThrs - iou))) for name, iou in _IOUS}
    names = {category["id"]: category["name"] for category in coco_gt.dataset["categories"]}
    per_class: dict[str, dict[str, float | None]] = {}
    curves: dict[str, PrecisionRecall] = {}
    for k, category_id in enumerate(params.catIds):
        name = names[category_id]
        ap = _mean_precision(precision[:, :, k])
        per_class[name] = {
            "AP": ap,
            **{key: _mean_precision(precision[index, :, k]) for key, index in iou_index.items()},
        }
        if ap is not None:
            curves[name] = PrecisionRecall(
                np.asarray(params.recThrs, dtype=np.float64), precision[:, :, k].mean(axis=0), ap
            )
    return per_class, curves
