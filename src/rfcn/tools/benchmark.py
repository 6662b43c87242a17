"""``rfcn benchmark``: R-FCN against its Faster R-CNN "C4" counterpart, on one machine, in one run.

What is measured, and how, is :mod:`rfcn.benchmark.run`'s docstring.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from rfcn.benchmark.report import format_table
from rfcn.benchmark.run import QUICK, RESNETS, BenchmarkSettings, run_benchmark
from rfcn.errors import UserError
from rfcn.files import write_json
from rfcn.records import begin_record, make_record, write_record
from rfcn.tools.arguments import add_record_option


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


def _backbones(text: str) -> tuple[str, ...]:
    names = tuple(text.split(","))
    unknown = [name for name in names if name not in RESNETS]
    if unknown:
        raise argparse.ArgumentTypeError(f"not one of {', '.join(RESNETS)}: {', '.join(unknown)}")
    return names


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
        "fast-inference variants; and the heads side by side (R-FCN, light head, C4, "
        "torchvision's Faster R-CNN FPN at two backbones, class counts and RoI counts). Writes "
        "JSON and prints a Markdown table.",
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
        help="a trained R-FCN checkpoint (its backbone and classes) instead of random weights; "
        "makes the bf16 agreement meaningful",
    )
    parser.add_argument("--image", help="a picture to run on instead of random pixels")
    parser.add_argument(
        "--ps-roi-mode",
        choices=("pool", "align"),
        help="PS-RoI pooling of R-FCN's head (default: the model's, pool for random weights)",
    )
    parser.add_argument(
        "--ps-roi-sampling-ratio",
        type=_positive,
        help="align's bilinear samples per bin side (default: the model's, 2 for random weights)",
    )
    parser.add_argument(
        "--rfcn-only",
        action="store_true",
        help="time R-FCN alone (no C4 counterpart, no fast-path variants): its RoI-count and "
        "training rows in a fraction of the time",
    )
    parser.add_argument("--threads", type=_positive, help="torch.set_num_threads")
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile of the backbone"
    )
    parser.add_argument(
        "--deformable",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time Deformable R-FCN (deformable PS-RoI pooling, conv5, both) beside plain "
        "R-FCN (default: on)",
    )
    parser.add_argument(
        "--deformable-roi-counts", type=_counts, help="RoIs for those, default 300,2000"
    )
    parser.add_argument(
        "--heads",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the heads side by side: R-FCN, light head, C4, torchvision's Faster "
        "R-CNN FPN; head FLOPs and ms, whole pipeline ms (default: on)",
    )
    parser.add_argument(
        "--heads-only", action="store_true", help="time the heads side by side alone"
    )
    parser.add_argument(
        "--heads-backbones",
        type=_backbones,
        help="ResNets of the heads side by side, default resnet50,resnet101",
    )
    parser.add_argument(
        "--heads-num-classes", type=_counts, help="class counts C for those, default 20,80"
    )
    parser.add_argument("--heads-roi-counts", type=_counts, help="RoIs for those, default 300,2000")
    add_record_option(parser)
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> BenchmarkSettings:
    """Defaults, then ``--quick``'s sizes, then every flag given explicitly."""
    settings = BenchmarkSettings(
        device=args.device,
        compile=args.compile,
        weights=args.weights,
        image=args.image,
        rfcn_only=args.rfcn_only,
        heads_only=args.heads_only,
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
        "deformable": args.deformable,
        "deformable_roi_counts": args.deformable_roi_counts,
        "ps_roi_mode": args.ps_roi_mode,
        "ps_roi_sampling_ratio": args.ps_roi_sampling_ratio,
        "heads": args.heads,
        "heads_backbones": args.heads_backbones,
        "heads_num_classes": args.heads_num_classes,
        "heads_roi_counts": args.heads_roi_counts,
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
    source = begin_record(args.record)
    result = run_benchmark(settings_from_args(args))
    write_json(out, result)
    if args.record:
        record = make_record(
            "benchmark",
            args.command_words,
            result,
            [],
            torch.device(args.device),
            started_from=source,
        )
        write_record(args.record, record)
    print(format_table(result))
    print(f"wrote {out}")
    return 0
