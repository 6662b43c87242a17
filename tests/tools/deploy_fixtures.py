"""A tiny R-FCN checkpoint and config for the deploy tests (eval, detect, export, robustness),
and a VOC test split of images of several sizes.

ResNet-18, k = 3, 128 px images, the 6 classes of the synthetic dataset. The weights are
random, but the class convolution is drawn with a large spread so that detections have
well-separated scores: comparisons (ONNX vs PyTorch, eval vs evaluate) then do not hinge on
near-ties, as they would with the paper's 0.01-std initialisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from rfcn.config import Config, config_from_dict
from rfcn.data.synthetic import CLASS_NAMES
from rfcn.engine.checkpoint import model_state, save_checkpoint
from rfcn.inference.predictor import Predictor
from rfcn.modeling.rfcn import build_model

TINY_MODEL: dict[str, Any] = {
    "backbone": "resnet18",
    "k": 3,
    "head_channels": 16,
    "num_classes": len(CLASS_NAMES),
    "min_size": [128],
    "max_size": 160,
    "anchor_sizes": [32, 64, 128],
    "anchor_ratios": [1.0],
    "rpn_pre_nms_test": 200,
    "rpn_post_nms_test": 30,
    "score_thresh": 0.05,
}


def tiny_config(data_root: Path, **model: Any) -> Config:
    """The tiny model on a 4-image synthetic test split generated into ``data_root``."""
    return config_from_dict(
        {
            "model": {**TINY_MODEL, **model},
            "data": {
                "format": "synthetic",
                "roots": [str(data_root)],
                "synthetic_train_images": 1,
                "synthetic_test_images": 4,
                "synthetic_image_size": 128,
                "workers": 0,
            },
            "train": {"device": "cpu"},
            "eval": {"scales": [128]},
            "output_dir": str(data_root / "run"),
        }
    )


def write_checkpoint(path: Path, cfg: Config, seed: int = 0) -> Path:
    """A checkpoint of a seeded random model for ``cfg`` (format of rfcn.engine.checkpoint)."""
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with torch.no_grad():
        model.head.cls_conv.weight.normal_(std=0.5)
        model.head.reduce.weight.normal_(std=0.1)
    state = {**model_state(model, cfg, list(CLASS_NAMES)), "iteration": 0}
    save_checkpoint(path, state)
    return path


def write_voc_test_split(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    """A VOC-layout ``test`` split under ``root``: noise JPEGs of the given (width, height),
    each with one filled rectangle annotated as a synthetic class (cycling through them)."""
    rng = np.random.default_rng(seed)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = []
    for number, (width, height) in enumerate(sizes):
        image_id = f"img{number:03d}"
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        x1, y1 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x2, y2 = x1 + width // 3, y1 + height // 3
        pixels[y1:y2, x1:x2] = rng.integers(0, 256, size=3, dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        name = CLASS_NAMES[number % len(CLASS_NAMES)]
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>{width}</width><height>{height}</height></size>"
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>"
            f"<ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            "</annotation>"
        )
        ids.append(image_id)
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    return root


def record_batches(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[int, ...]]]:
    """The shapes of the images of every forward pass Predictors run from now on, a list per
    batch (the list fills as they run)."""
    batches: list[list[tuple[int, ...]]] = []
    run_batch = Predictor._predict_batch

    def spy(self: Predictor, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        batches.append([tuple(image.shape) for image in images])
        return run_batch(self, images)

    monkeypatch.setattr(Predictor, "_predict_batch", spy)
    return batches
