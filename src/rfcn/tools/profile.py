"""``rfcn profile``: where one training iteration's time goes, stage by stage.

Runs ``--iterations`` real trainer iterations of the config (after ``--warmup`` ones) and
prints a Markdown table of the milliseconds per iteration of each stage, forward and backward
(:mod:`rfcn.benchmark.training_profile`); ``--out`` also writes it as JSON with the machine.

Example::

    rfcn profile --config src/rfcn/configs/demo.yaml --set data.roots=[demo_out/synthetic]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rfcn.tools.arguments import add_config_overrides


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="time each stage of a training iteration (data, backbone, RPN, pooling, ...)",
        description=__doc__.splitlines()[0].strip("`"),
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    add_config_overrides(parser, "model.k=3 data.workers=0")
    parser.add_argument("--iterations", type=int, default=30, help="iterations timed (30)")
    parser.add_argument("--warmup", type=int, default=20, help="iterations run first (20)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: all)")
    parser.add_argument("--out", metavar="FILE.json", help="also write the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from rfcn.benchmark.training_profile import format_profile, profile_iterations, training_run
    from rfcn.config import config_to_dict, load_config
    from rfcn.errors import UserError
    from rfcn.files import write_json
    from rfcn.machine import describe_machine

    for name in ("iterations", "warmup", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name}", f"must be positive, got {value}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    machine = describe_machine()
    with tempfile.TemporaryDirectory() as scratch:
        result = profile_iterations(training_run(cfg, Path(scratch)), args.warmup, args.iterations)
    print(format_profile(result))
    if args.out:
        write_json(args.out, {"machine": machine, "config": config_to_dict(cfg), **result})
        print(f"wrote {args.out}")
    return 0
