"""Run an R-FCN exported by ``rfcn export`` with onnxruntime, numpy and PIL only (no torch).

    predictor = OnnxPredictor("model.onnx")
    detections = predictor("street.jpg")   # Detections, as the PyTorch Predictor returns

The exported graph holds the whole detector (resize, normalisation, backbone, RPN,
position-sensitive head, NMS); it takes one ``(3, H, W)`` float32 image in 0..1 and returns
boxes in that image's pixels. Class names and the training config travel in the model's
metadata (see :mod:`rfcn.inference.export`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from rfcn.errors import UserError, first_line
from rfcn.inference.detections import Detections
from rfcn.inference.image_input import as_rgb_array, to_chw_float
from rfcn.optional import require

# Names shared with rfcn.inference.export, which writes them.
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "labels")
METADATA_CLASS_NAMES = "rfcn_class_names"
METADATA_CONFIG = "rfcn_config"


class OnnxPredictor:
    """An exported model in an onnxruntime session.

    Args:
        path: the ``.onnx`` file.
        score_threshold: detections below it are dropped.
        providers: onnxruntime execution providers; default CPU.

    Raises:
        UserError: onnxruntime is missing, or the file is not an R-FCN ONNX export.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        score_threshold: float = 0.0,
        providers: list[str] | None = None,
    ) -> None:
        onnxruntime = require("onnxruntime", "onnx", os.fspath(path))
        if not os.path.isfile(path):
            raise UserError(path, "file not found")
        try:
            self.session = onnxruntime.InferenceSession(
                os.fspath(path), providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise UserError(path, f"not a loadable ONNX model: {first_line(exc)}") from None
        self.class_names: tuple[str, ...]
        self.config: dict[str, Any]
        self.class_names, self.config = _read_metadata(self.session, path)
        self.score_threshold = score_threshold

    def __call__(self, images: Any) -> Detections | list[Detections]:
        """Detect objects in one image (path, PIL image, ``(H, W, 3)`` array) or a list of them."""
        if isinstance(images, (list, tuple)):
            return [self._detect(image) for image in images]
        return self._detect(images)

    def run_array(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's raw outputs for one ``(3, H, W)`` float32 image in 0..1."""
        values = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: image})
        return dict(zip(OUTPUT_NAMES, values, strict=True))

    def _detect(self, image: Any) -> Detections:
        outputs = self.run_array(to_chw_float(as_rgb_array(image)))
        return Detections.from_arrays(
            outputs["boxes"], outputs["scores"], outputs["labels"], self.class_names
        ).above(self.score_threshold)


def _read_metadata(session: Any, path: str | os.PathLike[str]) -> tuple[tuple[str, ...], dict]:
    """The class names and training config an rfcn export carries in its metadata.

    Raises:
        UserError: the metadata are missing, not UTF-8 or not the JSON ``rfcn export`` writes.
    """
    try:
        metadata = session.get_modelmeta().custom_metadata_map
        if METADATA_CLASS_NAMES not in metadata:
            raise UserError(
                path, "not an rfcn export: the class names are missing from its metadata"
            )
        class_names = json.loads(metadata[METADATA_CLASS_NAMES])
        config = json.loads(metadata.get(METADATA_CONFIG, "{}"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # a damaged file
        raise UserError(path, f"not an rfcn export: unreadable metadata ({exc})") from None
    if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
        raise UserError(path, "not an rfcn export: its class names are not a list of names")
    if not isinstance(config, dict):
        raise UserError(path, "not an rfcn export: its config is not a mapping")
    return tuple(class_names), config
