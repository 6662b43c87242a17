import json
from pathlib import Path

import pytest

from rfcn import __version__
from rfcn.errors import UserError
from rfcn.records import (
    REQUIRED_KEYS,
    check_record_path,
    load_records,
    make_record,
    read_record,
    source_commit,
    write_record,
)


def test_a_record_holds_what_a_reader_needs_to_trust_the_figure(tmp_path: Path) -> None:
    record = make_record("demo", ["rfcn", "demo", "--out", "a b"], {"voc07_mAP50": 0.9}, [0])
    assert set(REQUIRED_KEYS) <= set(record)
    assert record["command"] == "rfcn demo --out 'a b'", "quoted as a shell would take it"
    assert record["version"] == __version__
    assert record["machine"]["cpu_model"] and record["machine"]["torch"]
    assert record["seeds"] == [0] and record["values"] == {"voc07_mAP50": 0.9}
    # this checkout is a git repository: the commit is a 40-digit hash
    assert record["commit"] is None or len(record["commit"]) == 40
    write_record(tmp_path / "demo.json", record)
    assert read_record(tmp_path / "demo.json") == record
    assert load_records(tmp_path) == {"demo": record}


def test_a_record_names_the_commit_its_measurement_started_from() -> None:
    now = source_commit()
    assert make_record("demo", ["rfcn"], {}, [], started_from=now)["dirty"] == now[1]
    # HEAD moved while the command ran: later processes may have imported other code
    record = make_record("demo", ["rfcn"], {}, [], started_from=("0" * 40, False))
    assert record["commit"] == "0" * 40 and record["dirty"] is True


def test_without_command_words_the_process_command_line_is_recorded() -> None:
    record = make_record("benchmark", None, {}, [])
    assert record["command"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[1, 2]", "a record must be a JSON object"),
        ('{"kind": "demo"}', "not a result record: no schema, command"),
        ("{not json", "malformed JSON at line 1"),
    ],
)
def test_a_file_that_is_not_a_record_is_named(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=f"bad.json: {problem}"):
        read_record(path)


def test_another_schema_is_refused(tmp_path: Path) -> None:
    record = make_record("demo", ["rfcn"], {}, [])
    path = tmp_path / "future.json"
    path.write_text(json.dumps({**record, "schema": 99}), encoding="utf-8")
    with pytest.raises(UserError, match="record schema 99, this version reads 1"):
        read_record(path)


def test_a_record_path_is_checked_before_any_work(tmp_path: Path) -> None:
    check_record_path(None)
    check_record_path(tmp_path / "ok.json")
    with pytest.raises(UserError, match=r"must end in \.json"):
        check_record_path(tmp_path / "record.txt")
    with pytest.raises(UserError, match="folder to write the record into does not exist"):
        check_record_path(tmp_path / "missing" / "r.json")
