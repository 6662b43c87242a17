"""``rfcn benchmark``: R-FCN against its Faster R-CNN "C4" counterpart, on one machine, in one run.

The paper's claim (§4.1, Tables 1, 3 and 4) is speed at equal accuracy: R-FCN has no per-RoI
subnetwork, so its test time hardly depends on the number of RoIs and is well below Faster
R-CNN's with ResNet conv5 as a per-RoI head. This tool measures, with the same backbone, image
size, images and RoIs for both detectors:

- the backbone alone (the floor) and each whole pipeline;
- each head alone on exactly N random RoIs, for every N in ``--roi-counts``;
- one training iteration with OHEM for each N in ``--train-roi-counts`` (paper Table 3);
- peak memory of every case, and R-FCN under the fast-inference variants
  (:mod:`rfcn.tools.fast_inference`): inference mode, channels-last, bf16, torch.compile,
  batched images, with what bf16 changes in the outputs.

Weights are random (speed hardly depends on their values) with every BatchNorm fitted to the
benchmark image, so activations, proposals and detections are of realistic scale; or trained
ones (``--weights``), which also make the bf16 agreement meaningful, best on a real picture
(``--image``).
Times are medians (with IQR) of ``--repeats`` calls after ``--warmup`` calls, as wall clock and
as process CPU time (steadier on a shared machine); ratios are ratios of medians, given for
both. The JSON records the machine and the settings beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor

from rfcn.config import ModelConfig
from rfcn.data.images import load_image
from rfcn.engine.checkpoint import checkpoint_config, load_checkpoint, load_model
from rfcn.errors import UserError
from rfcn.files import write_json
from rfcn.modeling.rfcn import RFCN, build_model
from rfcn.tools.benchmark_cases import (
    Budget,
    calibrate_batch_norm,
    fast_path_cases,
    inference_cases,
    median_ms,
    random_targets,
    training_case,
)
from rfcn.tools.benchmark_report import check_targets, format_table, summarize_ratios
from rfcn.tools.c4_baseline import POOL_SIZE, build_c4_detector
from rfcn.tools.fast_inference import bf16_is_fast
from rfcn.tools.timing import memory_method

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
    image: str | None = None  # a picture instead of random pixels


QUICK = {
    "backbone": "resnet18",
    "size": 224,
    "max_size": 400,
    "roi_counts": (50, 100, 200),
    "train_roi_counts": (100, 200),
    "c4_training": True,
    "repeats": 2,
}


def describe_machine(device: torch.device) -> dict[str, Any]:
    """The hardware and software the numbers come from."""
    cpu_model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine: dict[str, Any] = {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "fast_bf16": bf16_is_fast(device),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model,
    }
    if hasattr(os, "getloadavg"):
        machine["load_average_start"] = list(os.getloadavg())
    return machine


def _detector(settings: BenchmarkSettings, image: Tensor) -> tuple[RFCN, ModelConfig]:
    """R-FCN at the benchmark's size and test RoI count: trained weights from
    ``settings.weights``, or random ones with BatchNorm fitted to ``image``."""
    size_settings = {
        "min_size": (settings.size,),
        "max_size": settings.max_size,
        "rpn_post_nms_test": settings.roi_counts[0],
    }
    if settings.weights is None:
        cfg = ModelConfig(
            backbone=settings.backbone, num_classes=settings.num_classes, **size_settings
        )
        model = build_model(cfg).to(image.device)
        calibrate_batch_norm(model, [image])
        return model.eval(), cfg
    saved = checkpoint_config(settings.weights, load_checkpoint(settings.weights))
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
    rfcn, cfg = _detector(settings, image)
    settings = replace(settings, backbone=cfg.backbone, num_classes=cfg.num_classes)
    c4 = build_c4_detector(rfcn, cfg).eval()  # its per-RoI conv5 takes R-FCN's statistics
    inference = inference_cases(rfcn, c4, images, settings.roi_counts, budget, generator)
    ground_truth = random_targets(3, height, width, settings.num_classes, generator)
    targets = [{key: value.to(device) for key, value in ground_truth.items()}]
    training: dict[str, Any] = {"rfcn": {}, "c4": {}}
    for count in settings.train_roi_counts:
        key = str(count)
        training["rfcn"][key] = training_case(rfcn, images, targets, count, budget, generator)
        if settings.c4_training:
            training["c4"][key] = training_case(c4, images, targets, count, budget, generator)
    if settings.c4_training:
        training["rfcn_speedup_over_c4"] = {
            n: median_ms(training["c4"][n]) / median_ms(training["rfcn"][n])
            for n in training["rfcn"]
        }
    fast_path = fast_path_cases(
        rfcn, images, batch_images, budget, generator, compile_backbone=settings.compile
    )
    ratios = {
        "wall": summarize_ratios(inference, "median_ms"),
        "cpu": summarize_ratios(inference, "cpu_median_ms"),
    }
    if hasattr(os, "getloadavg"):
        machine["load_average_end"] = list(os.getloadavg())
    return {
        "format_version": FORMAT_VERSION,
        "machine": machine,
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
    }


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"RoI counts must be positive, got {text!r}")
    return counts


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="time R-FCN against its Faster R-CNN C4 counterpart",
        description="Time R-FCN against its Faster R-CNN C4 counterpart (same backbone, size and "
        "RoIs): whole pipelines, heads vs RoI count, OHEM training steps, peak memory, and the "
        "fast-inference variants. Writes JSON and prints a Markdown table.",
    )
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (resnet18, 224 px, RoIs 50/100/200, 2 repeats) unless flags say else",
    )
    parser.add_argument("--backbone", choices=RESNETS, help="ignored with --weights")
    parser.add_argument("--size", type=_positive, help="shorter side of the network input")
    parser.add_argument("--repeats", type=_positive, help="timed calls per case")
    parser.add_argument("--warmup", type=_positive, help="untimed calls per case first")
    parser.add_argument("--roi-counts", type=_counts, help="e.g. 300,1000,2000")
    parser.add_argument("--train-roi-counts", type=_counts, help="e.g. 300,2000")
    parser.add_argument(
        "--c4-training",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time C4 training steps (default: only with --quick)",
    )
    parser.add_argument("--batch-size", type=_positive, help="images in the batched case")
    parser.add_argument(
        "--weights",
        help="a trained checkpoint (its backbone and classes) instead of random weights; "
        "makes the bf16 agreement meaningful",
    )
    parser.add_argument("--image", help="a picture to run on instead of random pixels")
    parser.add_argument("--threads", type=_positive, help="torch.set_num_threads")
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile of the backbone"
    )
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> BenchmarkSettings:
    """Defaults, then ``--quick``'s sizes, then every flag given explicitly."""
    settings = BenchmarkSettings(
        device=args.device, compile=args.compile, weights=args.weights, image=args.image
    )
    if args.quick:
        settings = replace(settings, **QUICK)
    flags = {
        "backbone": args.backbone,
        "size": args.size,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "roi_counts": args.roi_counts,
        "train_roi_counts": args.train_roi_counts,
        "c4_training": args.c4_training,
        "batch_size": args.batch_size,
    }
    settings = replace(settings, **{k: v for k, v in flags.items() if v is not None})
    return replace(settings, max_size=max(settings.max_size, settings.size * 4 // 3 + 1))


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UserError(out, "the folder to write into does not exist")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device", "cuda was asked for but torch sees no CUDA device")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run_benchmark(settings_from_args(args))
    write_json(out, result)
    print(format_table(result))
    print(f"wrote {out}")
    return 0
