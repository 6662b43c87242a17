"""``rfcn data``: look at a dataset split before training on it.

Reads the split through the same readers as ``rfcn train`` (:mod:`rfcn.data.inspect`) and
writes into ``--out``:

- ``summary.json``: images, objects per class, difficult (VOC) or crowd (COCO) counts,
  image sizes, box-size and aspect-ratio histograms, images without objects, and every
  problem the readers found, each with its file (also printed, as tables);
- ``box_sizes.png``: the box sizes at the model's input and the aspect ratios, with the
  config's anchors marked;
- ``samples.jpg``: sample images with their boxes and class names drawn.

Exit codes: 0 every image readable (other problems are listed, not fatal); 1 some images do
not decode; 2 a user error that stops the run (a bad config, a missing split file, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rfcn.errors import UserError
from rfcn.tools.arguments import add_config_overrides, add_progress_switch

SUMMARY_FILE = "summary.json"
SIZES_FILE = "box_sizes.png"
SAMPLES_FILE = "samples.jpg"
EPILOG = (
    "exit status: 0 all images readable; 1 some images unreadable (listed); "
    "2 nothing done (error message on stderr)"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="summarise a dataset split, draw its boxes and list its problems",
        description=__doc__.splitlines()[0].strip("`"),
        epilog=EPILOG,
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    parser.add_argument(
        "--split",
        default="train",
        metavar="NAME",
        help="train (what training reads, the default), test (what evaluation reads), or "
        "another split of a VOC-layout root (ImageSets/Main/NAME.txt)",
    )
    add_config_overrides(parser, "data.roots=[path/to/data]")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--samples", type=int, default=16, metavar="N", help="images in samples.jpg (default 16)"
    )
    add_progress_switch(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rfcn.config import load_config
    from rfcn.data.inspect import (
        box_statistics,
        format_summary,
        inspect_split,
        sample_grid,
        sample_indices,
        summarize,
    )
    from rfcn.files import write_image, write_json
    from rfcn.visualize import box_distribution_figure

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(out, "the output path exists and is not a folder")
    if args.samples < 0:
        raise UserError("--samples", f"must be >= 0, got {args.samples}")
    cfg = load_config(args.config, list(args.overrides))
    flag_name = "crowd" if cfg.data.format == "coco" else "difficult"
    short_side, max_size = cfg.model.min_size[-1], cfg.model.max_size
    inspection = inspect_split(cfg.data, args.split, progress=args.progress)
    summary = {
        "config": str(args.config),
        "split": args.split,
        "format": cfg.data.format,
        **summarize(inspection, flag_name, short_side, max_size),
    }
    stats = box_statistics(inspection.dataset, short_side, max_size)
    figure = box_distribution_figure(
        stats["size_at_input"],
        stats["ratio"],
        cfg.model.anchor_sizes,
        cfg.model.anchor_ratios,
        f"box size sqrt(w * h) at the model's input (short side {short_side}), px",
    )
    samples = sample_indices(inspection, args.samples)
    grid = sample_grid(inspection.dataset, samples, flag_name) if samples else None
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SUMMARY_FILE, summary)
    write_image(out / SIZES_FILE, figure)
    written = [SUMMARY_FILE, SIZES_FILE]
    if grid is not None:
        write_image(out / SAMPLES_FILE, grid)
        written.append(SAMPLES_FILE)
    print(f"{args.split} split of {args.config} ({cfg.data.format})")
    print(format_summary(summary, flag_name))
    print(f"wrote {', '.join(written)} to {out}", file=sys.stderr)
    return 1 if inspection.unreadable else 0
