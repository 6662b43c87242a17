"""``model.head: torchvision``: torchvision's Faster R-CNN parts behind the project's contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from rfcn.config import Config, ModelConfig
from rfcn.engine.checkpoint import load_model, model_state, save_checkpoint
from rfcn.engine.stages import ALTERNATING, configure_stage, parameter_group
from rfcn.errors import UserError
from rfcn.modeling.rfcn import build_model
from rfcn.modeling.torchvision_baseline import TorchvisionFasterRCNN


def _config(**changes: object) -> ModelConfig:
    settings: dict = {
        "backbone": "resnet18",
        "backbone_width": 16,
        "num_classes": 3,
        "head": "torchvision",
        "min_size": (64,),
        "max_size": 96,
        "anchor_sizes": (16.0, 32.0),
        "frozen_bn": False,
        "freeze_at": 0,
    }
    return ModelConfig(**{**settings, **changes})


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [torch.rand(3, 80, 120), torch.rand(3, 96, 64)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
        # the second box has no width: dropped, as R-FCN drops it
        {
            "boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0], [20.0, 20.0, 20.0, 50.0]]),
            "labels": torch.tensor([3, 2]),
        },
    ]
    return images, targets


def test_build_model_wires_torchvisions_parts_on_conv4() -> None:
    torch.manual_seed(0)
    model = build_model(_config())
    assert isinstance(model, TorchvisionFasterRCNN)
    assert isinstance(model.rpn, RegionProposalNetwork) and isinstance(model.head, RoIHeads)
    assert isinstance(model.head.box_head, TwoMLPHead)
    assert model.head.box_roi_pool.output_size == (7, 7)
    assert model.head.fg_bg_sampler.batch_size_per_image == 512  # torchvision's default
    assert model.head.box_predictor.cls_score.out_features == 4  # C + 1
    assert model.head.box_predictor.bbox_pred.out_features == 16  # class-specific boxes
    assert model.backbone.out_channels == 4 * 16  # conv4 of a 16-wide ResNet-18
    # R-FCN's parameter groups (trainer, alternating stages) know every parameter
    assert {parameter_group(name) for name, _ in model.named_parameters()} == {
        "shared",
        "rpn",
        "head",
    }


def test_a_training_step_gives_the_projects_losses_and_trains_the_trunk() -> None:
    torch.manual_seed(0)
    model = build_model(_config()).train()
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(torch.isfinite(value) for value in losses.values())
    sum(losses.values()).backward()
    stem = model.backbone.trunk[0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0


def test_eval_gives_boxes_in_input_pixels() -> None:
    torch.manual_seed(0)
    model = build_model(_config(score_thresh=0.0, detections_per_img=7)).eval()
    images, _ = _batch()
    with torch.no_grad():
        outputs = model(images)
    for output, image in zip(outputs, images, strict=True):
        assert set(output) == {"boxes", "labels", "scores"}
        assert 0 < len(output["boxes"]) <= 7
        height, width = image.shape[-2:]
        assert float(output["boxes"][:, 2].max()) <= width
        assert float(output["boxes"][:, 3].max()) <= height
        assert set(output["labels"].tolist()) <= {1, 2, 3}


def test_it_trains_end_to_end_only_and_proposes_its_own_rois() -> None:
    model = build_model(_config())
    with pytest.raises(UserError, match="end_to_end only"):
        configure_stage(model, ALTERNATING[0])
    with pytest.raises(ValueError, match="proposes its own"):
        model(*_batch(), proposals=[torch.zeros(1, 4)] * 2)


def test_checkpoint_round_trip_and_refusal_of_rfcn_configs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = Config(model=_config())
    model = build_model(cfg.model)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model_state(model, cfg, ["a", "b", "c"]))
    loaded, loaded_cfg, names = load_model(path)
    assert isinstance(loaded, TorchvisionFasterRCNN) and names == ["a", "b", "c"]
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    loaded_cfg.model.head = "rfcn"
    with pytest.raises(UserError, match=r"model\.head=torchvision, config has model\.head=rfcn"):
        load_model(path, cfg=loaded_cfg)
