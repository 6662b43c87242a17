"""Checkpoint files: atomic saving, safe loading, and rebuilding a trained model.

A checkpoint is a dict (``format_version`` 1) saved with :func:`torch.save`:

- ``"model"``: the model's state dict; ``"config"``: ``config_to_dict`` of the resolved config;
  ``"class_names"``: the C foreground names (index ``label - 1``); ``"iteration"``: iterations
  done in ``"stage"`` (the training stage's name, e.g. ``"end_to_end"``);
- the rolling training checkpoint (``last.pt``) adds ``"optimizer"``, ``"scheduler"``,
  ``"grad_scaler"`` (or None) and ``"rng"`` (:mod:`rfcn.engine.rng`) for an exact resume; the
  final weights (``model_final.pt``) leave them out to stay small.

Everything in it is a tensor, number, string, list or dict, so it loads with
``torch.load(weights_only=True)``: opening a checkpoint never runs code from the file. Every
file carries a SHA-256 of its bytes, checked on every read (:mod:`rfcn.engine.integrity`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rfcn.config import Config, config_from_dict, config_to_dict, with_test_settings
from rfcn.engine.integrity import seal, verify
from rfcn.errors import UserError, first_line
from rfcn.files import printable_path, write_bytes
from rfcn.modeling.rfcn import build_model
from rfcn.modeling.weights import load_weights

FORMAT_VERSION = 1

# Model settings that change which parameters exist or their shapes; a difference in one of
# them explains a failed load better than a list of tensor names.
_STRUCTURE_KEYS = (
    "backbone",
    "head",
    "k",
    "head_channels",
    "box_mode",
    "deformable_psroi",
    "deformable_conv5",
)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, sealed with its digest (:func:`integrity.seal
    <rfcn.engine.integrity.seal>`): a temp file in the same folder, fsync, then a rename.

    A failure (or Ctrl-C) while writing leaves any older file at ``path`` untouched and no temp
    file behind. The checkpoint is serialised in memory first (one extra copy of its size,
    briefly).

    Raises:
        UserError: the file cannot be written (a full disk, no permission), naming it.
    """
    path = Path(path)
    existed = path.is_file()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, seal(buffer.getvalue()))
    except OSError as exc:
        kept = "the previous file is intact" if existed else "nothing was written"
        raise UserError(
            printable_path(path), f"cannot write the checkpoint: {exc.strerror or exc}; {kept}"
        ) from None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a checkpoint's integrity (:func:`integrity.verify
    <rfcn.engine.integrity.verify>`), then read it with ``torch.load(weights_only=True)`` onto
    the CPU: every checkpoint read in rfcn goes through here.

    Raises:
        UserError: the file is missing, unreadable, damaged, not a checkpoint, or of another
            format.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(path, "checkpoint file not found")
    try:
        # One open file for both: what was verified is what is loaded.
        with path.open("rb") as handle:
            verify(handle, str(path))
            handle.seek(0)
            state = torch.load(handle, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # arbitrary bytes make torch.load raise almost any type
        raise UserError(
            path, f"cannot read checkpoint (corrupt or not a checkpoint): {first_line(exc)}"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(path, "not an rfcn checkpoint (no model weights and config in it)")
    weights, config = state["model"], state["config"]
    if not isinstance(weights, dict) or not all(
        isinstance(v, torch.Tensor) for v in weights.values()
    ):
        raise UserError(path, "not an rfcn checkpoint (its model weights are not tensors by name)")
    if not isinstance(config, dict):
        raise UserError(path, "not an rfcn checkpoint (its config is not a mapping)")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(
            path, f"checkpoint format version {version!r}, this rfcn reads {FORMAT_VERSION}"
        )
    return state


def checkpoint_config(path: str | os.PathLike[str], state: dict[str, Any]) -> Config:
    """The :class:`Config` saved in a checkpoint, or a UserError naming the file."""
    try:
        return config_from_dict(state["config"])
    except UserError as exc:
        raise UserError(path, f"config saved in the checkpoint is invalid: {exc}") from None


def _structure_mismatch(saved: Config, wanted: Config) -> str | None:
    """One sentence on the first model setting that makes the weights not fit, if any."""
    have, want = saved.model.num_classes, wanted.model.num_classes
    if have != want:
        return (
            f"checkpoint has {have + 1}-way classifier ({have} classes), "
            f"config expects {want + 1} ({want} classes)"
        )
    keys = _STRUCTURE_KEYS
    if wanted.model.deformable_conv5 != "none":
        keys += ("deformable_conv5_groups",)  # the shapes of its offset convs
    if wanted.model.head == "light_head":
        keys += ("light_head_alpha", "light_head_kernel", "light_head_fc_channels")
    for key in keys:
        have, want = getattr(saved.model, key), getattr(wanted.model, key)
        if have != want:
            return f"checkpoint was trained with model.{key}={have}, config has model.{key}={want}"
    have_anchors = len(saved.model.anchor_sizes) * len(saved.model.anchor_ratios)
    want_anchors = len(wanted.model.anchor_sizes) * len(wanted.model.anchor_ratios)
    if have_anchors != want_anchors:
        return f"checkpoint has {have_anchors} anchors per position, config has {want_anchors}"
    return None


def load_model(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    cfg: Config | None = None,
    test_settings: Config | None = None,
) -> tuple[nn.Module, Config, list[str]]:
    """Rebuild a trained model from a checkpoint, in eval mode on ``device``.

    Args:
        path: a checkpoint from :func:`save_checkpoint` (``model_final.pt`` or ``last.pt``).
        device: where the model goes.
        cfg: build the model from this config instead of the one saved in the checkpoint (e.g.
            ``rfcn eval --config``, which may change test-time settings); its model structure
            must match the checkpoint's.
        test_settings: take the test-time settings (:data:`rfcn.config.TEST_TIME_SETTINGS`:
            NMS, box voting, scales, ...) from this config and the rest from ``cfg`` or the
            checkpoint's (so its resolved classes stay).

    Returns:
        ``(model, cfg, class_names)``; ``cfg`` is the config the model was built from.

    Raises:
        UserError: unreadable checkpoint, or weights that do not fit the config (the message
            names the mismatch, e.g. the number of classes).
    """
    state = load_checkpoint(path)
    saved_cfg = checkpoint_config(path, state)
    cfg = saved_cfg if cfg is None else cfg
    if test_settings is not None:
        cfg = with_test_settings(cfg, test_settings)
    mismatch = _structure_mismatch(saved_cfg, cfg)
    if mismatch is not None:
        raise UserError(path, mismatch)
    class_names = list(state.get("class_names") or cfg.data.class_names)
    if len(class_names) != cfg.model.num_classes:
        raise UserError(
            path,
            f"checkpoint lists {len(class_names)} class names for {cfg.model.num_classes} classes",
        )
    model = build_model(cfg.model)
    load_weights(model, state["model"], path)
    return model.to(device).eval(), cfg, class_names


def saved_weights(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s state dict as checkpoints hold it: contiguous whatever layout the model
    trained in (``train.memory_format``), so that every checkpoint holds the same layout."""
    return {name: value.contiguous() for name, value in model.state_dict().items()}


def model_state(model: nn.Module, cfg: Config, class_names: list[str]) -> dict[str, Any]:
    """The part of a checkpoint every consumer needs: weights (:func:`saved_weights`), config
    and class names."""
    return {
        "format_version": FORMAT_VERSION,
        "model": saved_weights(model),
        "config": config_to_dict(cfg),
        "class_names": list(class_names),
    }
