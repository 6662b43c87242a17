"""OnnxPredictor on small ONNX models built here: damaged metadata is a UserError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from rfcn.errors import UserError
from rfcn.inference.onnx_predictor import METADATA_CLASS_NAMES, METADATA_CONFIG, OnnxPredictor


def model_bytes(metadata: dict[str, str]) -> bytes:
    """A graph with the export's input and outputs (it detects nothing) and ``metadata``."""
    outputs = {
        "boxes": (np.zeros((0, 4), np.float32), TensorProto.FLOAT),
        "scores": (np.zeros(0, np.float32), TensorProto.FLOAT),
        "labels": (np.zeros(0, np.int64), TensorProto.INT64),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))
            for name, (value, _) in outputs.items()
        ],
        "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, "H", "W"])],
        [
            helper.make_tensor_value_info(name, kind, list(value.shape))
            for name, (value, kind) in outputs.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, metadata)
    return model.SerializeToString()


def test_metadata_of_an_export_are_read(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    config = {"model": {"k": 3}}
    path.write_bytes(
        model_bytes({METADATA_CLASS_NAMES: '["cat", "dog"]', METADATA_CONFIG: json.dumps(config)})
    )
    predictor = OnnxPredictor(path)
    assert predictor.class_names == ("cat", "dog") and predictor.config == config
    assert len(predictor(np.zeros((20, 30, 3), np.uint8)).scores) == 0


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({}, "the class names are missing"),
        ({METADATA_CLASS_NAMES: "[not json"}, "unreadable metadata"),
        ({METADATA_CLASS_NAMES: '"cat"'}, "class names are not a list of names"),
        ({METADATA_CLASS_NAMES: '["cat"]', METADATA_CONFIG: "[1]"}, "config is not a mapping"),
    ],
)
def test_bad_metadata_is_a_user_error(tmp_path: Path, metadata: dict, problem: str) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(model_bytes(metadata))
    with pytest.raises(UserError, match=problem) as error:
        OnnxPredictor(path)
    assert error.value.source == str(path)


def test_metadata_that_are_not_utf8_are_a_user_error(tmp_path: Path) -> None:
    # Found by tests/test_fuzz.py: a damaged byte in the metadata made onnxruntime's
    # metadata map raise UnicodeDecodeError.
    content = model_bytes({METADATA_CLASS_NAMES: '["c\u00e9t"]'})
    path = tmp_path / "m.onnx"
    path.write_bytes(content.replace("\u00e9".encode(), b"\xc3\x28"))
    with pytest.raises(UserError, match="unreadable metadata"):
        OnnxPredictor(path)
