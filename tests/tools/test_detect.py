"""``rfcn detect`` with a checkpoint: pictures and JSON per image, skipped images, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from deploy_fixtures import record_batches, tiny_config, write_checkpoint
from PIL import Image

from rfcn.cli import main
from rfcn.data.synthetic import CLASS_NAMES
from rfcn.inference.predictor import Predictor
from rfcn.tools.detect import output_names


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detect")
    return write_checkpoint(root / "tiny.pt", tiny_config(root / "data"))


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    """Random RGB pictures of the given (width, height), as PNG and JPEG alternately."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for number, (width, height) in enumerate(sizes):
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        path = folder / f"photo{number}.{'png' if number % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def test_detect_writes_a_picture_and_json_per_image(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = write_images(tmp_path / "in" / "nested", [(120, 90), (80, 140)])
    out = tmp_path / "out"
    code = main(
        [
            "detect",
            "--weights",
            str(checkpoint),
            str(tmp_path / "in"),
            "--out",
            str(out),
            "--score-threshold",
            "0.3",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    predictor = Predictor.from_checkpoint(checkpoint, score_threshold=0.3)
    for path in images:
        with Image.open(out / f"{path.stem}.jpg") as picture:
            assert picture.size == Image.open(path).size
        record = json.loads((out / f"{path.stem}.json").read_text())
        assert (record["width"], record["height"]) == Image.open(path).size
        expected = predictor(path)
        assert len(record["detections"]) == len(expected) > 0
        for got, box, score, name in zip(
            record["detections"], expected.boxes, expected.scores, expected.names, strict=True
        ):
            assert got["class_name"] == name == CLASS_NAMES[got["label"] - 1]
            assert got["score"] == pytest.approx(float(score), abs=1e-6) and got["score"] >= 0.3
            assert got["box"] == pytest.approx(box.tolist(), abs=1e-3)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{p.stem}{suffix}" for p in images for suffix in (".jpg", ".json")
    )
    assert "wrote detections for 2 of 2 images" in capsys.readouterr().err
    # Run again with the output folder inside the input folder: its pictures are not inputs.
    inside = tmp_path / "in" / "out"
    for _ in range(2):
        assert (
            main(
                ["detect", "--weights", str(checkpoint), str(tmp_path / "in"), "--out", str(inside)]
            )
            == 0
        )
    assert len(list(inside.iterdir())) == 4


def test_unreadable_images_are_skipped_with_exit_code_1(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (good,) = write_images(tmp_path / "in", [(100, 100)])
    broken = tmp_path / "in" / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:200])
    out = tmp_path / "out"
    code = main(["detect", "--weights", str(checkpoint), str(good), str(broken), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"warning: {broken}: cannot decode image" in err and "(skipped)" in err
    assert sorted(p.name for p in out.iterdir()) == ["photo0.jpg", "photo0.json"]


def test_no_readable_image_is_an_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    code = main(["detect", "--weights", str(checkpoint), str(empty), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {empty}: empty image file (0 bytes)\n"
    second = tmp_path / "also-empty.png"
    second.write_bytes(b"")
    code = main(
        [
            "detect",
            "--weights",
            str(checkpoint),
            str(empty),
            str(second),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("warning: ") == 2 and err.endswith("none of the 2 images could be read\n")
    missing_code = main(
        ["detect", "--weights", str(checkpoint), str(tmp_path / "nope"), "--out", str(tmp_path)]
    )
    assert missing_code == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_batches_and_workers_give_the_batch_1_detections(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (width, height): 160x120 and 160x124 pad alike at 128 px (longest side 160), so they may
    # share a batch; the rest pad to sizes of their own.
    sizes = [(160, 120), (90, 140), (160, 124), (160, 120), (100, 100), (160, 124), (140, 90)]
    images = write_images(tmp_path / "in", sizes)
    broken = tmp_path / "in" / "broken.jpg"
    broken.write_bytes(images[0].read_bytes()[:300])
    batches = record_batches(monkeypatch)
    records = {}
    for run, options in (("one", []), ("four", ["--batch-size", "4", "--workers", "2"])):
        batches.clear()
        out = tmp_path / run
        argv = ["detect", str(tmp_path / "in"), "--weights", str(checkpoint), "--out", str(out)]
        assert main([*argv, "--score-threshold", "0.1", *options]) == 1  # broken.jpg skipped
        records[run] = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
        assert len(records[run]) == len(images)
        sizes_in_batches = sorted(len(batch) for batch in batches)
        if run == "one":
            assert sizes_in_batches == [1] * len(images)
        else:
            assert sizes_in_batches == [1, 1, 1, 4]
            assert any(len(set(batch)) > 1 for batch in batches)  # 160x120 with 160x124
    found = 0
    for stem, expected in records["one"].items():
        ours = records["four"][stem]
        assert (ours["width"], ours["height"]) == (expected["width"], expected["height"])
        assert len(ours["detections"]) == len(expected["detections"]), stem
        for mine, theirs in zip(ours["detections"], expected["detections"], strict=True):
            assert mine["class_name"] == theirs["class_name"]
            assert mine["score"] == pytest.approx(theirs["score"], abs=1e-5)
            # written to 3 decimals: a float-rounding difference may flip the last one
            assert mine["box"] == pytest.approx(theirs["box"], abs=2e-3)
            found += 1
    assert found > 20


def test_an_onnx_model_takes_no_batches_or_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (image,) = write_images(tmp_path / "in", [(32, 32)])
    for option, value in (("--batch-size", "2"), ("--workers", "1"), ("--batch-size", "0")):
        argv = ["detect", str(image), "--weights", str(tmp_path / "m.onnx"), "--out", "o"]
        assert main([*argv, option, value]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {option}: ") and len(err.splitlines()) == 1


def test_same_stems_get_distinct_output_names(tmp_path: Path) -> None:
    paths = [Path("a/x.jpg"), Path("b/x.png"), Path("x-2.jpg"), Path("c/x.jpg")]
    assert output_names(paths) == ["x", "x-2", "x-2-2", "x-3"]
