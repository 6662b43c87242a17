"""A tiny PASCAL VOC dataset written by the tests, and a tiny training config on it.

Coloured rectangles ("red" and "blue" objects) on grey JPEGs of ~128 px, with VOC XML files
(1-based inclusive boxes) and ``ImageSets/Main/trainval.txt``, read through the project's own
VOC reader.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from rfcn.config import Config, config_from_dict

COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}
# What every training log entry holds: the losses and the learning rate.
LOSS_KEYS = ("loss", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "lr")


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` inside: runs that must agree bitwise do."""
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


def _annotation(image_id: str, width: int, height: int, objects: list[tuple[str, tuple]]) -> str:
    parts = [
        f"<annotation><filename>{image_id}.jpg</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for name, (x1, y1, x2, y2) in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>"
            f"<ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def write_voc_fixture(root: Path, images: int = 6, seed: int = 0) -> Path:
    """``images`` JPEGs of 128x96 with one or two rectangles each, in VOC layout under root."""
    rng = np.random.default_rng(seed)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = []
    for number in range(images):
        image_id = f"img{number:03d}"
        width, height = 128, 96
        image = Image.new("RGB", (width, height), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        objects = []
        for name in list(COLOURS)[: 1 + number % 2]:
            w, h = (int(v) for v in rng.integers(24, 48, size=2))
            x1, y1 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            draw.rectangle((x1, y1, x1 + w - 1, y1 + h - 1), fill=COLOURS[name])
            objects.append((name, (x1, y1, x1 + w, y1 + h)))
        image.save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        xml = _annotation(image_id, width, height, objects)
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
        ids.append(image_id)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return root


def tiny_config(root: Path, **sections: dict) -> Config:
    """ResNet-18, k=3, 96 px, 2 images a batch, CPU, no workers; ``sections`` override."""
    values: dict = {
        "model": {
            "backbone": "resnet18",
            "k": 3,
            "head_channels": 16,
            "min_size": [96],
            "max_size": 128,
            "anchor_sizes": [32, 64],
            "anchor_ratios": [1.0],
            "rpn_pre_nms_train": 200,
            "rpn_post_nms_train": 32,
            "rpn_pre_nms_test": 200,
            "rpn_post_nms_test": 32,
            "rpn_batch_per_image": 32,
            "ohem_batch_per_image": 16,
            "roi_batch_per_image": 16,
            "num_classes": 2,
        },
        "data": {"roots": [str(root)], "workers": 0, "aspect_grouping": False},
        "train": {
            "iterations": 6,
            "images_per_batch": 2,
            "base_batch": 2,
            "base_lr": 0.01,
            "lr_steps": [4],
            "warmup_iters": 2,
            "warmup_factor": 0.5,
            "log_every": 1,
            "checkpoint_every": 100,
            "tensorboard": False,
            "device": "cpu",
        },
    }
    for section, updates in sections.items():
        values.setdefault(section, {}).update(updates)
    return config_from_dict(values)
