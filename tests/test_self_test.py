"""The self-test of ``rfcn doctor`` compares values: a wrong op, forward or backward, fails."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rfcn import self_test
from rfcn.ops import deform_ps_roi_pool, ps_roi_pool
from rfcn.self_test import (
    FAILED,
    OK,
    SKIPPED,
    CheckFailed,
    CheckResult,
    check_deform_ps_roi_pool,
    check_ps_roi_pool,
    format_result,
    run_self_test,
)

CPU = torch.device("cpu")


class _ScaledGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``factor`` (a wrong kernel)."""

    @staticmethod
    def forward(ctx, value: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def _wrong_in_float32(inputs: str = "features", forward: float = 1.0, backward: float = 1.0):
    """An op that equals the real one in float64 but is off in float32: scaled output
    (``forward``) or scaled gradient of ``inputs`` (``backward``); on the CPU the float64
    reference then disagrees, as a broken float32 kernel would."""

    def wrap(real):
        def wrong(*args, **kwargs):
            args = list(args)
            position = {"features": 0, "offsets": 2}[inputs]
            if args[0].dtype == torch.float32:
                args[position] = _ScaledGradient.apply(args[position], backward)
                return real(*args, **kwargs) * forward
            return real(*args, **kwargs)

        return wrong

    return wrap


@pytest.mark.parametrize("mode", ["pool", "align"])
def test_ps_roi_pool_passes_and_reports_its_error(mode: str) -> None:
    detail = check_ps_roi_pool(CPU, mode)
    assert detail.startswith("max relative error ")
    assert float(detail.split()[-1]) < self_test.OP_TOLERANCE


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (_wrong_in_float32(forward=1.001), "output differs"),
        (_wrong_in_float32(backward=0.999), "gradient of features differs"),
    ],
)
def test_a_wrong_ps_roi_pool_is_caught(monkeypatch: pytest.MonkeyPatch, wrong, message) -> None:
    monkeypatch.setattr(self_test, "ps_roi_pool", wrong(ps_roi_pool))
    with pytest.raises(
        CheckFailed, match=rf"{message} from the float64 CPU computation by 1\.0e-03"
    ):
        check_ps_roi_pool(CPU, "align")


def test_a_nan_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        self_test, "ps_roi_pool", _wrong_in_float32(forward=float("nan"))(ps_roi_pool)
    )
    with pytest.raises(CheckFailed, match=r"output differs .* by nan"):
        check_ps_roi_pool(CPU, "pool")


def test_a_wrong_offset_gradient_of_deformable_pooling_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert check_deform_ps_roi_pool(CPU).startswith("max relative error ")
    wrong = _wrong_in_float32("offsets", backward=1.01)(deform_ps_roi_pool)
    monkeypatch.setattr(self_test, "deform_ps_roi_pool", wrong)
    with pytest.raises(CheckFailed, match="gradient of offsets differs"):
        check_deform_ps_roi_pool(CPU)


def test_a_failing_or_raising_check_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_detection(device: torch.device) -> str:
        raise RuntimeError("kernel crashed\nsecond line")

    def no_onnx() -> str:
        raise self_test._Skip('onnx not installed: pip install "rfcn[onnx]"')

    monkeypatch.setattr(self_test, "check_training_step", lambda device: "stub")
    monkeypatch.setattr(self_test, "check_detection", broken_detection)
    monkeypatch.setattr(self_test, "check_onnx_export", no_onnx)
    seen: list[CheckResult] = []
    results = run_self_test([CPU], on_result=seen.append)
    assert seen == results
    assert [(r.name, r.device, r.status) for r in results] == [
        ("ps_roi_pool[pool]", "cpu", OK),
        ("ps_roi_pool[align]", "cpu", OK),
        ("deform_ps_roi_pool", "cpu", OK),
        ("training step", "cpu", OK),
        ("detection", "cpu", FAILED),
        ("onnx export + onnxruntime", "cpu", SKIPPED),
    ]
    assert results[4].detail == "RuntimeError: kernel crashed"
    assert format_result(results[4]).split()[:4] == ["cpu", "detection", "FAILED:", "RuntimeError:"]
    assert all(r.seconds >= 0 for r in results)


def test_training_step_and_detection_pass_on_the_cpu() -> None:
    detail = self_test.check_training_step(CPU)
    autocast = self_test.training_autocast(CPU)
    assert detail.startswith("float32" if autocast is None else "bfloat16 autocast")
    assert self_test.check_detection(CPU).endswith(" detections")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_check_passes_on_the_gpu() -> None:
    device = torch.device("cuda", 0)
    for check in (
        lambda: check_ps_roi_pool(device, "pool"),
        lambda: check_ps_roi_pool(device, "align"),
        lambda: check_deform_ps_roi_pool(device),
        lambda: self_test.check_training_step(device),
        lambda: self_test.check_detection(device),
    ):
        check()
