"""``rfcn train``: train R-FCN from a YAML config (see :mod:`rfcn.engine.trainer`).

Examples::

    rfcn train --config configs/raccoon_r18_cpu.yaml --out runs/raccoon
    rfcn train --config configs/raccoon_r18_cpu.yaml --out runs/raccoon --resume
    rfcn train --config configs/raccoon_r18_cpu.yaml --set train.eval_every=50
    rfcn train --config configs/voc0712_r101.yaml --set train.mode=alternating model.ohem=false
    torchrun --nproc_per_node=8 -m rfcn.cli train --config configs/voc0712_r101.yaml
"""

from __future__ import annotations

import argparse
import sys

from rfcn.config import load_config
from rfcn.engine.distributed import is_main_process
from rfcn.engine.trainer import train
from rfcn.engine.validation import BEST_CHECKPOINT
from rfcn.tools.arguments import add_config_overrides, add_progress_switch


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a detector from a YAML config",
        description=(
            "Train R-FCN. Writes model_final.pt, last.pt (the training state), config.yaml, "
            "metrics.jsonl and tensorboard/ into the output folder; with train.eval_every=N "
            "also model_best.pt and val_curve.png. Ctrl-C saves last.pt; --resume continues "
            "from it exactly. Run under torchrun for multi-GPU/DDP."
        ),
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    add_config_overrides(parser, "train.iterations=100 model.k=3")
    parser.add_argument(
        "--out", metavar="DIR", help="output folder (default: the config's output_dir)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run saved in the output folder"
    )
    add_progress_switch(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    cfg = load_config(args.config, overrides)
    result = train(cfg, args.out or cfg.output_dir, resume=args.resume, progress=args.progress)
    if is_main_process():
        print(f"trained in {result.seconds:.0f} s; weights: {result.checkpoint}", file=sys.stdout)
        best = result.best_validation
        if best is not None:
            print(
                f"best validation {best['name']} ({best['metric']}) {best['value']:.4f} at "
                f"iteration {best['iteration']}: {result.checkpoint.parent / BEST_CHECKPOINT}"
            )
    return 0
