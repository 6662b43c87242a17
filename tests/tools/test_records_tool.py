import shutil
from pathlib import Path

import pytest

from rfcn.cli import main
from rfcn.records import make_record, write_record

REPOSITORY = Path(__file__).resolve().parents[2]


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    values = {
        "voc07_mAP50": 0.9,
        "coco_AP": 0.6,
        "train_seconds": 10.0,
        "total_seconds": 12.0,
        "train_autocast": "none",
    }
    write_record(folder / "demo.json", make_record("demo", ["rfcn", "demo"], values, [0]))
    return folder


def test_lists_updates_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder(tmp_path)
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- table: demo -->\n", encoding="utf-8")
    assert main(["records", "--folder", str(folder)]) == 0
    assert "demo.json  demo  v" in capsys.readouterr().out
    assert main(["records", "--folder", str(folder), "--check", str(page)]) == 1
    assert "stale tables in" in capsys.readouterr().out
    assert main(["records", "--folder", str(folder), "--update", str(page)]) == 0
    assert "| [demo](results/demo.json)" in page.read_text(encoding="utf-8")
    assert main(["records", "--folder", str(folder), "--check", str(page)]) == 0


def test_a_missing_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["records", "--folder", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip().endswith("none: records folder not found")


def test_the_readme_tables_are_generated_from_the_records(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    shutil.copy(REPOSITORY / "README.md", readme)
    shutil.copytree(REPOSITORY / "docs" / "results", tmp_path / "docs" / "results")
    folder = tmp_path / "docs" / "results"
    assert main(["records", "--folder", str(folder), "--check", str(readme)]) == 0, (
        "README.md's tables differ from the records: rfcn records --update README.md"
    )
