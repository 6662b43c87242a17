"""Loading a state dict into a module, with an error that names what does not fit."""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import Tensor, nn

from rfcn.errors import UserError


def _names(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_weights(
    model: nn.Module,
    weights: dict[str, Tensor],
    source: str | os.PathLike[str],
    ignored: Callable[[str], bool] | None = None,
) -> None:
    """``model.load_state_dict(weights)``, or a UserError naming what does not fit.

    Args:
        model: the module to fill.
        weights: parameter name -> tensor.
        source: the file the weights came from, named in the error.
        ignored: keys it is true for are neither required nor loaded (say, an ImageNet
            ResNet's ``fc.`` classifier, which the backbone never uses).

    Raises:
        UserError: keys missing from ``weights``, keys the model lacks, or shapes that differ.
    """
    kept = (lambda key: True) if ignored is None else (lambda key: not ignored(key))
    expected = {k: v for k, v in model.state_dict().items() if kept(k)}
    given = {k: v for k, v in weights.items() if kept(k)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [
        f"{k} {tuple(given[k].shape)} in checkpoint vs {tuple(v.shape)} in model"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)}")
    if reshaped:
        problems.append(f"shape mismatch {_names(reshaped, 1)}")
    if problems:
        raise UserError(source, "weights do not fit the model: " + "; ".join(problems))
    model.load_state_dict(given, strict=ignored is None)
