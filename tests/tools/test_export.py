"""``rfcn export``: the ONNX graph matches PyTorch at any image size, carries its metadata,
and runs in ``rfcn detect`` without torch. One export (tens of seconds) serves every test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from deploy_fixtures import tiny_config, write_checkpoint
from PIL import Image

from rfcn.cli import main
from rfcn.data.synthetic import CLASS_NAMES, ensure_synthetic_dataset
from rfcn.engine.checkpoint import load_checkpoint, load_model, model_state, save_checkpoint
from rfcn.inference.export import DEFAULT_OPSET, compare_with_onnx
from rfcn.inference.onnx_predictor import METADATA_CLASS_NAMES, METADATA_CONFIG
from rfcn.modeling.rfcn import build_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    cfg = tiny_config(root / "data")
    data = ensure_synthetic_dataset(root / "data", cfg.data)
    weights = write_checkpoint(root / "tiny.pt", cfg)
    images = sorted((data / "JPEGImages").glob("test_*.jpg"))
    code = main(
        [
            "export",
            "--weights",
            str(weights),
            "--out",
            str(root / "tiny.onnx"),
            "--check",
            *map(str, images),
        ]
    )
    assert code == 0
    return {"weights": weights, "onnx": root / "tiny.onnx", "images": images[0].parent}


def test_onnx_graph_has_dynamic_size_and_metadata(exported: dict[str, Path]) -> None:
    proto = onnx.load(exported["onnx"])
    assert proto.opset_import[0].version == DEFAULT_OPSET
    (image_input,) = proto.graph.input
    dims = image_input.type.tensor_type.shape.dim
    assert dims[0].dim_value == 3 and dims[1].dim_param and dims[2].dim_param
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    assert json.loads(metadata[METADATA_CLASS_NAMES]) == list(CLASS_NAMES)
    assert json.loads(metadata[METADATA_CONFIG])["model"]["k"] == 3


def test_onnxruntime_matches_pytorch_at_other_image_sizes(exported: dict[str, Path]) -> None:
    model, _, _ = load_model(exported["weights"])
    photo = Image.open(exported["images"] / "test_000001.jpg").convert("RGB")
    sizes = [(200, 90), (120, 300), (64, 64), (257, 131)]  # (width, height), none traced
    images = [np.asarray(photo.resize(size)) for size in sizes]
    report = compare_with_onnx(model, exported["onnx"], images)
    assert report.detections > 50
    assert report.paired == report.detections, report.summary()
    assert report.max_box_diff < 1e-3 and report.max_score_diff < 1e-4
    assert report.agrees()
    # The check can fail: another model's detections do not pair with this graph's.
    torch.manual_seed(1)
    for parameter in model.head.parameters():
        parameter.data.normal_(std=0.3)
    assert not compare_with_onnx(model, exported["onnx"], images).agrees()


def test_detect_with_the_onnx_model_matches_the_checkpoint(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    image = exported["images"] / "test_000002.jpg"
    outputs = {}
    for weights in (exported["weights"], exported["onnx"]):
        out = tmp_path / weights.suffix[1:]
        args = ["detect", "--weights", str(weights), str(image), "--out", str(out)]
        assert main([*args, "--score-threshold", "0.2", "--device", "cpu"]) == 0
        assert (out / "test_000002.jpg").is_file()
        outputs[weights.suffix] = json.loads((out / "test_000002.json").read_text())["detections"]
    assert len(outputs[".onnx"]) == len(outputs[".pt"]) > 0
    for ours, theirs in zip(outputs[".onnx"], outputs[".pt"], strict=True):
        assert ours["class_name"] == theirs["class_name"]
        assert ours["box"] == pytest.approx(theirs["box"], abs=2e-3)


def test_the_onnx_path_never_imports_torch(exported: dict[str, Path], tmp_path: Path) -> None:
    script = f"""
import sys
from rfcn.cli import main
from rfcn.inference.onnx_predictor import OnnxPredictor
predictor = OnnxPredictor({str(exported["onnx"])!r})
detections = predictor({str(exported["images"] / "test_000000.jpg")!r})
code = main([
    "detect", {str(exported["images"])!r}, "--weights", {str(exported["onnx"])!r},
    "--out", {str(tmp_path / "out")!r}, "--score-threshold", "0.5", "--device", "cpu",
])
print(len(detections), code, "torch" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    count, code, torch_loaded = result.stdout.split()
    assert int(count) > 0 and code == "0" and torch_loaded == "False"
    assert len(list((tmp_path / "out").glob("*.json"))) == len(
        list(exported["images"].glob("*.jpg"))
    )


def test_bad_onnx_files_are_user_errors(
    tmp_path: Path, exported: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a model" * 50)
    proto = onnx.load(exported["onnx"])
    del proto.metadata_props[:]
    anonymous = tmp_path / "anonymous.onnx"
    onnx.save(proto, anonymous)
    image = str(exported["images"] / "test_000000.jpg")
    for path, problem in [
        (empty, "not a loadable ONNX model"),
        (garbage, "not a loadable ONNX model"),
        (anonymous, "not an rfcn export"),
        (tmp_path / "missing.onnx", "file not found"),
    ]:
        code = main(["detect", "--weights", str(path), image, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"error: {path}: {problem}"), err
        assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ({"head": "torchvision"}, "holds torchvision's Faster R-CNN"),
        ({"head": "c4", "box_mode": "class", "ps_roi_mode": "pool"}, "holds a C4 model"),
    ],
)
def test_models_the_exporter_cannot_trace_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: dict, problem: str
) -> None:
    cfg = tiny_config(tmp_path / "data", **model)
    weights = tmp_path / "model.pt"
    save_checkpoint(weights, model_state(build_model(cfg.model), cfg, list(CLASS_NAMES)))
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {weights}: {problem}") and len(err.splitlines()) == 1
    assert not out.exists()


def _exports_at_parity(tmp_path: Path, weights: Path, data: Path) -> set[str]:
    """Export ``weights``, check onnxruntime against PyTorch at three image sizes; returns the
    graph's operator types."""
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(onnx_path)]) == 0
    model, _, _ = load_model(weights)
    photo = Image.open(data / "JPEGImages" / "test_000001.jpg").convert("RGB")
    images = [np.asarray(photo.resize(size)) for size in [(200, 90), (120, 300), (257, 131)]]
    report = compare_with_onnx(model, onnx_path, images)
    assert report.detections > 50
    assert report.paired == report.detections, report.summary()
    assert report.max_box_diff < 1e-3 and report.max_score_diff < 1e-4
    return {node.op_type for node in onnx.load(onnx_path).graph.node}


def test_deformable_model_exports_at_parity(tmp_path: Path) -> None:
    """Deformable PS-RoI pooling and v2 deformable conv5 (through the pure-PyTorch
    decomposition: torchvision's op has no ONNX form) with non-zero offsets."""
    cfg = tiny_config(tmp_path / "data", deformable_psroi=True, deformable_conv5="v2")
    data = ensure_synthetic_dataset(tmp_path / "data", cfg.data)
    weights = write_checkpoint(tmp_path / "deformable.pt", cfg)
    state = load_checkpoint(weights)
    generator = torch.Generator().manual_seed(0)
    for name, value in state["model"].items():
        if "offset_conv" in name:  # offsets of a fraction of a cell to a few cells
            value.copy_(0.02 * torch.randn(value.shape, generator=generator))
    save_checkpoint(weights, state)
    operators = _exports_at_parity(tmp_path, weights, data)
    assert "GridSample" in operators and not any("eform" in op for op in operators)


@pytest.mark.parametrize(
    "test_time", [{"box_voting_iou": 0.5}, {"box_refinement": True, "box_voting_iou": 0.5}]
)
def test_test_time_options_export_at_parity(tmp_path: Path, test_time: dict) -> None:
    cfg = tiny_config(tmp_path / "data", **test_time)
    data = ensure_synthetic_dataset(tmp_path / "data", cfg.data)
    _exports_at_parity(tmp_path, write_checkpoint(tmp_path / "model.pt", cfg), data)


def test_light_head_exports_at_parity(tmp_path: Path) -> None:
    """Light-Head R-CNN's head at small sizes: the large separable conv, PSRoIAlign taking the
    maximum of its samples ("align_max", a ReduceMax in the graph) and the fc layers."""
    cfg = tiny_config(
        tmp_path / "data",
        head="light_head",
        ps_roi_mode="align_max",
        box_mode="class",
        light_head_alpha=4,
        light_head_mid_channels=16,
        light_head_kernel=7,
        light_head_fc_channels=64,
    )
    data = ensure_synthetic_dataset(tmp_path / "data", cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with torch.no_grad():  # well-separated scores, as write_checkpoint draws for R-FCN
        model.head.fc.weight.normal_(std=0.2)
        model.head.cls_score.weight.normal_(std=0.5)
    weights = tmp_path / "light_head.pt"
    save_checkpoint(weights, {**model_state(model, cfg, list(CLASS_NAMES)), "iteration": 0})
    operators = _exports_at_parity(tmp_path, weights, data)
    assert "ReduceMax" in operators


def test_c4_with_roi_align_exports_at_parity(tmp_path: Path) -> None:
    """The C4 counterpart with RoIAlign: torchvision's roi_align (an ONNX RoiAlign) feeding the
    per-RoI conv5."""
    cfg = tiny_config(tmp_path / "data", head="c4", box_mode="class", ps_roi_mode="align")
    data = ensure_synthetic_dataset(tmp_path / "data", cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with torch.no_grad():  # scores ten times as spread as the initial N(0, 0.01) layer's
        model.head.cls_score.weight.normal_(std=0.1)
    weights = tmp_path / "c4.pt"
    save_checkpoint(weights, {**model_state(model, cfg, list(CLASS_NAMES)), "iteration": 0})
    assert "RoiAlign" in _exports_at_parity(tmp_path, weights, data)
