"""Score detections against a split: in memory (``rfcn eval``) or from results files
(``rfcn evaluate``). Both paths meet in the same evaluators, so they agree to the last bit.

Metrics: ``"voc07"`` (VOC2007 11-point AP), ``"voc"`` (VOC2010+ area AP), ``"coco"``
(pycocotools). VOC ground truth is a VOC-layout folder (``Annotations/``, ``ImageSets/Main/``);
COCO ground truth an instances JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from rfcn.errors import UserError
from rfcn.evaluation.coco import (
    coco_category_ids,
    coco_image_ids,
    evaluate_coco,
    load_coco_ground_truth,
)
from rfcn.evaluation.results_files import (
    Detections,
    coco_results,
    find_voc_results,
    read_coco_results,
    read_voc_results,
    voc_class_detections,
    write_coco_results,
    write_voc_results,
)
from rfcn.evaluation.scores import Evaluation
from rfcn.evaluation.voc import evaluate_voc, load_voc_ground_truth, unknown_images

METRICS = ("voc07", "voc", "coco")

_log = logging.getLogger(__name__)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")


def _coco_records(
    detections: Detections, class_names: Sequence[str], coco_gt: COCO
) -> list[dict[str, Any]]:
    """Results records with ids mapped through the ground truth (class name -> category)."""
    return coco_results(
        detections, class_names, coco_image_ids(coco_gt), coco_category_ids(coco_gt)
    )


def evaluate_detections(
    detections: Detections,
    class_names: Sequence[str],
    metric: str,
    *,
    dataset_root: str | Path | None = None,
    split: str | None = None,
    coco_annotations: str | Path | None = None,
    iou_thresh: float = 0.5,
    verbose: bool = False,
) -> Evaluation:
    """Score in-memory detections; nothing is written or read back.

    Args:
        detections: ``{image_id: {"boxes": (N, 4) 0-based x1,y1,x2,y2, "scores": (N,),
            "labels": (N,) in 1..C}}`` (tensors or arrays). Images of the split that are
            missing have no detections.
        class_names: the C foreground class names, ``class_names[label - 1]``.
        metric: ``"voc07"``, ``"voc"`` or ``"coco"``.
        dataset_root, split: the VOC-layout ground truth (VOC metrics).
        coco_annotations: the COCO instances JSON (COCO metric); class names are matched to
            its category names, image ids to its image ids, file names or file-name stems.
        iou_thresh: the VOC IoU threshold (COCO averages over 0.50:0.95).
        verbose: let pycocotools print.

    Returns:
        the metrics (VOC: ``{"mAP": float | None, "AP": {name: float | None}}``; COCO: the 12
        numbers by name and ``"per_class"`` AP, AP50, AP75) and every class's
        precision-recall curve.
    """
    _check_metric(metric)
    if metric == "coco":
        if coco_annotations is None:
            raise ValueError("the coco metric needs coco_annotations")
        coco_gt = load_coco_ground_truth(coco_annotations, verbose)
        return evaluate_coco(coco_gt, _coco_records(detections, class_names, coco_gt), verbose)
    if dataset_root is None or split is None:
        raise ValueError("VOC metrics need dataset_root and split")
    return evaluate_voc(
        load_voc_ground_truth(dataset_root, split),
        voc_class_detections(detections, class_names),
        class_names,
        iou_thresh,
        use_07_metric=metric == "voc07",
    )


def write_detections(
    detections: Detections,
    class_names: Sequence[str],
    metric: str,
    out: str | Path,
    *,
    coco_annotations: str | Path | None = None,
    prefix: str = "comp4_det_test_",
) -> list[Path]:
    """Write in-memory detections as standard results files; returns the paths written.

    VOC metrics: ``out`` is a folder that receives ``<prefix><classname>.txt`` for every class.
    COCO: ``out`` is the results JSON (ids mapped through ``coco_annotations``).
    """
    _check_metric(metric)
    if metric == "coco":
        if coco_annotations is None:
            raise ValueError("COCO results need coco_annotations to map ids")
        coco_gt = load_coco_ground_truth(coco_annotations)
        write_coco_results(out, _coco_records(detections, class_names, coco_gt))
        return [Path(out)]
    return write_voc_results(out, voc_class_detections(detections, class_names), prefix)


def evaluate_results(
    detections_path: str | Path,
    metric: str,
    *,
    dataset_root: str | Path | None = None,
    split: str | None = None,
    coco_annotations: str | Path | None = None,
    iou_thresh: float = 0.5,
    verbose: bool = False,
) -> Evaluation:
    """Score standard results files (see :func:`evaluate_detections` for the arguments).

    VOC: ``detections_path`` is a folder of ``<prefix><classname>.txt`` files, or the prefix
    as a path (:func:`find_voc_results`); the classes scored are those with a file, in
    alphabetical order (VOC's own order); annotated classes with no file are logged as not
    scored. COCO: a results JSON.
    Problems with the files raise :class:`UserError` naming the file.
    """
    _check_metric(metric)
    if metric == "coco":
        if coco_annotations is None:
            raise ValueError("the coco metric needs coco_annotations")
        coco_gt = load_coco_ground_truth(coco_annotations, verbose)
        records = read_coco_results(detections_path)
        try:
            return evaluate_coco(coco_gt, records, verbose)
        except ValueError as exc:
            raise UserError(detections_path, str(exc)) from None
    if dataset_root is None or split is None:
        raise ValueError("VOC metrics need dataset_root and split")
    ground_truth = load_voc_ground_truth(dataset_root, split)
    annotated = sorted({name for image in ground_truth.values() for name in image.names})
    files = find_voc_results(detections_path, annotated)
    if not files:
        raise UserError(detections_path, "no results files <prefix><class>.txt found")
    missing = [name for name in annotated if name not in files]
    if missing:
        # as in memory, where only the model's classes are scored
        _log.warning(
            "%s: not scored, no results file for classes: %s", detections_path, ", ".join(missing)
        )
    class_names = sorted(files)
    detections = {name: read_voc_results(files[name]) for name in class_names}
    for name in class_names:
        unknown = unknown_images(ground_truth, detections[name])
        if unknown:
            raise UserError(files[name], f"image ids not in split {split!r}: {unknown}")
    return evaluate_voc(
        ground_truth, detections, class_names, iou_thresh, use_07_metric=metric == "voc07"
    )
