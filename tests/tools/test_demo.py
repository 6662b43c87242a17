import argparse
import json
from pathlib import Path

import pytest
import torch
from ground_truth import score_ground_truth
from PIL import Image

from rfcn.errors import UserError
from rfcn.records import read_record
from rfcn.tools import demo


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_parser(parser.add_subparsers())
    return parser.parse_args(["demo", *argv])


def test_demo_config_is_packaged_and_layered(tmp_path: Path) -> None:
    cfg = demo.demo_config(tmp_path, quick=False)
    assert cfg.model.backbone == "resnet18" and cfg.model.pretrained is None
    assert cfg.data.format == "synthetic"
    assert cfg.data.roots == [str(tmp_path / demo.DATA_FOLDER)]
    quick = demo.demo_config(tmp_path, quick=True, iterations=3, overrides=["model.k=3"])
    assert quick.train.iterations == 3, "--iterations wins over --quick"
    assert quick.data.synthetic_image_size < cfg.data.synthetic_image_size
    assert quick.model.k == 3, "user overrides come last"


def test_bad_flags_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--threads"):
        demo.run(_parse(["--out", str(tmp_path), "--threads", "0"]))
    with pytest.raises(UserError, match=r"train\.iterations"):
        demo.run(_parse(["--out", str(tmp_path), "--quick", "--iterations", "0"]))
    with pytest.raises(UserError, match="unknown config key"):
        demo.run(_parse(["--out", str(tmp_path), "--quick", "--set", "model.nope=1"]))


@pytest.mark.slow
def test_quick_demo_writes_metrics_and_pictures(
    tmp_path: Path,
    recwarn: pytest.WarningsRecorder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four iterations find nothing, so the resumed call, which only scores, scores the test
    split's ground truth as its detections through the demo's own evaluation: every metric
    must be exactly 1."""
    out = tmp_path / "demo"
    flags = ["--out", str(out), "--quick", "--threads", "1", "--no-progress"]
    threads = torch.get_num_threads()
    try:
        assert demo.run(_parse(flags)) == 0
        with pytest.raises(
            UserError, match=r"already holds a training run \(last\.pt\); resume it \(--resume\)"
        ):
            demo.run(_parse(flags))
        (out / "metrics.json").unlink()
        record = tmp_path / "demo_record.json"
        resumed = [*flags, "--resume", "--record", str(record)]
        score_ground_truth(monkeypatch, demo)
        assert demo.run(_parse(resumed)) == 0  # nothing left to train: scores only
        # loss.png still draws the whole run's log, not just what the resumed call trained
        assert not [w for w in recwarn if "No artists with labels" in str(w.message)]
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["voc07_mAP50"] == 1.0 and metrics["coco_AP"] == 1.0
    assert metrics["recall50"] == 1.0 and metrics["test_objects"] > 0
    written = read_record(record)
    assert written["kind"] == "demo" and written["seeds"] == [0]
    assert written["values"] == {k: v for k, v in metrics.items() if k != "machine"}
    assert set(metrics["AP50_per_class"]) == {
        "circle",
        "ring",
        "square",
        "triangle",
        "star",
        "cross",
    }
    assert set(metrics["AP50_per_class"].values()) <= {1.0, None}  # None: no test object
    assert metrics["coco"]["AP"] == metrics["coco_AP"]
    assert metrics["iterations"] == 4 and metrics["train_seconds"] > 0
    assert metrics["train_images"] == 6 and metrics["test_images"] == 4  # QUICK_OVERRIDES
    assert metrics["machine"]["torch_threads"] == 1
    # the demo's train.amp "auto": bf16 autocast only where the CPU runs it natively
    assert metrics["train_autocast"] == ("bfloat16" if metrics["machine"]["fast_bf16"] else "none")
    precision = "(bfloat16 autocast)" if metrics["machine"]["fast_bf16"] else "(float32: this CPU"
    assert f"trained 4 iterations {precision}" in capsys.readouterr().out
    assert Path(metrics["checkpoint"]).is_file()
    for name in ("detections.png", "score_maps.png", "loss.png"):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and min(picture.size) >= 96
    assert not (out / demo.DEFORMABLE_PARTS).exists()  # a plain R-FCN has no bin offsets
    assert (out / "synthetic" / "ImageSets" / "Main" / "test.txt").is_file()


@pytest.mark.slow
def test_quick_deformable_demo_draws_the_learned_parts(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    deformable = ["--set", "model.deformable_psroi=true", "model.deformable_conv5=v1"]
    threads = torch.get_num_threads()
    try:
        argv = ["--out", str(out), "--quick", "--threads", "1", "--no-progress", *deformable]
        assert demo.run(_parse(argv)) == 0
    finally:
        torch.set_num_threads(threads)
    for name in ("score_maps.png", demo.DEFORMABLE_PARTS):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and min(picture.size) >= 96
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["iterations"] == 4
