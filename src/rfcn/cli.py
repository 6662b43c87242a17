"""The ``rfcn`` command: one argparse subcommand per tool module in :mod:`rfcn.tools`."""

from __future__ import annotations

import argparse
import importlib
import sys

from rfcn import __version__
from rfcn.errors import UserError

# Each module defines ``add_parser(subparsers)``, which registers its subcommand with
# ``set_defaults(func=run)``; ``run(args)`` returns the exit code.
TOOL_MODULES = (
    "rfcn.tools.train",
    "rfcn.tools.eval",
    "rfcn.tools.evaluate",
    "rfcn.tools.detect",
    "rfcn.tools.demo",
    "rfcn.tools.ablate",
    "rfcn.tools.benchmark",
    "rfcn.tools.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rfcn",
        description="R-FCN object detection: train, evaluate, detect, benchmark, export.",
    )
    parser.add_argument("--version", action="version", version=f"rfcn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in TOOL_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; user errors become one line on stderr and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
