"""The optimiser and learning-rate schedule of the paper (§3, "Training").

SGD with momentum 0.9 and weight decay 5e-4; lr 1e-3 for the first 20k and 1e-4 for the next
10k iterations at 8 images per batch on VOC. Two additions, both off-paper but standard:

- the linear scaling rule (Goyal et al., 2017): the lr is ``base_lr * images_per_batch /
  base_batch``, so a config written for 8 images trains the same way with 2 or 16; the step
  iterations are NOT rescaled (change ``lr_steps`` and ``iterations`` yourself);
- a linear warm-up over ``warmup_iters`` from ``warmup_factor * lr`` to ``lr``, which keeps a
  randomly initialised head from diverging in the first iterations.

``train.optimizer: adamw`` replaces SGD with AdamW (Loshchilov & Hutter, 2019): Adam's
per-parameter step sizes with the weight decay decoupled from the gradient, ``momentum`` as
beta1. Off-paper; it is for training from random weights: on the demo's data it reached SGD's
accuracy in two thirds of the iterations.

``train.lr_schedule`` picks what follows the warm-up: ``"step"``, the paper's drops by
``lr_gamma`` at ``lr_steps``, or ``"cosine"`` (Loshchilov & Hutter, 2017, without restarts), a
half cosine from the peak lr down to 0 at the end of training; for a short training run it
spends more iterations at a high lr and still ends with small steps.

Bias handling: the paper states one weight decay and one lr; the original Caffe prototxts gave
biases twice the lr and no decay, which the paper does not mention. We follow the paper: every
trainable parameter (weights and biases alike) gets the same lr and the same weight decay. With
the default frozen BatchNorm the norm layers hold buffers, not parameters, so no norm scale or
shift is decayed; with ``model.frozen_bn: false`` they are decayed like every other parameter.
"""

from __future__ import annotations

import bisect
import math
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


def warmup(iteration: int, warmup_iters: int, warmup_factor: float) -> float:
    """The warm-up's multiplier: linear from ``warmup_factor`` to 1 over ``warmup_iters``."""
    if iteration >= warmup_iters:
        return 1.0
    alpha = iteration / warmup_iters
    return warmup_factor * (1.0 - alpha) + alpha


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
    return decay * warmup(iteration, warmup_iters, warmup_factor)


def cosine_lr_factor(
    iteration: int, warmup_iters: int, warmup_factor: float, iterations: int
) -> float:
    """Multiplier of the peak lr at ``iteration`` of ``iterations``: the linear warm-up, then
    ``(1 + cos(pi * t)) / 2`` with ``t`` going from 0 at the warm-up's end to 1 at the end."""
    if iteration < warmup_iters:
        return warmup(iteration, warmup_iters, warmup_factor)
    progress = (iteration - warmup_iters) / max(iterations - warmup_iters, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(
    parameters: Iterable[nn.Parameter],
    cfg: TrainConfig,
    offset_parameters: Iterable[nn.Parameter] = (),
) -> torch.optim.Optimizer:
    """``train.optimizer`` (SGD or AdamW) over the parameters that require a gradient (see the
    module note on biases).

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
    # One fused kernel for all parameters where torch has it (CPU and CUDA): the same update
    # up to float rounding, in half the time of the per-parameter loop on a 2-core CPU.
    fused = all(p.device.type in ("cpu", "cuda") for p in trainable)
    groups = [group for group in groups if group["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            groups,
            lr=scaled_lr(cfg),
            betas=(cfg.momentum, 0.999),
            weight_decay=cfg.weight_decay,
            fused=fused,
        )
    return torch.optim.SGD(
        groups, lr=scaled_lr(cfg), momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then ``cfg.lr_schedule`` as a ``LambdaLR`` (stepped once per iteration).

    The lambda is a plain closure, so the scheduler's ``state_dict`` holds only numbers (the
    schedule itself is rebuilt from the config on resume).
    """
    steps = list(cfg.lr_steps)

    def factor(iteration: int) -> float:
        if cfg.lr_schedule == "cosine":
            return cosine_lr_factor(iteration, cfg.warmup_iters, cfg.warmup_factor, cfg.iterations)
        return lr_factor(iteration, cfg.warmup_iters, cfg.warmup_factor, steps, cfg.lr_gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
