"""The self-test of ``rfcn doctor``: the parts of R-FCN whose results depend on the machine,
run on every available device, each compared with a reference or checked for its contract.

Checks, per device (the CPU always, then each CUDA device):

* PS-RoI pooling in both modes and deformable PS-RoI pooling, forward and backward in float32,
  against the same computation on the CPU in float64: on a GPU this compares the device with
  the CPU, on the CPU it catches float32 kernels (AVX512, AMX, oneDNN) that lose precision;
* one training step of a tiny R-FCN under the autocast the device supports (bf16 where it is
  native, fp16 with loss scaling on older GPUs, else float32): finite losses and gradients,
  and weights that moved;
* one detection with that model: the output contract, and on a GPU the CPU's best score;
* once, where the ``onnx`` extra is installed: an ONNX export run by onnxruntime, against
  PyTorch's detections.

A check passes or fails with a one-line reason; it never raises. The whole test takes a few
seconds on a 2-core CPU plus the export (about 20 s).
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rfcn.config import ModelConfig
from rfcn.data.synthetic import render_image
from rfcn.engine.stage_run import autocast_dtype
from rfcn.errors import first_line
from rfcn.modeling.rfcn import RFCN, build_model
from rfcn.ops import deform_ps_roi_pool, ps_roi_pool

OK, FAILED, SKIPPED = "ok", "FAILED", "skipped"
# float32 against float64 of values of order 1: float32 rounding is ~1e-7 relative, so a
# 1e-4 relative error is a kernel computing something else, not rounding.
OP_TOLERANCE = 1e-4
# Best detection score on a GPU against the CPU: TF32 convolutions (CUDA's default) round
# at ~1e-3 relative through the backbone.
SCORE_TOLERANCE = 0.02
_K, _CLASSES, _IMAGE_SIZE = 3, 2, 128


class CheckFailed(Exception):
    """A check's result is wrong; the message says how, in one line."""


@dataclass(frozen=True)
class CheckResult:
    """One check on one device: ``status`` is ``ok``, ``FAILED`` or ``skipped``; ``detail``
    is the reason for FAILED and skipped, the measured error or setting for ok."""

    name: str
    device: str
    status: str
    seconds: float
    detail: str


def self_test_devices() -> list[torch.device]:
    """The CPU, then every visible CUDA device."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [torch.device("cpu"), *(torch.device("cuda", i) for i in range(count))]


def run_self_test(
    devices: list[torch.device] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run every check on ``devices`` (default :func:`self_test_devices`); ``on_result`` sees
    each result as it comes (to print it)."""
    results = []
    for name, device, check in _checks(devices or self_test_devices()):
        result = _run_check(name, device, check)
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results


def format_result(result: CheckResult) -> str:
    """``device  name  ok (detail)  1.23 s`` or ``... FAILED: reason``."""
    if result.status == OK:
        outcome = f"ok ({result.detail})" if result.detail else "ok"
    else:
        outcome = f"{result.status}: {result.detail}"
    return f"  {result.device:<7} {result.name:<26} {outcome}  {result.seconds:.2f} s"


def _checks(devices: list[torch.device]) -> Iterator[tuple[str, str, Callable[[], str]]]:
    for device in devices:
        label = str(device)
        for mode in ("pool", "align"):
            yield f"ps_roi_pool[{mode}]", label, lambda d=device, m=mode: check_ps_roi_pool(d, m)
        yield "deform_ps_roi_pool", label, lambda d=device: check_deform_ps_roi_pool(d)
        yield "training step", label, lambda d=device: check_training_step(d)
        yield "detection", label, lambda d=device: check_detection(d)
    yield "onnx export + onnxruntime", "cpu", check_onnx_export


def _run_check(name: str, device: str, check: Callable[[], str]) -> CheckResult:
    started = time.perf_counter()
    try:
        status, detail = OK, check()
    except _Skip as skip:
        status, detail = SKIPPED, str(skip)
    except CheckFailed as exc:
        status, detail = FAILED, str(exc)
    except Exception as exc:  # a doctor reports every failure, it does not stop at the first
        status, detail = FAILED, f"{type(exc).__name__}: {first_line(exc)}"
    return CheckResult(name, device, status, round(time.perf_counter() - started, 3), detail)


class _Skip(Exception):
    """The check cannot run here (an extra is missing); the message says why."""


# --- the pooling ops -----------------------------------------------------------------------


def _pooling_inputs(offsets: bool) -> dict[str, Tensor]:
    """Float64 CPU inputs: ``features (2, k²D, 12, 16)`` (D = 4), ``rois (6, 5)`` with
    integer corners (the "pool" mode rounds them: no half-pixel ties), and for the deformable
    op ``offsets (6, 2, k, k)``."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, _K * _K * 4, 12, 16, generator=generator, dtype=torch.float64)
    # feature maps of 12x16 cells at stride 8: images of 96x128 px; RoIs 8 px or more a side
    xs = torch.randint(0, 120, (6, 2), generator=generator).sort(dim=1).values.double()
    ys = torch.randint(0, 88, (6, 2), generator=generator).sort(dim=1).values.double()
    xs[:, 1] += 8
    ys[:, 1] += 8
    batch = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    rois = torch.stack((batch, xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]), dim=1)
    inputs = {"features": features, "rois": rois}
    if offsets:
        inputs["offsets"] = 0.5 * torch.randn(
            6, 2, _K, _K, generator=generator, dtype=torch.float64
        )
    return inputs


def _compare_op(op: Callable[..., Tensor], inputs: dict[str, Tensor], device: torch.device) -> str:
    """Run ``op(**inputs)`` forward and backward in float32 on ``device`` and in float64 on the
    CPU, and compare the outputs and the gradients of every floating input but the RoIs."""
    differentiable = [name for name in inputs if name != "rois"]

    def run(dtype: torch.dtype, where: torch.device) -> list[Tensor]:
        moved = {
            name: value.to(where, dtype, copy=True).requires_grad_(name in differentiable)
            for name, value in inputs.items()
        }
        output = op(**moved)
        upstream = torch.linspace(-1.0, 1.0, output.numel(), dtype=torch.float64)
        output.backward(upstream.reshape(output.shape).to(where, dtype))
        return [output, *(moved[name].grad for name in differentiable)]

    expected = run(torch.float64, torch.device("cpu"))
    actual = run(torch.float32, device)
    worst = 0.0
    for what, got, want in zip(
        ["output", *(f"gradient of {n}" for n in differentiable)], actual, expected, strict=True
    ):
        error = (got.detach().cpu().double() - want).abs().max().item()
        scale = max(want.abs().max().item(), 1e-12)
        if not error <= OP_TOLERANCE * scale:  # also catches NaN
            raise CheckFailed(
                f"{what} differs from the float64 CPU computation by {error / scale:.1e} "
                f"(relative; tolerance {OP_TOLERANCE:.0e})"
            )
        worst = max(worst, error / scale)
    return f"max relative error {worst:.1e}"


def check_ps_roi_pool(device: torch.device, mode: str) -> str:
    """PS-RoI pooling (``mode`` "pool" or "align") on ``device`` against float64 on the CPU."""

    def op(features: Tensor, rois: Tensor) -> Tensor:
        return ps_roi_pool(features, rois, _K, spatial_scale=1 / 8, mode=mode)

    return _compare_op(op, _pooling_inputs(offsets=False), device)


def check_deform_ps_roi_pool(device: torch.device) -> str:
    """Deformable PS-RoI pooling on ``device`` against float64 on the CPU, with the offsets'
    gradient."""

    def op(features: Tensor, rois: Tensor, offsets: Tensor) -> Tensor:
        return deform_ps_roi_pool(features, rois, offsets, _K, spatial_scale=1 / 8)

    return _compare_op(op, _pooling_inputs(offsets=True), device)


# --- the model -----------------------------------------------------------------------------


def tiny_model(device: torch.device) -> RFCN:
    """A random-init R-FCN on a narrow ResNet-18 (k=3, 2 classes, 128 px), seeded."""
    cfg = ModelConfig(
        backbone="resnet18",
        backbone_width=16,
        num_classes=_CLASSES,
        k=_K,
        head_channels=32,
        frozen_bn=False,  # BatchNorm in training mode: batch statistics under autocast too
        freeze_at=0,
        min_size=(_IMAGE_SIZE,),
        max_size=_IMAGE_SIZE,
        anchor_sizes=(16.0, 32.0, 64.0),
        rpn_channels=32,
        rpn_pre_nms_train=300,
        rpn_post_nms_train=64,
        rpn_pre_nms_test=300,
        rpn_post_nms_test=32,
        rpn_batch_per_image=64,
        ohem_batch_per_image=16,
        score_thresh=0.0,  # random weights score low: keep every detection
    )
    torch.manual_seed(0)
    return build_model(cfg).to(device)


def _synthetic_images(count: int) -> tuple[list[np.ndarray], list[dict[str, Tensor]]]:
    """``count`` synthetic test images ``(H, W, 3)`` uint8 and their targets (2 classes)."""
    arrays, targets = [], []
    for index in range(count):
        image, objects = render_image(0, "test", index, _IMAGE_SIZE)
        arrays.append(np.array(image))
        targets.append(
            {
                "boxes": torch.tensor([o.box for o in objects], dtype=torch.float32),
                "labels": torch.tensor([1 + o.label % _CLASSES for o in objects]),
            }
        )
    return arrays, targets


def _as_tensor(image: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255.0).to(device)


def training_autocast(device: torch.device) -> torch.dtype | None:
    """The autocast dtype training uses on ``device`` (``train.amp: auto``), and fp16 on a GPU
    without bf16 (``train.amp: fp16``, with loss scaling)."""
    dtype = autocast_dtype("auto", device)
    if dtype is None and device.type == "cuda":
        return torch.float16
    return dtype


def check_training_step(device: torch.device) -> str:
    """One SGD step of :func:`tiny_model` on two images under :func:`training_autocast`."""
    model = tiny_model(device).train()
    arrays, targets = _synthetic_images(2)
    images = [_as_tensor(a, device) for a in arrays]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    dtype = training_autocast(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        losses = model(images, targets)
    loss = sum(losses.values())
    values = {name: value.item() for name, value in losses.items()}
    if not all(np.isfinite(list(values.values()))):
        raise CheckFailed(f"losses are not finite: {values}")
    scaler.scale(loss).backward()
    for name, parameter in model.named_parameters():
        if parameter.grad is None or not torch.isfinite(parameter.grad).all():
            raise CheckFailed(f"gradient of {name} is missing or not finite")
    scaler.step(optimizer)
    scaler.update()
    moved = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    if moved < len(before) // 2:
        raise CheckFailed(f"the step changed {moved} of {len(before)} weight tensors")
    precision = "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"
    return f"{precision}, loss {loss.item():.3f}"


def _detect(device: torch.device) -> dict[str, Tensor]:
    arrays, _ = _synthetic_images(1)
    with torch.inference_mode():
        return tiny_model(device).eval()([_as_tensor(arrays[0], device)])[0]


def check_detection(device: torch.device) -> str:
    """One detection with :func:`tiny_model`: boxes, scores and labels as the contract says,
    and on a non-CPU device the CPU's best score."""
    found = _detect(device)
    boxes, scores, labels = found["boxes"].cpu(), found["scores"].cpu(), found["labels"].cpu()
    count = len(scores)
    if count == 0 or boxes.shape != (count, 4) or labels.shape != (count,):
        raise CheckFailed(f"shapes boxes {tuple(boxes.shape)}, labels {tuple(labels.shape)}")
    inside = (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= _IMAGE_SIZE).all()
    if not (inside and (boxes[:, 2:] >= boxes[:, :2]).all()):
        raise CheckFailed("boxes outside the image or with negative size")
    if not ((scores[:-1] >= scores[1:]).all() and scores.min() >= 0 and scores.max() <= 1):
        raise CheckFailed("scores not in 0..1 in decreasing order")
    if labels.min() < 1 or labels.max() > _CLASSES:
        raise CheckFailed(f"labels outside 1..{_CLASSES}")
    if device.type != "cpu":
        expected = _detect(torch.device("cpu"))["scores"][0].item()
        if abs(scores[0].item() - expected) > SCORE_TOLERANCE:
            raise CheckFailed(f"best score {scores[0].item():.4f}, on the CPU {expected:.4f}")
    return f"{count} detections"


def check_onnx_export() -> str:
    """Export :func:`tiny_model` to ONNX and run it with onnxruntime: every PyTorch detection
    must come back with the same label and box."""
    missing = [
        m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise _Skip(f'{", ".join(missing)} not installed: pip install "rfcn[onnx]"')
    from rfcn.inference.export import compare_with_onnx, export_onnx

    model = tiny_model(torch.device("cpu")).eval()
    arrays, _ = _synthetic_images(1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.onnx"
        with warnings.catch_warnings():  # torchvision's deprecation notices while tracing
            warnings.simplefilter("ignore", FutureWarning)
            export_onnx(model, ["a", "b"], {}, path)
        report = compare_with_onnx(model, path, arrays)
    # every detection on both sides paired (no unpaired score at all), at the same boxes
    if report.paired < report.detections or not report.agrees(min_score=1e-9):
        raise CheckFailed(report.summary())
    return f"{report.paired} detections match"
