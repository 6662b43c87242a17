import json
import sys
from pathlib import Path

import pytest
import yaml

from rfcn.config import Config
from rfcn.engine.logging import TrainingLog, save_resolved_config, truncate_metrics


def _entries(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_record_appends_json_lines_with_speed(tmp_path: Path) -> None:
    log = TrainingLog(
        tmp_path, "end_to_end", 10, 0, 4, progress=False, tensorboard=False, enabled=True
    )
    log.window_start = (0, log.window_start[1] - 2.0)  # pretend 2 s passed
    entry = log.record(5, 5, {"loss": 1.5, "lr": 0.1})
    log.close()
    (saved,) = _entries(tmp_path)
    assert saved == entry
    assert saved["stage"] == "end_to_end" and saved["iteration"] == 5 and saved["loss"] == 1.5
    assert 9.0 < saved["images_per_s"] <= 10.0  # 5 iterations x 4 images in ~2 s


def test_disabled_log_writes_nothing(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path, "s", 10, 0, 1, progress=False, tensorboard=True, enabled=False)
    log.record(1, 1, {"loss": 1.0, "lr": 0.1})
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_scalars_are_written(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path, "s", 10, 0, 1, progress=False, tensorboard=True, enabled=True)
    log.record(1, 1, {"loss": 1.0, "lr": 0.1})
    log.close()
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_truncate_drops_later_and_torn_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"iteration": i, "loss": 1.0}) for i in (2, 4, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 8, "lo')
    truncate_metrics(tmp_path, 4)
    assert [e["iteration"] for e in _entries(tmp_path)] == [2, 4]


def test_resolved_config_is_saved_as_yaml(tmp_path: Path) -> None:
    cfg = Config()
    cfg.data.class_names = ["raccoon"]
    save_resolved_config(cfg, tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["data"]["class_names"] == ["raccoon"]
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temp file left


def test_missing_tensorboard_is_one_warning_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    log = TrainingLog(tmp_path, "s", 10, 0, 1, progress=False, tensorboard=True, enabled=True)
    log.record(1, 1, {"loss": 1.0, "lr": 0.1})
    log.close()
    err = capsys.readouterr().err
    assert err == (
        'warning: train.tensorboard: tensorboard is not installed: pip install "rfcn[tensorboard]" '
        "(or set train.tensorboard=false); no TensorBoard\n"
    )
    assert log.writer is None and not (tmp_path / "tensorboard").exists()
    assert len(_entries(tmp_path)) == 1  # metrics.jsonl is still written


def test_validations_go_to_the_log_tensorboard_and_the_bar(tmp_path: Path) -> None:
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    log = TrainingLog(tmp_path, "s", 10, 0, 4, progress=False, tensorboard=True, enabled=True)
    log.window_start = (0, log.window_start[1] - 2.0)  # pretend 2 s passed
    best = {"value": 0.5, "iteration": 5}
    entry = log.record_validation(5, 5, "voc07", "mAP", 0.25, best, seconds=1.0)
    log.record(10, 10, {"loss": 1.5, "lr": 0.1})
    log.close()
    validation, training = _entries(tmp_path)
    assert (
        validation
        == entry
        == {
            "stage": "s",
            "iteration": 5,
            "stage_iteration": 5,
            "val_metric": "voc07",
            "val_mAP": 0.25,
            "best_val_mAP": 0.5,
            "best_iteration": 5,
            "val_seconds": 1.0,
        }
    )
    # 10 iterations x 4 images in ~2 s, once the 1 s of validation is left out: ~40/s
    assert 35.0 < training["images_per_s"] <= 40.0
    assert log.postfix["val"] == "0.250" and log.postfix["best"] == "0.500"
    events = accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    (scalar,) = events.Scalars("val/mAP")
    assert (scalar.step, scalar.value) == (5, 0.25)
