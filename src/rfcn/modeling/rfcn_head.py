"""The position-sensitive head of R-FCN (paper §2, Fig. 1-2): score maps, PS-RoI pooling, voting.

Every learnable layer is a convolution on the whole image, computed once; the per-RoI part is
PS-RoI pooling and an average, with no learnable layer after it (paper §2).
"""

from __future__ import annotations

from torch import Tensor, nn

from rfcn.ops.ps_roi_pool import ps_roi_pool

# Box deltas per RoI and bin, by box mode: class-agnostic (paper text, 4k² channels), the
# original code's "agnostic" with a background and a foreground slot (8k²), class-specific (4k²C).
BOX_MODES = ("agnostic", "agnostic8", "class")


def num_box_slots(box_mode: str, num_classes: int) -> int:
    """How many 4-vectors of deltas the head predicts per RoI."""
    return {"agnostic": 1, "agnostic8": 2, "class": num_classes}[box_mode]


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


class RFCNHead(nn.Module):
    """conv5 features -> position-sensitive maps -> per-RoI class logits and box deltas.

    Args:
        in_channels: conv5 channels (2048, or 512 for ResNet-18/34).
        head_channels: width of the randomly initialised 1x1 conv that reduces conv5 (1024).
        num_classes: foreground classes C (the head scores C + 1 with background).
        k: bins per side of the k x k grid.
        box_mode: one of :data:`BOX_MODES`.
        spatial_scale: feature-map pixels per network-input pixel (1/16 with à trous conv5).
        ps_roi_mode: "pool" (Eq. 1 of the paper) or "align" (bilinear).
        sampling_ratio: bilinear samples per bin side in "align" mode.
        init: "gaussian" (std 0.01 everywhere, the original prototxt's fillers) or "scaled"
            (He init for ``reduce``, std ``1/sqrt(head_channels)`` for ``cls_conv``; ``box_conv``
            keeps std 0.01 so the first boxes stay near the RoIs).
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
    ) -> None:
        super().__init__()
        if box_mode not in BOX_MODES:
            raise ValueError(f"box_mode must be one of {BOX_MODES}, got {box_mode!r}")
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
        if init not in ("gaussian", "scaled"):
            raise ValueError(f"init must be 'gaussian' or 'scaled', got {init!r}")
        for conv in (self.reduce, self.cls_conv, self.box_conv):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        if init == "scaled":
            # Two stacked std-0.01 layers give a features x weights product near zero, whose
            # gradients are small both ways; a head on frozen from-scratch features learned
            # faster with this init (probe in the issue 5 note).
            nn.init.kaiming_normal_(self.reduce.weight, nonlinearity="relu")
            nn.init.normal_(self.cls_conv.weight, std=head_channels**-0.5)

    def score_maps(self, conv5: Tensor) -> tuple[Tensor, Tensor]:
        """``conv5 (B, C5, h, w)`` -> cls maps ``(B, k²(C+1), h, w)``, box maps ``(B, 4Mk², h, w)``.

        Channel ``(c * k + i) * k + j`` of the class maps scores class c at bin (i, j).
        """
        reduced = nn.functional.relu(self.reduce(conv5))
        return self.cls_conv(reduced), self.box_conv(reduced)

    def vote(self, maps: Tensor, rois: Tensor) -> Tensor:
        """PS-RoI pool ``maps`` over ``rois (K, 5)`` and average the k² bins: ``(K, D)``.

        Eq. (2) of the paper sums the bins; we average, as the original code's global average
        pooling after the PS-RoI layer: the same up to the constant k², which only rescales the
        logits the layer before learns.
        """
        pooled = ps_roi_pool(
            maps, rois, self.k, self.spatial_scale, self.ps_roi_mode, self.sampling_ratio
        )  # (K, D, k, k)
        return pooled.mean(dim=(2, 3))

    def forward(self, conv5: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """``conv5 (B, C5, h, w)``, ``rois (K, 5)`` as ``[image index, x1, y1, x2, y2]`` in
        network-input pixels -> class logits ``(K, C + 1)``, box deltas ``(K, M, 4)``.
        """
        cls_maps, box_maps = self.score_maps(conv5)
        class_logits = self.vote(cls_maps, rois)
        box_deltas = self.vote(box_maps, rois).view(-1, self.num_box_slots, 4)
        return class_logits, box_deltas
