"""Training augmentation applied in the dataset (paper §3: horizontal flip only).

Resizing and normalisation happen inside the model (``model.transform``), so they are not
here. Every random choice is drawn from an explicit ``torch.Generator``: the training loader
seeds one per sample from (seed, position in the sample stream), which makes a run, and a
resumed run, draw exactly the same flips whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rfcn.data.dataset import Target, Transform


def hflip_boxes(boxes: Tensor, width: int | float) -> Tensor:
    """Mirror ``(N, 4)`` x1,y1,x2,y2 boxes in an image ``width`` pixels wide.

    In continuous coordinates the pixel span ``[x1, x2)`` maps to ``[width - x2, width - x1)``.
    """
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


class RandomHorizontalFlip:
    """Flip the image ``(3, H, W)`` and its target boxes left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(
        self, image: Tensor, target: Target, generator: torch.Generator | None
    ) -> tuple[Tensor, Target]:
        if torch.rand((), generator=generator).item() >= self.p:
            return image, target
        width = image.shape[-1]
        return image.flip(-1), {**target, "boxes": hflip_boxes(target["boxes"], width)}


class Compose:
    """Apply ``transforms`` in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: Tensor, target: Target, generator: torch.Generator | None
    ) -> tuple[Tensor, Target]:
        for transform in self.transforms:
            image, target = transform(image, target, generator)
        return image, target
