import pytest
import torch
from torch import nn

from rfcn.config import TrainConfig
from rfcn.engine.optim import (
    build_optimizer,
    build_scheduler,
    cosine_lr_factor,
    lr_factor,
    scaled_lr,
)


def test_linear_scaling_rule() -> None:
    assert scaled_lr(TrainConfig(base_lr=1e-3, images_per_batch=8, base_batch=8)) == 1e-3
    assert scaled_lr(TrainConfig(base_lr=1e-3, images_per_batch=2, base_batch=8)) == 2.5e-4
    assert scaled_lr(TrainConfig(base_lr=1e-3, images_per_batch=16, base_batch=8)) == 2e-3


def test_lr_factor_by_hand() -> None:
    # warm-up over 4 iterations from 0.2: 0.2, 0.4, 0.6, 0.8, then 1; x0.1 from 6, x0.01 from 8
    expected = [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    got = [lr_factor(i, 4, 0.2, [8, 6], 0.1) for i in range(10)]
    assert got == pytest.approx(expected)
    # a step inside the warm-up multiplies the warm-up ramp
    assert lr_factor(1, 4, 0.2, [1], 0.1) == pytest.approx(0.04)
    assert lr_factor(0, 0, 0.2, [], 0.1) == 1.0


def _lrs_of_iterations(cfg: TrainConfig, iterations: int) -> list[float]:
    """The lr each of the first ``iterations`` updates uses, through the real scheduler."""
    weight = nn.Parameter(torch.zeros(3))
    optimizer = build_optimizer([weight], cfg)
    scheduler = build_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(iterations):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_lr_factor_by_hand() -> None:
    # warm-up over 2 iterations from 0.5, then cos over the 4 iterations 2..5 of 6:
    # (1 + cos(pi t)) / 2 at t = 0, 1/4, 1/2, 3/4.
    root_half = 0.5**0.5
    expected = [0.5, 0.75, 1.0, (1 + root_half) / 2, 0.5, (1 - root_half) / 2]
    assert [cosine_lr_factor(i, 2, 0.5, 6) for i in range(6)] == pytest.approx(expected)
    # no warm-up; past the end it stays at 0
    assert cosine_lr_factor(0, 0, 0.5, 4) == 1.0
    assert cosine_lr_factor(9, 0, 0.5, 4) == pytest.approx(0.0)


def test_scheduler_follows_the_cosine_schedule() -> None:
    cfg = TrainConfig(
        base_lr=0.1,
        images_per_batch=2,
        base_batch=2,
        lr_schedule="cosine",
        lr_steps=[1],  # unused by the cosine schedule
        iterations=4,
        warmup_iters=0,
    )
    lrs = _lrs_of_iterations(cfg, 4)
    assert lrs == pytest.approx([0.1 * cosine_lr_factor(i, 0, 1.0, 4) for i in range(4)])
    assert lrs == pytest.approx([0.1, 0.1 * (2 + 2**0.5) / 4, 0.05, 0.1 * (2 - 2**0.5) / 4])


def test_scheduler_follows_the_paper_schedule() -> None:
    # The paper's VOC recipe at 2 images per batch: 2.5e-4 (1e-3 x 2/8), a tenth after step 20k.
    cfg = TrainConfig(
        base_lr=1e-3,
        images_per_batch=2,
        base_batch=8,
        lr_steps=[5],
        warmup_iters=2,
        warmup_factor=0.5,
    )
    lrs = _lrs_of_iterations(cfg, 7)
    peak = 2.5e-4
    assert lrs == pytest.approx([0.5 * peak, 0.75 * peak, peak, peak, peak, peak / 10, peak / 10])


def test_optimizer_is_sgd_with_decay_on_weights_and_biases() -> None:
    layer = nn.Linear(2, 1)
    frozen = nn.Parameter(torch.ones(1), requires_grad=False)
    optimizer = build_optimizer([layer.weight, layer.bias, frozen], TrainConfig())
    assert isinstance(optimizer, torch.optim.SGD)
    (group,) = optimizer.param_groups
    assert group["momentum"] == 0.9
    assert group["weight_decay"] == 5e-4
    assert [p is layer.weight or p is layer.bias for p in group["params"]] == [True, True]


def test_weight_decay_reaches_the_bias() -> None:
    # One step with a zero gradient moves each parameter by -lr * wd * value (paper: decay 5e-4).
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(4.0)
    cfg = TrainConfig(base_lr=0.1, weight_decay=0.5, momentum=0.0)
    optimizer = build_optimizer(layer.parameters(), cfg)
    layer.weight.grad = torch.zeros_like(layer.weight)
    layer.bias.grad = torch.zeros_like(layer.bias)
    optimizer.step()
    assert layer.weight.item() == pytest.approx(2.0 - 0.1 * 0.5 * 2.0)
    assert layer.bias.item() == pytest.approx(4.0 - 0.1 * 0.5 * 4.0)


def test_all_frozen_is_an_error() -> None:
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer([nn.Parameter(torch.ones(1), requires_grad=False)], TrainConfig())


def test_offset_parameters_get_their_lr_factor_under_the_schedule() -> None:
    cfg = TrainConfig(
        base_lr=0.01, images_per_batch=2, base_batch=2, offset_lr_factor=0.1, lr_steps=[1]
    )
    weight, offset = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    frozen = nn.Parameter(torch.ones(1), requires_grad=False)
    optimizer = build_optimizer([weight, offset, frozen], cfg, offset_parameters=[offset, frozen])
    assert [group["params"] for group in optimizer.param_groups] == [[weight], [offset]]
    scheduler = build_scheduler(optimizer, TrainConfig(**{**cfg.__dict__, "warmup_iters": 0}))
    lrs = []
    for _ in range(2):
        lrs += [group["lr"] for group in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.01, 0.001, 0.001, 0.0001])  # (weights, offsets) per step
    # Without offset parameters (a plain R-FCN) there is one group, as before.
    assert len(build_optimizer([weight], cfg).param_groups) == 1


def test_fused_update_equals_the_per_parameter_loop() -> None:
    """On the CPU the optimiser is torch's fused SGD: the same steps as the plain loop."""
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 3, generator=generator), torch.randn(7, generator=generator)]
    grads = [[torch.randn(p.shape, generator=generator) for p in start] for _ in range(4)]
    cfg = TrainConfig(base_lr=0.05, base_batch=8)
    fused_params = [nn.Parameter(p.clone()) for p in start]
    loop_params = [nn.Parameter(p.clone()) for p in start]
    fused = build_optimizer(fused_params, cfg)
    assert fused.param_groups[0]["fused"]
    loop = torch.optim.SGD(
        loop_params, lr=0.05, momentum=0.9, weight_decay=5e-4, foreach=False, fused=False
    )
    for step_grads in grads:
        for optimizer, params in ((fused, fused_params), (loop, loop_params)):
            for param, grad in zip(params, step_grads, strict=True):
                param.grad = grad.clone()
            optimizer.step()
    for a, b in zip(fused_params, loop_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def _adamw_by_hand(
    start: torch.Tensor, grads: list[torch.Tensor], lr: float, beta1: float, wd: float
) -> torch.Tensor:
    """AdamW (Loshchilov & Hutter, 2019, Algorithm 2) written out: decoupled decay, then the
    bias-corrected moment ratio; beta2 0.999 and eps 1e-8 as torch's defaults."""
    beta2, eps = 0.999, 1e-8
    param, first, second = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for step, grad in enumerate(grads, start=1):
        param = param * (1 - lr * wd)
        first = beta1 * first + (1 - beta1) * grad
        second = beta2 * second + (1 - beta2) * grad * grad
        corrected_first = first / (1 - beta1**step)
        corrected_second = second / (1 - beta2**step)
        param = param - lr * corrected_first / (corrected_second.sqrt() + eps)
    return param


def test_adamw_follows_the_written_out_update() -> None:
    generator = torch.Generator().manual_seed(1)
    start = torch.randn(6, generator=generator)
    grads = [torch.randn(6, generator=generator) for _ in range(5)]
    cfg = TrainConfig(
        optimizer="adamw", base_lr=0.01, base_batch=2, images_per_batch=2, weight_decay=0.05
    )
    weight = nn.Parameter(start.clone())
    optimizer = build_optimizer([weight], cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    for grad in grads:
        weight.grad = grad.clone()
        optimizer.step()
    expected = _adamw_by_hand(start, grads, lr=0.01, beta1=0.9, wd=0.05)
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-6)
    # The first step is lr * sign(grad) after the decay, whatever the gradient's scale.
    weight = nn.Parameter(start.clone())
    optimizer = build_optimizer([weight], cfg)
    weight.grad = 1000.0 * grads[0]
    optimizer.step()
    by_sign = start * (1 - 0.01 * 0.05) - 0.01 * grads[0].sign()
    torch.testing.assert_close(weight.detach(), by_sign, rtol=1e-5, atol=1e-6)
