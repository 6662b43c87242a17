"""Heads side by side (issue 35): R-FCN's position-sensitive head, the light head, the Faster
R-CNN C4 head and torchvision's Faster R-CNN with FPN, for each backbone, class count C and RoI
count N, in one run.

For each backbone and C every detector is built with random weights and its BatchNorms fitted to
the benchmark image (:func:`~rfcn.benchmark.cases.calibrate_batch_norm`):

- ``rfcn``: R-FCN, k = 7, 1024-channel reduction, à trous conv5 (the paper's);
- ``light_head``: the same model with ``model.head: light_head`` (:mod:`rfcn.modeling.light_head`)
  as ``configs/coco_light_head_r101.yaml`` runs it (``align_max`` pooling, class-specific boxes);
- ``c4``: its Faster R-CNN C4 counterpart with the same weights
  (:func:`~rfcn.modeling.c4_baseline.build_c4_detector`);
- ``tv_fpn``: torchvision's Faster R-CNN with an FPN on the same ResNet
  (``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` for ResNet-50, the same
  construction on ResNet-101), nothing downloaded.

Two cases per detector and N, every detector on the same image and the same N random RoIs, their
timed calls taking turns (:func:`~rfcn.benchmark.cases.measure_side_by_side`):

- ``head``: from the backbone's maps to each RoI's class scores and box deltas (R-FCN: the 1x1
  reduction, score maps, PS-RoI pooling and voting on conv5; light head: the large separable
  conv, PSRoIAlign and fc on conv5; C4: RoI pooling, conv5 and fc per RoI on conv4; FPN:
  MultiScaleRoIAlign, two fc layers and the predictor on the pyramid), with its ``flops``
  counted by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix
  products; pooling and NMS count nothing) during a call that also serves as a warm-up;
- ``pipeline_given_rois``: the whole model on the image with exactly N RoIs (transform,
  backbone, head, post-processing with NMS); the RPN, whose cost does not depend on N, is
  skipped: with random weights its NMS keeps fewer than N proposals.

:func:`rfcn.benchmark.report.heads_over_rfcn` gives each detector's figures over R-FCN's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.transform import resize_boxes

from rfcn.benchmark.cases import Budget, calibrate_batch_norm, measure_side_by_side, random_boxes
from rfcn.config import ModelConfig
from rfcn.modeling.c4_baseline import build_c4_detector
from rfcn.modeling.rfcn import RFCN, build_model

HEAD_CASES = ("head", "pipeline_given_rois")


def fpn_detector(backbone: str, num_classes: int, size: int, max_size: int) -> FasterRCNN:
    """torchvision's Faster R-CNN FPN on ``backbone`` for ``num_classes`` foreground classes,
    random weights, shorter side ``size``."""
    settings: dict[str, Any] = {
        "num_classes": num_classes + 1,
        "min_size": size,
        "max_size": max_size,
    }
    if backbone == "resnet50":
        return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, **settings)
    # as fasterrcnn_resnet50_fpn builds it without weights: BatchNorm, all layers trainable
    features = resnet_fpn_backbone(
        backbone_name=backbone, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
    )
    return FasterRCNN(features, **settings)


def fpn_head(
    model: FasterRCNN, features: dict[str, Tensor], rois: Tensor, size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Class logits ``(N, C+1)`` and box deltas ``(N, 4(C+1))`` of one image's ``rois (N, 4)``
    (network pixels): RoI pooling, box head and predictor, no post-processing."""
    heads = model.roi_heads
    pooled = heads.box_roi_pool(features, [rois], [size])
    return heads.box_predictor(heads.box_head(pooled))


def fpn_given_rois(
    model: FasterRCNN, images: list[Tensor], proposals: list[Tensor]
) -> list[dict[str, Tensor]]:
    """``model(images)`` in eval mode with ``proposals [(N_b, 4)]`` (input pixels) in place of
    its RPN's: as :class:`torchvision.models.detection.generalized_rcnn.GeneralizedRCNN`."""
    originals = [tuple(image.shape[-2:]) for image in images]
    batch, _ = model.transform(images)
    scaled = [
        resize_boxes(boxes, original, size)
        for boxes, original, size in zip(proposals, originals, batch.image_sizes, strict=True)
    ]
    features = model.backbone(batch.tensors)
    detections, _ = model.roi_heads(features, scaled, batch.image_sizes)
    return model.transform.postprocess(detections, batch.image_sizes, originals)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as :class:`FlopCounterMode` counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _rfcn_family(cfg: ModelConfig, image: Tensor) -> dict[str, RFCN]:
    """R-FCN, the light head and C4 built from ``cfg``, BatchNorm fitted to ``image``."""
    rfcn = build_model(cfg).to(image.device)
    calibrate_batch_norm(rfcn, [image])
    # the light head as configs/coco_light_head_r101.yaml runs it: the official PSRoIAlign
    # (the maximum of the samples) and class-specific boxes
    light_cfg = replace(cfg, head="light_head", ps_roi_mode="align_max", box_mode="class")
    light = build_model(light_cfg).to(image.device)
    calibrate_batch_norm(light, [image])
    # C4's per-RoI conv5 takes R-FCN's weights and statistics
    return {"rfcn": rfcn.eval(), "light_head": light.eval(), "c4": build_c4_detector(rfcn, cfg)}


def head_comparison(
    backbones: tuple[str, ...],
    class_counts: tuple[int, ...],
    roi_counts: tuple[int, ...],
    size: int,
    max_size: int,
    image: Tensor,
    budget: Budget,
    generator: torch.Generator,
) -> dict[str, Any]:
    """``{backbone: {C: {detector: {case: {N: measurement}}}}}`` with string keys for C and N
    (module docstring); ``head`` measurements carry ``flops``."""
    input_height, input_width = image.shape[-2:]
    given = {
        str(n): random_boxes(n, input_height, input_width, generator).to(budget.device)
        for n in roi_counts
    }
    return {
        backbone: {
            str(num_classes): _measure_detectors(
                ModelConfig(
                    backbone=backbone,
                    num_classes=num_classes,
                    min_size=(size,),
                    max_size=max_size,
                ),
                image,
                given,
                budget,
            )
            for num_classes in class_counts
        }
        for backbone in backbones
    }


def _measure_detectors(
    cfg: ModelConfig,
    image: Tensor,
    given: dict[str, Tensor],
    budget: Budget,
) -> dict[str, Any]:
    """Every detector of one backbone and C on the ``given`` RoIs (input pixels, by count)."""
    device = budget.device
    detectors = _rfcn_family(cfg, image)
    fpn = fpn_detector(cfg.backbone, cfg.num_classes, cfg.min_size[-1], cfg.max_size).to(device)
    calibrate_batch_norm(fpn, [image])
    fpn.eval()
    calls: dict[tuple[str, str, str], Callable[[], object]] = {}
    flops: dict[tuple[str, str], int] = {}
    with torch.inference_mode():
        batch, _ = detectors["rfcn"].transform([image])
        height, width = batch.image_sizes[0]
        scale = torch.tensor(batch.scales[0] * 2, device=device)  # x, y, x, y
        fpn_batch, _ = fpn.transform([image])
        pyramid = fpn.backbone(fpn_batch.tensors)
        fpn_size = tuple(fpn_batch.image_sizes[0])
        # conv5 (conv4 for C4, whose backbone conv5 is the identity)
        maps = {name: model.backbone(batch.tensor)[1] for name, model in detectors.items()}
        for key, boxes in given.items():
            network = boxes * scale
            network[:, 0::2].clamp_(0, width)
            network[:, 1::2].clamp_(0, height)
            rois = torch.cat((network.new_zeros(len(network), 1), network), dim=1)  # (N, 5)
            for name, model in detectors.items():
                calls[name, "head", key] = lambda model=model, name=name, rois=rois: model.head(
                    maps[name], rois
                )
                calls[name, "pipeline_given_rois", key] = lambda model=model, boxes=boxes: model(
                    [image], proposals=[boxes]
                )
            calls["tv_fpn", "head", key] = lambda network=network: fpn_head(
                fpn, pyramid, network, fpn_size
            )
            calls["tv_fpn", "pipeline_given_rois", key] = lambda boxes=boxes: fpn_given_rois(
                fpn, [image], [boxes]
            )
        for (name, case, key), fn in calls.items():
            if case == "head":
                flops[name, key] = count_flops(fn)  # also a warm-up call
        measured = measure_side_by_side(calls, budget)
    results: dict[str, Any] = {
        name: {case: {} for case in HEAD_CASES} for name in (*detectors, "tv_fpn")
    }
    for (name, case, key), result in measured.items():
        if case == "head":
            result["flops"] = flops[name, key]
        results[name][case][key] = result
    return results
