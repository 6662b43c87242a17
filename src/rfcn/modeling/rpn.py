"""Region Proposal Network (Faster R-CNN §3.1) on the shared conv4 features (R-FCN paper §2).

The RPN scores each anchor with one logit (sigmoid / binary cross-entropy, as torchvision and
detectron2; the original code's 2-way softmax is equivalent up to parameterisation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rfcn.modeling.anchors import AnchorGenerator
from rfcn.modeling.losses import rpn_losses
from rfcn.modeling.matching import Matcher, sample_balanced
from rfcn.ops.box_coder import BoxCoder
from rfcn.ops.boxes import batched_nms_top, box_iou, clip_boxes, nonempty_boxes


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then sibling 1x1 convs: ``(B, C, H, W)`` -> objectness ``(B, A, H, W)``
    and deltas ``(B, 4A, H, W)`` (channel ``4a + d`` is delta d of anchor a).
    """

    def __init__(self, in_channels: int, num_anchors: int, channels: int = 512) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, kernel_size=1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, kernel_size=1)
        # Gaussian std 0.01, zero bias (Faster R-CNN §3.1.3).
        for conv in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        hidden = nn.functional.relu(self.conv(features))
        return self.objectness(hidden), self.deltas(hidden)


class RegionProposalNetwork(nn.Module):
    """Anchors, scores and deltas -> proposals per image; losses when ground truth is given.

    Args:
        head: the :class:`RPNHead`.
        anchor_generator: anchors of the conv4 map.
        pre_nms_top_n, post_nms_top_n: ``{"train": n, "test": n}`` boxes kept per image before
            and after NMS.
        nms_thresh: IoU of proposal NMS (0.7).
        min_size: proposals narrower or shorter than this (network-input pixels) are dropped.
        fg_iou, bg_iou: anchor matching thresholds (0.7, 0.3), best anchors of a box kept too.
        batch_per_image, positive_fraction: anchors sampled for the loss (256 at 50%).
        box_weights: :class:`BoxCoder` weights of the RPN deltas.
    """

    def __init__(
        self,
        head: RPNHead,
        anchor_generator: AnchorGenerator,
        pre_nms_top_n: dict[str, int],
        post_nms_top_n: dict[str, int],
        nms_thresh: float,
        min_size: float,
        fg_iou: float,
        bg_iou: float,
        batch_per_image: int,
        positive_fraction: float,
        box_weights: tuple[float, float, float, float],
    ) -> None:
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.pre_nms_top_n = dict(pre_nms_top_n)
        self.post_nms_top_n = dict(post_nms_top_n)
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.matcher = Matcher(fg_iou, bg_iou, 0.0, allow_low_quality=True)
        self.batch_per_image = batch_per_image
        self.positive_fraction = positive_fraction
        self.box_coder = BoxCoder(box_weights)

    def forward(
        self,
        features: Tensor,
        image_sizes: list[tuple[int, int]],
        gt_boxes: list[Tensor] | None = None,
        post_nms_top_n: int | None = None,
        settings: str | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """``features (B, C, H, W)`` -> proposals ``[(P_b, 4)]`` in network pixels (no grad),
        and ``{"loss_rpn_cls", "loss_rpn_box"}`` when ``gt_boxes [(G_b, 4)]`` is given.

        ``settings`` ("train" / "test") picks the top-n values, by default from
        ``self.training``; ``post_nms_top_n`` overrides the number kept per image.
        """
        if settings is None:
            settings = "train" if self.training else "test"
        objectness, deltas = self.head(features)  # (B, A, H, W), (B, 4A, H, W)
        batch, num_anchors, height, width = objectness.shape
        anchors = self.anchor_generator(height, width)  # (HWA, 4), order (y, x, a)
        objectness = objectness.permute(0, 2, 3, 1).reshape(batch, -1)  # (B, HWA)
        deltas = (
            deltas.view(batch, num_anchors, 4, height, width)
            .permute(0, 3, 4, 1, 2)
            .reshape(batch, -1, 4)
        )  # (B, HWA, 4)
        pre_nms = self.pre_nms_top_n[settings]
        post_nms = self.post_nms_top_n[settings] if post_nms_top_n is None else post_nms_top_n
        proposals = self._select_proposals(
            objectness.detach(), deltas.detach(), anchors, image_sizes, pre_nms, post_nms
        )
        losses = {}
        if gt_boxes is not None:
            losses = self._losses(objectness, deltas, anchors, gt_boxes)
        return proposals, losses

    def _select_proposals(
        self,
        objectness: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        image_sizes: list[tuple[int, int]],
        pre_nms_top_n: int,
        post_nms_top_n: int,
    ) -> list[Tensor]:
        """Top scores -> decode -> clip -> drop small -> NMS -> top ``post_nms_top_n``, per image
        (decoding vectorised over the batch; NMS per image, on as few of its best boxes as give
        ``post_nms_top_n`` proposals, :func:`~rfcn.ops.boxes.batched_nms_top`).
        """
        batch = objectness.shape[0]
        pre_nms = min(pre_nms_top_n, objectness.shape[1])
        scores, order = objectness.topk(pre_nms, dim=1)  # (B, n), (B, n)
        top_deltas = deltas.gather(1, order[..., None].expand(-1, -1, 4))  # (B, n, 4)
        boxes = self.box_coder.decode(top_deltas.reshape(-1, 4), anchors[order.reshape(-1)])
        sizes = torch.tensor(image_sizes, device=boxes.device, dtype=boxes.dtype)  # (B, 2)
        heights = sizes[:, 0].repeat_interleave(pre_nms)[:, None]  # (B n, 1)
        widths = sizes[:, 1].repeat_interleave(pre_nms)[:, None]
        boxes = clip_boxes(boxes, heights, widths)  # (B n, 4)
        image_index = torch.arange(batch, device=boxes.device).repeat_interleave(pre_nms)
        scores = scores.reshape(-1)
        valid = nonempty_boxes(boxes, self.min_size) & torch.isfinite(scores)
        boxes, scores, image_index = boxes[valid], scores[valid], image_index[valid]
        proposals = []
        for image in range(batch):
            mine = image_index == image
            image_boxes, image_scores = boxes[mine], scores[mine].float()
            one_group = torch.zeros_like(image_scores, dtype=torch.int64)
            keep = batched_nms_top(
                image_boxes.float(), image_scores, one_group, self.nms_thresh, post_nms_top_n
            )  # best first
            proposals.append(image_boxes[keep])
        return proposals

    def _losses(
        self, objectness: Tensor, deltas: Tensor, anchors: Tensor, gt_boxes: list[Tensor]
    ) -> dict[str, Tensor]:
        """Match anchors to boxes, sample 256 per image, and compute Faster R-CNN's Eq. 1."""
        sampled_images, sampled_anchors, sampled_labels, sampled_targets = [], [], [], []
        for image, boxes in enumerate(gt_boxes):
            matches = self.matcher(box_iou(boxes, anchors))  # (HWA,)
            positive, negative = sample_balanced(
                matches, self.batch_per_image, self.positive_fraction
            )
            picked = torch.cat((positive, negative))
            labels = torch.cat((torch.ones_like(positive), torch.zeros_like(negative)))
            targets = torch.cat(
                (
                    self.box_coder.encode(boxes[matches[positive]], anchors[positive]),
                    anchors.new_zeros(negative.numel(), 4),
                )
            )
            sampled_images.append(torch.full_like(picked, image))
            sampled_anchors.append(picked)
            sampled_labels.append(labels)
            sampled_targets.append(targets)
        images = torch.cat(sampled_images)
        picked = torch.cat(sampled_anchors)
        loss_cls, loss_box = rpn_losses(
            objectness[images, picked],
            torch.cat(sampled_labels),
            deltas[images, picked],
            torch.cat(sampled_targets),
        )
        return {"loss_rpn_cls": loss_cls, "loss_rpn_box": loss_box}
