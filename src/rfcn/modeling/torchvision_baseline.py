"""torchvision's Faster R-CNN on R-FCN's trunk: the detector a user picks instead (issue 35).

``model.head: torchvision`` builds :class:`TorchvisionFasterRCNN`: the region proposal network
and the RoI heads are those :class:`torchvision.models.detection.FasterRCNN` builds with its own
defaults (RPN sampler 256 at 1/2 positives, 2000/1000 proposals, box sampler 512 at 1/4
positives, ``MultiScaleRoIAlign`` 7 x 7 with 2 x 2 samples, ``TwoMLPHead`` of 1024, a
class-specific box regressor, its losses and its NMS at 0.5) on one feature map: conv4 of
R-FCN's ResNet trunk (conv1..conv4, stride 16; no conv5). Shared with R-FCN, so that both see
the same pixels and the same anchors: the transform (resize, normalise, pad), the trunk as
``model.*`` builds it, the anchor sizes and ratios, and the evaluation protocol (score threshold
and detections kept per image). Loss names follow the project's contract.

Parameter names (``backbone.trunk.*``, ``rpn.*``, ``head.*``) are those of
:class:`~rfcn.modeling.rfcn.RFCN`, so the trainer's parameter groups, the checkpoints and the
inference fast path (bf16 over ``backbone.trunk``) treat both alike. It trains end to end only.

Shapes: ``conv4`` ``(B, C4, H/16, W/16)``; proposals ``[(P_b, 4)]`` in network pixels.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign

from rfcn.config import ModelConfig
from rfcn.errors import UserError
from rfcn.modeling.backbone import build_backbone
from rfcn.modeling.transform import RFCNTransform, build_transform
from rfcn.ops.boxes import nonempty_boxes

FEATURE = "0"  # the name of the one feature map in torchvision's feature dict
POOL_SIZE = 7
SAMPLING_RATIO = 2
# torchvision's loss names -> the project's (rfcn.modeling.rfcn.RFCN's)
LOSS_NAMES = {
    "loss_objectness": "loss_rpn_cls",
    "loss_rpn_box_reg": "loss_rpn_box",
    "loss_classifier": "loss_cls",
    "loss_box_reg": "loss_box",
}


class TrunkFeatures(nn.Module):
    """``images (B, 3, H, W)`` -> ``{"0": conv4 (B, C4, H/16, W/16)}``: a backbone as
    torchvision's detectors take it (a dict of maps and ``out_channels``)."""

    def __init__(self, trunk: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {FEATURE: self.trunk(images)}


class TorchvisionFasterRCNN(nn.Module):
    """torchvision's RPN and RoI heads behind R-FCN's transform and the project's contract.

    Args:
        transform: R-FCN's resize / normalise / pad (its ``min_size`` is what the predictor's
            multi-scale testing changes).
        backbone: the trunk as a torchvision backbone.
        rpn: torchvision's region proposal network on ``backbone``'s map.
        head: torchvision's RoI heads (RoIAlign, two fc layers, classifier and box regressor,
            sampler, losses and post-processing).
    """

    def __init__(
        self,
        transform: RFCNTransform,
        backbone: TrunkFeatures,
        rpn: RegionProposalNetwork,
        head: RoIHeads,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.head = head

    @property
    def train_parts(self) -> tuple[str, ...]:
        """Always both: torchvision's detector trains end to end only."""
        return ("rpn", "head")

    @train_parts.setter
    def train_parts(self, parts: tuple[str, ...]) -> None:
        if tuple(parts) != self.train_parts:
            raise UserError("train.mode", "model.head=torchvision trains end_to_end only")

    def offset_parameters(self) -> list[nn.Parameter]:
        """None: no layer predicts deformable offsets (the optimiser's interface)."""
        return []

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        proposals: list[Tensor] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: ``{"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}``. Eval:
        ``[{"boxes": (N, 4), "labels": (N,), "scores": (N,)}]`` in input pixels.

        Args:
            images: ``[(3, H_b, W_b)]`` float RGB in 0..1.
            targets: training only, ``[{"boxes": (G_b, 4) input pixels, "labels": (G_b,)}]``.
            proposals: must be None (the trainer's interface; this model proposes its own).
        """
        if proposals is not None:
            raise ValueError("torchvision's Faster R-CNN proposes its own RoIs")
        if self.training and targets is None:
            raise ValueError("training needs targets")
        batch, scaled = self.transform(images, targets if self.training else None)
        features = self.backbone(batch.tensor)
        image_list = ImageList(batch.tensor, batch.image_sizes)
        truth = _nonempty_targets(scaled) if scaled is not None else None
        found, rpn_losses = self.rpn(image_list, features, truth)
        detections, head_losses = self.head(features, found, batch.image_sizes, truth)
        if self.training:
            losses = {**rpn_losses, **head_losses}
            return {LOSS_NAMES[name]: value for name, value in losses.items()}
        boxes = self.transform.to_input_pixels([d["boxes"] for d in detections], batch)
        return [{**d, "boxes": b} for d, b in zip(detections, boxes, strict=True)]


def _nonempty_targets(targets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Boxes with an area and int64 labels (a zero-width box would give infinite regression
    targets; torchvision's own detector refuses such targets)."""
    kept = []
    for target in targets:
        keep = nonempty_boxes(target["boxes"], 0.0)
        kept.append({"boxes": target["boxes"][keep], "labels": target["labels"][keep].long()})
    return kept


def build_torchvision_faster_rcnn(cfg: ModelConfig) -> TorchvisionFasterRCNN:
    """:class:`TorchvisionFasterRCNN` on conv1..conv4 of the ResNet ``cfg`` describes.

    From ``cfg``: the trunk (backbone, width, stages, pretrained weights, BatchNorm, frozen
    stages), the transform, the anchors, ``num_classes``, ``score_thresh`` and
    ``detections_per_img``. Everything else is torchvision's default; R-FCN's RPN, OHEM,
    head and NMS settings do not apply.
    """
    resnet = build_backbone(
        cfg.backbone,
        cfg.pretrained,
        atrous=False,  # conv5 is dropped: its stride does not matter
        frozen_bn=cfg.frozen_bn,
        freeze_at=cfg.freeze_at,
        width=cfg.backbone_width,
        stage_channels=cfg.stage_channels,
        stage_blocks=cfg.stage_blocks,
    )
    features = TrunkFeatures(resnet.trunk, resnet.conv4_channels)
    anchors = AnchorGenerator((tuple(cfg.anchor_sizes),), (tuple(cfg.anchor_ratios),))
    # FasterRCNN wires torchvision's defaults; its transform and forward are not used.
    detector = FasterRCNN(
        features,
        num_classes=cfg.num_classes + 1,
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign([FEATURE], POOL_SIZE, SAMPLING_RATIO),
        box_score_thresh=cfg.score_thresh,
        box_detections_per_img=cfg.detections_per_img,
    )
    transform = build_transform(cfg)
    return TorchvisionFasterRCNN(transform, features, detector.rpn, detector.roi_heads)
