"""MkDocs hooks: the pages generated from the code and the tables generated from the records.

A page holds a marker where generated text goes: ``<!-- generated: config -->`` (every config
key, :func:`rfcn.reference.config_reference`), ``<!-- generated: cli -->`` (every subcommand
and flag, :func:`rfcn.reference.cli_reference`), ``<!-- generated: errors -->`` (every
user-facing error message, :func:`rfcn.reference.error_reference`) and
``<!-- table: ... -->`` (a table of the records in ``docs/results/``,
:mod:`rfcn.record_tables`). A config key without a description, a marker naming a missing
record or a malformed record fails the build.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from rfcn.record_tables import fill_markers
from rfcn.records import load_records
from rfcn.reference import cli_reference, config_reference, error_reference

RESULTS = Path(__file__).parent / "results"
GENERATED = {
    "<!-- generated: config -->": config_reference,
    "<!-- generated: cli -->": cli_reference,
    "<!-- generated: errors -->": error_reference,
}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    for marker, generate in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    folder = posixpath.dirname(page.file.src_uri)
    link = posixpath.relpath("results", folder or ".") + "/"
    return fill_markers(markdown, load_records(RESULTS), link)
