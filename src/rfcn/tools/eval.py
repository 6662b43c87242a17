"""``rfcn eval``: run a trained model over the config's test split, write results files, score.

Writes into ``--out`` (default ``<output_dir>/eval``) the results files, ``metrics.json`` and
``pr_curves.png`` (:mod:`rfcn.evaluation.runner`). ``eval.batch_size`` images run per forward
pass and ``data.workers`` processes decode them; ``torchrun --nproc_per_node=N -m rfcn.cli
eval ...`` shards the split over N processes and writes what one process writes.

Single-scale by default; ``--scales`` (paper: 200 400 600 800 1000) and ``--flip`` turn on
test-time augmentation (:class:`rfcn.inference.predictor.Predictor`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rfcn.tools.arguments import add_config_overrides, add_progress_switch


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="run a checkpoint on the test split, write results files and score them",
        description=__doc__.splitlines()[0].strip("`"),
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) from rfcn train")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <output_dir>/eval)")
    add_config_overrides(parser, "eval.metric=voc eval.batch_size=4 data.test_split=val")
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
    from rfcn.evaluation.runner import evaluate_checkpoint

    overrides = list(args.overrides)
    if args.scales:
        overrides.append(f"eval.scales=[{', '.join(map(str, args.scales))}]")
    if args.flip:
        overrides.append("eval.flip=true")
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "eval"
    evaluation = evaluate_checkpoint(cfg, args.weights, out, progress=args.progress)
    if evaluation is not None:  # rank 0 (every process of a single-process run)
        print(format_metrics_table(evaluation.metrics))
        print(f"wrote results, metrics.json and pr_curves.png to {out}", file=sys.stderr)
    return 0
