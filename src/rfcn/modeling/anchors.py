"""Anchors of the Region Proposal Network (Faster R-CNN §3.1): sizes x ratios at every position."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def cell_anchors(sizes: tuple[float, ...], ratios: tuple[float, ...]) -> Tensor:
    """The ``A = len(ratios) * len(sizes)`` anchors of one position, centred on 0: ``(A, 4)``.

    ``ratio`` is height / width and an anchor of ``size`` s has area s² (as Faster R-CNN; the
    original code rounds widths to whole pixels, we keep them exact). Order: ratio-major.
    """
    rows = []
    for ratio in ratios:
        for size in sizes:
            width = size / math.sqrt(ratio)
            height = size * math.sqrt(ratio)
            rows.append((-width / 2, -height / 2, width / 2, height / 2))
    return torch.tensor(rows, dtype=torch.float32)


class AnchorGenerator(nn.Module):
    """Anchors for a feature map of the given stride.

    Position ``(y, x)`` of the map is centred on input pixel ``((x + 0.5) s, (y + 0.5) s)``, the
    centre of its ``s x s`` cell (py-faster-rcnn's base anchor ``[0, 0, 15, 15]`` has the same
    centre in its inclusive coordinates).
    """

    def __init__(self, sizes: tuple[float, ...], ratios: tuple[float, ...], stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.register_buffer("cell", cell_anchors(sizes, ratios), persistent=False)

    @property
    def num_anchors(self) -> int:
        """A, the number of anchors per position."""
        return self.cell.shape[0]

    def forward(self, height: int, width: int) -> Tensor:
        """All anchors of a ``height x width`` map: ``(height * width * A, 4)``, order (y, x, a)."""
        device = self.cell.device
        centres_x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * self.stride
        centres_y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * self.stride
        grid_y, grid_x = torch.meshgrid(centres_y, centres_x, indexing="ij")  # (H, W) each
        shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=-1).reshape(-1, 1, 4)  # (HW,1,4)
        return (shifts + self.cell[None]).reshape(-1, 4)
