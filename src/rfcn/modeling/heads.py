"""What the detector needs of a head, and the box-regression slots every head shares.

:class:`~rfcn.modeling.rfcn.RFCN` runs any of its interchangeable heads (``model.head``: R-FCN's
position-sensitive head, the light head, the C4 counterpart) through this interface only:

    head(conv5, rois) -> (class_logits, box_deltas)

    conv5         (B, C5, h, w) what the backbone's conv5 returns (conv4 for the C4 head,
                  whose backbone conv5 is the identity)
    rois          (K, 5) [image index, x1, y1, x2, y2] in network pixels
    class_logits  (K, C + 1)
    box_deltas    (K, M, 4), M by ``head.box_mode`` (:func:`num_box_slots`)

Nothing of a head's insides (its maps, layers or pooling) is read by the model; pictures of a
head's maps ask the head itself (:mod:`rfcn.visualize`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

from torch import Tensor, nn

# Box deltas per RoI, by box mode: class-agnostic (the R-FCN and Light-Head papers' text), the
# original R-FCN code's "agnostic" with a background and a foreground slot, class-specific.
BOX_MODES = ("agnostic", "agnostic8", "class")
# Initialisations of a head's learnt layers (model.head_init, model.light_head_init): the
# original codes' small Gaussians, or ones scaled by fan-in for a backbone trained from random
# weights.
HEAD_INITS = ("gaussian", "scaled")


class DetectorHead(Protocol):
    """A head :class:`~rfcn.modeling.rfcn.RFCN` can train and run (module docstring)."""

    box_mode: str

    def __call__(self, conv5: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]: ...


def num_box_slots(box_mode: str, num_classes: int) -> int:
    """How many 4-vectors of deltas the head predicts per RoI."""
    if box_mode not in BOX_MODES:
        raise ValueError(f"box_mode must be one of {BOX_MODES}, got {box_mode!r}")
    return {"agnostic": 1, "agnostic8": 2, "class": num_classes}[box_mode]


def check_head_init(init: str) -> None:
    """Raise ValueError unless ``init`` is one of :data:`HEAD_INITS`."""
    if init not in HEAD_INITS:
        raise ValueError(f"init must be one of {HEAD_INITS}, got {init!r}")


def box_slot_of_label(labels: Tensor, box_mode: str) -> Tensor:
    """``(N,)`` int64 slot holding the deltas for each label (background rows: any valid slot).

    "agnostic8" regresses foreground RoIs with slot 1; slot 0 (background) is never trained nor
    used, exactly as the original code's 8-channel class-agnostic regression.
    """
    if box_mode == "agnostic":
        return labels.new_zeros(labels.shape)
    if box_mode == "agnostic8":
        return (labels > 0).long()
    return (labels - 1).clamp(min=0)


@contextlib.contextmanager
def kept_running_stats(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in training mode without its BatchNorm layers' running statistics
    changing (OHEM's read-only ranking pass, :meth:`rfcn.modeling.rfcn.RFCN._head_losses`)."""
    saved = {
        name: buffer.clone()
        for name, buffer in module.named_buffers()
        if name.rpartition(".")[2] in ("running_mean", "running_var", "num_batches_tracked")
    }
    try:
        yield
    finally:
        buffers = dict(module.named_buffers())
        for name, value in saved.items():
            buffers[name].copy_(value)
