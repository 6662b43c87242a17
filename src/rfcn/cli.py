"""The ``rfcn`` command: one argparse subcommand per tool module in :mod:`rfcn.tools`."""

from __future__ import annotations

import argparse
import importlib
import sys

from rfcn import __version__
from rfcn.errors import UserError

# Subcommand -> the module that implements it. Each module defines ``add_parser(subparsers)``,
# which registers the subcommand with ``set_defaults(func=run)``; ``run(args)`` returns the
# exit code. Only the module of the command being run is imported, so that, for example,
# ``rfcn detect --weights model.onnx`` never imports torch.
TOOL_MODULES = {
    "train": "rfcn.tools.train",
    "eval": "rfcn.tools.eval",
    "evaluate": "rfcn.tools.evaluate",
    "data": "rfcn.tools.data",
    "detect": "rfcn.tools.detect",
    "demo": "rfcn.tools.demo",
    "ablate": "rfcn.tools.ablate",
    "mosaic": "rfcn.tools.mosaic",
    "benchmark": "rfcn.tools.benchmark",
    "profile": "rfcn.tools.profile",
    "export": "rfcn.tools.export",
    "doctor": "rfcn.tools.doctor",
    "memcheck": "rfcn.tools.memcheck",
    "records": "rfcn.tools.records",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``rfcn`` parser with every subcommand, or only ``command``'s when it is known."""
    parser = argparse.ArgumentParser(
        prog="rfcn",
        description="R-FCN object detection: train, evaluate, detect, benchmark, export.",
    )
    parser.add_argument("--version", action="version", version=f"rfcn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = [command] if command in TOOL_MODULES else list(TOOL_MODULES)
    for name in names:
        importlib.import_module(TOOL_MODULES[name]).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; user errors become one line on stderr and exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    # the words of this command, for the result records it may write (rfcn.records)
    args.command_words = ["rfcn", *argv]
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
