"""The Faster R-CNN "C4" counterpart that R-FCN is measured against (paper §4.1, Tables 1 and 3).

Faster R-CNN with a ResNet (He et al. 2016, appendix A) shares conv1..conv4 over the image and
runs conv5 *per RoI*: RoI pooling to 14 x 14 on conv4 (stride 16), conv5 with its original
stride 2 (so each RoI becomes 7 x 7), global average pooling, then a ``C + 1`` classifier and a
class-specific ``4C`` box regressor. The R-FCN paper's speed comparison uses exactly this
per-RoI head for ResNet-101 (conv5's 9 convolutions plus the fc layer: "10 layers").

Everything else is R-FCN's own code: ``build_model`` with ``model.head: c4`` builds an
:class:`~rfcn.modeling.rfcn.RFCN` whose position-sensitive head is :class:`C4Head` and whose
image-level conv5 is the identity (conv5 now runs inside the head, per RoI). The transform,
conv1..conv4, RPN, RoI labelling, OHEM, losses, post-processing, trainer, checkpoints and
predictors are then the same code for both detectors, so the two differ only in the part the
paper compares. :func:`build_c4_detector` makes the counterpart of an already built R-FCN with
the same weights (the speed benchmark).

conv5 is a stride-2 copy of the backbone's conv5 with R-FCN's conv5 weights. Where R-FCN's conv5
is à trous (stride 1, dilation 2, paper §2), this one keeps stride 2 and no dilation, as the
original ResNet detector: a conv's weights do not depend on either.

Shapes: ``conv4`` ``(B, C4, H/16, W/16)`` (C4 = 1024 for ResNet-50/101/152, 256 for 18/34);
``rois`` ``(K, 5)`` ``[image index, x1, y1, x2, y2]`` in network-input pixels.
"""

from __future__ import annotations

import copy
from typing import TypeVar

from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from rfcn.config import ModelConfig
from rfcn.modeling.backbone import ResNetBackbone, build_backbone
from rfcn.modeling.heads import num_box_slots

# A built detector (an :class:`~rfcn.modeling.rfcn.RFCN`): a head only sees the model through its
# interface (its ``backbone`` and ``head``), so this module never imports the model's.
Detector = TypeVar("Detector", bound=nn.Module)

CONV4_STRIDE = 16
POOL_SIZE = 14


class C4Head(nn.Module):
    """RoI pooling on conv4, conv5 per RoI, average pooling, fc classifier and box regressor.

    Same call and output contract as :class:`~rfcn.modeling.rfcn_head.RFCNHead`, so
    :class:`~rfcn.modeling.rfcn.RFCN` can run it.

    Args:
        conv5: the per-RoI conv5 stage, ``(K, C4, 14, 14) -> (K, C5, 7, 7)``.
        conv5_channels: ``C5``, the channels conv5 outputs (2048, or 512 for ResNet-18/34).
        num_classes: ``C`` foreground classes; the classifier predicts ``C + 1``.
        box_mode: "class" (Faster R-CNN's ``4C`` regressor), "agnostic" or "agnostic8"
            (:data:`~rfcn.modeling.heads.BOX_MODES`).
        pooling: "pool" (RoI pooling: max over quantised bins, the paper's C4) or "align"
            (RoIAlign, ``aligned=True``: averages of bilinear samples, as in Mask R-CNN).
        sampling_ratio: RoIAlign's samples per bin side.
    """

    def __init__(
        self,
        conv5: nn.Module,
        conv5_channels: int,
        num_classes: int,
        box_mode: str = "class",
        pooling: str = "pool",
        sampling_ratio: int = 2,
    ) -> None:
        super().__init__()
        if pooling not in ("pool", "align"):
            raise ValueError(f"pooling must be 'pool' or 'align', got {pooling!r}")
        self.num_classes = num_classes
        self.box_mode = box_mode
        self.pooling = pooling
        self.sampling_ratio = sampling_ratio
        self.num_box_slots = num_box_slots(box_mode, num_classes)
        self.conv5 = conv5
        self.cls_score = nn.Linear(conv5_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(conv5_channels, 4 * self.num_box_slots)
        # Fast R-CNN's initialisation of the two sibling layers.
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, conv4: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """``conv4 (B, C4, h, w)``, ``rois (K, 5)`` -> logits ``(K, C+1)``, deltas ``(K, M, 4)``."""
        # torchvision's CPU kernels take one dtype; under bf16 autocast conv4 is bf16, while the
        # RoIs keep theirs (bf16 would round a 300-px coordinate to a multiple of 2).
        features = conv4.to(rois.dtype)
        if self.pooling == "pool":
            pooled = roi_pool(features, rois, POOL_SIZE, 1.0 / CONV4_STRIDE)  # (K, C4, 14, 14)
        else:
            pooled = roi_align(
                features, rois, POOL_SIZE, 1.0 / CONV4_STRIDE, self.sampling_ratio, aligned=True
            )
        per_roi = self.conv5(pooled)  # (K, C5, 7, 7)
        vectors = per_roi.mean(dim=(2, 3))  # (K, C5)
        deltas = self.bbox_pred(vectors).view(-1, self.num_box_slots, 4)  # (K, M, 4)
        return self.cls_score(vectors), deltas


def move_conv5_into_c4_head(
    backbone: ResNetBackbone, cfg: ModelConfig, box_mode: str, pooling: str = "pool"
) -> C4Head:
    """A :class:`C4Head` whose stride-2 conv5 carries the weights of ``backbone``'s conv5;
    ``backbone``'s own conv5 becomes the identity, so the backbone hands conv4 to the head.

    Args:
        backbone: R-FCN's backbone built from ``cfg`` (its conv5 may be à trous, or deformable:
            only the plain ResNet weights are taken, not the deformable convs' offset layers).
        cfg: the model config ``backbone`` was built from (ResNet name, width, BatchNorm).
        box_mode, pooling: the head's box regression and RoI pooling (:class:`C4Head`; the
            sampling ratio of "align" is ``cfg.ps_roi_sampling_ratio``).
    """
    conv5 = build_backbone(
        cfg.backbone,
        atrous=False,
        frozen_bn=cfg.frozen_bn,
        freeze_at=0,
        width=cfg.backbone_width,
        stage_channels=cfg.stage_channels,
        stage_blocks=cfg.stage_blocks,
    ).conv5
    plain = conv5.state_dict()
    conv5.load_state_dict({k: v for k, v in backbone.conv5.state_dict().items() if k in plain})
    conv5.requires_grad_(any(p.requires_grad for p in backbone.conv5.parameters()))
    backbone.conv5 = nn.Identity()
    return C4Head(
        conv5,
        backbone.conv5_channels,
        cfg.num_classes,
        box_mode,
        pooling,
        cfg.ps_roi_sampling_ratio,
    )


def build_c4_detector(rfcn: Detector, cfg: ModelConfig) -> Detector:
    """Faster R-CNN C4 sharing a copy of every part of ``rfcn`` (built from ``cfg``) but the head,
    with Faster R-CNN's class-specific box regressor.

    The result is an independent module (``rfcn`` is left untouched) with the same
    transform, trunk, RPN and inference settings, and the same weights where they exist in both.
    """
    c4 = copy.deepcopy(rfcn)
    c4.head = move_conv5_into_c4_head(c4.backbone, cfg, "class")
    return c4.to(next(rfcn.parameters()).device)
