"""``rfcn evaluate``: score a results file or folder against a dataset split, with no model.

VOC metrics read a folder of ``<prefix><classname>.txt`` results files (or the prefix as a path)
and the split's XML annotations; the COCO metric reads a results JSON and the instances JSON.
Prints a table; ``--out FILE.json`` also writes the metrics as JSON and every class's
precision-recall curve as ``pr_curves.png`` beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rfcn.errors import UserError
from rfcn.evaluation.evaluator import METRICS, evaluate_results
from rfcn.evaluation.plots import pr_curves_figure
from rfcn.evaluation.report import format_metrics_table
from rfcn.files import write_image, write_json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score detection results files against a dataset split (no model)",
        description=__doc__,
    )
    parser.add_argument("--dataset", required=True, help="dataset root (VOC layout, or COCO root)")
    parser.add_argument("--split", required=True, help="split name, e.g. test")
    parser.add_argument(
        "--detections",
        required=True,
        help="VOC: folder of <prefix><class>.txt results files (or the prefix); COCO: results JSON",
    )
    parser.add_argument(
        "--metric",
        required=True,
        choices=METRICS,
        help="voc07: VOC2007 11-point AP; voc: VOC2010+ area AP; coco: pycocotools",
    )
    parser.add_argument(
        "--out", help="write the metrics as JSON to this file, and pr_curves.png beside it"
    )
    parser.add_argument("--iou", type=float, help="VOC IoU threshold (default 0.5)")
    parser.add_argument(
        "--annotations",
        help="COCO instances JSON (default: DATASET/annotations/instances_<split>.json)",
    )
    parser.add_argument("--verbose", action="store_true", help="show pycocotools' own output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    iou = 0.5 if args.iou is None else args.iou
    if args.metric == "coco":
        if args.iou is not None:
            raise UserError("--iou", "COCO averages over IoU 0.50:0.95; --iou is for voc07/voc")
        annotations = args.annotations or (
            Path(args.dataset) / "annotations" / f"instances_{args.split}.json"
        )
        evaluation = evaluate_results(
            args.detections, "coco", coco_annotations=annotations, verbose=args.verbose
        )
    else:
        if args.annotations is not None:
            raise UserError("--annotations", "is for --metric coco only")
        if not 0.0 < iou < 1.0:
            raise UserError("--iou", f"must lie strictly between 0 and 1, got {iou}")
        evaluation = evaluate_results(
            args.detections,
            args.metric,
            dataset_root=args.dataset,
            split=args.split,
            iou_thresh=iou,
        )
    print(format_metrics_table(evaluation.metrics))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, evaluation.metrics)
        write_image(
            out.with_name("pr_curves.png"), pr_curves_figure(evaluation.curves, args.metric, iou)
        )
    return 0
