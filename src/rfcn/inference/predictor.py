"""Run a trained R-FCN on images: load once, call on paths, PIL images, arrays or tensors.

    predictor = Predictor.from_checkpoint("runs/voc/model_final.pt", device="cuda")
    detections = predictor("street.jpg")              # one image -> Detections
    for name, box, score in zip(detections.names, detections.boxes, detections.scores): ...
    batch = predictor([image_a, image_b])               # several -> list[Detections]

Test-time augmentation (paper §4.1: "multi-scale testing" with shorter sides
{200, 400, 600, 800, 1000}, and horizontal flips): the model runs once per scale and flip,
the boxes are mapped back to the input image, and the union is merged by per-class NMS at
the model's NMS threshold (0.3 in the paper).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from rfcn.data.transforms import hflip_boxes
from rfcn.inference.detections import Detections
from rfcn.inference.fast_path import optimize_for_inference
from rfcn.inference.image_input import as_rgb_array, to_chw_float
from rfcn.ops.boxes import batched_nms_top


class Predictor:
    """A model in eval mode on one device, with its class names and test-time options.

    Args:
        model: an R-FCN (``rfcn.modeling.rfcn.RFCN``) or any module with the same eval contract.
        class_names: the C foreground class names, label ``l`` is ``class_names[l - 1]``.
        device: where the model runs; None keeps the model where it is.
        scales: shorter sides to test at (multi-scale testing); None: the model's own size.
        flip: also run on the horizontally flipped images and merge.
        nms_thresh: IoU of the per-class NMS that merges scales and flips.
        detections_per_image: how many merged detections to keep per image.
        score_threshold: detections below it are dropped from what ``__call__`` returns.
        channels_last: NHWC convolutions, a step of the fast inference path
            (:func:`rfcn.inference.fast_path.optimize_for_inference`, which changes the model
            in place).
        bf16: bf16 autocast over the backbone or all convs (fast path).
        compile_backbone: ``torch.compile`` of the backbone (fast path).
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        *,
        device: str | torch.device | None = None,
        scales: Sequence[int] | None = None,
        flip: bool = False,
        nms_thresh: float = 0.3,
        detections_per_image: int = 100,
        score_threshold: float = 0.0,
        channels_last: bool = False,
        bf16: Literal["backbone", "convs"] | None = None,
        compile_backbone: bool = False,
    ) -> None:
        if scales is not None and (not scales or min(scales) <= 0):
            raise ValueError(f"scales must be positive shorter sides, got {list(scales)}")
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.model = optimize_for_inference(
            model.to(self.device), channels_last, bf16, compile_backbone
        )
        self.class_names = tuple(class_names)
        self.scales = tuple(int(s) for s in scales) if scales is not None else None
        self.flip = flip
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.score_threshold = score_threshold

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], device: str | torch.device = "cpu", **options: Any
    ) -> Predictor:
        """Load a checkpoint written by ``rfcn train`` (``weights_only`` loading, no pickles).

        ``options`` are the keyword arguments of :class:`Predictor`; NMS threshold and
        detections per image default to the checkpoint's model config.

        Raises:
            UserError: the file is missing or not a checkpoint, or its weights do not fit its
                config.
        """
        from rfcn.engine.checkpoint import load_model

        model, cfg, class_names = load_model(path, device)
        options.setdefault("nms_thresh", cfg.model.nms_thresh)
        options.setdefault("detections_per_image", cfg.model.detections_per_img)
        return cls(model, class_names, device=device, **options)

    def __call__(self, images: Any) -> Detections | list[Detections]:
        """Detect objects in one image or a batch.

        Args:
            images: one image or a list of them; an image is a path, a PIL image, an
                ``(H, W, 3)`` numpy array (uint8, or float in 0..1) or a ``(3, H, W)`` tensor
                (float in 0..1, or uint8). A 4-d array ``(N, H, W, 3)`` or tensor
                ``(N, 3, H, W)`` is a batch.

        Returns:
            :class:`Detections` for a single image, a list of them for a batch; boxes are in
            the input image's pixels.
        """
        tensors, single = self._as_tensors(images)
        outputs = self.predict_tensors(tensors)
        detections = [
            Detections.from_arrays(
                out["boxes"].cpu().numpy(),
                out["scores"].cpu().numpy(),
                out["labels"].cpu().numpy(),
                self.class_names,
            ).above(self.score_threshold)
            for out in outputs
        ]
        return detections[0] if single else detections

    def batch_key(self, height: int, width: int) -> tuple[tuple[int, int], ...]:
        """The padded network-input size of an ``height`` x ``width`` image at every test scale.

        Images with equal keys run together exactly as each runs alone; :meth:`predict_tensors`
        batches only such images, so batching never changes a detection.
        """
        keys = []
        for scale in self.scales or (None,):
            with self._test_scale(scale):
                keys.append(self.model.transform.padded_size(height, width))
        return tuple(keys)

    @torch.inference_mode()
    def predict_tensors(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """The model's eval output for ``(3, H, W)`` float 0..1 images, with test-time options.

        Images run in one batch per :meth:`batch_key`, so each image's detections are those it
        gets alone (up to the float rounding of batched convolutions).

        Returns:
            per image ``{"boxes": (N, 4), "labels": (N,), "scores": (N,)}`` on the predictor's
            device, in input-image pixels, no score threshold applied beyond the model's own.
        """
        groups: dict[tuple[tuple[int, int], ...], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(self.batch_key(*image.shape[-2:]), []).append(index)
        outputs: list[dict[str, Tensor]] = [{} for _ in images]
        for indices in groups.values():
            group = self._predict_batch([images[index].to(self.device) for index in indices])
            for index, output in zip(indices, group, strict=True):
                outputs[index] = output
        return outputs

    def _predict_batch(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """:meth:`predict_tensors` for images of one :meth:`batch_key`."""
        if self.scales is None and not self.flip:
            return self.model(images)
        runs: list[list[dict[str, Tensor]]] = []
        for scale in self.scales or (None,):
            with self._test_scale(scale):
                runs.append(self.model(images))
                if self.flip:
                    flipped = self.model([image.flip(-1) for image in images])
                    runs.append(
                        [
                            {**out, "boxes": hflip_boxes(out["boxes"], image.shape[-1])}
                            for out, image in zip(flipped, images, strict=True)
                        ]
                    )
        return [self._merge([run[i] for run in runs]) for i in range(len(images))]

    def _merge(self, outputs: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Union of several runs on one image, then per-class NMS and the top detections."""
        boxes = torch.cat([out["boxes"] for out in outputs])
        scores = torch.cat([out["scores"] for out in outputs])
        labels = torch.cat([out["labels"] for out in outputs])
        keep = batched_nms_top(boxes, scores, labels, self.nms_thresh, self.detections_per_image)
        return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}

    @contextlib.contextmanager
    def _test_scale(self, scale: int | None) -> Iterator[None]:
        """Temporarily resize to shorter side ``scale`` inside the model's transform.

        The longest side's limit grows in proportion (1000 at 600 becomes 1667 at 1000), so
        large scales are not capped back to the default size.
        """
        transform = self.model.transform
        saved = (transform.min_size, transform.max_size)
        if scale is not None:
            base = saved[0][-1]
            transform.min_size = (scale,)
            transform.max_size = max(scale, round(saved[1] * scale / base))
        try:
            yield
        finally:
            transform.min_size, transform.max_size = saved

    def _as_tensors(self, images: Any) -> tuple[list[Tensor], bool]:
        """Inputs -> list of ``(3, H, W)`` float32 tensors in 0..1, and whether it was one image."""
        if isinstance(images, (list, tuple)):
            return [_as_tensor(image) for image in images], False
        if isinstance(images, (np.ndarray, Tensor)) and images.ndim == 4:
            return [_as_tensor(image) for image in images], False
        return [_as_tensor(images)], True


def _as_tensor(image: Any) -> Tensor:
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) tensor, got {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image.float() / 255.0
        return image.float()
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] not in (3, 4):
        raise ValueError(
            f"numpy images are (H, W, 3), got {image.shape}; pass a tensor for (3, H, W)"
        )
    return torch.from_numpy(to_chw_float(as_rgb_array(image)))


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
