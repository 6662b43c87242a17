"""Speed-ups for running a trained detector, shared by the benchmark and the predictors.

Typical use, after the weights are loaded (the wrappers below rename state-dict keys)::

    model = optimize_for_inference(model, channels_last=True, bf16="convs")
    with torch.inference_mode():
        detections = model(images)

- :func:`prepare_for_inference`: eval mode, no parameter gradients, optional channels-last
  weights (oneDNN and cuDNN pick NHWC kernels when a conv's input or weight is NHWC, and the
  format then flows through the following layers).
- :func:`autocast_submodules`: runs chosen submodules (the backbone: nearly all the FLOPs)
  under ``torch.autocast`` and casts their outputs back to float32, so RoI pooling, softmax,
  box decoding and NMS keep full precision. bf16 runs on CPUs with AVX512-BF16/AMX and on
  CUDA; :func:`detection_agreement` measures what it changes.
- :func:`compile_submodules`: ``torch.compile`` with weight freezing on chosen submodules (not
  the whole detector: data-dependent proposal counts and NMS break graphs).
- :func:`optimize_for_inference`: all of the above for an R-FCN in one call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rfcn.ops.boxes import box_iou

# Where nearly all of R-FCN's FLOPs are: the backbone, then the RPN's 3x3 conv and the
# head's convs (submodule paths of rfcn.modeling.rfcn.RFCN). The C4 counterpart
# (model.head: c4) runs conv5 per RoI as "head.conv5"; its "backbone.conv5" is the identity.
# The light head's convs are its large separable conv, "head.separable".
BACKBONE_MODULES = ("backbone.trunk", "backbone.conv5", "head.conv5")
CONV_MODULES = (
    *BACKBONE_MODULES,
    "rpn.head",
    "head.reduce",
    "head.cls_conv",
    "head.box_conv",
    "head.separable",
)
BF16_SCOPES = {"backbone": BACKBONE_MODULES, "convs": CONV_MODULES}


def bf16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 convolutions natively (CUDA; CPUs with AVX512-BF16 or AMX).

    Elsewhere autocast to bf16 still works but is emulated, and slower than float32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def optimize_for_inference(
    model: nn.Module,
    channels_last: bool = False,
    bf16: Literal["backbone", "convs"] | None = None,
    compile_backbone: bool = False,
) -> nn.Module:
    """:func:`prepare_for_inference`, then bf16 autocast over ``BF16_SCOPES[bf16]`` and
    ``torch.compile`` of the backbone, as asked (in place, on an :class:`~rfcn.modeling.rfcn.RFCN`).

    ``bf16="backbone"`` keeps the RPN and head convs in float32; ``"convs"`` runs them in bf16
    too (the benchmark's ``bf16_agreement`` reports what each costs in accuracy).
    """
    prepare_for_inference(model, channels_last=channels_last)
    if bf16 is not None:
        autocast_submodules(model, present_modules(model, BF16_SCOPES[bf16]), torch.bfloat16)
    if compile_backbone:
        compile_submodules(model, present_modules(model, BACKBONE_MODULES))
    return model


def present_modules(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Those of the dotted ``names`` that are submodules of ``model`` holding parameters (an
    R-FCN has no ``head.conv5``, the C4 counterpart no ``head.reduce`` and a parameterless
    ``backbone.conv5``)."""
    present = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if next(module.parameters(), None) is not None:
            present.append(name)
    return present


def prepare_for_inference(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """Put ``model`` in eval mode with frozen parameters (in place); optionally NHWC weights."""
    model.eval()
    model.requires_grad_(False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _to_float32(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_to_float32(v) for v in value)
    if isinstance(value, list):
        return [_to_float32(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


class AutocastModule(nn.Module):
    """Runs ``module`` under ``torch.autocast(dtype)``; floating outputs come back as float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        device_type = next(self.module.parameters()).device.type
        with torch.autocast(device_type, dtype=self.dtype):
            outputs = self.module(*args, **kwargs)
        return _to_float32(outputs)

    def __getattr__(self, name: str) -> Any:
        # Attributes of the wrapped module (``stride``, ``conv5`` ...) stay reachable.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


def autocast_submodules(model: nn.Module, names: Iterable[str], dtype: torch.dtype) -> nn.Module:
    """Replace each named child of ``model`` by an :class:`AutocastModule` (in place).

    Names are dotted paths (``"backbone"``, ``"backbone.conv5"``). Apply after loading weights:
    the wrapped parameters' state-dict keys gain a ``.module`` component.
    """
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, AutocastModule(parent.get_submodule(child_name), dtype))
    return model


class FrozenCompiledModule(nn.Module):
    """``torch.compile(module)`` whose (re)compilations run with Inductor's ``freezing``.

    Freezing treats the weights as constants, so Inductor folds them and pre-packs them for
    oneDNN on the CPU (seen here: ResNet-18 1.3x faster than eager; without freezing, no faster).
    It takes effect only under ``torch.no_grad``/``inference_mode`` and is set per call rather
    than globally, so other compiled code in the process is not affected.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.compiled = torch.compile(module, dynamic=False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # Imported here: loading Inductor takes about a second, and only compiled models need it.
        from torch._inductor import config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("compiled"), name)


def compile_submodules(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Replace each named submodule of ``model`` by a :class:`FrozenCompiledModule` (in place).

    Compilation happens on the first call for each new input shape (tens of seconds for a
    ResNet on a CPU), so warm up with the image size that will be used.
    """
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, FrozenCompiledModule(parent.get_submodule(child_name)))
    return model


def detection_agreement(
    reference: list[dict[str, Tensor]],
    candidate: list[dict[str, Tensor]],
    iou_threshold: float = 0.5,
) -> dict[str, float | int]:
    """How far ``candidate`` detections stray from ``reference`` ones, over all images.

    Each reference detection is paired with the candidate detection of the same label that
    overlaps it most (IoU >= ``iou_threshold``); ``matched_fraction`` is the share paired.
    Over the pairs: the largest coordinate difference (pixels) and the largest score difference.

    Args:
        reference, candidate: per image, ``{"boxes": (N, 4), "labels": (N,), "scores": (N,)}``.
    """
    total = matched = 0
    max_box_diff = max_score_diff = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        total += len(ref["boxes"])
        if not len(ref["boxes"]) or not len(cand["boxes"]):
            continue
        same_label = ref["labels"][:, None] == cand["labels"][None, :]  # (N, M)
        iou = box_iou(ref["boxes"].float(), cand["boxes"].float()) * same_label
        best_iou, best = iou.max(dim=1)  # (N,)
        paired = best_iou >= iou_threshold
        matched += int(paired.sum())
        if paired.any():
            box_diff = (ref["boxes"][paired] - cand["boxes"][best[paired]]).abs().max()
            score_diff = (ref["scores"][paired] - cand["scores"][best[paired]]).abs().max()
            max_box_diff = max(max_box_diff, float(box_diff))
            max_score_diff = max(max_score_diff, float(score_diff))
    return {
        "reference_detections": total,
        "candidate_detections": sum(len(c["boxes"]) for c in candidate),
        "matched_fraction": matched / total if total else 1.0,
        "max_box_diff_px": max_box_diff,
        "max_score_diff": max_score_diff,
    }
