"""Run a trained model over a split and score it: the one code path of ``rfcn eval``, the demo
and validation during training (:mod:`rfcn.engine.validation`).

Images are decoded in DataLoader workers (``data.workers``) and run ``eval.batch_size`` at a
time per process. Only images that pad to the same network input share a batch
(:mod:`rfcn.inference.batching`), so the batch size never changes a detection. Under
``torchrun`` every process runs its shard of the split (images ``rank::world_size``) and rank 0
gathers the detections in split order, so the results files and metrics are those of a single
process.

``rfcn eval`` writes into its output folder:

- VOC data: ``results/comp4_det_<split>_<class>.txt``, one per class, lines
  ``<image_id> <score> <x1> <y1> <x2> <y2>`` in VOC's 1-based pixels (the devkit's format);
  COCO data: ``detections.json``, a COCO results list;
- ``metrics.json``: the metric, read back from those files exactly as ``rfcn evaluate`` reads
  them, so both commands report the same numbers;
- ``pr_curves.png``: every class's precision-recall curve, its AP in the legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from tqdm import tqdm

from rfcn.config import Config
from rfcn.data.build import _coco_path, build_data_loader, build_dataset
from rfcn.data.dataset import DetectionDataset
from rfcn.engine.checkpoint import load_model
from rfcn.engine.distributed import (
    gather_to_main,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    resolve_device,
    shutdown_distributed,
)
from rfcn.errors import UserError
from rfcn.evaluation.evaluator import evaluate_results, write_detections
from rfcn.evaluation.plots import pr_curves_figure
from rfcn.evaluation.scores import Evaluation
from rfcn.files import write_image, write_json
from rfcn.inference.batching import same_key_batches
from rfcn.inference.predictor import Predictor

Detections = dict[str, dict[str, Tensor]]


def test_predictor(model: nn.Module, class_names: Sequence[str], cfg: Config) -> Predictor:
    """A :class:`~rfcn.inference.predictor.Predictor` with ``cfg``'s test scales, flips and NMS;
    the multi-scale merge is skipped when the only scale is the model's own.

    The predictor puts ``model`` in eval mode and freezes its parameters (in place).
    """
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
) -> Detections | None:
    """``{image_id: {"boxes": (N, 4), "scores": (N,), "labels": (N,)}}`` (on the CPU) over every
    image of ``dataset``, in its order, on rank 0; None on the other processes.

    Every process must call it: each detects its shard in batches of ``eval.batch_size`` images
    of one :meth:`~rfcn.inference.predictor.Predictor.batch_key`, with ``data.workers``
    decoding.
    """
    world = get_world_size()
    loader = build_data_loader(
        dataset,
        cfg.eval.batch_size,
        train=False,
        seed=cfg.train.seed,
        workers=cfg.data.workers,
        aspect_grouping=False,
        distributed=world > 1,
    )
    images = (
        (image, target["image_id"])
        for batch, targets in loader
        for image, target in zip(batch, targets, strict=True)
    )
    found: Detections = {}
    shard = len(range(get_rank(), len(dataset), world))
    show = progress and is_main_process()
    with tqdm(total=shard, desc="eval", unit="img", disable=not show) as bar:
        for batch in same_key_batches(
            images, lambda item: predictor.batch_key(*item[0].shape[-2:]), cfg.eval.batch_size
        ):
            outputs = predictor.predict_tensors([image for image, _ in batch])
            for (_, image_id), output in zip(batch, outputs, strict=True):
                found[image_id] = {key: value.cpu() for key, value in output.items()}
            bar.update(len(batch))
    shards = gather_to_main(found)
    if shards is None:
        return None
    merged = {image_id: output for part in shards for image_id, output in part.items()}
    return {image_id: merged[image_id] for image_id in dataset.image_ids}


def ground_truth_source(cfg: Config) -> dict[str, Any]:
    """Where the test split's ground truth lies: ``{"dataset_root", "split"}`` (VOC layout)
    or ``{"coco_annotations"}``; the metric must suit it."""
    data = cfg.data
    if data.format == "coco":
        if cfg.eval.metric != "coco":
            raise UserError("eval.metric", f"COCO data are scored with coco, not {cfg.eval.metric}")
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


def check_test_classes(dataset: DetectionDataset, class_names: Sequence[str], source: Any) -> None:
    """The model's classes must be the test data's, in the same order (labels index both)."""
    if list(dataset.class_names) != list(class_names):
        raise UserError(
            source,
            f"the checkpoint's classes {list(class_names)} differ from the test data's "
            f"{list(dataset.class_names)}",
        )


def evaluate_checkpoint(
    cfg: Config, weights: str | Path, out: Path, progress: bool = True
) -> Evaluation | None:
    """Detect on ``cfg``'s test split with ``weights``; write the results files, metrics.json
    and pr_curves.png into ``out`` (see the module docstring). Under ``torchrun`` every process
    detects its shard and rank 0 writes and returns the evaluation; the others return None.

    Raises:
        UserError: unreadable checkpoint, a checkpoint whose model or classes do not match
            the config and data, bad data files.
    """
    if not cfg.eval.scales or min(cfg.eval.scales) <= 0:
        raise UserError("eval.scales", f"must be positive shorter sides, got {cfg.eval.scales}")
    truth = ground_truth_source(cfg)
    device = resolve_device(cfg.train.device)
    created_group = init_distributed(device)
    try:
        model, cfg, class_names = load_model(weights, device, cfg)
        dataset = build_dataset(cfg.data, train=False)
        check_test_classes(dataset, class_names, weights)
        predictor = test_predictor(model, class_names, cfg)
        detections = detect_dataset(predictor, dataset, cfg, progress)
    finally:
        if created_group:
            shutdown_distributed()
    if detections is None:
        return None
    return write_and_score(detections, class_names, cfg, truth, out)


def write_and_score(
    detections: Detections,
    class_names: Sequence[str],
    cfg: Config,
    truth: dict[str, Any],
    out: Path,
) -> Evaluation:
    """Write ``detections`` as results files into ``out``, score those files, and write
    metrics.json and pr_curves.png beside them."""
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
    evaluation = evaluate_results(results, metric, iou_thresh=cfg.eval.iou_thresh, **truth)
    write_json(out / "metrics.json", evaluation.metrics)
    write_image(
        out / "pr_curves.png", pr_curves_figure(evaluation.curves, metric, cfg.eval.iou_thresh)
    )
    return evaluation
