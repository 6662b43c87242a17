"""Result records: one JSON file a measurement, written by the command that measured it.

Every figure that the README or the documentation states as measured comes from a record
under ``docs/results/``; the tables there are generated from the records
(:mod:`rfcn.record_tables`), never typed. A record holds what a reader needs to trust or
repeat the figure::

    {"schema": 1, "kind": "demo" | "ablate" | "benchmark" | ...,
     "command": "rfcn demo --out demo_out --record ...", "version": "0.2.0",
     "commit": "a1dee1d..." or null, "dirty": bool or null, "date": "2026-12-06T01:02:03+00:00",
     "machine": {"cpu_model", "device_name", "torch", ...}, "seeds": [0, 1, 2],
     "values": {...what the command measured...}}

``rfcn demo``, ``rfcn ablate`` and ``rfcn benchmark`` write one with ``--record FILE``.
"""

from __future__ import annotations

import datetime
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from rfcn import __version__
from rfcn.errors import UserError
from rfcn.files import printable_path, read_json, write_json
from rfcn.machine import describe_machine

SCHEMA = 1
REQUIRED_KEYS = ("schema", "kind", "command", "version", "date", "machine", "seeds", "values")


SourceState = tuple[str | None, bool | None]
"""A git commit and whether its tree had uncommitted changes (:func:`source_commit`)."""


def source_commit() -> SourceState:
    """The git commit the package runs from and whether its tree has uncommitted changes;
    ``(None, None)`` outside a git checkout (an installed wheel)."""
    folder = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def make_record(
    kind: str,
    command: list[str] | None,
    values: dict[str, Any],
    seeds: list[int],
    device: torch.device | None = None,
    started_from: SourceState | None = None,
) -> dict[str, Any]:
    """A record of ``values`` measured by ``command`` (its words, ``["rfcn", "demo", ...]``;
    None: this process's command line).

    Args:
        started_from: :func:`source_commit` when the measurement began (:func:`begin_record`);
            the record names that commit, and calls the tree dirty when it changed since, as
            processes started later in a long run import what the tree then holds.
    """
    if command is None:
        command = [Path(sys.argv[0]).name, *sys.argv[1:]]
    now = source_commit()
    commit, dirty = started_from or now
    if now != (commit, dirty):
        dirty = True
    return {
        "schema": SCHEMA,
        "kind": kind,
        "command": shlex.join(command),
        "version": __version__,
        "commit": commit,
        "dirty": dirty,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(device),
        "seeds": seeds,
        "values": values,
    }


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    """Write ``record`` atomically; the folder must exist (checked before a long run starts,
    by :func:`check_record_path`)."""
    check_record_path(path)
    write_json(path, record)


def begin_record(path: str | Path | None) -> SourceState:
    """Before a measurement: check that ``path`` can take its record and return the source it
    starts from (:func:`source_commit`), for :func:`make_record`'s ``started_from``."""
    check_record_path(path)
    return source_commit()


def check_record_path(path: str | Path | None) -> None:
    """Fail before any work when a ``--record`` file could not be written."""
    if path is None:
        return
    path = Path(path)
    if path.suffix != ".json":
        raise UserError(printable_path(path), "a record file must end in .json")
    if not path.parent.is_dir():
        raise UserError(printable_path(path), "the folder to write the record into does not exist")


def read_record(path: str | Path) -> dict[str, Any]:
    """One record, checked for the keys every record has.

    Raises:
        UserError: the file is missing, not JSON, or not a record.
    """
    record = read_json(path, "record")
    shown = printable_path(path)
    if not isinstance(record, dict):
        raise UserError(shown, "a record must be a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise UserError(shown, f"not a result record: no {', '.join(missing)}")
    if record["schema"] != SCHEMA:
        raise UserError(shown, f"record schema {record['schema']!r}, this version reads {SCHEMA}")
    return record


def load_records(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` record in ``folder``, by file stem (``docs/results/demo.json`` ->
    ``"demo"``), in name order."""
    return {path.stem: read_record(path) for path in sorted(Path(folder).glob("*.json"))}
