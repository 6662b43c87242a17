"""``rfcn ablate``: the paper's Table 2 in miniature on the demo's data and budget.

Table 2 of the paper compares R-FCN with k×k = 1×1 (no position sensitivity), 3×3 and 7×7
position-sensitive bins, and Table 3's neighbour compares conv5 with and without the à trous
trick (stride 16 vs 32 score maps). Deformable ConvNets (Dai et al., ICCV 2017, Table 1) add
deformable PS-RoI pooling and deformable conv5 to the k = 7 model, alone and together. Here
every variant trains from scratch with the demo's config (:mod:`rfcn.tools.demo`), on the same
synthetic data, with the same number of iterations and the same seed, and is scored on the same
held-out split. The table is printed and saved as ``ablation.json``; each variant's run
(checkpoint, config, losses, metrics, and ``deformable_parts.png`` for deformable PS-RoI
pooling) stays in its own folder under ``OUT``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rfcn.files import write_image, write_json
from rfcn.machine import describe_machine
from rfcn.tools.arguments import add_config_overrides, add_progress_switch
from rfcn.tools.demo import (
    DATA_FOLDER,
    DEFORMABLE_PARTS,
    deformable_parts_picture,
    demo_config,
    set_threads,
    train_and_evaluate,
)

# name -> config overrides; every other setting is the demo's.
VARIANTS: dict[str, tuple[str, ...]] = {
    "k1": ("model.k=1", "model.atrous=true"),
    "k3": ("model.k=3", "model.atrous=true"),
    "k7": ("model.k=7", "model.atrous=true"),
    "k7_no_atrous": ("model.k=7", "model.atrous=false"),
    "k7_dpsroi": ("model.k=7", "model.atrous=true", "model.deformable_psroi=true"),
    "k7_dconv5": ("model.k=7", "model.atrous=true", "model.deformable_conv5=v1"),
    "k7_dpsroi_dconv5": (
        "model.k=7",
        "model.atrous=true",
        "model.deformable_psroi=true",
        "model.deformable_conv5=v1",
    ),
}


def deformable_name(deformable_psroi: bool, deformable_conv5: str) -> str:
    """The table's "deformable" column: which Deformable ConvNets modules a variant has."""
    parts = ["PS-RoI"] if deformable_psroi else []
    if deformable_conv5 != "none":
        parts.append(f"conv5 {deformable_conv5}")
    return " + ".join(parts) or "-"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the variants' scores (fractions shown as percentages)."""

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}"

    lines = [
        f"{'variant':<16} {'k':>2} {'à trous':>7} {'deformable':<17} {'mAP@0.5 (VOC07)':>16} "
        f"{'COCO AP':>8} {'train s':>8}"
    ]
    for row in rows:
        deformable = deformable_name(row["deformable_psroi"], row["deformable_conv5"])
        lines.append(
            f"{row['variant']:<16} {row['k']:>2} {'yes' if row['atrous'] else 'no':>7} "
            f"{deformable:<17} {percent(row['voc07_mAP50']):>16} {percent(row['coco_AP']):>8} "
            f"{row['train_seconds']:>8.0f}"
        )
    return "\n".join(lines)


def run_ablation(
    out: Path,
    quick: bool,
    iterations: int | None,
    overrides: list[str],
    progress: bool,
    variants: list[str],
) -> dict[str, Any]:
    """Train and score each variant into ``out/<variant>``; returns what ``ablation.json``
    holds."""
    rows = []
    started = time.perf_counter()
    for name in variants:
        # The data folder is shared, so every variant sees the same images.
        cfg = demo_config(out, quick, iterations, [*VARIANTS[name], *overrides])
        deformable = deformable_name(cfg.model.deformable_psroi, cfg.model.deformable_conv5)
        print(
            f"[{name}] k={cfg.model.k}, à trous {'on' if cfg.model.atrous else 'off'}, "
            f"deformable: {deformable}"
        )
        run = train_and_evaluate(cfg, out / name, progress)
        metrics = run.metrics
        write_json(out / name / "metrics.json", metrics)
        if cfg.model.deformable_psroi:
            write_image(out / name / DEFORMABLE_PARTS, deformable_parts_picture(run))
        rows.append(
            {
                "variant": name,
                "k": cfg.model.k,
                "atrous": cfg.model.atrous,
                "deformable_psroi": cfg.model.deformable_psroi,
                "deformable_conv5": cfg.model.deformable_conv5,
                "voc07_mAP50": metrics["voc07_mAP50"],
                "coco_AP": metrics["coco_AP"],
                "AP50_per_class": metrics["AP50_per_class"],
                "train_seconds": metrics["train_seconds"],
                "iterations": metrics["iterations"],
            }
        )
    return {
        "variants": rows,
        "data": str(out / DATA_FOLDER),
        "overrides": overrides,
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": describe_machine(),
    }


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate",
        help="k=1/3/7, à trous on/off and Deformable R-FCN on the demo's data and budget "
        "(paper Table 2)",
        description=(
            "Train the demo's R-FCN once per variant (k=1, k=3, k=7, k=7 without à trous, and "
            "k=7 with deformable PS-RoI pooling, deformable conv5 (v1) or both) on the same "
            "synthetic data and budget, score each on the held-out split, print the table and "
            "save it to OUT/ablation.json. Takes about one demo's time per variant."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument(
        "--iterations", type=int, help="training iterations per variant (default: the demo's)"
    )
    parser.add_argument("--quick", action="store_true", help="a tiny budget (tests)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="which variants to run (default: all)",
    )
    add_config_overrides(parser, "train.base_lr=0.02")
    add_progress_switch(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    result = run_ablation(
        args.out, args.quick, args.iterations, args.overrides, args.progress, args.variants
    )
    write_json(args.out / "ablation.json", result)
    print(format_table(result["variants"]))
    print(f"saved {args.out / 'ablation.json'}")
    return 0
