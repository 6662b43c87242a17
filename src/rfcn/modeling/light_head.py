"""Light-Head R-CNN (Li, Peng, Yu, Zhang, Deng, Sun, 2017) as a head of the same detector.

R-FCN's successor keeps the position-sensitive idea with *thin* maps: a large separable
convolution on conv5 gives ``alpha p²`` channels (490 for alpha = 10, p = 7, against R-FCN's
``k²(C + 1)`` = 3969 on COCO), PSRoIAlign pools each RoI's ``p x p`` bins from them, and one
fully connected layer per RoI does the classifying and the box regression (paper §3.2, Fig. 3,
and its public code, ``zengarden/light_head_rcnn``, ``network_desp.py``).

Shape and naming key (as :mod:`rfcn.modeling.rfcn`):

    conv5         (B, C5, h, w) à-trous conv5, stride 16 (C5 = 2048, or 512 for ResNet-18/34)
    k_s           the separable convolution's kernel length (15)
    C_mid         its middle width: 256 for ResNet-50/101/152, 64 for small nets
    p             bins per side of PSRoIAlign (``model.k``, 7)
    alpha         channels a bin reads (10)
    thin maps     (B, alpha p², h, w); channel (c p + i) p + j = thin channel c, bin (i, j)
    rois          (K, 5) [b, x1, y1, x2, y2] in network pixels
    pooled        (K, alpha, p, p); flattened (K, alpha p²) in that order
    hidden        (K, F) the R-CNN subnet's fc (F = 2048) after its ReLU
    class_logits  (K, C + 1)
    box_deltas    (K, M, 4); M = 1 "agnostic" (the paper's text), C "class" (the public code)
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional

from rfcn.modeling.heads import check_head_init, num_box_slots
from rfcn.ops import ps_roi_pool

# C_mid of the separable convolution by backbone (paper §3.2: 256 with the large backbone, 64
# with the small one).
MID_CHANNELS = {"resnet18": 64, "resnet34": 64, "resnet50": 256, "resnet101": 256, "resnet152": 256}

# The public code's initialisation ("gaussian"): every layer N(0, 0.01) but the box fc's
# N(0, 0.001), zero biases (slim's default). "scaled" keeps the box fc's.
INIT_STD = 0.01
BOX_INIT_STD = 0.001


def mid_channels(backbone: str, configured: int) -> int:
    """C_mid: ``configured`` when positive, else the paper's for ``backbone``
    (:data:`MID_CHANNELS`)."""
    return configured if configured > 0 else MID_CHANNELS[backbone]


class LargeSeparableConv(nn.Module):
    """Paper §3.2, Fig. 3 ("large separable convolution"), as the public code's
    ``global_context_module``: a ``k_s x 1`` then ``1 x k_s`` branch and a ``1 x k_s`` then
    ``k_s x 1`` branch, summed; biases on, no normalisation and no activation inside the
    branches, one ReLU after the sum. ``(B, C_in, h, w) -> (B, C_out, h, w)`` ("same" padding).

    Args:
        in_channels: C_in (conv5's channels).
        mid_channels: C_mid, each branch's width between its two convs.
        out_channels: C_out (alpha p² for the thin maps).
        kernel_size: k_s, odd so that "same" padding is symmetric (15).
        init: "gaussian" (the public code's N(0, 0.01)) or "scaled" (N(0, 1/fan_in): each conv
            keeps its input's second moment, so the ReLU'd sum of the two branches keeps
            conv5's).
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        kernel_size: int = 15,
        init: str = "gaussian",
    ) -> None:
        super().__init__()
        check_head_init(init)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        pad = kernel_size // 2
        column, row = (kernel_size, 1), (1, kernel_size)
        self.column_first = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, column, padding=(pad, 0)),
            nn.Conv2d(mid_channels, out_channels, row, padding=(0, pad)),
        )
        self.row_first = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, row, padding=(0, pad)),
            nn.Conv2d(mid_channels, out_channels, column, padding=(pad, 0)),
        )
        for conv in (*self.column_first, *self.row_first):
            if init == "scaled":
                nn.init.kaiming_normal_(conv.weight, nonlinearity="linear")
            else:
                nn.init.normal_(conv.weight, std=INIT_STD)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Tensor) -> Tensor:
        return functional.relu(self.column_first(features) + self.row_first(features))


class LightHead(nn.Module):
    """conv5 -> thin maps -> PSRoIAlign -> fc + ReLU -> class logits and box deltas.

    The same call and output contract as every head (:mod:`rfcn.modeling.heads`).

    Args:
        in_channels: conv5's channels C5.
        num_classes: foreground classes C (the classifier scores C + 1 with background).
        box_mode: one of :data:`~rfcn.modeling.heads.BOX_MODES`.
        spatial_scale: feature cells per network pixel (1/16 with à-trous conv5).
        k: p, bins per side (7).
        alpha: channels a bin reads (10); the thin maps have ``alpha k²``.
        mid_channels: the separable convolution's C_mid (:func:`mid_channels`).
        kernel_size: its kernel length k_s (15).
        fc_channels: the R-CNN subnet's width (2048).
        ps_roi_mode: "align_max" (the public kernel: maximum of the samples), "align"
            (their average, RoIAlign's) or "pool" (R-FCN's Eq. 1) (:func:`~rfcn.ops.ps_roi_pool`).
        sampling_ratio: bilinear samples per bin side (the public code's 2).
        init: "gaussian" (the public code's) or "scaled": the separable conv's as
            :class:`LargeSeparableConv`, He init for the fc layer and std
            ``1/sqrt(fc_channels)`` for the class fc, so that on a backbone trained from random
            weights the first logits have about unit scale, not about 0.01; the box fc keeps
            N(0, 0.001) so that the first boxes stay near the RoIs.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        box_mode: str,
        spatial_scale: float,
        k: int = 7,
        alpha: int = 10,
        mid_channels: int = 256,
        kernel_size: int = 15,
        fc_channels: int = 2048,
        ps_roi_mode: str = "align_max",
        sampling_ratio: int = 2,
        init: str = "gaussian",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.box_mode = box_mode
        self.spatial_scale = spatial_scale
        self.k = k
        self.alpha = alpha
        self.ps_roi_mode = ps_roi_mode
        self.sampling_ratio = sampling_ratio
        self.num_box_slots = num_box_slots(box_mode, num_classes)
        self.separable = LargeSeparableConv(
            in_channels, mid_channels, alpha * k * k, kernel_size, init
        )
        self.fc = nn.Linear(alpha * k * k, fc_channels)
        self.cls_score = nn.Linear(fc_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_channels, 4 * self.num_box_slots)
        for layer, std in (
            (self.fc, INIT_STD),
            (self.cls_score, INIT_STD),
            (self.bbox_pred, BOX_INIT_STD),
        ):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)
        if init == "scaled":
            nn.init.kaiming_normal_(self.fc.weight, nonlinearity="relu")
            nn.init.normal_(self.cls_score.weight, std=fc_channels**-0.5)

    def thin_maps(self, conv5: Tensor) -> Tensor:
        """``conv5 (B, C5, h, w)`` -> thin maps ``(B, alpha k², h, w)``, class-major channels."""
        return self.separable(conv5)

    def pool(self, maps: Tensor, rois: Tensor) -> Tensor:
        """``maps (B, alpha k², h, w)`` pooled over ``rois (K, 5)``: ``(K, alpha, k, k)``."""
        return ps_roi_pool(
            maps, rois, self.k, self.spatial_scale, self.ps_roi_mode, self.sampling_ratio
        )

    def forward(self, conv5: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """``conv5 (B, C5, h, w)``, ``rois (K, 5)`` in network pixels -> class logits
        ``(K, C + 1)``, box deltas ``(K, M, 4)``."""
        pooled = self.pool(self.thin_maps(conv5), rois)  # (K, alpha, k, k)
        hidden = functional.relu(self.fc(pooled.flatten(1)))  # (K, F)
        deltas = self.bbox_pred(hidden).view(-1, self.num_box_slots, 4)  # (K, M, 4)
        return self.cls_score(hidden), deltas
