"""``rfcn eval``: run a trained model over the config's test split, write results files, score.

Writes into ``--out`` (default ``<output_dir>/eval``):

- VOC data: ``results/comp4_det_<split>_<class>.txt``, one per class, lines
  ``<image_id> <score> <x1> <y1> <x2> <y2>`` in VOC's 1-based pixels (the devkit's format);
  COCO data: ``detections.json``, a COCO results list;
- ``metrics.json``: the metric, read back from those files exactly as ``rfcn evaluate`` reads
  them, so both commands report the same numbers.

Single-scale by default; ``--scales`` (paper: 200 400 600 800 1000) and ``--flip`` turn on
test-time augmentation (:class:`rfcn.inference.predictor.Predictor`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rfcn.errors import UserError
from rfcn.files import write_json
from rfcn.tools.arguments import add_config_overrides, add_progress_switch

if TYPE_CHECKING:
    from torch import Tensor

    from rfcn.config import Config
    from rfcn.data.dataset import DetectionDataset
    from rfcn.inference.predictor import Predictor
    from rfcn.modeling.rfcn import RFCN


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="run a checkpoint on the test split, write results files and score them",
        description=__doc__.splitlines()[0].strip("`"),
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) from rfcn train")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <output_dir>/eval)")
    add_config_overrides(parser, "eval.metric=voc data.test_split=val")
    parser.add_argument(
        "--scales",
        nargs="+",
        type=int,
        metavar="SIZE",
        help="test at these shorter sides and merge (paper: 200 400 600 800 1000)",
    )
    parser.add_argument("--flip", action="store_true", help="also test on flipped images")
    add_progress_switch(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rfcn.config import load_config
    from rfcn.evaluation.report import format_metrics_table

    overrides = list(args.overrides)
    if args.scales:
        overrides.append(f"eval.scales=[{', '.join(map(str, args.scales))}]")
    if args.flip:
        overrides.append("eval.flip=true")
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "eval"
    metrics = evaluate_checkpoint(cfg, args.weights, out, progress=args.progress)
    print(format_metrics_table(metrics))
    print(f"wrote results and metrics.json to {out}", file=sys.stderr)
    return 0


def evaluate_checkpoint(
    cfg: Config, weights: str | Path, out: Path, progress: bool = True
) -> dict[str, Any]:
    """Detect on ``cfg``'s test split with ``weights``, write results files and metrics.json.

    Raises:
        UserError: unreadable checkpoint, a checkpoint whose model or classes do not match
            the config and data, bad data files.
    """
    from rfcn.data.build import build_dataset
    from rfcn.engine.checkpoint import load_model
    from rfcn.engine.distributed import resolve_device
    from rfcn.evaluation.evaluator import evaluate_results, write_detections

    if not cfg.eval.scales or min(cfg.eval.scales) <= 0:
        raise UserError("eval.scales", f"must be positive shorter sides, got {cfg.eval.scales}")
    truth = ground_truth_source(cfg)
    device = resolve_device(cfg.train.device)
    model, cfg, class_names = load_model(weights, device, cfg)
    dataset = build_dataset(cfg.data, train=False)
    if list(dataset.class_names) != list(class_names):
        raise UserError(
            weights,
            f"the checkpoint's classes {list(class_names)} differ from the test data's "
            f"{list(dataset.class_names)}",
        )
    detections = detect_dataset(test_predictor(model, class_names, cfg), dataset, cfg, progress)
    out.mkdir(parents=True, exist_ok=True)
    metric = cfg.eval.metric
    if "coco_annotations" in truth:
        results: Path = out / "detections.json"
        write_detections(detections, class_names, metric, results, **truth)
    else:
        results = out / "results"
        write_detections(
            detections, class_names, metric, results, prefix=f"comp4_det_{truth['split']}_"
        )
    metrics = evaluate_results(results, metric, iou_thresh=cfg.eval.iou_thresh, **truth)
    write_json(out / "metrics.json", metrics)
    return metrics


def test_predictor(model: RFCN, class_names: Sequence[str], cfg: Config) -> Predictor:
    """A :class:`~rfcn.inference.predictor.Predictor` with ``cfg``'s test scales, flips and NMS; the
    multi-scale merge is skipped when the only scale is the model's own."""
    from rfcn.inference.predictor import Predictor

    default_scale = (model.transform.min_size[-1],)
    scales = None if tuple(cfg.eval.scales) == default_scale else cfg.eval.scales
    return Predictor(
        model,
        class_names,
        scales=scales,
        flip=cfg.eval.flip,
        nms_thresh=cfg.model.nms_thresh,
        detections_per_image=cfg.model.detections_per_img,
    )


def detect_dataset(
    predictor: Predictor, dataset: DetectionDataset, cfg: Config, progress: bool = True
) -> dict[str, dict[str, Tensor]]:
    """``{image_id: {"boxes": (N, 4), "scores": (N,), "labels": (N,)}}`` (on the CPU) over
    every image of ``dataset``, in batches of ``eval.batch_size``."""
    from tqdm import tqdm

    from rfcn.data.build import build_data_loader

    loader = build_data_loader(
        dataset,
        cfg.eval.batch_size,
        train=False,
        seed=cfg.train.seed,
        workers=cfg.data.workers,
        aspect_grouping=False,
    )
    detections: dict[str, dict[str, Tensor]] = {}
    for images, targets in tqdm(loader, desc="eval", unit="batch", disable=not progress):
        for output, target in zip(predictor.predict_tensors(images), targets, strict=True):
            detections[target["image_id"]] = {key: value.cpu() for key, value in output.items()}
    return detections


def ground_truth_source(cfg: Config) -> dict[str, Any]:
    """Where the test split's ground truth lies: ``{"dataset_root", "split"}`` (VOC layout)
    or ``{"coco_annotations"}``; the metric must suit it."""
    data = cfg.data
    if data.format == "coco":
        if cfg.eval.metric != "coco":
            raise UserError("eval.metric", f"COCO data are scored with coco, not {cfg.eval.metric}")
        from rfcn.data.build import _coco_path

        return {"coco_annotations": _coco_path(data, "coco_test_json")}
    if cfg.eval.metric == "coco":
        raise UserError("eval.metric", f"coco needs COCO data (data.format is {data.format})")
    if not data.roots:
        raise UserError("data.roots", "not set (the test split's dataset root)")
    if data.format == "synthetic":
        from rfcn.data.synthetic import TEST_SPLIT, ensure_synthetic_dataset

        return {
            "dataset_root": ensure_synthetic_dataset(Path(data.roots[0]), data),
            "split": TEST_SPLIT,
        }
    return {"dataset_root": Path(data.roots[0]), "split": data.test_split}
