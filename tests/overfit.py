"""Learning at all: a tiny detector overfit on one synthetic image, shared by the modeling
test that shows it learns and the end-to-end tests that score what it learned.

One grey 96x96 image with one red square of class 2 of 2 ("square"; class 1, "circle", has
no object, so a label off by one scores nothing), 50 AdamW steps from random init (about a
second on one thread). :func:`write_overfit_run` saves the trained model as a real
checkpoint with a config whose test split, in VOC layout, is that image: ``rfcn eval`` on it
must find the square, VOC07 AP 1.0, where a sign error in a loss, targets matched to the
wrong boxes, boxes decoded or written wrongly or a wrong label mapping would not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rfcn.config import Config, config_from_dict, save_config
from rfcn.engine.checkpoint import model_state, save_checkpoint
from rfcn.modeling.rfcn import build_model

CLASS_NAMES = ("circle", "square")
LABEL = 2  # the square's: 1-based, 0 is the background
BOX = (20.0, 30.0, 70.0, 80.0)  # x1, y1, x2, y2 in pixels
SIZE = 96
IMAGE_ID = "square"
STEPS = 50

MODEL: dict[str, Any] = {
    "backbone": "resnet18",
    "backbone_width": 16,
    "num_classes": len(CLASS_NAMES),
    "k": 3,
    "head_channels": 32,
    "head_init": "scaled",
    "freeze_at": 0,
    "min_size": [SIZE],
    "max_size": SIZE,
    "anchor_sizes": [32.0, 64.0],
    "anchor_ratios": [1.0],
    "rpn_channels": 32,
    "rpn_pre_nms_train": 300,
    "rpn_post_nms_train": 50,
    "rpn_pre_nms_test": 200,
    "rpn_post_nms_test": 20,
    "rpn_batch_per_image": 64,
    "roi_batch_per_image": 16,
    "ohem_batch_per_image": 32,
    "score_thresh": 0.05,
}


@dataclass
class Overfit:
    """The trained model (eval mode), its config, the loss of every step, the image and its
    ground-truth ``(1, 4)`` box."""

    model: torch.nn.Module
    cfg: Config
    history: list[float]
    image: torch.Tensor
    box: torch.Tensor


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread inside: on a few busy shared cores two threads of these tiny models
    run tens of times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def square_image() -> torch.Tensor:
    """``(3, SIZE, SIZE)`` in [0, 1]: grey, with a red square at :data:`BOX`; every value a
    multiple of 1/255 plus less than half a step, so a PNG of it reads back the same."""
    image = torch.full((3, SIZE, SIZE), 0.4)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    image[:, y1:y2, x1:x2] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    return image


def overfit_config(data_root: Path, **model: Any) -> Config:
    """:data:`MODEL` (``model`` overrides) on the VOC ``test`` split under ``data_root``."""
    return config_from_dict(
        {
            "model": {**MODEL, **model},
            "data": {
                "format": "voc",
                "roots": [str(data_root)],
                "class_names": list(CLASS_NAMES),
                "test_split": "test",
                "workers": 0,
            },
            "train": {"device": "cpu"},
            "eval": {"scales": [SIZE]},
            "output_dir": str(data_root / "run"),
        }
    )


def overfit(cfg: Config, steps: int = STEPS, seed: int = 0) -> Overfit:
    """Build ``cfg.model`` with ``seed`` and train it ``steps`` AdamW steps (lr 2e-3) on
    :func:`square_image` alone, on one thread."""
    with one_thread():
        return _overfit(cfg, steps, seed)


def _overfit(cfg: Config, steps: int, seed: int) -> Overfit:
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    image = square_image()
    box = torch.tensor([BOX])
    target = {"boxes": box, "labels": torch.tensor([LABEL])}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-3, weight_decay=0.0)
    history = []
    model.train()
    for _ in range(steps):
        loss = sum(model([image], [target]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return Overfit(model.eval(), cfg, history, image, box)


def write_voc_image(root: Path) -> Path:
    """:func:`square_image` as the one image of a VOC ``test`` split under ``root`` (PNG, so
    the pixels read back exactly; the XML 1-based inclusive)."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    pixels = (square_image() * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(root / "JPEGImages" / f"{IMAGE_ID}.png")
    x1, y1, x2, y2 = (int(v) for v in BOX)
    (root / "Annotations" / f"{IMAGE_ID}.xml").write_text(
        f"<annotation><filename>{IMAGE_ID}.png</filename>"
        f"<size><width>{SIZE}</width><height>{SIZE}</height><depth>3</depth></size>"
        f"<object><name>{CLASS_NAMES[LABEL - 1]}</name><difficult>0</difficult><bndbox>"
        f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
        "</bndbox></object></annotation>"
    )
    (root / "ImageSets" / "Main" / "test.txt").write_text(f"{IMAGE_ID}\n")
    return root


def write_overfit_run(trained: Overfit, folder: Path) -> tuple[Path, Path]:
    """``(config.yaml, model.pt)`` in ``folder``: ``trained`` saved as a checkpoint, with its
    config, whose data root must hold :func:`write_voc_image`'s split."""
    folder.mkdir(parents=True, exist_ok=True)
    save_config(trained.cfg, folder / "config.yaml")
    state = {**model_state(trained.model, trained.cfg, list(CLASS_NAMES)), "iteration": STEPS}
    save_checkpoint(folder / "model.pt", state)
    return folder / "config.yaml", folder / "model.pt"
