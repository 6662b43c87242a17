"""``rfcn records``: list the result records, and regenerate the tables that files built
outside the documentation site (the README) carry."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rfcn.errors import UserError
from rfcn.files import printable_path, write_text
from rfcn.record_tables import fill_markers, machine_label
from rfcn.records import load_records

DEFAULT_FOLDER = Path("docs/results")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "records",
        help="list result records; regenerate or check the tables files carry",
        description=(
            "List the result records (JSON files written by rfcn demo, ablate and benchmark "
            "with --record) in --folder. With --update FILE, replace each "
            "'<!-- table: ... -->' marker's table in FILE by one generated from the records; "
            "with --check FILE, exit 1 when a table there differs from the generated one."
        ),
    )
    parser.add_argument(
        "--folder", type=Path, default=DEFAULT_FOLDER, help="records folder (docs/results)"
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--update", type=Path, nargs="+", metavar="FILE", help="files to update")
    action.add_argument("--check", type=Path, nargs="+", metavar="FILE", help="files to check")
    parser.set_defaults(func=run)


def _link_prefix(records_folder: Path, markdown_file: Path) -> str:
    """The records folder as a link from ``markdown_file``'s folder (``docs/results/``)."""
    return Path(os.path.relpath(records_folder, markdown_file.parent)).as_posix() + "/"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(printable_path(path), f"cannot read: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    if not args.folder.is_dir():
        raise UserError(printable_path(args.folder), "records folder not found")
    records = load_records(args.folder)
    if not (args.update or args.check):
        for name, record in records.items():
            print(
                f"{name}.json  {record['kind']}  v{record['version']}  {record['date'][:10]}  "
                f"{machine_label(record)}  {record['command']}"
            )
        return 0
    stale = []
    for path in args.update or args.check:
        text = _read(path)
        filled = fill_markers(text, records, _link_prefix(args.folder, path))
        if filled == text:
            continue
        if args.update:
            write_text(path, filled)
            print(f"updated {printable_path(path)}")
        else:
            stale.append(printable_path(path))
    if stale:
        print(f"stale tables in {', '.join(stale)}: run rfcn records --update {' '.join(stale)}")
        return 1
    return 0
