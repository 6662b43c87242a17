"""Bad input through the readers and the command line: each case ends in one clear line on
stderr (``error: <file>: <problem>``, exit 2) or a warning and a skip, never a traceback, and
no output file is ever left half-written."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from deploy_fixtures import tiny_config, write_checkpoint
from PIL import Image

from rfcn.cli import main
from rfcn.config import Config, save_config
from rfcn.data.synthetic import CLASS_NAMES, COCO_JSON, TEST_SPLIT, ensure_synthetic_dataset


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, Path]:
    """The tiny config, its checkpoint and a pristine synthetic dataset (copied per test)."""
    root = tmp_path_factory.mktemp("robust")
    cfg = tiny_config(root / "data")
    ensure_synthetic_dataset(root / "data", cfg.data)
    return cfg, write_checkpoint(root / "tiny.pt", cfg), root / "data"


def run_cli(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([str(arg) for arg in args])
    return code, capsys.readouterr().err


def detect_args(weights: Path, paths: list[Path], out: Path, *extra: str) -> list[object]:
    return ["detect", "--weights", weights, *paths, "--out", out, *extra]


def eval_args(config: Path, weights: Path, out: Path) -> list[object]:
    return ["eval", "--config", config, "--weights", weights, "--out", out, "--no-progress"]


def assert_one_error_line(err: str, source: str | Path, problem: str) -> None:
    assert err.startswith(f"error: {source}: "), err
    assert problem in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (its data is a stub)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def good_jpeg() -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


# ---- images, through rfcn detect (the readers are rfcn.data.images) ----

IMAGE_CASES = {
    "truncated.jpg": (good_jpeg()[:300], "cannot decode image"),
    "zero.jpg": (b"", "empty image file (0 bytes)"),
    "text.jpg": (b"just some text, not pixels\n" * 20, "not an image format Pillow can read"),
    # Pillow's own decompression-bomb check refuses this one from the header.
    "huge.png": (huge_png_header(100_000, 100_000), "image too large: Image size (10000000000"),
    # Under Pillow's limit, over the readers' own 100-megapixel one.
    "large.png": (huge_png_header(12_000, 10_000), "image too large: 12000x10000 pixels"),
}


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_a_bad_image_is_skipped_with_a_warning(
    base: tuple[Config, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    _, weights, _ = base
    content, problem = IMAGE_CASES[name]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(content)
    (tmp_path / "in" / "fine.jpg").write_bytes(good_jpeg())
    code, err = run_cli(detect_args(weights, [tmp_path / "in"], tmp_path / "out"), capsys)
    assert code == 1
    assert f"warning: {tmp_path / 'in' / name}: {problem}" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fine.jpg", "fine.json"]
    # Alone, the same file stops the run with exit code 2.
    code, err = run_cli(detect_args(weights, [tmp_path / "in" / name], tmp_path / "o2"), capsys)
    assert code == 2
    assert_one_error_line(err, tmp_path / "in" / name, problem)


def test_file_names_that_are_not_utf8(
    base: tuple[Config, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, weights, _ = base
    folder = os.fsencode(tmp_path / "in")
    os.mkdir(folder)
    with open(os.path.join(folder, b"caf\xe9.jpg"), "wb") as stream:  # Latin-1 bytes
        stream.write(good_jpeg())
    with open(os.path.join(folder, b"bro\xffken.jpg"), "wb") as stream:
        stream.write(b"")
    code, err = run_cli(detect_args(weights, [tmp_path / "in"], tmp_path / "out"), capsys)
    assert code == 1
    assert "bro\\xffken.jpg: empty image file" in err and "Traceback" not in err
    outputs = sorted(os.listdir(os.fsencode(tmp_path / "out")))
    assert outputs == [b"caf\xe9.jpg", b"caf\xe9.json"]
    record = json.loads(
        Path(os.fsdecode(os.fsencode(tmp_path / "out") + b"/caf\xe9.json")).read_text()
    )
    assert record["image"].endswith("caf\\xe9.jpg")


@pytest.mark.parametrize(
    ("args", "source", "problem"),
    [
        (["--device", "tpu9"], "--device", "is not a device"),
        pytest.param(
            ["--device", "cuda"],
            "--device",
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available"),
        ),
    ],
)
def test_bad_detect_options(
    base: tuple[Config, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    source: str,
    problem: str,
) -> None:
    _, weights, _ = base
    (tmp_path / "a.jpg").write_bytes(good_jpeg())
    code, err = run_cli(
        detect_args(weights, [tmp_path / "a.jpg"], tmp_path / "out", *args),
        capsys,
    )
    assert code == 2
    assert_one_error_line(err, source, problem)


def test_out_path_that_is_a_file(
    base: tuple[Config, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, weights, _ = base
    (tmp_path / "a.jpg").write_bytes(good_jpeg())
    (tmp_path / "taken").write_text("keep me")
    code, err = run_cli(detect_args(weights, [tmp_path / "a.jpg"], tmp_path / "taken"), capsys)
    assert code == 2
    assert_one_error_line(err, tmp_path / "taken", "not a folder")
    assert (tmp_path / "taken").read_text() == "keep me"


def test_a_non_numeric_flag_is_a_usage_error(
    base: tuple[Config, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, weights, _ = base
    with pytest.raises(SystemExit) as exit_info:
        run_cli(detect_args(weights, [tmp_path], tmp_path, "--score-threshold", "high"), capsys)
    assert exit_info.value.code == 2
    assert "invalid float value: 'high'" in capsys.readouterr().err


# ---- checkpoints, through detect, export and eval ----


class _Exploit:
    """Unpickling this would create a file: weights_only loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def bad_checkpoints(folder: Path, real: Path) -> dict[str, tuple[Path, str]]:
    cases = {
        "zero": (b"", "cannot read checkpoint"),
        "truncated": (real.read_bytes()[: real.stat().st_size // 2], "cannot read checkpoint"),
        "json": (b'{"model": {}}', "cannot read checkpoint"),
    }
    paths = {}
    for name, (content, problem) in cases.items():
        (folder / f"{name}.pt").write_bytes(content)
        paths[name] = (folder / f"{name}.pt", problem)
    exploit = folder / "exploit.pt"
    torch.save({"model": _Exploit(folder / "pwned"), "config": {}}, exploit)
    paths["exploit"] = (exploit, "cannot read checkpoint")
    torch.save({"weights": torch.zeros(2)}, folder / "foreign.pt")
    paths["foreign"] = (folder / "foreign.pt", "not an rfcn checkpoint")
    state = torch.load(real, weights_only=True)
    torch.save({**state, "format_version": 99}, folder / "future.pt")
    paths["future"] = (folder / "future.pt", "format version 99")
    torch.save({**state, "class_names": ["circle"]}, folder / "names.pt")
    paths["names"] = (folder / "names.pt", "lists 1 class names for 6 classes")
    return paths


@pytest.mark.parametrize("tool", ["detect", "export", "eval"])
def test_bad_checkpoints_are_refused_without_running_their_code(
    base: tuple[Config, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tool: str,
) -> None:
    cfg, weights, _ = base
    (tmp_path / "a.jpg").write_bytes(good_jpeg())
    save_config(cfg, tmp_path / "config.yaml")
    (tmp_path / "model.onnx").write_bytes(b"previous export")
    for path, problem in bad_checkpoints(tmp_path, weights).values():
        args = {
            "detect": detect_args(path, [tmp_path / "a.jpg"], tmp_path / "out"),
            "export": ["export", "--weights", path, "--out", tmp_path / "model.onnx"],
            "eval": eval_args(tmp_path / "config.yaml", path, tmp_path / "ev"),
        }[tool]
        code, err = run_cli(args, capsys)
        assert code == 2
        assert_one_error_line(err, path, problem)
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / "model.onnx").read_bytes() == b"previous export"
    assert not (tmp_path / "out").exists() and not (tmp_path / "ev").exists()


@pytest.mark.parametrize("tool", ["detect", "export"])
def test_weights_that_do_not_fit_their_own_config(
    base: tuple[Config, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tool: str,
) -> None:
    _, weights, _ = base
    state = torch.load(weights, weights_only=True)
    state["config"]["model"]["k"] = 5
    torch.save(state, tmp_path / "tampered.pt")
    (tmp_path / "a.jpg").write_bytes(good_jpeg())
    args = {
        "detect": detect_args(tmp_path / "tampered.pt", [tmp_path / "a.jpg"], tmp_path / "out"),
        "export": ["export", "--weights", tmp_path / "tampered.pt", "--out", tmp_path / "m.onnx"],
    }[tool]
    code, err = run_cli(args, capsys)
    assert code == 2
    assert_one_error_line(
        err, tmp_path / "tampered.pt", "weights do not fit the model: shape mismatch head."
    )


def test_bad_export_options(
    base: tuple[Config, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, weights, _ = base
    out = tmp_path / "no" / "such" / "model.onnx"
    code, err = run_cli(["export", "--weights", weights, "--out", out], capsys)
    assert code == 2
    assert_one_error_line(err, out, "the output folder does not exist")
    old = ["export", "--weights", weights, "--out", tmp_path / "m.onnx", "--opset", "17"]
    code, err = run_cli(old, capsys)
    assert code == 2
    assert_one_error_line(err, "--opset", "must be 18 or newer, got 17")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    check = ["export", "--weights", weights, "--out", tmp_path / "m.onnx", "--check", broken]
    code, err = run_cli(check, capsys)
    assert code == 2
    assert_one_error_line(err, broken, "empty image file")
    assert not (tmp_path / "m.onnx").exists()


# ---- annotations, through rfcn evaluate and rfcn eval (readers: rfcn.data.voc) ----


def set_field(tag: str, value: str) -> Callable[[str], str]:
    """An edit that writes ``value`` into the first ``<tag>`` of an XML text."""
    return lambda xml: re.sub(f"<{tag}>[^<]*</{tag}>", f"<{tag}>{value}</{tag}>", xml, count=1)


def rename_field(tag: str) -> Callable[[str], str]:
    """An edit that renames the first ``<tag>`` element, so the reader misses it."""
    return lambda xml: re.sub(f"<{tag}>([^<]*)</{tag}>", r"<renamed>\1</renamed>", xml, count=1)


XML_CASES: dict[str, tuple[Callable[[str], str], str]] = {
    "empty file": (lambda xml: "", "malformed XML"),
    "not closed": (lambda xml: xml[: len(xml) // 2], "malformed XML"),
    "missing size": (lambda xml: xml.replace("size>", "sise>"), "missing <size>"),
    "negative width": (set_field("width", "-5"), "size/width> must be a finite number >= 0"),
    "zero height": (set_field("height", "0"), "size/height> must be a positive integer"),
    "NaN coordinate": (set_field("xmin", "nan"), "bndbox/xmin> must be a finite number"),
    "text coordinate": (set_field("ymax", "abc"), "bndbox/ymax> is not a number: 'abc'"),
    "missing xmin": (rename_field("xmin"), "missing object 1: <bndbox/xmin>"),
    "missing name": (rename_field("name"), "missing <name>"),
}


def copy_dataset(data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    return copy


@pytest.mark.parametrize("case", XML_CASES)
def test_broken_annotations(
    base: tuple[Config, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    cfg, weights, data = base
    root = copy_dataset(data, tmp_path)
    edit, problem = XML_CASES[case]
    xml_path = root / "Annotations" / "test_000001.xml"
    xml_path.write_text(edit(xml_path.read_text()))
    results = tmp_path / "results"
    results.mkdir()
    for name in CLASS_NAMES:
        (results / f"comp4_det_test_{name}.txt").write_text("")
    code, err = run_cli(
        [
            "evaluate",
            "--dataset",
            root,
            "--split",
            TEST_SPLIT,
            "--detections",
            results,
            "--metric",
            "voc07",
        ],
        capsys,
    )
    assert code == 2
    assert_one_error_line(err, xml_path, problem)
    # rfcn eval reads the same file through the dataset; its earlier metrics stay as they were.
    cfg.data.roots = [str(root)]
    save_config(cfg, tmp_path / "config.yaml")
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "metrics.json").write_text('{"mAP": 0.5}')
    code, err = run_cli(
        eval_args(tmp_path / "config.yaml", weights, tmp_path / "ev"),
        capsys,
    )
    assert code == 2
    assert_one_error_line(err, xml_path, problem)
    assert (tmp_path / "ev" / "metrics.json").read_text() == '{"mAP": 0.5}'


def test_a_truncated_test_image_stops_eval_naming_it(
    base: tuple[Config, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, weights, data = base
    root = copy_dataset(data, tmp_path)
    image = root / "JPEGImages" / "test_000002.jpg"
    image.write_bytes(image.read_bytes()[:400])
    cfg.data.roots = [str(root)]
    save_config(cfg, tmp_path / "config.yaml")
    code, err = run_cli(
        eval_args(tmp_path / "config.yaml", weights, tmp_path / "ev"),
        capsys,
    )
    assert code == 2
    assert_one_error_line(err, image, "cannot decode image")
    assert not (tmp_path / "ev" / "metrics.json").exists()


# ---- JSON and YAML with wrong types ----

RESULTS_JSON_CASES = {
    "not a list": ('{"image_id": 1}', "list"),
    "bbox is text": (
        '[{"image_id": 1, "category_id": 1, "bbox": "0 0 5 5", "score": 0.5}]',
        "bbox",
    ),
    "score is text": (
        '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": "high"}]',
        "score",
    ),
    "truncated": ('[{"image_id": 1, "category_id": 1, "bb', "JSON"),
    "empty": ("", "JSON"),
}


@pytest.mark.parametrize("case", RESULTS_JSON_CASES)
def test_broken_coco_results_json(
    base: tuple[Config, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    _, _, data = base
    text, problem = RESULTS_JSON_CASES[case]
    results = tmp_path / "detections.json"
    results.write_text(text)
    annotations = data / COCO_JSON.format(split=TEST_SPLIT)
    code, err = run_cli(
        [
            "evaluate",
            "--dataset",
            data,
            "--split",
            TEST_SPLIT,
            "--detections",
            results,
            "--metric",
            "coco",
            "--annotations",
            annotations,
        ],
        capsys,
    )
    assert code == 2
    assert_one_error_line(err, results, problem)


def test_coco_instances_json_with_wrong_types_stops_eval(
    base: tuple[Config, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, weights, data = base
    root = copy_dataset(data, tmp_path)
    instances = root / COCO_JSON.format(split=TEST_SPLIT)
    content = json.loads(instances.read_text())
    content["categories"] = "circle, ring"
    instances.write_text(json.dumps(content))
    cfg.data.format = "coco"
    cfg.data.roots = [str(root)]
    cfg.data.coco_test_json = COCO_JSON.format(split=TEST_SPLIT)
    cfg.data.coco_test_images = "JPEGImages"
    cfg.eval.metric = "coco"
    save_config(cfg, tmp_path / "config.yaml")
    code, err = run_cli(
        eval_args(tmp_path / "config.yaml", weights, tmp_path / "ev"),
        capsys,
    )
    assert code == 2
    assert_one_error_line(err, instances, "categories")


def test_config_with_wrong_types(
    base: tuple[Config, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, weights, _ = base
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  k: three\n")
    code, err = run_cli(["eval", "--config", config, "--weights", weights], capsys)
    assert code == 2
    assert_one_error_line(err, config, "model.k: expected an integer, got 'three'")
