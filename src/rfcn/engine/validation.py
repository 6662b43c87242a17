"""Validation during training (``train.eval_every``): score the model being trained on
``data.val_split`` every N iterations and at the end, and keep the best weights.

Scoring runs the one evaluation path of ``rfcn eval`` (:mod:`rfcn.evaluation.runner`): every
process detects its shard of the split and rank 0 scores the gathered detections in memory
with ``eval.metric`` (its headline number: the mAP for VOC metrics, AP for COCO).

It must not change training, and does not: the model runs in eval mode (BatchNorm statistics
untouched) under ``torch.inference_mode``, and afterwards every module's train/eval flag, every
parameter's ``requires_grad`` and every random generator the trainer draws from (Python, NumPy,
torch CPU and CUDA; the evaluation loader draws its seed from torch's) are put back as they
were, so a seeded run computes bitwise the same losses and weights with validation on or off.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

from torch import nn

from rfcn.config import Config
from rfcn.data.build import build_dataset
from rfcn.engine.distributed import broadcast_buffers
from rfcn.engine.rng import capture_rng_state, restore_rng_state
from rfcn.evaluation.evaluator import evaluate_detections
from rfcn.evaluation.report import HEADLINE
from rfcn.evaluation.runner import (
    check_test_classes,
    detect_dataset,
    ground_truth_source,
    test_predictor,
)

BEST_CHECKPOINT = "model_best.pt"


def validation_config(cfg: Config) -> Config:
    """A copy of ``cfg`` whose test split is ``data.val_split`` (when given)."""
    validation = copy.deepcopy(cfg)
    if cfg.data.val_split:
        validation.data.test_split = cfg.data.val_split
    return validation


@contextlib.contextmanager
def training_state_kept(model: nn.Module) -> Iterator[None]:
    """Whatever runs inside may put ``model`` in eval mode, freeze its parameters and draw
    random numbers: on exit (an exception included) every module's ``training`` flag, every
    parameter's ``requires_grad`` and every RNG state are as they were on entry."""
    rng = capture_rng_state()
    modes = [(module, module.training) for module in model.modules()]
    grads = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for parameter, requires_grad in grads:
            parameter.requires_grad_(requires_grad)
        restore_rng_state(rng)


class Validator:
    """The validation split of a run, its schedule and the best score so far.

    Built on every process before training starts, so a missing or mismatched split stops the
    run at once.

    Args:
        cfg: the run's resolved config (class names from the training data).

    Attributes:
        name: the headline metric's name (``"mAP"`` or ``"AP"``).
        skipped: with ``data.skip_unreadable``, the validation images that cannot be read,
            file -> problem: left out of every validation (they count as images with no
            detections).
        best: ``{"metric", "name", "value", "iteration"}`` of the best validation so far (rank
            0), or None; saved in ``last.pt`` so a resumed run keeps it.

    Raises:
        UserError: the validation split cannot be read, or its classes are not the model's;
            while evaluating, an image that cannot be read.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = validation_config(cfg)
        self.every = cfg.train.eval_every
        self.name = HEADLINE[cfg.eval.metric]
        self.truth = ground_truth_source(self.cfg)
        self.dataset = build_dataset(self.cfg.data, train=False)
        check_test_classes(self.dataset, cfg.data.class_names, "data.val_split")
        # Decided once, before training, on every process alike (the shards stay disjoint).
        self.skipped = self.dataset.drop_unreadable() if cfg.data.skip_unreadable else {}
        self.best: dict[str, Any] | None = None

    def due(self, done: int, total: int) -> bool:
        """Whether to validate after ``done`` of the stage's ``total`` iterations."""
        return self.every > 0 and (done % self.every == 0 or done == total)

    def evaluate(self, model: nn.Module) -> dict[str, Any] | None:
        """Score ``model`` (the bare module, not its DDP wrapper) on the validation split;
        every process must call it. Returns the metrics on rank 0, None on the others."""
        broadcast_buffers(model)
        cfg = self.cfg
        with training_state_kept(model):
            predictor = test_predictor(model, cfg.data.class_names, cfg)
            detections = detect_dataset(predictor, self.dataset, cfg, progress=False)
        if detections is None:
            return None
        return evaluate_detections(
            detections,
            cfg.data.class_names,
            cfg.eval.metric,
            iou_thresh=cfg.eval.iou_thresh,
            **self.truth,
        ).metrics

    def offer(self, value: float | None, iteration: int) -> bool:
        """Keep ``value`` (at ``iteration``, counted over all stages) as the best when it beats
        the best so far, and say whether it did. Higher is better, the earlier value wins a
        tie, and a value that cannot be computed (no ground truth) never wins."""
        if value is None or (self.best is not None and value <= self.best["value"]):
            return False
        self.best = {
            "metric": self.cfg.eval.metric,
            "name": self.name,
            "value": value,
            "iteration": iteration,
        }
        return True
