"""Fuzz the readers and the command line with seeded random bytes and truncated real files.

Each input kind (checkpoint, ONNX model, image, VOC XML, COCO JSON, YAML config) is replaced by
random byte strings, by truncations of a real file of that kind and by truncations followed by
random bytes, then fed to its reader
(which must raise :class:`UserError`) and to every command that reads it, called in-process:
exit status 2, one line ``error: ...`` on stderr, no traceback, and no file written. A few cases
run the real ``rfcn`` process. Truncations cut at least the last byte of the real file's
content, so that no case is a valid file by accident. ``rfcn data`` lists a bad annotation file
instead of stopping (its job is to find them all): there it must exit 0 and name the file.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from rfcn.cli import main
from rfcn.config import config_from_dict, load_config
from rfcn.data.build import build_dataset
from rfcn.data.coco import COCODetection
from rfcn.data.images import read_rgb_array
from rfcn.data.voc import read_voc_annotation
from rfcn.engine.checkpoint import load_checkpoint, model_state, save_checkpoint
from rfcn.errors import UserError
from rfcn.evaluation.results_files import read_coco_results
from rfcn.inference.onnx_predictor import METADATA_CLASS_NAMES, METADATA_CONFIG, OnnxPredictor
from rfcn.modeling.rfcn import build_model

CASES = [(kind, seed) for kind in ("random", "truncated", "spliced") for seed in range(8)]
# A JPEG decoder reads random bytes after a good header as (odd) pixels: no spliced images.
IMAGE_CASES = [(kind, seed) for kind, seed in CASES if kind != "spliced"]
DATA_CASES = 3  # rfcn data draws its pictures (~0.3 s): the first cases of each kind only
# Bytes that made torch.load raise KeyError and IndexError (issue 11), before any fuzzing.
KNOWN_BAD_CHECKPOINTS = [b"hello", b"ustar" + bytes(600)]

MODEL = {
    "backbone": "resnet18", "backbone_width": 8, "k": 3, "head_channels": 8, "num_classes": 1,
    "min_size": [64], "max_size": 96, "anchor_sizes": [16, 32], "anchor_ratios": [1.0],
    "rpn_pre_nms_test": 50, "rpn_post_nms_test": 10,
}  # fmt: skip


def fuzzed(real: bytes, kind: str, seed: int) -> bytes:
    """``kind`` "random": random bytes (up to 2 KiB); "truncated": ``real`` cut short by at
    least its last content byte; "spliced": such a cut followed by 16 to 512 random bytes;
    "known": the known bad checkpoint ``seed``."""
    if kind == "known":
        return KNOWN_BAD_CHECKPOINTS[seed]
    rng = np.random.default_rng([seed, len(real)])
    if kind == "random":
        return rng.integers(0, 256, int(rng.integers(0, 2048)), dtype=np.uint8).tobytes()
    cut = real[: int(rng.integers(0, len(real.rstrip())))]
    if kind == "truncated":
        return cut
    return cut + rng.integers(0, 256, int(rng.integers(16, 512)), dtype=np.uint8).tobytes()


def config_text(root: Path) -> str:
    """The YAML config of a one-image VOC folder; ``roots`` comes last, so that every
    truncation of the text is an invalid config (no run starts from a cut file)."""
    model = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in MODEL.items())
    return (
        f"model:\n{model}"
        "train:\n  device: cpu\n  iterations: 1\n  images_per_batch: 1\n  base_batch: 1\n"
        "  tensorboard: false\n"
        "eval:\n  scales: [64]\n"
        "data:\n  format: voc\n  train_splits: [train]\n  test_split: train\n"
        f"  class_names: [cat]\n  workers: 0\n  roots: [{root}]"
    )


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


VOC_XML = (
    b"<annotation><filename>a.jpg</filename><size><width>64</width><height>48</height></size>"
    b"<object><name>cat</name><difficult>0</difficult><bndbox><xmin>5</xmin><ymin>6</ymin>"
    b"<xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>"
)

COCO_INSTANCES = json.dumps(
    {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 5, 36, 25], "area": 900}
        ],
    }
).encode()

COCO_RESULTS = json.dumps(
    [{"image_id": 1, "category_id": 3, "bbox": [4.0, 5.0, 36.0, 25.0], "score": 0.9}]
).encode()


def onnx_bytes() -> bytes:
    """An ONNX model with the interface and metadata of an rfcn export (it detects nothing);
    the class names come last, so a truncation never leaves a loadable export."""
    outputs = {
        "boxes": np.zeros((0, 4), np.float32),
        "scores": np.zeros(0, np.float32),
        "labels": np.zeros(0, np.int64),
    }
    nodes = [
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))
        for name, value in outputs.items()
    ]
    kinds = {"boxes": TensorProto.FLOAT, "scores": TensorProto.FLOAT, "labels": TensorProto.INT64}
    graph = helper.make_graph(
        nodes,
        "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, "H", "W"])],
        [helper.make_tensor_value_info(n, kinds[n], list(v.shape)) for n, v in outputs.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(
        model, {METADATA_CONFIG: json.dumps({}), METADATA_CLASS_NAMES: json.dumps(["cat"])}
    )
    return model.SerializeToString()


def write_voc(root: Path, xml: bytes = VOC_XML) -> Path:
    """A VOC folder with one image "a" annotated by ``xml``, and its config; returns the config."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages" / "a.jpg").write_bytes(jpeg_bytes())
    (root / "Annotations" / "a.xml").write_bytes(xml)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    config = root / "config.yaml"
    config.write_text(config_text(root))
    return config


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid inputs: a VOC folder with its config, a checkpoint of its model, an image, a COCO
    instances file and a results file for it."""
    root = tmp_path_factory.mktemp("good")
    config = write_voc(root / "voc")
    cfg = load_config(config)
    checkpoint = root / "model.pt"
    save_checkpoint(checkpoint, model_state(build_model(cfg.model), cfg, ["cat"]))
    (root / "instances.json").write_bytes(COCO_INSTANCES)
    (root / "results.json").write_bytes(COCO_RESULTS)
    return {
        "config": config,
        "checkpoint": checkpoint,
        "image": root / "voc" / "JPEGImages" / "a.jpg",
        "instances": root / "instances.json",
        "results": root / "results.json",
        "root": root,
    }


def files_under(*folders: Path) -> set[Path]:
    return {path for folder in folders for path in folder.rglob("*") if path.is_file()}


def assert_refused(
    args: list[object],
    capsys: pytest.CaptureFixture[str],
    watched: list[Path],
) -> str:
    """Run ``rfcn ARGS`` in-process: exit 2, one ``error:`` line, no new file in ``watched``."""
    before = files_under(*watched)
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    assert code == 2, (args, captured.err)
    assert captured.err.startswith("error: ") and len(captured.err.splitlines()) == 1, captured.err
    assert "Traceback" not in captured.err
    assert files_under(*watched) == before, args
    return captured.err


def write_case(folder: Path, name: str, real: bytes, kind: str, seed: int) -> Path:
    path = folder / name
    path.write_bytes(fuzzed(real, kind, seed))
    return path


# ---- the readers ----

READERS: dict[str, tuple[Callable[[], bytes], str, Callable[[Path], object]]] = {
    "checkpoint": (lambda: b"", "x.pt", load_checkpoint),  # real bytes: the fixture's file
    "onnx": (onnx_bytes, "x.onnx", OnnxPredictor),
    "image": (jpeg_bytes, "x.jpg", read_rgb_array),
    "voc_xml": (lambda: VOC_XML, "x.xml", read_voc_annotation),
    "coco_json": (lambda: COCO_INSTANCES, "x.json", lambda p: COCODetection(p, p.parent)),
    "coco_results": (lambda: COCO_RESULTS, "x.json", read_coco_results),
    # A cut config can be a valid one, with its dataset cut off: read it as training does.
    "yaml_config": (lambda: b"", "x.yaml", lambda p: build_dataset(load_config(p).data, True)),
}


@pytest.mark.parametrize(
    ("reader", "kind", "seed"),
    [(r, k, s) for r in READERS for k, s in (IMAGE_CASES if r == "image" else CASES)],
)
def test_readers_raise_user_errors(
    good: dict[str, Path], tmp_path: Path, reader: str, kind: str, seed: int
) -> None:
    make_real, name, read = READERS[reader]
    real = {"checkpoint": good["checkpoint"], "yaml_config": good["config"]}.get(reader)
    content = real.read_bytes() if real is not None else make_real()
    path = write_case(tmp_path, name, content, kind, seed)
    with pytest.raises(UserError) as error:
        read(path)
    if reader != "yaml_config":  # there, a missing setting is named by its key
        assert error.value.source == str(path)


# ---- flipped bytes inside a real checkpoint ----

FLIP_CASES = 64


def flipped(real: bytes, seed: int) -> bytes:
    """``real`` with 1 to 50 bytes changed at seeded positions (a non-zero XOR each)."""
    rng = np.random.default_rng([seed, 7])
    data = bytearray(real)
    for position in rng.choice(len(real), int(rng.integers(1, 51)), replace=False):
        data[position] ^= int(rng.integers(1, 256))
    return bytes(data)


def test_every_flipped_byte_of_a_checkpoint_is_reported(
    good: dict[str, Path], tmp_path: Path
) -> None:
    """Seeded flips anywhere, then one flip at each byte of the zip's head and tail (headers,
    central directory, end records, the seal), where no CRC of the zip looks."""
    real = good["checkpoint"].read_bytes()
    cases = [flipped(real, seed) for seed in range(FLIP_CASES)]
    for position in [*range(128), *range(len(real) - 512, len(real))]:
        data = bytearray(real)
        data[position] ^= 0x01
        cases.append(bytes(data))
    path = tmp_path / "x.pt"
    for number, data in enumerate(cases):
        path.write_bytes(data)
        with pytest.raises(
            UserError, match=r"damaged checkpoint|cannot read checkpoint \(corrupt"
        ) as error:
            load_checkpoint(path)
        assert error.value.source == str(path), number


# ---- the command line ----

# A scenario writes one fuzzed input into a case folder and returns the commands that read it,
# each with the sources its error may name (the bad file; for a cut config, the setting lost).
Commands = list[tuple[list[object], tuple[str, ...]]]


def eval_args(config: Path, weights: Path, out: Path) -> list[object]:
    return ["eval", "--config", config, "--weights", weights, "--out", out, "--no-progress"]


def train_args(config: Path, out: Path) -> list[object]:
    return ["train", "--config", config, "--out", out, "--no-progress"]


def data_args(config: Path, out: Path) -> list[object]:
    return ["data", "--config", config, "--out", out, "--no-progress"]


def checkpoint_commands(good: dict[str, Path], folder: Path, kind: str, seed: int) -> Commands:
    weights = write_case(folder, "x.pt", good["checkpoint"].read_bytes(), kind, seed)
    out = folder / "out"
    return [
        (["detect", "--weights", weights, good["image"], "--out", out], (str(weights),)),
        (eval_args(good["config"], weights, out), (str(weights),)),
        (["export", "--weights", weights, "--out", folder / "x.onnx"], (str(weights),)),
    ]


def onnx_commands(good: dict[str, Path], folder: Path, kind: str, seed: int) -> Commands:
    model = write_case(folder, "x.onnx", onnx_bytes(), kind, seed)
    return [(["detect", "--weights", model, good["image"], "--out", folder / "out"], (str(model),))]


def image_commands(good: dict[str, Path], folder: Path, kind: str, seed: int) -> Commands:
    image = write_case(folder, "x.jpg", jpeg_bytes(), kind, seed)
    args = ["detect", "--weights", good["checkpoint"], image, "--out", folder / "out"]
    return [(args, (str(image),))]


def annotation_commands(good: dict[str, Path], folder: Path, kind: str, seed: int) -> Commands:
    config = write_voc(folder / "voc", fuzzed(VOC_XML, kind, seed))
    xml = str(folder / "voc" / "Annotations" / "a.xml")
    out = folder / "out"
    return [(eval_args(config, good["checkpoint"], out), (xml,)), (train_args(config, out), (xml,))]


def coco_commands(good: dict[str, Path], folder: Path, kind: str, seed: int) -> Commands:
    instances = write_case(folder, "instances.json", COCO_INSTANCES, kind, seed)
    results = write_case(folder, "results.json", COCO_RESULTS, kind, seed)
    evaluate = ["evaluate", "--dataset", folder, "--split", "test", "--metric", "coco"]
    evaluate += ["--out", folder / "metrics.json"]
    return [
        ([*evaluate, "--annotations", truth, "--detections", detections], (str(bad),))
        for truth, detections, bad in (
            (instances, good["results"], instances),
            (good["instances"], results, results),
        )
    ]


def config_commands(good: dict[str, Path], folder: Path, kind: str, seed: int) -> Commands:
    config = write_case(folder, "config.yaml", good["config"].read_bytes(), kind, seed)
    out = folder / "out"
    commands = [train_args(config, out), eval_args(config, good["checkpoint"], out)]
    if seed < DATA_CASES:
        commands.append(data_args(config, out))
    return [(args, (str(config), "data.roots")) for args in commands]


SCENARIOS = {
    "checkpoint": (checkpoint_commands, [*CASES, ("known", 0), ("known", 1)]),
    "onnx": (onnx_commands, CASES),
    "image": (image_commands, IMAGE_CASES),
    "voc_xml": (annotation_commands, CASES),
    "coco_json": (coco_commands, CASES),
    "yaml_config": (config_commands, CASES),
}


@pytest.mark.parametrize(
    ("scenario", "kind", "seed"),
    [(name, kind, seed) for name, (_, cases) in SCENARIOS.items() for kind, seed in cases],
)
def test_commands_refuse_bad_files(
    good: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    scenario: str,
    kind: str,
    seed: int,
) -> None:
    make_commands, _ = SCENARIOS[scenario]
    for args, sources in make_commands(good, tmp_path, kind, seed):
        err = assert_refused(args, capsys, [tmp_path, good["root"]])
        assert err.startswith(tuple(f"error: {source}: " for source in sources)), err


@pytest.mark.parametrize("seed", range(DATA_CASES))
@pytest.mark.parametrize("kind", ["random", "truncated", "spliced"])
def test_data_lists_a_bad_annotation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, seed: int
) -> None:
    config = write_voc(tmp_path / "voc", fuzzed(VOC_XML, kind, seed))
    xml = tmp_path / "voc" / "Annotations" / "a.xml"
    code = main([str(arg) for arg in data_args(config, tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"\n  {xml}: " in captured.out and "image left out" in captured.out


# Well-formed JSON that pycocotools cannot index or score (each crashed rfcn evaluate).
COCO_DAMAGE = {
    "image without id": ("images", "id", "images[0]: missing key 'id'"),
    "category without id": ("categories", "id", "categories[0]: missing key 'id'"),
    "annotation without bbox": ("annotations", "bbox", "annotations[0]: missing key 'bbox'"),
    "category without name": ("categories", "name", "categories[0]: missing key 'name'"),
    "annotation without id": ("annotations", "id", "annotations[0]: missing key 'id'"),
    "annotation without area": ("annotations", "area", "annotations[0]: missing key 'area'"),
}


@pytest.mark.parametrize("damage", COCO_DAMAGE)
def test_evaluate_refuses_instances_pycocotools_cannot_read(
    good: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    section, key, problem = COCO_DAMAGE[damage]
    instances = json.loads(COCO_INSTANCES)
    del instances[section][0][key]
    truth = tmp_path / "instances.json"
    truth.write_text(json.dumps(instances))
    args = ["evaluate", "--dataset", tmp_path, "--split", "test", "--metric", "coco"]
    args += ["--annotations", truth, "--detections", good["results"]]
    err = assert_refused(args, capsys, [tmp_path, good["root"]])
    assert err == f"error: {truth}: {problem}\n"


# ---- the real process ----


def test_the_rfcn_process_refuses_a_file_that_crashed_torch_load(
    good: dict[str, Path], tmp_path: Path
) -> None:
    weights = tmp_path / "x.pt"
    weights.write_bytes(KNOWN_BAD_CHECKPOINTS[1])
    command = [sys.executable, "-m", "rfcn.cli", "detect", "--weights", str(weights)]
    command += [str(good["image"]), "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {weights}: cannot read checkpoint")
    assert len(result.stderr.splitlines()) == 1
    assert files_under(tmp_path) == {weights}


def test_the_fixture_inputs_are_valid(good: dict[str, Path], tmp_path: Path) -> None:
    """The real files the cases cut short are good ones: the refusals above come from the cuts."""
    load_checkpoint(good["checkpoint"])
    (tmp_path / "m.onnx").write_bytes(onnx_bytes())
    onnx.checker.check_model(onnx.load(tmp_path / "m.onnx"))
    assert OnnxPredictor(tmp_path / "m.onnx").class_names == ("cat",)
    assert read_rgb_array(good["image"]).shape == (48, 64, 3)
    assert read_voc_annotation(good["root"] / "voc" / "Annotations" / "a.xml").objects
    assert len(COCODetection(good["instances"], good["image"].parent)) == 1
    assert len(read_coco_results(good["results"])) == 1
    assert load_config(good["config"]).data.roots == [str(good["root"] / "voc")]
    assert config_from_dict({"model": MODEL}).model.backbone_width == 8
