"""Command-line options that several ``rfcn`` subcommands share, defined once."""

from __future__ import annotations

import argparse


def add_config_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE ...`` (repeatable): a flat list in ``args.overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"override config values, e.g. --set {example}",
    )


def add_progress_switch(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: ``args.progress`` is False when given."""
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
