"""Predictor: input forms, single vs batch, flip and multi-scale merging, checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from rfcn.config import Config, config_from_dict
from rfcn.engine.checkpoint import model_state, save_checkpoint
from rfcn.errors import UserError
from rfcn.inference.detections import Detections
from rfcn.inference.predictor import Predictor
from rfcn.modeling.rfcn import RFCN, build_model
from rfcn.modeling.transform import RFCNTransform


class StripeDetector(nn.Module):
    """A stand-in model: one box around the bright columns of each image, label 1.

    The score is ``min_size / 1000`` of the transform in use, so a test can tell which scale
    produced a detection; every call is recorded, and the boxes it returned, in ``found``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.transform = RFCNTransform((600,), 1000, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.calls: list[tuple[int, int, list[tuple[int, ...]]]] = []
        self.found: list[list[float]] = []

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        self.calls.append(
            (self.transform.min_size[-1], self.transform.max_size, [tuple(i.shape) for i in images])
        )
        outputs = []
        for image in images:
            bright = (image.mean(dim=(0, 1)) > 0.5).nonzero()[:, 0].float()
            box = torch.stack(
                [bright.min(), bright.new_tensor(0.0), bright.max() + 1, bright.new_tensor(8.0)]
            )
            outputs.append(
                {
                    "boxes": box[None],
                    "labels": torch.ones(1, dtype=torch.int64),
                    "scores": torch.tensor([self.transform.min_size[-1] / 1000.0]),
                }
            )
            self.found.append(box.tolist())
        return outputs


def stripe_image(width: int = 64, start: int = 10, stop: int = 20) -> np.ndarray:
    """``(16, width, 3)`` uint8, white in columns ``start..stop-1``."""
    image = np.zeros((16, width, 3), dtype=np.uint8)
    image[:, start:stop] = 255
    return image


def test_every_input_form_gives_the_same_detections(tmp_path: Path) -> None:
    array = stripe_image()
    path = tmp_path / "stripe.png"
    Image.fromarray(array).save(path)
    forms = [
        array,
        str(path),
        path,
        Image.fromarray(array),
        array.astype(np.float32) / 255.0,
        array[:, :, 0],  # grey
        np.concatenate([array, np.full((16, 64, 1), 255, np.uint8)], axis=2),  # RGBA
        torch.from_numpy(array).permute(2, 0, 1),  # uint8 tensor
        torch.from_numpy(array).permute(2, 0, 1).float() / 255.0,
    ]
    predictor = Predictor(StripeDetector(), ["stripe"])
    for form in forms:
        detections = predictor(form)
        assert isinstance(detections, Detections)
        np.testing.assert_allclose(detections.boxes, [[10.0, 0.0, 20.0, 8.0]])
        assert detections.names == ["stripe"]


def test_batches_return_one_result_per_image() -> None:
    predictor = Predictor(StripeDetector(), ["stripe"])
    images = [stripe_image(start=2, stop=4), stripe_image(width=40, start=30, stop=33)]
    as_list = predictor(images)
    assert [d.boxes[0, [0, 2]].tolist() for d in as_list] == [[2.0, 4.0], [30.0, 33.0]]
    stacked = predictor(np.stack([stripe_image(start=1, stop=3)] * 3))
    assert len(stacked) == 3
    tensor_batch = predictor(torch.zeros(2, 3, 8, 8).index_fill_(3, torch.tensor([5]), 1.0))
    assert [d.boxes[0, [0, 2]].tolist() for d in tensor_batch] == [[5.0, 6.0], [5.0, 6.0]]


def test_only_images_that_pad_alike_share_a_forward_pass() -> None:
    model = StripeDetector()
    predictor = Predictor(model, ["stripe"], scales=[200, 600])
    # At 200 and 600 the 64- and 63-wide images pad alike (16x64 -> 250x1000 and 16x63 ->
    # 254x1000 at 600: 256x1024); the 40-wide one does not (400x1000: 416x1024).
    images = [stripe_image(64, 2, 4), stripe_image(40, 30, 33), stripe_image(63, 5, 9)]
    assert predictor.batch_key(16, 64) == predictor.batch_key(16, 63)
    assert predictor.batch_key(16, 64) != predictor.batch_key(16, 40)
    detections = predictor(images)
    assert [d.boxes[0, [0, 2]].tolist() for d in detections] == [[2, 4], [30, 33], [5, 9]]
    widths = [[shape[2] for shape in shapes] for _, _, shapes in model.calls]
    assert widths == [[64, 63], [64, 63], [40], [40]]  # per group: one call per scale


def test_flip_maps_boxes_back_and_merges_them() -> None:
    model = StripeDetector()
    image = stripe_image(width=64, start=10, stop=20)
    # No merging (NMS at IoU 1 suppresses nothing): the flipped run found the stripe at
    # columns 44..53, x 44..54, and mapped back it is exactly the first run's box; a flip off
    # by one pixel (x 9..19, IoU 0.82 with it) would differ here.
    unmerged = Predictor(model, ["stripe"], flip=True, nms_thresh=1.0)(image)
    assert model.found == [[10.0, 0.0, 20.0, 8.0], [44.0, 0.0, 54.0, 8.0]]
    np.testing.assert_array_equal(unmerged.boxes, [[10.0, 0.0, 20.0, 8.0]] * 2)
    # At the predictor's NMS the two coincide and merge into one.
    merged = Predictor(model, ["stripe"], flip=True)(image)
    np.testing.assert_array_equal(merged.boxes, [[10.0, 0.0, 20.0, 8.0]])


def test_multi_scale_sets_and_restores_the_transform_size() -> None:
    model = StripeDetector()
    predictor = Predictor(model, ["stripe"], scales=[200, 1000], nms_thresh=0.3)
    detections = predictor(stripe_image())
    assert [call[:2] for call in model.calls] == [(200, 333), (1000, 1667)]
    assert (model.transform.min_size, model.transform.max_size) == ((600,), 1000)
    # Both scales found the same box; the merge keeps the higher-scoring one.
    assert detections.scores.tolist() == pytest.approx([1.0])


def test_merge_keeps_boxes_of_different_classes_and_caps_the_count() -> None:
    predictor = Predictor(StripeDetector(), ["a", "b"], nms_thresh=0.3, detections_per_image=2)
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    runs = [
        {"boxes": box, "labels": torch.tensor([1]), "scores": torch.tensor([0.9])},
        {"boxes": box, "labels": torch.tensor([2]), "scores": torch.tensor([0.8])},
        {"boxes": box + 1, "labels": torch.tensor([1]), "scores": torch.tensor([0.7])},
        {"boxes": box + 50, "labels": torch.tensor([1]), "scores": torch.tensor([0.6])},
    ]
    merged = predictor._merge(runs)
    # Class 1's shifted duplicate (IoU 0.68) goes; the class-2 box stays; the cap drops the last.
    assert merged["labels"].tolist() == [1, 2]
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.8])


def test_score_threshold_and_bad_inputs() -> None:
    predictor = Predictor(StripeDetector(), ["stripe"], score_threshold=0.7)
    assert len(predictor(stripe_image())) == 0  # score 0.6 at the default size
    with pytest.raises(ValueError, match="numpy images are"):
        predictor(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(TypeError, match="int"):
        predictor(3)
    with pytest.raises(UserError, match="not found"):
        predictor("missing.jpg")


def tiny_rfcn(**model: object) -> tuple[RFCN, Config]:
    """A random-init ResNet-18 R-FCN (k=3, 2 classes) small enough to run in a second;
    ``model`` overrides model settings."""
    cfg = config_from_dict(
        {
            "model": {
                "backbone": "resnet18",
                "k": 3,
                "num_classes": 2,
                "head_channels": 16,
                "min_size": [96],
                "max_size": 128,
                "rpn_pre_nms_test": 100,
                "rpn_post_nms_test": 20,
                "nms_thresh": 0.4,
                "detections_per_img": 7,
                **model,
            }
        }
    )
    torch.manual_seed(0)
    return build_model(cfg.model).eval(), cfg


def test_from_checkpoint_runs_the_saved_model_and_its_settings(tmp_path: Path) -> None:
    model, cfg = tiny_rfcn()
    save_checkpoint(tmp_path / "tiny.pt", model_state(model, cfg, ["cat", "dog"]))
    predictor = Predictor.from_checkpoint(tmp_path / "tiny.pt")
    assert (predictor.nms_thresh, predictor.detections_per_image) == (0.4, 7)
    image = torch.rand(3, 80, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model([image])[0]
    detections = predictor(image)
    assert detections.class_names == ("cat", "dog") and 0 < len(detections) <= 7
    np.testing.assert_allclose(detections.boxes, expected["boxes"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(detections.labels, expected["labels"].numpy())
    # Testing at the model's own scale through the merge path changes nothing: NMS at the
    # same threshold keeps every detection the model already kept.
    same_scale = Predictor(model, ["cat", "dog"], scales=[96], nms_thresh=0.4)(image)
    np.testing.assert_allclose(same_scale.boxes, detections.boxes, atol=1e-5)
    np.testing.assert_array_equal(same_scale.labels, detections.labels)


def test_the_fast_path_keeps_the_detections() -> None:
    model, _ = tiny_rfcn()
    image = torch.rand(3, 80, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model([image])[0]
    fast = Predictor(model, ["cat", "dog"], nms_thresh=0.4, channels_last=True)
    assert fast.model.backbone.trunk[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in fast.model.parameters())
    detections = fast(image)
    np.testing.assert_allclose(detections.boxes, expected["boxes"].numpy(), atol=1e-3)
    np.testing.assert_array_equal(detections.labels, expected["labels"].numpy())


def test_deformable_checkpoint_on_the_fast_path(tmp_path: Path) -> None:
    model, cfg = tiny_rfcn(deformable_psroi=True, deformable_conv5="v1")
    with torch.no_grad():
        for layer in model.offset_parameters():
            layer.normal_(std=0.02, generator=torch.Generator().manual_seed(2))
    save_checkpoint(tmp_path / "deformable.pt", model_state(model, cfg, ["cat", "dog"]))
    image = torch.rand(3, 80, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model([image])[0]
    predictor = Predictor.from_checkpoint(tmp_path / "deformable.pt", channels_last=True)
    detections = predictor(image)
    assert len(detections) > 0
    np.testing.assert_allclose(detections.boxes, expected["boxes"].numpy(), atol=1e-3)
    np.testing.assert_array_equal(detections.labels, expected["labels"].numpy())
