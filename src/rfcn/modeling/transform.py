"""Turning a list of images into one network input, and mapping boxes back (as torchvision's
``GeneralizedRCNNTransform``): normalise, resize the shorter side, pad to a common size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfcn.config import ModelConfig
from rfcn.ops.boxes import clip_boxes, scale_boxes


@dataclass
class ImageBatch:
    """Images resized, normalised and padded into one tensor.

    Attributes:
        tensor: ``(B, 3, H, W)``; image b fills ``tensor[b, :, :h_b, :w_b]``, zeros elsewhere.
        image_sizes: ``(h_b, w_b)`` of every resized image, in network-input pixels.
        original_sizes: ``(H_b, W_b)`` of every input image.
        scales: ``(scale_x, scale_y)`` of every image: network pixels per input pixel.
    """

    tensor: Tensor
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    scales: list[tuple[float, float]]


class RFCNTransform(nn.Module):
    """Normalise, resize and batch images; scale targets alike; map detections back.

    Args:
        min_size: shorter-side lengths; training picks one at random per batch (global torch
            RNG), evaluation uses the last. A plain attribute, so multi-scale testing may set it.
        max_size: cap on the longer side (the shorter side gives way, paper §3.1 "1000").
        size_divisible: the padded batch height and width are multiples of this.
        image_mean, image_std: per-channel normalisation of RGB images in 0..1.
    """

    def __init__(
        self,
        min_size: tuple[int, ...],
        max_size: int,
        size_divisible: int,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.min_size = tuple(min_size)
        self.max_size = max_size
        self.size_divisible = size_divisible
        self.register_buffer("mean", torch.tensor(image_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(3, 1, 1), persistent=False)

    def target_size(self) -> int:
        """The shorter-side length for the next batch."""
        if self.training and len(self.min_size) > 1:
            return self.min_size[int(torch.randint(len(self.min_size), ()).item())]
        return self.min_size[-1]

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        short_side: int | None = None,
    ) -> tuple[ImageBatch, list[dict[str, Tensor]] | None]:
        """``images``: ``[(3, H_b, W_b)]`` RGB in 0..1. Targets' ``"boxes"`` are rescaled (copies).

        ``short_side`` overrides :meth:`target_size` (e.g. the test scale while training).
        """
        if short_side is None:
            short_side = self.target_size()
        resized, sizes, originals, scales = [], [], [], []
        for image in images:
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
            height, width = image.shape[-2:]
            new_height, new_width = self.resized_size(height, width, short_side)
            normalised = (image.to(self.mean.dtype) - self.mean) / self.std
            resized.append(
                F.interpolate(
                    normalised[None],
                    size=(new_height, new_width),
                    mode="bilinear",
                    align_corners=False,
                )[0]
            )
            sizes.append((new_height, new_width))
            originals.append((height, width))
            scales.append((new_width / width, new_height / height))
        batch = ImageBatch(self._pad(resized), sizes, originals, scales)
        if targets is None:
            return batch, None
        scaled_targets = []
        for target, (scale_x, scale_y) in zip(targets, scales, strict=True):
            scaled = dict(target)
            scaled["boxes"] = scale_boxes(target["boxes"].to(self.mean.dtype), scale_x, scale_y)
            scaled_targets.append(scaled)
        return batch, scaled_targets

    def resized_size(self, height: int, width: int, short_side: int) -> tuple[int, int]:
        """``(h, w)`` of an ``height`` x ``width`` image resized to shorter side ``short_side``,
        the longer side capped at ``max_size``."""
        # sym_min/sym_max and trunc(x + 0.5) (round half up, x > 0) keep the size symbolic
        # under torch.export (rfcn export): builtin min/max would guard on which side is
        # shorter, and neither the ONNX exporter nor torch.export.save handle round().
        scale = torch.sym_min(
            short_side / torch.sym_min(height, width),
            self.max_size / torch.sym_max(height, width),
        )
        return math.trunc(height * scale + 0.5), math.trunc(width * scale + 0.5)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H, W)`` of the network input of an ``height`` x ``width`` image alone, at the
        evaluation size. Images of equal padded size batched together get exactly the input
        each gets alone; others would see extra zero padding, which changes the features
        near their lower and right borders, and so the detections."""
        resized = self.resized_size(height, width, self.min_size[-1])
        return self._round_up(resized[0]), self._round_up(resized[1])

    def _round_up(self, length: int) -> int:
        divisor = self.size_divisible
        return (length + divisor - 1) // divisor * divisor

    def _pad(self, images: list[Tensor]) -> Tensor:
        """``[(3, h_b, w_b)]`` -> ``(B, 3, H, W)`` zero-padded at the bottom and right."""
        height = self._round_up(max(image.shape[1] for image in images))
        width = self._round_up(max(image.shape[2] for image in images))
        batch = images[0].new_zeros((len(images), 3, height, width))
        for slot, image in zip(batch, images, strict=True):
            slot[:, : image.shape[1], : image.shape[2]].copy_(image)
        return batch

    @staticmethod
    def to_input_pixels(boxes: list[Tensor], batch: ImageBatch) -> list[Tensor]:
        """Boxes ``[(N_b, 4)]`` in network pixels -> input-image pixels, clipped to the image."""
        mapped = []
        for image_boxes, (scale_x, scale_y), (height, width) in zip(
            boxes, batch.scales, batch.original_sizes, strict=True
        ):
            original = scale_boxes(image_boxes, 1.0 / scale_x, 1.0 / scale_y)
            mapped.append(clip_boxes(original, height, width))
        return mapped


def build_transform(cfg: ModelConfig) -> RFCNTransform:
    """The transform ``cfg`` describes: every detector the model builds sees the same pixels."""
    return RFCNTransform(
        cfg.min_size, cfg.max_size, cfg.size_divisible, cfg.image_mean, cfg.image_std
    )
