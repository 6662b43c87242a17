"""rfcn.files: atomic writes (never half a file) and JSON reads whose errors name the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rfcn.errors import UserError
from rfcn.files import printable_path, read_json, write_json


def test_a_killed_writer_leaves_the_previous_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"mAP": 0.25})
    # The child blocks inside fsync, after writing its temp file, and is then killed.
    script = f"""
import os, time
from rfcn import files
os.fsync = lambda fd: (print("writing", flush=True), time.sleep(60))
files.write_json({str(target)!r}, {{"mAP": 0.75, "padding": "x" * 1000000}})
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        temp_files = list(tmp_path.glob(".metrics.json.*.tmp"))
        assert len(temp_files) == 1 and temp_files[0].stat().st_size > 1_000_000
    finally:
        child.kill()  # SIGKILL: no cleanup code runs in the child
        child.wait(timeout=30)
    assert json.loads(target.read_text()) == {"mAP": 0.25}


def test_a_failed_write_leaves_neither_half_a_file_nor_a_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "detections.json"
    write_json(target, {"detections": []})

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt("Ctrl-C in os.replace")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt, match=r"Ctrl-C in os\.replace"):
        write_json(target, {"detections": [1, 2, 3]})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"detections": []}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detections.json"]
    mode = target.stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_read_json_names_the_file_and_the_problem(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert read_json(good, "results file") == {"a": [1, 2]}
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": [1, 2\n')
    with pytest.raises(UserError) as info:
        read_json(broken, "results file")
    assert info.value.source == str(broken)
    assert info.value.problem.startswith("malformed JSON at line 2")
    with pytest.raises(UserError, match="results file not found"):
        read_json(tmp_path / "missing.json", "results file")
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(UserError, match="cannot read results file"):
        read_json(latin1, "results file")


def test_printable_path_escapes_bytes_that_are_not_utf8() -> None:
    assert printable_path(os.fsdecode(b"/data/caf\xe9.jpg")) == "/data/caf\\xe9.jpg"
    assert printable_path("/data/café.jpg") == "/data/café.jpg"
