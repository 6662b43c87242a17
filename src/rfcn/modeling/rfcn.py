"""R-FCN (Dai, Li, He, Sun, NIPS 2016): the detector and :func:`build_model`.

Shape and naming key (detectron2 style):

    B             images in a batch; b indexes them
    H, W          padded network-input size; (h_b, w_b) image b after resizing
    "input pixels"   coordinates of the images the caller passed in
    "network pixels" coordinates after the resize inside the model (``transform``)
    C             foreground classes; C + 1 scores with background (label 0)
    k             position-sensitive bins per side (the light head's p); A anchors per position
    s             stride of conv5 and of the score maps: 16 (à trous, default) or 32
    conv4         (B, C4, H/16, W/16), shared by the RPN and the head
    conv5         (B, C5, H/s, W/s)
    cls maps      (B, k²(C+1), H/s, W/s); channel (c k + i) k + j = class c, bin (i, j)
    box maps      (B, 4Mk², H/s, W/s); M = 1 "agnostic", 2 "agnostic8", C "class"
    offset maps   deformable PS-RoI pooling only: (B, 2k²(C+1), H/s, W/s) for the class maps,
                  (B, 2k², H/s, W/s) for the box maps; pooled, (K, 2G, k, k) bin offsets
    proposals     [(P_b, 4)] x1, y1, x2, y2 in network pixels
    rois          (K, 5) [b, x1, y1, x2, y2], K = sum of the RoIs of all images
    class_logits  (K, C + 1)  voted (averaged) class scores
    box_deltas    (K, M, 4)   voted box deltas (BoxCoder weights 10, 10, 5, 5)

Raw outputs (``RFCNHead``), losses (``losses``) and post-processing (``postprocess``) live apart.
The model runs its head through :mod:`rfcn.modeling.heads`' interface only; :func:`build_model`
is the one place that chooses it (``model.head``): R-FCN's (:mod:`rfcn.modeling.rfcn_head`), the
light head (:mod:`rfcn.modeling.light_head`) or the C4 counterpart
(:mod:`rfcn.modeling.c4_baseline`).
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rfcn.config import ModelConfig
from rfcn.modeling.anchors import AnchorGenerator
from rfcn.modeling.backbone import ResNetBackbone, build_backbone
from rfcn.modeling.c4_baseline import move_conv5_into_c4_head
from rfcn.modeling.deformable_conv import OffsetConv2d
from rfcn.modeling.heads import DetectorHead, box_slot_of_label, kept_running_stats
from rfcn.modeling.light_head import LightHead, mid_channels
from rfcn.modeling.losses import head_losses, ohem_select, per_roi_losses
from rfcn.modeling.matching import Matcher
from rfcn.modeling.postprocess import class_boxes, postprocess_detections
from rfcn.modeling.rfcn_head import RFCNHead
from rfcn.modeling.roi_targets import assign_roi_targets
from rfcn.modeling.rpn import RegionProposalNetwork, RPNHead
from rfcn.modeling.torchvision_baseline import (
    TorchvisionFasterRCNN,
    build_torchvision_faster_rcnn,
)
from rfcn.modeling.transform import ImageBatch, RFCNTransform, build_transform
from rfcn.ops.box_coder import BoxCoder
from rfcn.ops.boxes import clip_boxes, nonempty_boxes, scale_boxes

TRAIN_PARTS = ("rpn", "head")


class HeadInput(NamedTuple):
    """One image's conv5 at the test scale, and where the image lies on it."""

    conv5: Tensor  # (1, C5, H/s, W/s) over the padded network input
    rows: int  # cells of the map that cover the image (the rest is padding)
    cols: int
    scale: float  # network pixels per input pixel
    stride: int  # s: cell (y, x) is centred near input pixel ((x + 0.5) s, (y + 0.5) s) / scale

    def crop(self, maps: Tensor) -> Tensor:
        """``(1, D, H/s, W/s)`` maps of this image -> ``(D, rows, cols)``, without the padding."""
        return maps[0, :, : self.rows, : self.cols]


class RFCN(nn.Module):
    """The R-FCN detector, with torchvision's detection-model contract.

    Args:
        transform: resize / normalise / pad.
        backbone: ResNet trunk (conv1-4) and conv5.
        rpn: region proposal network on conv4.
        head: any head of :mod:`rfcn.modeling.heads`' interface: position-sensitive score maps
            and voting on conv5, the light head, or the Faster R-CNN C4 head
            (:mod:`rfcn.modeling.c4_baseline`; the backbone's conv5 is then the identity).
        head_box_coder: coder of the head's deltas.
        roi_matcher: labels RoIs (fg IoU 0.5, bg in [bg_iou_low, 0.5)).
        ohem: train the head on the ``ohem_batch_per_image`` hardest RoIs of all N (paper §2);
            else on ``roi_batch_per_image`` sampled at ``roi_positive_fraction``.
        ohem_ranking_pass: rank the RoIs for OHEM in a read-only pass, then run the head again
            on the selected ones (for heads with a costly per-RoI network: C4); else score
            every RoI once with gradients (R-FCN).
        box_loss_weight: lambda of paper Eq. (3).
        box_loss_beta: transition point of the head's smooth-L1 box loss.
        score_thresh: detections scoring below it are dropped before NMS.
        nms_thresh: IoU of the per-class NMS at test time (paper: 0.3).
        detections_per_img: most detections an image returns.
        box_voting_iou: test-time box voting after NMS (0: off; the paper has none).
        box_refinement: test-time box refinement (He et al. 2016, appendix A; not in the R-FCN
            paper): each RoI's regressed box is pooled again, and the new scores and boxes join
            the first ones before NMS (:meth:`_with_refined_predictions`).
    """

    def __init__(
        self,
        transform: RFCNTransform,
        backbone: ResNetBackbone,
        rpn: RegionProposalNetwork,
        head: DetectorHead,
        head_box_coder: BoxCoder,
        roi_matcher: Matcher,
        ohem: bool,
        ohem_batch_per_image: int,
        roi_batch_per_image: int,
        roi_positive_fraction: float,
        box_loss_weight: float,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        ohem_ranking_pass: bool = False,
        box_voting_iou: float = 0.0,
        box_refinement: bool = False,
        box_loss_beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.head = head
        self.head_box_coder = head_box_coder
        self.roi_matcher = roi_matcher
        self.ohem = ohem
        self.ohem_batch_per_image = ohem_batch_per_image
        self.ohem_ranking_pass = ohem_ranking_pass
        self.roi_batch_per_image = roi_batch_per_image
        self.roi_positive_fraction = roi_positive_fraction
        self.box_loss_weight = box_loss_weight
        self.box_loss_beta = box_loss_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.box_voting_iou = box_voting_iou
        self.box_refinement = box_refinement
        self._train_parts: tuple[str, ...] = TRAIN_PARTS

    @property
    def train_parts(self) -> tuple[str, ...]:
        """Which losses training computes: ``("rpn", "head")`` (end to end), ``("rpn",)`` or
        ``("head",)`` (steps of the 4-step alternating training)."""
        return self._train_parts

    @train_parts.setter
    def train_parts(self, parts: tuple[str, ...]) -> None:
        parts = tuple(parts)
        if not parts or any(part not in TRAIN_PARTS for part in parts):
            raise ValueError(
                f"train_parts must be a non-empty subset of {TRAIN_PARTS}, got {parts}"
            )
        self._train_parts = tuple(p for p in TRAIN_PARTS if p in parts)

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        proposals: list[Tensor] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: losses ``{"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}`` (those of
        :attr:`train_parts`). Eval: ``[{"boxes": (N, 4), "labels": (N,), "scores": (N,)}]`` in
        input pixels.

        Args:
            images: ``[(3, H_b, W_b)]`` float RGB in 0..1, sizes may differ.
            targets: training only, ``[{"boxes": (G_b, 4) input pixels, "labels": (G_b,) 1..C}]``.
            proposals: ``[(P_b, 4)]`` in input pixels, used instead of the RPN's.
        """
        if self.training and targets is None:
            raise ValueError("training needs targets")
        batch, scaled_targets = self.transform(images, targets if self.training else None)
        conv4 = self.backbone.trunk(batch.tensor)
        train_rpn = self.training and "rpn" in self.train_parts
        train_head = self.training and "head" in self.train_parts
        gt_boxes, gt_labels = _ground_truth(scaled_targets) if self.training else ([], [])
        losses: dict[str, Tensor] = {}
        if proposals is None or train_rpn:
            with torch.set_grad_enabled(torch.is_grad_enabled() and train_rpn):
                rpn_proposals, rpn_losses = self.rpn(
                    conv4, batch.image_sizes, gt_boxes if train_rpn else None
                )
            losses.update(rpn_losses)
        if proposals is not None:
            rpn_proposals = _to_network_pixels(proposals, batch)
        if self.training and not train_head:
            return losses
        conv5 = self.backbone.conv5(conv4)
        if train_head:
            losses.update(self._head_losses(conv5, rpn_proposals, gt_boxes, gt_labels))
            return losses
        return self._detect(conv5, rpn_proposals, batch)

    def _head_losses(
        self,
        conv5: Tensor,
        proposals: list[Tensor],
        gt_boxes: list[Tensor],
        gt_labels: list[Tensor],
    ) -> dict[str, Tensor]:
        """Paper Eq. (3) over the sampled RoIs, or over the OHEM-selected hardest ones.

        R-FCN scores every RoI once and back-propagates the selected ones (its per-RoI part is
        pooling and averaging, nearly free). The C4 head runs conv5 per RoI, so with
        ``ohem_ranking_pass`` it ranks all RoIs in a read-only pass (no gradients, BatchNorm
        statistics untouched) and runs the selected ones again with gradients: OHEM as
        Shrivastava et al. (2016) describe it, with the same selection, at 0.91 s instead of
        1.56 s per iteration of the small-object benchmark's C4 on 2 cores.
        """
        sampling = None if self.ohem else (self.roi_batch_per_image, self.roi_positive_fraction)
        targets = assign_roi_targets(
            proposals, gt_boxes, gt_labels, self.roi_matcher, self.head_box_coder, sampling
        )
        rank_first = self.ohem and self.ohem_ranking_pass
        ranking = contextlib.ExitStack()
        if rank_first:
            ranking.enter_context(torch.no_grad())
            ranking.enter_context(kept_running_stats(self.head))
        with ranking:
            cls, box = self._per_roi_losses(
                conv5, targets.rois, targets.labels, targets.target_deltas
            )
        if self.ohem:
            # Per image, the B RoIs with the largest classification + box loss (paper §2;
            # lambda not applied, as the original code's OHEM annotator ranks raw losses).
            total = cls + box
            selected, start = [], 0
            for count in targets.counts:
                image_rows = ohem_select(total[start : start + count], self.ohem_batch_per_image)
                selected.append(image_rows + start)
                start += count
            chosen = torch.cat(selected)
        else:
            chosen = torch.arange(cls.numel(), device=cls.device)
        if rank_first:
            cls, box = self._per_roi_losses(
                conv5,
                targets.rois[chosen],
                targets.labels[chosen],
                targets.target_deltas[chosen],
            )
            chosen = torch.arange(chosen.numel(), device=chosen.device)
        loss_cls, loss_box = head_losses(cls, box, chosen, self.box_loss_weight)
        return {"loss_cls": loss_cls, "loss_box": loss_box}

    def _per_roi_losses(
        self, conv5: Tensor, rois: Tensor, labels: Tensor, target_deltas: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The head's classification and box loss of each of ``rois (K, 5)``: ``(K,)`` each."""
        class_logits, box_deltas = self.head(conv5, rois)  # (K, C+1), (K, M, 4)
        slots = box_slot_of_label(labels, self.head.box_mode)  # (K,)
        rows = torch.arange(slots.numel(), device=slots.device)
        return per_roi_losses(
            class_logits, labels, box_deltas[rows, slots], target_deltas, self.box_loss_beta
        )

    def _detect(
        self, conv5: Tensor, proposals: list[Tensor], batch: ImageBatch
    ) -> list[dict[str, Tensor]]:
        class_logits, box_deltas = self.head(conv5, _rois(proposals))
        if self.box_refinement:
            proposals, class_logits, box_deltas = self._with_refined_predictions(
                conv5, proposals, batch.image_sizes, class_logits, box_deltas
            )
        detections = postprocess_detections(
            class_logits,
            box_deltas,
            proposals,
            batch.image_sizes,
            self.head_box_coder,
            self.head.box_mode,
            self.score_thresh,
            self.nms_thresh,
            self.detections_per_img,
            self.box_voting_iou,
        )
        boxes = self.transform.to_input_pixels([d["boxes"] for d in detections], batch)
        for detection, image_boxes in zip(detections, boxes, strict=True):
            detection["boxes"] = image_boxes
        return detections

    def _with_refined_predictions(
        self,
        conv5: Tensor,
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        class_logits: Tensor,
        box_deltas: Tensor,
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Box refinement (He et al. 2016, appendix A): each RoI's box regressed for its most
        probable foreground class, clipped to its image, is scored and regressed again by the
        head, and each image's new predictions are appended to its first ones.

        Args:
            proposals: ``[(P_b, 4)]`` network pixels; ``class_logits (K, C+1)`` and
                ``box_deltas (K, M, 4)`` the head's outputs on them, ``K = sum P_b``.

        Returns:
            ``[(2 P_b, 4)]`` RoIs (first the proposals, then their refined boxes) and the
            head's outputs on them in the same order, ``(2K, C+1)`` and ``(2K, M, 4)``.
        """
        num_classes = class_logits.shape[1] - 1
        best_class = class_logits[:, 1:].argmax(dim=1)  # (K,)
        per_class = class_boxes(box_deltas, self.head.box_mode, num_classes)  # (K, C, 4)
        deltas = per_class[torch.arange(best_class.numel()), best_class]  # (K, 4)
        counts = [p.shape[0] for p in proposals]
        refined = [
            clip_boxes(self.head_box_coder.decode(d, p), h, w)
            for d, p, (h, w) in zip(deltas.split(counts), proposals, image_sizes, strict=True)
        ]
        new_logits, new_deltas = self.head(conv5, _rois(refined))

        def per_image(first: Tensor, second: Tensor) -> Tensor:
            pairs = zip(first.split(counts), second.split(counts), strict=True)
            return torch.cat([torch.cat(pair) for pair in pairs])

        return (
            [torch.cat(pair) for pair in zip(proposals, refined, strict=True)],
            per_image(class_logits, new_logits),
            per_image(box_deltas, new_deltas),
        )

    @torch.no_grad()
    def propose(self, images: list[Tensor], num_proposals: int | None = None) -> list[Tensor]:
        """RPN proposals ``[(P_b, 4)]`` in input pixels, at the test scale and test settings.

        ``num_proposals`` (default: ``rpn_post_nms_test``) caps P_b after NMS.
        """
        batch, _ = self.transform(images, short_side=self.transform.min_size[-1])
        conv4 = self.backbone.trunk(batch.tensor)
        proposals, _ = self.rpn(
            conv4, batch.image_sizes, post_nms_top_n=num_proposals, settings="test"
        )
        return self.transform.to_input_pixels(proposals, batch)

    @torch.no_grad()
    def head_input(self, image: Tensor) -> HeadInput:
        """What the head sees of one ``(3, H, W)`` image at the test scale (for pictures of a
        head's maps, which ask the head itself: :meth:`score_maps`, :mod:`rfcn.visualize`)."""
        batch, _ = self.transform([image], short_side=self.transform.min_size[-1])
        _, conv5 = self.backbone(batch.tensor)
        stride = self.backbone.stride
        height, width = batch.image_sizes[0]
        scale_x, scale_y = batch.scales[0]
        return HeadInput(
            conv5, -(-height // stride), -(-width // stride), (scale_x + scale_y) / 2, stride
        )

    @torch.no_grad()
    def score_maps(self, image: Tensor) -> dict[str, Tensor | float | int]:
        """The position-sensitive class maps of one ``(3, H, W)`` image, at the test scale
        (R-FCN's head only).

        Returns ``{"cls_maps": (k²(C+1), h, w), "scale": network pixels per input pixel,
        "stride": s}``, and for deformable PS-RoI pooling ``"cls_offset_maps": (2k²(C+1), h,
        w)``; cell (y, x) of a map is centred near input pixel ``((x + 0.5) s / scale,
        (y + 0.5) s / scale)``; channel layouts as in the key above.
        """
        seen = self.head_input(image)
        maps = self.head.score_maps(seen.conv5)
        result: dict[str, Tensor | float | int] = {
            "cls_maps": seen.crop(maps.cls),
            "scale": seen.scale,
            "stride": seen.stride,
        }
        if maps.cls_offsets is not None:
            result["cls_offset_maps"] = seen.crop(maps.cls_offsets)
        return result

    def offset_parameters(self) -> list[nn.Parameter]:
        """The parameters of the layers that predict deformable offsets (and v2 masks): the
        ones ``train.offset_lr_factor`` applies to. Empty for a plain R-FCN."""
        layers = (m for m in self.modules() if isinstance(m, OffsetConv2d))
        return [parameter for layer in layers for parameter in layer.parameters()]


def _ground_truth(targets: list[dict[str, Tensor]]) -> tuple[list[Tensor], list[Tensor]]:
    """Boxes ``[(G_b, 4)]`` and labels ``[(G_b,)]``, dropping boxes with no area (a zero-width
    box would give infinite regression targets)."""
    boxes, labels = [], []
    for target in targets:
        keep = nonempty_boxes(target["boxes"], 0.0)
        boxes.append(target["boxes"][keep])
        labels.append(target["labels"][keep].long())
    return boxes, labels


def _to_network_pixels(proposals: list[Tensor], batch: ImageBatch) -> list[Tensor]:
    """Caller proposals in input pixels -> network pixels, clipped to the resized image."""
    return [
        clip_boxes(scale_boxes(p.to(batch.tensor.dtype), sx, sy), h, w)
        for p, (sx, sy), (h, w) in zip(proposals, batch.scales, batch.image_sizes, strict=True)
    ]


def _rois(proposals: list[Tensor]) -> Tensor:
    """``[(P_b, 4)]`` -> ``(K, 5)`` with the image index in column 0."""
    return torch.cat(
        [torch.cat((p.new_full((p.shape[0], 1), b), p), dim=1) for b, p in enumerate(proposals)]
    )


def build_model(cfg: ModelConfig) -> RFCN | TorchvisionFasterRCNN:
    """Wire an :class:`RFCN` from the model config (the one place config meets modules), or
    torchvision's Faster R-CNN on the same trunk for ``model.head: torchvision``."""
    if cfg.head == "torchvision":
        return build_torchvision_faster_rcnn(cfg)
    backbone = build_backbone(
        cfg.backbone,
        cfg.pretrained,
        cfg.atrous,
        cfg.frozen_bn,
        cfg.freeze_at,
        cfg.backbone_width,
        cfg.deformable_conv5,
        cfg.deformable_conv5_groups,
        cfg.stage_channels,
        cfg.stage_blocks,
    )
    anchors = AnchorGenerator(cfg.anchor_sizes, cfg.anchor_ratios, backbone.conv4_stride)
    rpn = RegionProposalNetwork(
        RPNHead(backbone.conv4_channels, anchors.num_anchors, cfg.rpn_channels),
        anchors,
        pre_nms_top_n={"train": cfg.rpn_pre_nms_train, "test": cfg.rpn_pre_nms_test},
        post_nms_top_n={"train": cfg.rpn_post_nms_train, "test": cfg.rpn_post_nms_test},
        nms_thresh=cfg.rpn_nms_thresh,
        min_size=cfg.rpn_min_size,
        fg_iou=cfg.rpn_fg_iou,
        bg_iou=cfg.rpn_bg_iou,
        batch_per_image=cfg.rpn_batch_per_image,
        positive_fraction=cfg.rpn_positive_fraction,
        box_weights=cfg.rpn_box_weights,
    )
    head: DetectorHead
    if cfg.head == "c4":
        head = move_conv5_into_c4_head(backbone, cfg, cfg.box_mode, cfg.ps_roi_mode)
    elif cfg.head == "light_head":
        head = LightHead(
            backbone.conv5_channels,
            cfg.num_classes,
            cfg.box_mode,
            spatial_scale=1.0 / backbone.stride,
            k=cfg.k,
            alpha=cfg.light_head_alpha,
            mid_channels=mid_channels(cfg.backbone, cfg.light_head_mid_channels),
            kernel_size=cfg.light_head_kernel,
            fc_channels=cfg.light_head_fc_channels,
            ps_roi_mode=cfg.ps_roi_mode,
            sampling_ratio=cfg.ps_roi_sampling_ratio,
            init=cfg.light_head_init,
        )
    else:
        head = RFCNHead(
            backbone.conv5_channels,
            cfg.head_channels,
            cfg.num_classes,
            cfg.k,
            cfg.box_mode,
            spatial_scale=1.0 / backbone.stride,
            ps_roi_mode=cfg.ps_roi_mode,
            init=cfg.head_init,
            sampling_ratio=cfg.ps_roi_sampling_ratio,
            deformable=cfg.deformable_psroi,
        )
    transform = build_transform(cfg)
    return RFCN(
        transform,
        backbone,
        rpn,
        head,
        head_box_coder=BoxCoder(cfg.head_box_weights),
        roi_matcher=Matcher(cfg.roi_fg_iou, cfg.roi_fg_iou, cfg.roi_bg_iou_low),
        ohem=cfg.ohem,
        ohem_batch_per_image=cfg.ohem_batch_per_image,
        roi_batch_per_image=cfg.roi_batch_per_image,
        roi_positive_fraction=cfg.roi_positive_fraction,
        box_loss_weight=cfg.box_loss_weight,
        score_thresh=cfg.score_thresh,
        nms_thresh=cfg.nms_thresh,
        detections_per_img=cfg.detections_per_img,
        ohem_ranking_pass=cfg.head == "c4",
        box_voting_iou=cfg.box_voting_iou,
        box_refinement=cfg.box_refinement,
        box_loss_beta=cfg.head_smooth_l1_beta,
    )
