"""``rfcn demo``: train a small R-FCN on synthetic shapes on CPU, evaluate it, draw what it does.

One command shows the whole method working with no data, no weights and no GPU:

1. generate the synthetic dataset (:mod:`rfcn.data.synthetic`) into ``OUT/synthetic``;
2. train an R-FCN on a half-width ResNet-18 from random init with the packaged ``demo.yaml``,
   through the same trainer as ``rfcn train`` (approximate joint training with OHEM), into
   ``OUT`` (``model_final.pt``, ``config.yaml``, ``metrics.jsonl``);
3. evaluate on the held-out test split: VOC07 11-point mAP@0.5 and COCO AP;
4. write ``metrics.json``, ``detections.png`` (test images with boxes), ``score_maps.png``
   (paper Figures 3 and 4) and ``loss.png``; with ``model.deformable_psroi`` also
   ``deformable_parts.png`` (the Deformable ConvNets paper's Figure 7).

``rfcn train --config src/rfcn/configs/demo.yaml`` runs the same training.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rfcn.config import Config, load_config
from rfcn.data.build import build_dataset
from rfcn.data.dataset import DetectionDataset
from rfcn.data.writers import COCO_JSON
from rfcn.engine.checkpoint import load_model
from rfcn.engine.distributed import resolve_device
from rfcn.engine.logging import read_metrics
from rfcn.engine.stage_run import autocast_dtype
from rfcn.engine.trainer import train
from rfcn.errors import UserError
from rfcn.evaluation.evaluator import evaluate_detections
from rfcn.evaluation.recall import object_recall
from rfcn.evaluation.runner import detect_dataset, ground_truth_source, test_predictor
from rfcn.evaluation.seed_stats import fraction_text
from rfcn.evaluation.voc import load_voc_ground_truth
from rfcn.files import write_image, write_json
from rfcn.machine import describe_machine
from rfcn.modeling.light_head import LightHead
from rfcn.modeling.rfcn_head import RFCNHead
from rfcn.records import begin_record, make_record, write_record
from rfcn.tools.arguments import add_config_overrides, add_progress_switch, add_record_option
from rfcn.visualize import (
    deformable_parts_figure,
    draw_detections,
    image_grid,
    loss_figure,
    score_map_figure,
    thin_maps_figure,
    to_pil_image,
)

DEMO_CONFIG = "demo.yaml"  # in the package's configs/ folder
DATA_FOLDER = "synthetic"

# A tiny budget that still runs every step (the end-to-end test, `rfcn demo --quick`).
QUICK_OVERRIDES = (
    "data.synthetic_train_images=6",
    "data.synthetic_test_images=4",
    "data.synthetic_image_size=96",
    "model.min_size=[96]",
    "model.max_size=96",
    "model.anchor_sizes=[16, 32, 64]",
    "model.head_channels=64",
    "model.rpn_pre_nms_train=300",
    "model.rpn_post_nms_train=50",
    "model.rpn_pre_nms_test=300",
    "model.rpn_post_nms_test=30",
    "model.ohem_batch_per_image=16",
    "train.iterations=4",
    "train.warmup_iters=2",
    "train.lr_steps=[3]",
    "train.log_every=1",
    "eval.scales=[96]",
)
DETECTION_SCORE_THRESHOLD = 0.5  # boxes drawn in detections.png
GRID_IMAGES = 12
FIGURE_MIN_SIDE = 0.25  # of the image's shorter side, for the objects of the figures
DEFORMABLE_PARTS = "deformable_parts.png"  # written for deformable PS-RoI pooling


@dataclass
class RunResult:
    """One train-and-evaluate run: its metrics and what the pictures need.

    ``detections``: ``{image_id: {"boxes": (N, 4), "scores": (N,), "labels": (N,)}}`` of the
    test split, in input pixels; ``model`` the trained detector in eval mode."""

    metrics: dict[str, Any]
    checkpoint: Path
    history: list[dict[str, Any]]
    model: torch.nn.Module
    test_set: DetectionDataset
    detections: dict[str, dict[str, torch.Tensor]]


def demo_config(
    out: Path,
    quick: bool = False,
    iterations: int | None = None,
    overrides: Sequence[str] = (),
    config: Path | None = None,
) -> Config:
    """The packaged demo config (or ``config``), then ``--quick``, then ``--iterations``, then
    the user's overrides; synthetic data go to ``out/synthetic``."""
    settings = [f"output_dir={str(out)!r}"]
    if quick:
        settings += QUICK_OVERRIDES
    if iterations is not None:
        settings.append(f"train.iterations={iterations}")
    if config is None:
        resource = resources.files("rfcn").joinpath("configs", DEMO_CONFIG)
        with resources.as_file(resource) as path:
            cfg = load_config(path, [*settings, *overrides])
    else:
        cfg = load_config(config, [*settings, *overrides])
    if cfg.data.format == "synthetic":
        cfg.data.roots = [str(out / DATA_FOLDER)]
    return cfg


def train_and_evaluate(
    cfg: Config, out: Path, progress: bool = True, resume: bool = False
) -> RunResult:
    """Train into ``out`` (``resume``: continue its ``last.pt``) and score the test split
    (:func:`evaluate_trained`). Synthetic data are generated first if needed."""
    _check_scorable(cfg)
    started = time.perf_counter()
    ground_truth_source(cfg)  # generates synthetic data
    data_seconds = time.perf_counter() - started
    result = train(cfg, out, resume=resume, progress=progress)
    autocast = autocast_dtype(cfg.train.amp, resolve_device(cfg.train.device))
    training = {
        "train_autocast": "none" if autocast is None else str(autocast).removeprefix("torch."),
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(result.seconds, 1),
        "train_seconds_per_iteration": round(result.seconds / cfg.train.iterations, 3),
        "train_images": result.train_images,
    }
    # the whole run's log: a resumed training's history holds only what this call trained
    return evaluate_trained(result.checkpoint, cfg, training, read_metrics(out))


def evaluate_trained(
    checkpoint: Path,
    cfg: Config,
    training: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
) -> RunResult:
    """Score the weights of ``checkpoint`` on ``cfg``'s test split with ``cfg``'s test-time
    settings (:data:`rfcn.config.TEST_TIME_SETTINGS`, which may differ from the training's):
    VOC07 mAP@0.5, COCO AP (where the data carry a COCO JSON of the split: the synthetic and
    mosaic data) and the recall at IoU 0.5 of all and of small objects
    (:mod:`rfcn.evaluation.recall`).

    Args:
        training: the training's figures (``train_seconds``, ...), copied into the metrics.
        history: the training's log entries (for ``loss.png``).
    """
    _check_scorable(cfg)
    started = time.perf_counter()
    truth = ground_truth_source(cfg)
    root, split = Path(truth["dataset_root"]), truth["split"]
    model, scored_cfg, class_names = load_model(checkpoint, test_settings=cfg)
    test_set = build_dataset(scored_cfg.data, train=False)
    detections = detect_dataset(
        test_predictor(model, class_names, scored_cfg), test_set, scored_cfg, progress=False
    )
    voc = evaluate_detections(
        detections, class_names, "voc07", dataset_root=root, split=split
    ).metrics
    coco_json = root / COCO_JSON.format(split=split)
    coco = (
        evaluate_detections(detections, class_names, "coco", coco_annotations=coco_json).metrics
        if coco_json.is_file()
        else None
    )
    recall = object_recall(load_voc_ground_truth(root, split), detections, class_names)
    synthetic = cfg.data.format == "synthetic"
    metrics = {
        "voc07_mAP50": voc["mAP"],
        "coco_AP": coco["AP"] if coco else None,
        "coco_APs": coco["APs"] if coco else None,
        "recall50": recall["recall"],
        "recall50_small": recall["recall_small"],
        "test_objects": recall["objects"],
        "test_small_objects": recall["small_objects"],
        "AP50_per_class": voc["AP"],
        "coco": coco,
        "seed": cfg.train.seed,
        "iterations": cfg.train.iterations,
        "images_per_batch": cfg.train.images_per_batch,
        "test_images": len(test_set),
        "image_size": cfg.data.synthetic_image_size if synthetic else None,
        **training,
        "eval_seconds": round(time.perf_counter() - started, 1),
        "machine": describe_machine(),
    }
    return RunResult(metrics, checkpoint, history or [], model, test_set, detections)


def _check_scorable(cfg: Config) -> None:
    if cfg.data.format == "coco":
        raise UserError("data.format", "train-and-evaluate runs score VOC-layout data, not coco")


def detections_picture(run: RunResult) -> Image.Image:
    """A grid of the first test images with their detections above the drawing threshold."""
    dataset = run.test_set
    tiles = []
    for index in range(min(GRID_IMAGES, len(dataset))):
        image, _ = dataset[index]
        found = run.detections[dataset.image_ids[index]]
        keep = found["scores"] >= DETECTION_SCORE_THRESHOLD
        tiles.append(
            draw_detections(
                image,
                found["boxes"][keep],
                found["labels"][keep],
                found["scores"][keep],
                dataset.class_names,
            )
        )
    return image_grid(tiles, columns=4)


def _figure_objects(run: RunResult, count: int) -> list[tuple[str, int]]:
    """Test images and detection indices for the figures, at most one per image: the most
    confident detections whose shorter side spans at least :data:`FIGURE_MIN_SIDE` of the
    image (their k×k bins then cover several score-map cells), then the other most confident
    ones."""
    best: dict[str, tuple[bool, float, int]] = {}
    for index, image_id in enumerate(run.test_set.image_ids):
        found = run.detections[image_id]
        height, width = run.test_set.image_sizes[index]
        sides = torch.minimum(
            found["boxes"][:, 2] - found["boxes"][:, 0], found["boxes"][:, 3] - found["boxes"][:, 1]
        )
        for row in range(len(found["scores"])):
            large = bool(sides[row] >= FIGURE_MIN_SIDE * min(height, width))
            candidate = (large, float(found["scores"][row]), row)
            if image_id not in best or candidate[:2] > best[image_id][:2]:
                best[image_id] = candidate
    if not best:
        raise UserError("demo", "the model detected nothing on the test split; train longer")
    ranked = sorted(best, key=lambda image_id: best[image_id][:2], reverse=True)
    return [(image_id, best[image_id][2]) for image_id in ranked[:count]]


def _bin_shifts(
    model: torch.nn.Module, maps: dict[str, Any], roi: torch.Tensor, label: int
) -> np.ndarray | None:
    """``(k, k, 2)`` shifts of ``roi``'s bins for class ``label`` as fractions of the RoI's
    width and height (``offset * trans_std``), or None without deformable PS-RoI pooling.

    ``maps`` is ``model.score_maps(image)``; ``roi`` ``(1, 5)`` in network pixels.
    """
    if "cls_offset_maps" not in maps:
        return None
    offsets = model.head.bin_offsets(maps["cls_offset_maps"][None], roi)[0]  # (2(C+1), k, k)
    return (offsets[2 * label : 2 * label + 2] * model.head.trans_std).permute(1, 2, 0).numpy()


@torch.no_grad()
def score_maps_picture(run: RunResult) -> Image.Image:
    """Figures 3 and 4 of the paper for one confidently detected test object: its class's
    k×k score maps, with an RoI on the object and the same RoI shifted half its width off it."""
    model, dataset = run.model, run.test_set
    ((image_id, row),) = _figure_objects(run, 1)
    found = run.detections[image_id]
    image, _ = dataset[dataset.image_ids.index(image_id)]
    label = int(found["labels"][row])
    box = found["boxes"][row]
    width = float(box[2] - box[0])
    shift = width / 2 if float(box[2]) + width / 2 <= image.shape[-1] else -width / 2
    shifted = box + torch.tensor([shift, 0.0, shift, 0.0])
    maps = model.score_maps(image)
    cls_maps = maps["cls_maps"][None]  # (1, k²(C+1), h, w)
    offset_maps = maps["cls_offset_maps"][None] if "cls_offset_maps" in maps else None
    k = model.head.k
    rows = []
    for title, roi_box in (("RoI on the object", box), ("RoI shifted off the object", shifted)):
        roi = torch.cat((torch.zeros(1), roi_box * maps["scale"]))[None]  # network pixels
        bins = model.head.pool(cls_maps, roi, offset_maps)  # (1, C+1, k, k)
        logits = bins[0].mean(dim=(1, 2))  # (C+1,), the head's vote
        entry = {
            "title": title,
            "box": roi_box.tolist(),
            "bins": bins[0, label].numpy(),
            "vote": float(logits[label]),
            "probability": float(logits.softmax(0)[label]),
        }
        shifts = _bin_shifts(model, maps, roi, label)
        if shifts is not None:
            entry["shifts"] = shifts
        rows.append(entry)
    class_maps = cls_maps[0].view(-1, k, k, *cls_maps.shape[-2:])[label]  # (k, k, h, w)
    return score_map_figure(
        to_pil_image(image),
        dataset.class_names[label - 1],
        class_maps.numpy(),
        maps["stride"] / maps["scale"],
        rows,
    )


@torch.no_grad()
def thin_maps_picture(run: RunResult) -> Image.Image:
    """The light head's thin maps for one confidently detected test object: its box as the RoI
    and the alpha x p x p bins PSRoIAlign pools for it (:func:`rfcn.visualize.thin_maps_figure`)."""
    model, dataset = run.model, run.test_set
    ((image_id, row),) = _figure_objects(run, 1)
    found = run.detections[image_id]
    image, _ = dataset[dataset.image_ids.index(image_id)]
    seen = model.head_input(image)
    roi = torch.cat((torch.zeros(1), found["boxes"][row] * seen.scale))[None]  # network pixels
    pooled = model.head.pool(model.head.thin_maps(seen.conv5), roi)[0]  # (alpha, p, p)
    name = dataset.class_names[int(found["labels"][row]) - 1]
    title = f"{name} {float(found['scores'][row]):.2f}"
    return thin_maps_figure(
        to_pil_image(image), found["boxes"][row].tolist(), pooled.numpy(), title
    )


@torch.no_grad()
def deformable_parts_picture(run: RunResult, count: int = 6) -> Image.Image:
    """The Deformable ConvNets paper's Figure 7 on ``count`` confidently detected test objects:
    each detection as an RoI, with its class's k×k bins where deformable PS-RoI pooling moved
    them. Needs ``model.deformable_psroi``."""
    model, dataset = run.model, run.test_set
    panels = []
    for image_id, row in _figure_objects(run, count):
        found = run.detections[image_id]
        image, _ = dataset[dataset.image_ids.index(image_id)]
        label = int(found["labels"][row])
        maps = model.score_maps(image)
        roi = torch.cat((torch.zeros(1), found["boxes"][row] * maps["scale"]))[None]
        shifts = _bin_shifts(model, maps, roi, label)
        if shifts is None:
            raise UserError("model.deformable_psroi", "the picture needs deformable PS-RoI pooling")
        title = f"{dataset.class_names[label - 1]} {float(found['scores'][row]):.2f}"
        panels.append(
            {"image": to_pil_image(image), "box": found["boxes"][row].tolist(), "shifts": shifts,
             "title": title}
        )  # fmt: skip
    return deformable_parts_figure(panels)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train and evaluate a small R-FCN on synthetic shapes, on CPU",
        description=(
            "Generate a synthetic shapes dataset, train an R-FCN on a half-width ResNet-18 from "
            "scratch on it (about 5 min on 2 CPU cores), evaluate on the held-out split and write "
            "metrics.json, detections.png, score_maps.png, loss.png (and, with "
            "model.deformable_psroi, deformable_parts.png) and the checkpoint."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--iterations", type=int, help="training iterations (default: config)")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny budget that only checks every step runs"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the training saved in --out (last.pt)"
    )
    add_config_overrides(parser, "model.k=3")
    add_progress_switch(parser)
    add_record_option(parser)
    parser.set_defaults(func=run)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads <= 0:
            raise UserError("--threads", f"must be positive, got {threads}")
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    source = begin_record(args.record)
    out: Path = args.out
    cfg = demo_config(out, args.quick, args.iterations, args.overrides)
    started = time.perf_counter()
    result = train_and_evaluate(cfg, out, args.progress, args.resume)
    pictures = {"detections.png": detections_picture(result)}
    if isinstance(result.model.head, RFCNHead):  # the C4 counterpart has no score maps
        pictures["score_maps.png"] = score_maps_picture(result)
    elif isinstance(result.model.head, LightHead):
        pictures["thin_maps.png"] = thin_maps_picture(result)
    pictures["loss.png"] = loss_figure(result.history)
    if cfg.model.deformable_psroi:
        pictures[DEFORMABLE_PARTS] = deformable_parts_picture(result)
    for name, picture in pictures.items():
        write_image(out / name, picture)
    metrics = {**result.metrics, "total_seconds": round(time.perf_counter() - started, 1)}
    metrics["checkpoint"] = str(result.checkpoint)
    write_json(out / "metrics.json", metrics)
    if args.record:
        values = {key: value for key, value in metrics.items() if key != "machine"}
        write_record(
            args.record,
            make_record("demo", args.command_words, values, [cfg.train.seed], started_from=source),
        )
    print(
        f"VOC07 mAP@0.5 {fraction_text(metrics['voc07_mAP50'])}, "
        f"COCO AP {fraction_text(metrics['coco_AP'])} on "
        f"{metrics['test_images']} test images; trained {metrics['iterations']} iterations "
        f"({_precision(metrics)}) in {metrics['train_seconds']:.0f} s, "
        f"{metrics['total_seconds']:.0f} s in all. "
        f"Wrote {out}/metrics.json, {', '.join(pictures)}"
    )
    return 0


def _precision(metrics: dict[str, Any]) -> str:
    """How the demo trained, and why float32 where bf16 was not native (the demo's
    ``train.amp: auto``), which explains a slower run than the README quotes."""
    if metrics["train_autocast"] != "none":
        return f"{metrics['train_autocast']} autocast"
    if metrics["machine"]["fast_bf16"]:
        return "float32"
    return "float32: this CPU has no AVX512-BF16 or AMX for bf16"
