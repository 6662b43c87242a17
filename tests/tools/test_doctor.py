"""``rfcn doctor``: the report, one line per check, the JSON to attach, and the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rfcn import self_test
from rfcn.cli import main
from rfcn.self_test import CheckFailed


@pytest.fixture
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pooling checks run for real; training, detection and the export are stubbed."""
    monkeypatch.setattr(self_test, "check_training_step", lambda device: "bfloat16 autocast")
    monkeypatch.setattr(self_test, "check_detection", lambda device: "3 detections")
    monkeypatch.setattr(self_test, "check_onnx_export", lambda: "3 detections match")


def test_all_checks_pass_exit_0_and_the_json_holds_everything(
    quick_checks: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--json", str(tmp_path / "doctor.json")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "rfcn",
        json.loads((tmp_path / "doctor.json").read_text())["environment"]["rfcn"],
    ]
    checks = [line.split() for line in lines if line.startswith("  cpu ")]
    assert [c[1] for c in checks] == [
        "ps_roi_pool[pool]",
        "ps_roi_pool[align]",
        "deform_ps_roi_pool",
        "training",
        "detection",
        "onnx",
    ]
    assert all(c[-1] == "s" and float(c[-2]) >= 0 for c in checks)
    assert "all passed in " in out
    record = json.loads((tmp_path / "doctor.json").read_text())
    assert {"rfcn", "python", "packages", "cpu", "threads", "cuda", "extras"} <= set(
        record["environment"]
    )
    devices = 1 + (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert len(record["checks"]) == 5 * devices + 1
    assert all(c["status"] == "ok" for c in record["checks"])
    assert set(record["checks"][0]) == {"name", "device", "status", "seconds", "detail"}


def test_one_failed_check_makes_the_exit_status_1(
    quick_checks: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def wrong(device: torch.device) -> str:
        raise CheckFailed("best score 0.9000, on the CPU 0.5000")

    monkeypatch.setattr(self_test, "check_detection", wrong)
    assert main(["doctor", "--json", str(tmp_path / "doctor.json")]) == 1
    out = capsys.readouterr().out
    assert "detection                  FAILED: best score 0.9000, on the CPU 0.5000" in out
    record = json.loads((tmp_path / "doctor.json").read_text())
    failed = [(c["name"], c["detail"]) for c in record["checks"] if c["status"] == "FAILED"]
    devices = 1 + (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert failed == [("detection", "best score 0.9000, on the CPU 0.5000")] * devices
    assert f"{devices} of {len(record['checks'])} checks FAILED" in out


def test_the_report_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--no-self-test", "--json", str(tmp_path / "doctor.json")]) == 0
    assert "self-test" not in capsys.readouterr().out
    assert json.loads((tmp_path / "doctor.json").read_text())["checks"] == []
