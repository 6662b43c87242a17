"""The optimiser and learning-rate schedule of the paper (§3, "Training").

SGD with momentum 0.9 and weight decay 5e-4; lr 1e-3 for the first 20k and 1e-4 for the next
10k iterations at 8 images per batch on VOC. Two additions, both off-paper but standard:

- the linear scaling rule (Goyal et al., 2017): the lr is ``base_lr * images_per_batch /
  base_batch``, so a config written for 8 images trains the same way with 2 or 16; the step
  iterations are NOT rescaled (change ``lr_steps`` and ``iterations`` yourself);
- a linear warm-up over ``warmup_iters`` from ``warmup_factor * lr`` to ``lr``, which keeps a
  randomly initialised head from diverging in the first iterations.

Bias handling: the paper states one weight decay and one lr; the original Caffe prototxts gave
biases twice the lr and no decay, which the paper does not mention. We follow the paper: every
trainable parameter (weights and biases alike) gets the same lr and the same weight decay. With
the default frozen BatchNorm the norm layers hold buffers, not parameters, so no norm scale or
shift is decayed; with ``model.frozen_bn: false`` they are decayed like every other parameter.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from rfcn.config import TrainConfig


def scaled_lr(cfg: TrainConfig) -> float:
    """The peak lr after the linear scaling rule: ``base_lr * images_per_batch / base_batch``.

    ``images_per_batch`` is the total batch over all processes (as the paper's 8 images on 8
    GPUs), so the lr does not change with the number of processes that share it.
    """
    return cfg.base_lr * cfg.images_per_batch / cfg.base_batch


def lr_factor(
    iteration: int,
    warmup_iters: int,
    warmup_factor: float,
    steps: Sequence[int],
    gamma: float,
) -> float:
    """Multiplier of the peak lr at ``iteration`` (0-based: the lr of the iteration's update).

    Linear warm-up from ``warmup_factor`` to 1 over ``warmup_iters`` iterations, times
    ``gamma ** (number of steps <= iteration)``.
    """
    decay = gamma ** bisect.bisect_right(sorted(steps), iteration)
    if iteration >= warmup_iters:
        return decay
    alpha = iteration / warmup_iters
    return decay * (warmup_factor * (1.0 - alpha) + alpha)


def build_optimizer(
    parameters: Iterable[nn.Parameter],
    cfg: TrainConfig,
    offset_parameters: Iterable[nn.Parameter] = (),
) -> torch.optim.SGD:
    """SGD over the parameters that require a gradient (see the module note on biases).

    Those also in ``offset_parameters`` (the layers that predict deformable offsets) form a
    second parameter group whose lr is ``train.offset_lr_factor`` times the others'; the
    schedule scales both groups alike.
    """
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameters: every parameter is frozen")
    offsets = {id(p) for p in offset_parameters}
    groups = [
        {"params": [p for p in trainable if id(p) not in offsets]},
        {
            "params": [p for p in trainable if id(p) in offsets],
            "lr": scaled_lr(cfg) * cfg.offset_lr_factor,
        },
    ]
    return torch.optim.SGD(
        [group for group in groups if group["params"]],
        lr=scaled_lr(cfg),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then step decay as a ``LambdaLR`` (stepped once per iteration).

    The lambda is a plain closure, so the scheduler's ``state_dict`` holds only numbers (the
    schedule itself is rebuilt from the config on resume).
    """
    steps = list(cfg.lr_steps)

    def factor(iteration: int) -> float:
        return lr_factor(iteration, cfg.warmup_iters, cfg.warmup_factor, steps, cfg.lr_gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
