"""Command-line options that several ``rfcn`` subcommands share, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path


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


def add_record_option(parser: argparse.ArgumentParser) -> None:
    """``--record FILE.json``: also write the result as a record (:mod:`rfcn.records`)."""
    parser.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="also write the result as a record (command, version, machine, seeds, values), "
        "e.g. docs/results/NAME.json",
    )
    # rfcn.cli.main sets the words of the command it runs; a caller without it records
    # this process's command line
    parser.set_defaults(command_words=None)
