"""R-FCN against its Faster R-CNN "C4" counterpart, on one machine, in one run.

The paper's claim (§4.1, Tables 1, 3 and 4) is speed at equal accuracy: R-FCN has no per-RoI
subnetwork, so its test time hardly depends on the number of RoIs and is well below Faster
R-CNN's with ResNet conv5 as a per-RoI head. It measures, with the same backbone, image
size, images and RoIs for both detectors:

- the backbone alone (the floor) and each whole pipeline;
- each head alone on exactly N random RoIs, for every N in ``--roi-counts``;
- one training iteration with OHEM for each N in ``--train-roi-counts`` (paper Table 3);
- peak memory of every case, and R-FCN under the fast-inference variants
  (:mod:`rfcn.inference.fast_path`): inference mode, channels-last, bf16, torch.compile,
  batched images, with what bf16 changes in the outputs;
- plain R-FCN beside its Deformable ConvNets variants (deformable PS-RoI pooling, deformable
  conv5, both) at ``deformable_roi_counts`` RoIs, with each variant's time over plain's;
- the heads side by side (:mod:`rfcn.benchmark.heads`): R-FCN's, the light head, C4 and
  torchvision's Faster R-CNN FPN for each of ``heads_backbones``, ``heads_num_classes`` and
  ``heads_roi_counts``: head FLOPs and ms, whole pipeline ms, each over R-FCN's
  (``heads_only``: nothing else).

Weights are random (speed hardly depends on their values) with every BatchNorm fitted to the
benchmark image, so activations, proposals and detections are of realistic scale; or trained
ones (``--weights``), which also make the bf16 agreement meaningful, best on a real picture
(``--image``).
Times are medians (with IQR) of ``--repeats`` calls after ``--warmup`` calls, as wall clock and
as process CPU time (steadier on a shared machine); ratios are ratios of medians, given for
both. The JSON records the machine and the settings beside the numbers.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor

from rfcn.benchmark.cases import (
    Budget,
    calibrate_batch_norm,
    deformable_cases,
    fast_path_cases,
    inference_cases,
    median_ms,
    random_targets,
    training_cases,
)
from rfcn.benchmark.heads import head_comparison
from rfcn.benchmark.report import (
    check_targets,
    deformable_overheads,
    heads_over_rfcn,
    summarize_ratios,
)
from rfcn.benchmark.timing import memory_method
from rfcn.config import ModelConfig
from rfcn.data.images import load_image
from rfcn.engine.checkpoint import checkpoint_config, load_checkpoint, load_model
from rfcn.errors import UserError
from rfcn.machine import describe_machine
from rfcn.modeling.c4_baseline import POOL_SIZE, build_c4_detector
from rfcn.modeling.rfcn import RFCN, build_model

FORMAT_VERSION = 1
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass(frozen=True)
class BenchmarkSettings:
    """What one benchmark run measures. Defaults: the paper's ResNet-101 at 600 px."""

    device: str = "cpu"
    backbone: str = "resnet101"
    size: int = 600  # shorter side of the network input (the input image is size x 4/3 size)
    max_size: int = 1000
    num_classes: int = 20
    roi_counts: tuple[int, ...] = (300, 1000, 2000)
    train_roi_counts: tuple[int, ...] = (300, 2000)
    c4_training: bool = False  # C4 with OHEM keeps every RoI's conv5 activations: slow, large
    warmup: int = 1
    repeats: int = 5
    batch_size: int = 2
    compile: bool = False
    seed: int = 0
    weights: str | None = None  # a trained checkpoint instead of random weights
    ps_roi_mode: str | None = None  # "pool" or "align"; None: the model config's (or checkpoint's)
    ps_roi_sampling_ratio: int | None = None  # align's samples per bin side; None: the model's
    rfcn_only: bool = False  # no C4 counterpart and no fast-path variants: R-FCN's rows alone
    image: str | None = None  # a picture instead of random pixels
    deformable: bool = True  # also time the Deformable ConvNets variants
    deformable_roi_counts: tuple[int, ...] = (300, 2000)
    heads: bool = True  # also time the heads side by side (rfcn.benchmark.heads)
    heads_only: bool = False  # time that alone
    heads_backbones: tuple[str, ...] = ("resnet50", "resnet101")
    heads_num_classes: tuple[int, ...] = (20, 80)
    heads_roi_counts: tuple[int, ...] = (300, 2000)


QUICK = {
    "backbone": "resnet18",
    "size": 224,
    "max_size": 400,
    "roi_counts": (50, 100, 200),
    "train_roi_counts": (100, 200),
    "c4_training": True,
    "repeats": 2,
    "heads_backbones": ("resnet18",),
    "heads_roi_counts": (16, 64),
}


def _detector(settings: BenchmarkSettings, image: Tensor) -> tuple[RFCN, ModelConfig]:
    """R-FCN at the benchmark's size and test RoI count: trained weights from
    ``settings.weights``, or random ones with BatchNorm fitted to ``image``."""
    size_settings: dict[str, object] = {
        "min_size": (settings.size,),
        "max_size": settings.max_size,
        "rpn_post_nms_test": settings.roi_counts[0],
    }
    if settings.ps_roi_mode is not None:
        size_settings["ps_roi_mode"] = settings.ps_roi_mode
    if settings.ps_roi_sampling_ratio is not None:
        size_settings["ps_roi_sampling_ratio"] = settings.ps_roi_sampling_ratio
    if settings.weights is None:
        cfg = ModelConfig(
            backbone=settings.backbone, num_classes=settings.num_classes, **size_settings
        )
        model = build_model(cfg).to(image.device)
        calibrate_batch_norm(model, [image])
        return model.eval(), cfg
    saved = checkpoint_config(settings.weights, load_checkpoint(settings.weights))
    if saved.model.head != "rfcn":
        raise UserError(
            settings.weights,
            f"holds a model.head={saved.model.head} model; --weights takes an R-FCN checkpoint "
            "(--heads-only times every head side by side)",
        )
    full_cfg = replace(saved, model=replace(saved.model, **size_settings))
    model, _, _ = load_model(settings.weights, image.device, full_cfg)
    return model, full_cfg.model


def _images(settings: BenchmarkSettings, generator: torch.Generator) -> list[Tensor]:
    """``1 + batch_size`` images: the given picture each time, or random ones of 4:3 shape."""
    count = 1 + settings.batch_size
    if settings.image is not None:
        return [load_image(settings.image)] * count
    shape = (3, settings.size, settings.size * 4 // 3)
    return [torch.rand(shape, generator=generator) for _ in range(count)]


def run_benchmark(settings: BenchmarkSettings) -> dict[str, Any]:
    """Measure everything :class:`BenchmarkSettings` asks for; returns the JSON-ready result."""
    device = torch.device(settings.device)
    budget = Budget(device, settings.warmup, settings.repeats)
    machine = describe_machine(device)
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    image, *batch_images = (image.to(device) for image in _images(settings, generator))
    images = [image]
    height, width = image.shape[-2:]
    heads = None
    if settings.heads or settings.heads_only:
        heads = _heads(settings, image, budget, generator)
    if settings.heads_only:
        return {
            "format_version": FORMAT_VERSION,
            "machine": _with_load_average(machine),
            "settings": {**asdict(settings), "input_image_hw": [int(height), int(width)]},
            "heads": heads,
        }
    rfcn, cfg = _detector(settings, image)
    settings = replace(
        settings,
        backbone=cfg.backbone,
        num_classes=cfg.num_classes,
        ps_roi_mode=cfg.ps_roi_mode,
        ps_roi_sampling_ratio=cfg.ps_roi_sampling_ratio,
    )
    c4 = None
    if not settings.rfcn_only:
        c4 = build_c4_detector(rfcn, cfg).eval()  # its per-RoI conv5 takes R-FCN's statistics
    inference = inference_cases(rfcn, c4, images, settings.roi_counts, budget, generator)
    ground_truth = random_targets(3, height, width, settings.num_classes, generator)
    targets = [{key: value.to(device) for key, value in ground_truth.items()}]
    counts = settings.train_roi_counts
    training: dict[str, Any] = {
        "rfcn": training_cases(rfcn, images, targets, counts, budget, generator),
        "c4": {},
    }
    if c4 is not None and settings.c4_training:
        training["c4"] = training_cases(c4, images, targets, counts, budget, generator)
    if training["c4"]:
        training["rfcn_speedup_over_c4"] = {
            n: median_ms(training["c4"][n]) / median_ms(training["rfcn"][n])
            for n in training["rfcn"]
        }
    fast_path = None
    if not settings.rfcn_only:
        fast_path = fast_path_cases(
            rfcn, images, batch_images, budget, generator, compile_backbone=settings.compile
        )
    ratios = {
        "wall": summarize_ratios(inference, "median_ms"),
        "cpu": summarize_ratios(inference, "cpu_median_ms"),
    }
    extra: dict[str, Any] = {}
    if settings.deformable:
        deformable = deformable_cases(
            cfg, images, settings.deformable_roi_counts, budget, generator
        )
        deformable["over_plain"] = {
            "wall": deformable_overheads(deformable["variants"], "median_ms"),
            "cpu": deformable_overheads(deformable["variants"], "cpu_median_ms"),
        }
        extra["deformable"] = deformable
    if heads is not None:
        extra["heads"] = heads
    return {
        "format_version": FORMAT_VERSION,
        "machine": _with_load_average(machine),
        "settings": {
            **asdict(settings),
            "input_image_hw": [int(height), int(width)],
            "network_input_hw": inference.pop("network_input_hw"),
            "k": cfg.k,
            "memory_method": memory_method(device),
            "c4_head": f"roi_pool {POOL_SIZE}x{POOL_SIZE} on conv4, conv5 stride 2 per RoI, "
            "average pool, fc C+1 and fc 4C",
            "inference": "torch.inference_mode, float32, NCHW (fast-path variants aside)",
        },
        "inference": inference,
        "ratios": ratios,
        "training": training,
        "fast_path": fast_path,
        "targets": check_targets(ratios["wall"], ratios["cpu"]),
        **extra,
    }


def _heads(
    settings: BenchmarkSettings, image: Tensor, budget: Budget, generator: torch.Generator
) -> dict[str, Any]:
    """The heads side by side (:mod:`rfcn.benchmark.heads`) and their ratios over R-FCN's."""
    measured = head_comparison(
        settings.heads_backbones,
        settings.heads_num_classes,
        settings.heads_roi_counts,
        settings.size,
        settings.max_size,
        image,
        budget,
        generator,
    )
    return {"results": measured, "over_rfcn": heads_over_rfcn(measured)}


def _with_load_average(machine: dict[str, Any]) -> dict[str, Any]:
    """``machine`` with the load average at the end of the run, where the platform tells."""
    if hasattr(os, "getloadavg"):
        return {**machine, "load_average_end": list(os.getloadavg())}
    return machine
