"""Speed-ups for running a trained detector, shared by the benchmark and the predictors.

Typical use, after the weights are loaded (the wrappers below rename state-dict keys)::

    model = prepare_for_inference(model, channels_last=True)
    autocast_submodules(model, ("backbone",), torch.bfloat16)   # heavy convs in bf16
    with torch.inference_mode():
        detections = model(images)

- :func:`prepare_for_inference`: eval mode, no parameter gradients, optional channels-last
  weights (oneDNN and cuDNN pick NHWC kernels when a conv's input or weight is NHWC, and the
  format then flows through the following layers).
- :func:`autocast_submodules`: runs chosen submodules (the backbone: nearly all the FLOPs)
  under ``torch.autocast`` and casts their outputs back to float32, so RoI pooling, softmax,
  box decoding and NMS keep full precision. bf16 runs on CPUs with AVX512-BF16/AMX and on
  CUDA; :func:`detection_agreement` measures what it changes.
- :func:`compile_submodules`: ``torch.compile`` on chosen submodules (not the whole detector:
  data-dependent proposal counts and NMS break graphs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from rfcn.ops.boxes import box_iou


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


def compile_submodules(model: nn.Module, names: Iterable[str], **options: Any) -> nn.Module:
    """``torch.compile`` each named submodule of ``model`` (in place); ``options`` go to it.

    Compilation happens lazily on the first call for each new input shape.
    """
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, torch.compile(parent.get_submodule(child_name), **options))
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
