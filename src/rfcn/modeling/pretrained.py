"""Pretrained backbone weights: torchvision's ImageNet files, or a state-dict file of the user's.

``model.pretrained: imagenet`` goes through torchvision's weights API
(``ResNet101_Weights.IMAGENET1K_V1.get_state_dict``): the file is downloaded once into the torch
hub cache (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``) with a
progress bar and torchvision's SHA-256 check, and read from there afterwards. With
``RFCN_OFFLINE=1`` nothing is downloaded. Whatever stops the weights from arriving (offline, no
network, an HTTP error, a hash mismatch, a corrupt cached file) is one :class:`UserError` that
says where the file belongs and how to name a local file instead.

Files are read with ``torch.load(weights_only=True)``: no code from a weights file ever runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from rfcn.errors import UserError, first_line
from rfcn.modeling.weights import load_weights

OFFLINE_VARIABLE = "RFCN_OFFLINE"
_TRUE_WORDS = ("1", "true", "yes", "on")


def offline() -> bool:
    """True when ``RFCN_OFFLINE`` is 1 (or true/yes/on): never download."""
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() in _TRUE_WORDS


def cache_path(weights: WeightsEnum) -> Path:
    """Where torch hub keeps ``weights``' file: ``<torch.hub.get_dir()>/checkpoints/<name>``."""
    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_pretrained(net: nn.Module, pretrained: str, weights_enum: type[WeightsEnum]) -> None:
    """Load ``pretrained`` (``"imagenet"`` or a state-dict path) into the torchvision ResNet
    ``net``; its ``fc`` layer may be absent from the file.

    Args:
        net: the ResNet (``conv1 bn1 layer1..layer4``, with or without ``fc``).
        pretrained: ``"imagenet"``, or the path of a torchvision ResNet state-dict file.
        weights_enum: torchvision's weights of this net (``ResNet101_Weights``, ...).

    Raises:
        UserError: the weights cannot be had (see the module docstring), cannot be read, or
            do not fit ``net``.
    """
    if pretrained == "imagenet":
        weights = _preferred_imagenet_weights(weights_enum)
        state, source = imagenet_state_dict(weights), cache_path(weights)
    else:
        state, source = read_state_dict(Path(pretrained)), Path(pretrained)
    load_weights(net, state, source, _not_in_backbone)


def _not_in_backbone(key: str) -> bool:
    """Keys of a ResNet state dict the backbone neither needs nor takes: the ImageNet
    classifier, and BatchNorm's batch counters (absent from FrozenBatchNorm2d and from
    torchvision's older files; BatchNorm2d starts its own)."""
    return key.startswith("fc.") or key.endswith(".num_batches_tracked")


def _preferred_imagenet_weights(weights_enum: type[WeightsEnum]) -> WeightsEnum:
    """IMAGENET1K_V1 (the classic recipe), unless only another variant is already cached."""
    variants = sorted(weights_enum, key=lambda w: w.name != "IMAGENET1K_V1")
    return next((w for w in variants if cache_path(w).is_file()), variants[0])


def imagenet_state_dict(weights: WeightsEnum) -> dict[str, Tensor]:
    """``weights``' state dict from the torch hub cache, downloaded there first if absent (with
    a progress bar on stderr: a one-time download of tens to hundreds of megabytes).

    Raises:
        UserError: offline with nothing cached, a failed download (network, HTTP, hash
            mismatch), or a cached file that cannot be read.
    """
    path = cache_path(weights)
    cached = path.is_file()
    what = f"torchvision's {type(weights).__name__}.{weights.name}"
    instead = "or set model.pretrained=/path/to/weights.pth to use a local state-dict file"
    if not cached and offline():
        raise UserError(
            "model.pretrained",
            f"{what} is not in the torch hub cache and {OFFLINE_VARIABLE}=1 forbids downloading "
            f"it: put {weights.url} at {path}, {instead}",
        )
    try:
        state = weights.get_state_dict(
            progress=True, check_hash=True, map_location="cpu", weights_only=True
        )
    except Exception as exc:  # urllib, hashing and torch.load each raise their own types
        if cached:
            raise UserError(
                path,
                f"cached {what} cannot be read ({first_line(exc)}): delete it to download it "
                f"again, {instead}",
            ) from None
        raise UserError(
            "model.pretrained",
            f"cannot download {what} from {weights.url} ({first_line(exc)}): put the file at "
            f"{path}, {instead}",
        ) from None
    return _checked_state_dict(state, path)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A ResNet state dict (parameter name -> tensor) from ``path``.

    Raises:
        UserError: the file is missing, unreadable or holds something else.
    """
    if not path.is_file():
        raise UserError(path, "pretrained weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on arbitrary bytes
        raise UserError(path, f"cannot read as a PyTorch state dict: {first_line(exc)}") from None
    return _checked_state_dict(state, path)


def _checked_state_dict(state: object, source: Path) -> dict[str, Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(
            source, "expected a torchvision ResNet state dict (parameter name -> tensor)"
        )
    return state
