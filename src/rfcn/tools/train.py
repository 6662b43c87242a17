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
import shlex
import sys
from pathlib import Path

from rfcn.config import load_config
from rfcn.engine.distributed import PeerLost, is_main_process
from rfcn.engine.preemption import ResumableError, TrainingStopped
from rfcn.engine.stage_run import LAST_CHECKPOINT
from rfcn.engine.trainer import train
from rfcn.engine.validation import BEST_CHECKPOINT
from rfcn.errors import UserError
from rfcn.tools.arguments import add_config_overrides, add_progress_switch


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a detector from a YAML config",
        description=(
            "Train R-FCN. Writes model_final.pt, last.pt (the training state), config.yaml, "
            "metrics.jsonl and tensorboard/ into the output folder; with train.eval_every=N "
            "also model_best.pt and val_curve.png. Ctrl-C, SIGTERM and SIGUSR1 save last.pt "
            "and exit 128 + the signal's number (130, 143, 138), as does an unreadable image "
            "(exit 2); --resume continues from it exactly. Run under torchrun for "
            "multi-GPU/DDP."
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
    out = Path(args.out or cfg.output_dir)
    try:
        result = train(cfg, out, resume=args.resume, progress=args.progress)
    except ResumableError as error:
        resume = f"state saved at iteration {error.iteration}; fix it, then resume with: "
        raise UserError(
            error.source, f"{error.problem}; {resume}{resume_command(args, out)}"
        ) from None
    except TrainingStopped as stop:
        if is_main_process():
            print(
                f"stopped by {stop.signal_name} at iteration {stop.iteration}; training state "
                f"saved in {out / LAST_CHECKPOINT}; resume with: {resume_command(args, out)}",
                file=sys.stderr,
            )
        return stop.exit_code
    except PeerLost as lost:
        print(f"error: {lost}", file=sys.stderr)
        return 1
    if is_main_process():
        print(f"trained in {result.seconds:.0f} s; weights: {result.checkpoint}", file=sys.stdout)
        if result.skipped_images:
            print(f"left out {len(result.skipped_images)} unreadable images:")
            for file, problem in result.skipped_images.items():
                print(f"  {file}: {problem}")
        best = result.best_validation
        if best is not None:
            print(
                f"best validation {best['name']} ({best['metric']}) {best['value']:.4f} at "
                f"iteration {best['iteration']}: {result.checkpoint.parent / BEST_CHECKPOINT}"
            )
    return 0


def resume_command(args: argparse.Namespace, out: Path) -> str:
    """The ``rfcn train`` command line that resumes this run in ``out``."""
    words = ["rfcn", "train", "--config", str(args.config)]
    if args.overrides:
        words += ["--set", *args.overrides]
    words += ["--out", str(out), "--resume"]
    if not args.progress:
        words.append("--no-progress")
    return shlex.join(words)
