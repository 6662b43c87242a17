"""``rfcn export`` and ``rfcn detect`` on an install without the ``onnx`` extra: one line
naming the extra, exit 2, and nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from deploy_fixtures import tiny_config, write_checkpoint

from rfcn.cli import main


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extras")
    return write_checkpoint(root / "tiny.pt", tiny_config(root / "data"))


@pytest.mark.parametrize(
    ("missing", "extra_args", "source"),
    [
        ("onnx", [], "ONNX export"),
        ("onnxscript", [], "ONNX export"),
        ("onnxruntime", ["--check", "any.jpg"], "--check"),
    ],
)
def test_export_without_the_onnx_extra(
    weights: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    missing: str,
    extra_args: list[str],
    source: str,
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    out = tmp_path / "model.onnx"
    code = main(["export", "--weights", str(weights), "--out", str(out), *extra_args])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f'error: {source}: {missing} is not installed: pip install "rfcn[onnx]"\n'
    assert list(tmp_path.iterdir()) == []


def test_detect_with_an_onnx_model_without_onnxruntime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    (tmp_path / "in.jpg").write_bytes(b"an image")
    model = tmp_path / "model.onnx"
    code = main(
        [
            "detect",
            "--weights",
            str(model),
            str(tmp_path / "in.jpg"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err == f'error: {model}: onnxruntime is not installed: pip install "rfcn[onnx]"\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jpg"]
