"""An exponential moving average of the weights being trained, the model a run delivers.

Polyak averaging (Polyak & Juditsky, 1992) as TensorFlow's ``ExponentialMovingAverage`` does
it: after update ``n`` the average moves towards the trained weights by ``1 - d_n``, with
``d_n = min(decay, (1 + n) / (10 + n))`` so that the first, random weights are soon forgotten.
Not in the R-FCN paper, and off by default (``train.ema_decay: 0``): on the demo's schedule the
average did not score above the trained weights over seeds. BatchNorm's running statistics are
averaged with the weights; integer buffers (``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfcn.engine.checkpoint import saved_weights
from rfcn.errors import UserError
from rfcn.modeling.weights import load_weights


class WeightAverage:
    """The running average of ``model``'s parameters and buffers, held in a frozen copy.

    Args:
        model: the model being trained, already on its device and in its layout; the average
            starts from its current state and follows its tensors, which optimisers and
            ``load_state_dict`` update in place.
        decay: the largest ``d_n`` (0 < decay < 1); ``1 / (1 - decay)`` iterations is roughly
            the span the average covers.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).requires_grad_(False).eval()
        averaged = self.model.state_dict(keep_vars=True)
        trained = model.state_dict(keep_vars=True)
        floating = {name for name, value in averaged.items() if value.is_floating_point()}
        self._averaged = [averaged[name].data for name in averaged if name in floating]
        self._trained = [trained[name].data for name in averaged if name in floating]
        self._copied = [
            (averaged[name].data, trained[name].data) for name in averaged if name not in floating
        ]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the trained model (after each optimiser step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._averaged, self._trained, 1.0 - decay)
        for target, source in self._copied:
            target.copy_(source)

    def state_dict(self) -> dict[str, Any]:
        """What a training state saves to resume the average exactly."""
        return {"model": saved_weights(self.model), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        """Restore :meth:`state_dict`'s output; ``source`` names the file in errors.

        Raises:
            UserError: ``state`` is not such an output, or its weights do not fit the model.
        """
        if not (
            isinstance(state, dict)
            and isinstance(state.get("model"), dict)
            and isinstance(state.get("updates"), int)
        ):
            raise UserError(source, "its weight_average entry is not a saved weight average")
        load_weights(self.model, state["model"], source)
        self.updates = state["updates"]
