"""The position-sensitive head of R-FCN (paper §2, Fig. 1-2): score maps, PS-RoI pooling, voting.

Every learnable layer is a convolution on the whole image, computed once; the per-RoI part is
PS-RoI pooling and an average, with no learnable layer after it (paper §2).

With ``deformable=True`` it is the head of Deformable ConvNets' R-FCN (Dai et al., ICCV 2017,
§2.2 and its public code): two sibling 1x1 convs on the reduced features give offset maps, one
offset group per class for the class maps (``2k²(C+1)`` channels) and one group for the box maps
(``2k²``). PS-RoI pooling those maps without offsets gives each RoI's normalised bin offsets
``(K, 2G, k, k)``; the class and box maps are then pooled by deformable PS-RoI pooling with
those offsets (trans_std 0.1, 4x4 samples per bin). The offset convs start at zero, so training
starts with every bin in its regular place.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from rfcn.modeling.deformable_conv import OffsetConv2d
from rfcn.modeling.heads import box_slot_of_label as box_slot_of_label  # its former home
from rfcn.modeling.heads import check_head_init, num_box_slots
from rfcn.ops import deform_ps_roi_pool, ps_roi_pool, ps_roi_vote

# The original deformable R-FCN's settings: bins move by offset * 0.1 * RoI size (the paper's
# gamma), and each bin averages 4 x 4 bilinear samples (``sample_per_part``).
DEFORMABLE_TRANS_STD = 0.1
DEFORMABLE_SAMPLING_RATIO = 4


class ScoreMaps(NamedTuple):
    """The head's maps over the whole image (offset maps only for a deformable head)."""

    cls: Tensor  # (B, k²(C+1), h, w), channel (c * k + i) * k + j: class c, bin (i, j)
    box: Tensor  # (B, 4Mk², h, w)
    cls_offsets: Tensor | None  # (B, 2k²(C+1), h, w): x, y offset maps per class, class-major
    box_offsets: Tensor | None  # (B, 2k², h, w): one x, y pair for every box channel


class RFCNHead(nn.Module):
    """conv5 features -> position-sensitive maps -> per-RoI class logits and box deltas.

    Args:
        in_channels: conv5 channels (2048, or 512 for ResNet-18/34).
        head_channels: width of the randomly initialised 1x1 conv that reduces conv5 (1024).
        num_classes: foreground classes C (the head scores C + 1 with background).
        k: bins per side of the k x k grid.
        box_mode: one of :data:`~rfcn.modeling.heads.BOX_MODES`.
        spatial_scale: feature-map pixels per network-input pixel (1/16 with à trous conv5).
        ps_roi_mode: "pool" (Eq. 1 of the paper) or "align" (bilinear).
        sampling_ratio: bilinear samples per bin side in "align" mode.
        init: "gaussian" (std 0.01 everywhere, the original prototxt's fillers) or "scaled"
            (He init for ``reduce``, std ``1/sqrt(head_channels)`` for ``cls_conv``; ``box_conv``
            keeps std 0.01 so the first boxes stay near the RoIs).
        deformable: deformable PS-RoI pooling (module docstring); ``ps_roi_mode`` is then
            unused.
    """

    def __init__(
        self,
        in_channels: int,
        head_channels: int,
        num_classes: int,
        k: int,
        box_mode: str,
        spatial_scale: float,
        ps_roi_mode: str = "pool",
        init: str = "gaussian",
        sampling_ratio: int = 2,
        deformable: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.k = k
        self.box_mode = box_mode
        self.spatial_scale = spatial_scale
        self.ps_roi_mode = ps_roi_mode
        self.sampling_ratio = sampling_ratio
        self.num_box_slots = num_box_slots(box_mode, num_classes)
        self.reduce = nn.Conv2d(in_channels, head_channels, kernel_size=1)
        self.cls_conv = nn.Conv2d(head_channels, k * k * (num_classes + 1), kernel_size=1)
        self.box_conv = nn.Conv2d(head_channels, k * k * 4 * self.num_box_slots, kernel_size=1)
        check_head_init(init)
        for conv in (self.reduce, self.cls_conv, self.box_conv):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        if init == "scaled":
            # Two stacked std-0.01 layers give a features x weights product near zero, whose
            # gradients are small both ways; a head on frozen from-scratch features learned
            # faster with this init (probe in the issue 5 note).
            nn.init.kaiming_normal_(self.reduce.weight, nonlinearity="relu")
            nn.init.normal_(self.cls_conv.weight, std=head_channels**-0.5)
        self.deformable = deformable
        self.trans_std = DEFORMABLE_TRANS_STD
        if deformable:
            self.cls_offset_conv = OffsetConv2d.zeros(
                head_channels, 2 * k * k * (num_classes + 1), 1
            )
            self.box_offset_conv = OffsetConv2d.zeros(head_channels, 2 * k * k, 1)

    def score_maps(self, conv5: Tensor) -> ScoreMaps:
        """``conv5 (B, C5, h, w)`` -> the class and box maps (and offset maps if deformable)."""
        reduced = nn.functional.relu(self.reduce(conv5))
        cls_offsets = box_offsets = None
        if self.deformable:
            cls_offsets = self.cls_offset_conv(reduced)
            box_offsets = self.box_offset_conv(reduced)
        return ScoreMaps(self.cls_conv(reduced), self.box_conv(reduced), cls_offsets, box_offsets)

    def bin_offsets(self, offset_maps: Tensor, rois: Tensor) -> Tensor:
        """Normalised bin offsets ``(K, 2G, k, k)`` of ``rois (K, 5)``: ``offset_maps (B, 2Gk²,
        h, w)`` PS-RoI pooled without offsets (channel 2g: x of group g, 2g + 1: y). Bin (i, j)
        of group g moves by ``offset * trans_std`` times the RoI's width (x) and height (y)."""
        return deform_ps_roi_pool(
            offset_maps, rois, None, self.k, self.spatial_scale, DEFORMABLE_SAMPLING_RATIO
        )

    def pool(self, maps: Tensor, rois: Tensor, offset_maps: Tensor | None = None) -> Tensor:
        """``maps (B, k²D, h, w)`` pooled over ``rois (K, 5)``: ``(K, D, k, k)``; by PS-RoI
        pooling, or deformable PS-RoI pooling with the bin offsets of ``offset_maps``."""
        if offset_maps is None:
            return ps_roi_pool(
                maps, rois, self.k, self.spatial_scale, self.ps_roi_mode, self.sampling_ratio
            )
        return deform_ps_roi_pool(
            maps,
            rois,
            self.bin_offsets(offset_maps, rois),
            self.k,
            self.spatial_scale,
            DEFORMABLE_SAMPLING_RATIO,
            self.trans_std,
        )

    def vote(self, maps: Tensor, rois: Tensor, offset_maps: Tensor | None = None) -> Tensor:
        """Pool ``maps`` over ``rois (K, 5)`` (:meth:`pool`) and average the k² bins: ``(K, D)``
        (without offsets by :func:`~rfcn.ops.ps_roi_vote`, the same numbers with a faster backward).

        Eq. (2) of the paper sums the bins; we average, as the original code's global average
        pooling after the PS-RoI layer: the same up to the constant k², which only rescales the
        logits the layer before learns.
        """
        if offset_maps is None:
            return ps_roi_vote(
                maps, rois, self.k, self.spatial_scale, self.ps_roi_mode, self.sampling_ratio
            )
        return self.pool(maps, rois, offset_maps).mean(dim=(2, 3))

    def forward(self, conv5: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """``conv5 (B, C5, h, w)``, ``rois (K, 5)`` as ``[image index, x1, y1, x2, y2]`` in
        network-input pixels -> class logits ``(K, C + 1)``, box deltas ``(K, M, 4)``.
        """
        maps = self.score_maps(conv5)
        if self.deformable:
            class_logits = self.vote(maps.cls, rois, maps.cls_offsets)
            box_votes = self.vote(maps.box, rois, maps.box_offsets)
        else:
            # Both maps are class-major, so their concatenation is one (C + 1 + 4M)-class map:
            # one pooling call computes every RoI's bins once for both (the same sums).
            votes = self.vote(torch.cat((maps.cls, maps.box), dim=1), rois)
            class_logits, box_votes = votes.split(
                (self.num_classes + 1, 4 * self.num_box_slots), dim=1
            )
        return class_logits, box_votes.reshape(-1, self.num_box_slots, 4)
