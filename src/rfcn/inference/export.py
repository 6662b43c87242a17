"""The whole detector as one ONNX graph, and how far onnxruntime's detections are from PyTorch's.

The graph covers everything ``model([image])`` does: resize and normalisation
(``model.transform``), backbone, RPN with its NMS, the position-sensitive head (the project's
pure-PyTorch PS-RoI pooling exports as plain ONNX ops, unlike torchvision's), decoding, and the
per-class NMS (ONNX ``NonMaxSuppression``). Input ``image``: ``(3, H, W)`` float32 RGB in 0..1,
H and W dynamic; outputs ``boxes (N, 4)`` in input pixels, ``scores (N,)``, ``labels (N,)``
int64 in 1..C. The class names and the training config ride along in the ONNX metadata.

It uses the ``torch.export``-based exporter (``dynamo=True``), which keeps the image size
symbolic; the TorchScript exporter would bake the size of the example image into the resize.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rfcn.errors import UserError
from rfcn.files import write_bytes
from rfcn.inference.onnx_predictor import (
    INPUT_NAME,
    METADATA_CLASS_NAMES,
    METADATA_CONFIG,
    OUTPUT_NAMES,
)
from rfcn.optional import require

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from rfcn.config import ModelConfig

DEFAULT_OPSET = 18  # the oldest opset the torch.export-based exporter emits natively
# The example traced through the model; any size works, the exported graph keeps H, W symbolic.
_EXAMPLE_SIZE = (480, 640)


def check_exportable(cfg: ModelConfig, source: str) -> None:
    """Raise :class:`~rfcn.errors.UserError` (naming ``source``) for a model the exporter cannot
    trace: torchvision's Faster R-CNN (its NMS branches on the number of boxes) and the C4
    head's RoI pooling (torchvision's ``roi_pool``, which has no ONNX form in the exporter)."""
    if cfg.head == "torchvision":
        raise UserError(
            source,
            "holds torchvision's Faster R-CNN (model.head=torchvision), which does not export "
            "to ONNX (torch.export cannot trace its NMS); R-FCN, light-head and C4 models do",
        )
    if cfg.head == "c4" and cfg.ps_roi_mode == "pool":
        raise UserError(
            source,
            "holds a C4 model with RoI pooling (model.ps_roi_mode=pool), which has no ONNX form "
            "in torch's exporter; a C4 model with ps_roi_mode=align exports",
        )


def single_image_module(model: nn.Module) -> nn.Module:
    """Wrap ``model`` as ``image (3, H, W) -> (boxes (N, 4), scores (N,), labels (N,))``."""
    from torch import nn

    class SingleImage(nn.Module):
        def __init__(self, detector: nn.Module) -> None:
            super().__init__()
            self.detector = detector

        def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            detections = self.detector([image])[0]
            return detections["boxes"], detections["scores"], detections["labels"]

    return SingleImage(model).eval()


def export_program(model: nn.Module) -> torch.export.ExportedProgram:
    """``torch.export`` of the single-image detector with symbolic height and width."""
    import torch

    module = single_image_module(model)
    example = torch.rand((3, *_EXAMPLE_SIZE), generator=torch.Generator().manual_seed(0))
    dynamic = {"image": {1: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC}}
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=dynamic, strict=False)


def export_onnx(
    model: nn.Module,
    class_names: list[str],
    config: dict[str, Any],
    path: Path,
    opset: int = DEFAULT_OPSET,
) -> None:
    """Export ``model`` (eval mode, CPU) to ``path`` as one ONNX graph, atomically.

    Args:
        model: an R-FCN.
        class_names: the C foreground names, stored in metadata ``rfcn_class_names`` (JSON).
        config: ``config_to_dict`` of the model's config, stored in ``rfcn_config`` (JSON).
        path: the ``.onnx`` file to write.
        opset: the ONNX opset.
    """
    import torch

    onnx = require("onnx", "onnx", "ONNX export")
    require("onnxscript", "onnx", "ONNX export")  # torch.onnx's exporter (dynamo=True) runs on it
    program = export_program(model.eval())
    with torch.no_grad():
        onnx_program = torch.onnx.export(
            program,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    proto = onnx_program.model_proto
    onnx.helper.set_model_props(
        proto,
        {METADATA_CLASS_NAMES: json.dumps(list(class_names)), METADATA_CONFIG: json.dumps(config)},
    )
    onnx.checker.check_model(proto)
    write_bytes(path, proto.SerializeToString())


@dataclass
class ParityReport:
    """How far onnxruntime's detections are from PyTorch's on a set of images.

    Each PyTorch detection is paired with the ONNX detection of the same label and a close
    score (within 0.01) that overlaps it most, if the boxes nearly coincide (IoU >= 0.95).
    Float rounding differs between the runtimes, so a detection can legitimately appear on
    one side only: its score sits at the score threshold, its IoU with a neighbour at an NMS
    threshold, or its RoI edge on a bin boundary of the rounding PS-RoI pooling (paper
    Eq. 1), which moves its score. Unpaired detections are therefore counted and their
    highest score reported; ``agrees`` requires every detection of at least ``min_score``
    to be paired, and paired boxes to lie within ``box_tolerance`` px.
    """

    images: int
    detections: int  # PyTorch detections over all images
    paired: int
    max_box_diff: float  # px, over paired detections
    max_score_diff: float
    max_unpaired_score: float  # 0 when every detection, on both sides, is paired

    def agrees(self, min_score: float = 0.5, box_tolerance: float = 1e-3) -> bool:
        return self.max_unpaired_score < min_score and self.max_box_diff < box_tolerance

    def summary(self) -> str:
        return (
            f"onnxruntime vs PyTorch on {self.images} images: {self.paired} of "
            f"{self.detections} detections paired (same label), max box difference "
            f"{self.max_box_diff:.2e} px, max score difference {self.max_score_diff:.2e}, "
            f"highest unpaired score {self.max_unpaired_score:.3f}"
        )


def compare_with_onnx(model: nn.Module, onnx_path: Path, images: list[Any]) -> ParityReport:
    """Run ``model`` and the exported graph on ``(H, W, 3)`` uint8 images and compare."""
    import numpy as np
    import torch

    from rfcn.inference.image_input import to_chw_float
    from rfcn.inference.onnx_predictor import OnnxPredictor
    from rfcn.ops.boxes import box_iou

    onnx_predictor = OnnxPredictor(onnx_path)
    detections = paired = 0
    box_diff = score_diff = unpaired_score = 0.0
    for image in images:
        chw = to_chw_float(image)
        with torch.no_grad():
            expected = {k: v.numpy() for k, v in model.eval()([torch.from_numpy(chw)])[0].items()}
        actual = onnx_predictor.run_array(chw)
        same = (expected["labels"][:, None] == actual["labels"][None, :]) & (
            np.abs(expected["scores"][:, None] - actual["scores"][None, :]) < 0.01
        )  # (K, M)
        overlap = box_iou(torch.from_numpy(expected["boxes"]), torch.from_numpy(actual["boxes"]))
        overlap = np.where(same, overlap.numpy(), 0.0)
        partner = overlap.argmax(axis=1) if overlap.size else np.zeros(0, dtype=np.int64)
        found = overlap.max(axis=1) >= 0.95 if overlap.size else np.zeros(len(partner), bool)
        detections += len(found)
        paired += int(found.sum())
        if found.any():
            ours, theirs = np.flatnonzero(found), partner[found]
            box_diff = max(
                box_diff, float(np.abs(expected["boxes"][ours] - actual["boxes"][theirs]).max())
            )
            score_diff = max(
                score_diff,
                float(np.abs(expected["scores"][ours] - actual["scores"][theirs]).max()),
            )
        lonely_theirs = np.ones(len(actual["scores"]), bool)
        lonely_theirs[partner[found]] = False
        lonely = np.concatenate([expected["scores"][~found], actual["scores"][lonely_theirs]])
        unpaired_score = max(unpaired_score, float(lonely.max(initial=0.0)))
    return ParityReport(len(images), detections, paired, box_diff, score_diff, unpaired_score)
