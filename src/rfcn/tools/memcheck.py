"""``rfcn memcheck``: does memory grow over a long run of ``rfcn train`` and ``rfcn detect``?

Trains the demo's model at its ``--quick`` size (96 px, a few seconds per 100 iterations on
2 cores) for ``--iterations`` iterations with ``rfcn train``, then runs ``rfcn detect`` with
the weights over ``--images`` generated images, each command in a child process as a user
runs it, and reads the child's resident memory (RSS) twice a second
(:mod:`rfcn.benchmark.memory`). Prints, per command, the RSS after ``--warmup`` items and at
the end, the peak, and the slope in MiB per 1000 items; ``--record`` also writes them as a
result record. Linux only (it reads ``/proc``).

Example::

    rfcn memcheck --iterations 2000 --images 2000 --record memcheck.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rfcn.tools.arguments import add_config_overrides, add_record_option

if TYPE_CHECKING:
    from rfcn.records import SourceState

# Saved every 500 iterations and logged every 20: the run measures what a real one does.
_TRAIN_OVERRIDES = ("train.checkpoint_every=500", "train.log_every=20", "train.eval_every=0")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "memcheck",
        help="resident memory of rfcn train and rfcn detect over a long run (leak check)",
        description=__doc__.splitlines()[0].strip("`"),
    )
    parser.add_argument("--iterations", type=int, default=2000, help="training iterations (2000)")
    parser.add_argument("--images", type=int, default=2000, help="images detected (2000)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="iterations, and images, before the start reading (100): the model built, "
        "caches and allocator pools filled",
    )
    parser.add_argument(
        "--work", metavar="DIR", help="folder for data and outputs (a temporary one)"
    )
    add_config_overrides(parser, "model.k=3")
    add_record_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rfcn.errors import UserError
    from rfcn.records import begin_record

    for name in ("iterations", "images", "warmup"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name}", f"must be positive, got {getattr(args, name)}")
    for name in ("iterations", "images"):
        if getattr(args, name) <= args.warmup:
            raise UserError(f"--{name}", f"must exceed --warmup ({args.warmup})")
    source = begin_record(args.record)
    if args.work:
        return _measure(args, Path(args.work), source)
    with tempfile.TemporaryDirectory(prefix="rfcn-memcheck-") as work:
        return _measure(args, Path(work), source)


def _measure(args: argparse.Namespace, work: Path, source: SourceState) -> int:
    from rfcn.benchmark.memory import summarize, watch
    from rfcn.config import save_config
    from rfcn.data.synthetic import ensure_synthetic_dataset
    from rfcn.engine.logging import read_metrics
    from rfcn.records import make_record, write_record
    from rfcn.tools.demo import DATA_FOLDER, demo_config

    work.mkdir(parents=True, exist_ok=True)
    overrides = [*_TRAIN_OVERRIDES, f"data.synthetic_test_images={args.images}", *args.overrides]
    cfg = demo_config(work, quick=True, iterations=args.iterations, overrides=overrides)
    print(f"generating {args.images} test images into {work / DATA_FOLDER}", flush=True)
    ensure_synthetic_dataset(work / DATA_FOLDER, cfg.data)
    save_config(cfg, work / "config.yaml")
    rfcn = [sys.executable, "-m", "rfcn"]
    train_out, detect_out = work / "train", work / "detect"

    def iterations_done() -> int:
        entries = read_metrics(train_out)
        return int(entries[-1]["iteration"]) if entries else 0

    def images_done() -> int:
        if not detect_out.is_dir():
            return 0
        return sum(entry.name.endswith(".json") for entry in os.scandir(detect_out))

    train = [*rfcn, "train", "--config", str(work / "config.yaml"), "--out", str(train_out)]
    images = sorted((work / DATA_FOLDER / "JPEGImages").glob("test_*.jpg"))
    detect = [*rfcn, "detect", "--weights", str(train_out / "model_final.pt"), "--out"]
    detect += [str(detect_out), *map(str, images)]
    values = {}
    for name, command, progress, work_items in (
        ("train", [*train, "--no-progress"], iterations_done, f"{args.iterations} iterations"),
        ("detect", detect, images_done, f"{len(images)} images"),
    ):
        print(f"rfcn {name}: {work_items} ...", flush=True)
        samples = watch(command, progress, work / f"{name}.log")
        values[name] = summarize(samples, args.warmup)
        print(_line(name, values[name]), flush=True)
    if args.record:
        values["settings"] = {"iterations": args.iterations, "images": args.images}
        write_record(
            args.record,
            make_record(
                "memcheck", args.command_words, values, [cfg.train.seed], started_from=source
            ),
        )
        print(f"wrote {args.record}")
    return 0


def _line(name: str, summary: dict[str, Any]) -> str:
    return (
        f"  {name}: RSS {summary['start_rss_mib']} MiB after {summary['start_done']}, "
        f"{summary['end_rss_mib']} MiB after {summary['end_done']} (growth "
        f"{summary['growth_mib']:+} MiB, slope {summary['slope_mib_per_1000']:+} MiB per 1000), "
        f"{summary['exit_rss_mib']} MiB saving and exiting, peak {summary['peak_rss_mib']} MiB, "
        f"{summary['seconds']} s"
    )
