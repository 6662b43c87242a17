"""``model.head: light_head``: the large separable conv, the head's outputs, training, detection,
checkpoints and config (Light-Head R-CNN, Li et al. 2017)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional

from rfcn.config import Config, ModelConfig, config_from_dict, load_config
from rfcn.engine.checkpoint import load_model, model_state, save_checkpoint
from rfcn.errors import UserError
from rfcn.modeling.light_head import LargeSeparableConv, LightHead, mid_channels
from rfcn.modeling.rfcn import build_model
from rfcn.ops import ps_roi_pool
from rfcn.visualize import thin_maps_figure, to_pil_image

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = {
    "backbone": "resnet18",
    "backbone_width": 16,
    "num_classes": 3,
    "head": "light_head",
    "k": 3,
    "light_head_alpha": 2,
    "light_head_mid_channels": 8,
    "light_head_kernel": 5,
    "light_head_fc_channels": 32,
    "ps_roi_mode": "align_max",
    "box_mode": "class",
    "min_size": [64],
    "max_size": 96,
    "rpn_pre_nms_train": 100,
    "rpn_post_nms_train": 30,
    "rpn_pre_nms_test": 100,
    "rpn_post_nms_test": 20,
    "ohem_batch_per_image": 8,
}
_GENERATOR = torch.Generator().manual_seed(0)
IMAGES = [torch.rand(3, 60, 80, generator=_GENERATOR), torch.rand(3, 72, 50, generator=_GENERATOR)]
TARGETS = [
    {"boxes": torch.tensor([[10.0, 10.0, 50.0, 45.0]]), "labels": torch.tensor([2])},
    {"boxes": torch.tensor([[5.0, 20.0, 40.0, 60.0]]), "labels": torch.tensor([1])},
]


def _config(**model: object) -> Config:
    return config_from_dict({"model": {**TINY, **model}, "data": {"class_names": ["a", "b", "c"]}})


def test_separable_conv_has_the_hand_counted_parameters() -> None:
    # Two branches, each C_in x C_mid x k + C_mid and C_mid x C_out x k + C_out (biases on):
    # 2 * (8*4*5 + 4) + 2 * (4*18*5 + 18) = 328 + 756 = 1084.
    conv = LargeSeparableConv(8, 4, 18, kernel_size=5)
    assert sum(p.numel() for p in conv.parameters()) == 1084
    kernels = [layer.kernel_size for layer in (*conv.column_first, *conv.row_first)]
    assert kernels == [(5, 1), (1, 5), (1, 5), (5, 1)]
    # Nothing but the four convs: no normalisation, no activation inside the branches.
    assert {type(m) for m in conv.modules()} == {LargeSeparableConv, nn.Sequential, nn.Conv2d}


def test_separable_conv_is_the_sum_of_two_branches_then_one_relu() -> None:
    """The module equals a naive composition of four ``conv2d`` calls, the two branches summed
    and rectified once; each branch alone is not rectified."""
    torch.manual_seed(0)
    conv = LargeSeparableConv(6, 5, 4, kernel_size=3)
    for parameter in conv.parameters():
        nn.init.normal_(parameter, std=0.3)  # biases too, so that they are checked
    x = torch.randn(2, 6, 7, 9)
    a, b = conv.column_first
    c, d = conv.row_first
    column = functional.conv2d(x, a.weight, a.bias, padding=(1, 0))
    column = functional.conv2d(column, b.weight, b.bias, padding=(0, 1))
    row = functional.conv2d(x, c.weight, c.bias, padding=(0, 1))
    row = functional.conv2d(row, d.weight, d.bias, padding=(1, 0))
    with torch.no_grad():
        out = conv(x)
    assert out.shape == (2, 4, 7, 9)
    torch.testing.assert_close(out, (column + row).clamp(min=0))
    assert (column < 0).any() and (row < 0).any() and (out == 0).any()
    with pytest.raises(ValueError, match="odd"):
        LargeSeparableConv(6, 5, 4, kernel_size=4)


@pytest.mark.parametrize(("box_mode", "slots"), [("class", 3), ("agnostic", 1)])
def test_head_pools_the_thin_maps_then_one_fc(box_mode: str, slots: int) -> None:
    torch.manual_seed(0)
    head = LightHead(
        16, 3, box_mode, 1 / 16, k=3, alpha=2, mid_channels=4, kernel_size=5, fc_channels=12
    )
    conv5 = torch.randn(2, 16, 6, 8)
    rois = torch.tensor([[0, 3.0, 5.0, 60.0, 70.0], [1, 0.0, 0.0, 128.0, 96.0]])
    with torch.no_grad():
        logits, deltas = head(conv5, rois)
        thin = head.thin_maps(conv5)
        pooled = ps_roi_pool(thin, rois, 3, 1 / 16, "align_max", 2)  # (K, alpha, k, k)
        hidden = (pooled.flatten(1) @ head.fc.weight.T + head.fc.bias).clamp(min=0)
    assert thin.shape == (2, 2 * 3 * 3, 6, 8)
    assert logits.shape == (2, 4) and deltas.shape == (2, slots, 4)
    torch.testing.assert_close(logits, head.cls_score(hidden))
    torch.testing.assert_close(deltas.flatten(1), head.bbox_pred(hidden))


@pytest.mark.parametrize("init", ["gaussian", "scaled"])
def test_initialisation(init: str) -> None:
    """The public code's N(0, 0.01) (box fc 0.001), or by fan-in: std 1/sqrt(n) for the four
    convs of the separable conv, He's sqrt(2/n) for the fc, 1/sqrt(fc) for the class fc."""
    torch.manual_seed(0)
    head = LightHead(
        64, 3, "class", 1 / 16, k=3, alpha=4, mid_channels=32, fc_channels=256, init=init
    )
    a, b = head.separable.column_first  # 15 x 1 from 64 channels, then 1 x 15 from 32
    scaled_std = {
        a: (64 * 15) ** -0.5,
        b: (32 * 15) ** -0.5,
        head.fc: (2 / 36) ** 0.5,
        head.cls_score: 256**-0.5,
    }
    for layer, std in scaled_std.items():
        wanted = std if init == "scaled" else 0.01
        assert float(layer.weight.detach().std()) == pytest.approx(wanted, rel=0.05)
        assert not layer.bias.any()
    assert float(head.bbox_pred.weight.detach().std()) == pytest.approx(0.001, rel=0.05)
    with pytest.raises(ValueError, match="init"):
        LightHead(64, 3, "class", 1 / 16, init="uniform")
    cfg = _config(light_head_init=init)
    assert float(build_model(cfg.model).head.cls_score.weight.detach().std()) == pytest.approx(
        32**-0.5 if init == "scaled" else 0.01, rel=0.2
    )


def test_middle_width_by_backbone_or_given() -> None:
    assert mid_channels("resnet101", 0) == mid_channels("resnet50", 0) == 256
    assert mid_channels("resnet18", 0) == 64
    assert mid_channels("resnet101", 32) == 32


def test_paper_sized_head_on_resnet101() -> None:
    """alpha = 10, p = 7: 490 thin maps from C_mid = 256 with k = 15, fc 2048."""
    model = build_model(ModelConfig(head="light_head", num_classes=80, box_mode="class"))
    head = model.head
    assert isinstance(head, LightHead)
    assert head.separable.column_first[0].weight.shape == (256, 2048, 15, 1)
    assert head.separable.row_first[1].weight.shape == (490, 256, 15, 1)
    assert head.fc.weight.shape == (2048, 490)
    assert head.cls_score.out_features == 81 and head.bbox_pred.out_features == 320


def test_tiny_model_trains_with_ohem_and_detects() -> None:
    cfg = _config()
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    assert isinstance(model.head, LightHead) and not model.ohem_ranking_pass
    losses = model(IMAGES, TARGETS)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for layer in (model.head.separable.column_first[0], model.head.fc, model.head.cls_score):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        detections = model(IMAGES)
    assert len(detections) == 2
    for found, image in zip(detections, IMAGES, strict=True):
        assert found.keys() == {"boxes", "labels", "scores"}
        assert bool((found["boxes"][:, 2] <= image.shape[2]).all())
        assert bool(((found["labels"] >= 1) & (found["labels"] <= 3)).all())


def test_ohem_backpropagates_only_the_selected_rois() -> None:
    """One pass scores every RoI; the loss, and so the gradient, comes from the B hardest of
    each image (``ohem_batch_per_image``)."""
    torch.manual_seed(0)
    model = build_model(_config(ohem_batch_per_image=4).model).train()
    seen: list[Tensor] = []

    def keep(_module: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
        inputs[0].retain_grad()  # (K, alpha k²), every RoI's flattened bins
        seen.append(inputs[0])

    model.head.fc.register_forward_hook(keep)
    losses = model(IMAGES, TARGETS)
    (losses["loss_cls"] + losses["loss_box"]).backward()
    (features,) = seen
    assert features.grad is not None
    rows_with_gradient = int(features.grad.ne(0).any(dim=1).sum())
    assert 0 < rows_with_gradient <= 2 * 4 < features.shape[0]


def test_picture_of_the_thin_maps_of_one_roi() -> None:
    """What the demo draws: the alpha x p x p bins one RoI reads, the fc layer's input."""
    torch.manual_seed(0)
    model = build_model(_config().model).eval()
    seen = model.head_input(IMAGES[0])
    box = TARGETS[0]["boxes"][0]
    roi = torch.cat((torch.zeros(1), box * seen.scale))[None]  # network pixels
    with torch.no_grad():
        pooled = model.head.pool(model.head.thin_maps(seen.conv5), roi)[0]
        logits, _ = model.head(seen.conv5, roi)
        hidden = functional.relu(model.head.fc(pooled.flatten()[None]))
    assert pooled.shape == (2, 3, 3)
    torch.testing.assert_close(logits, model.head.cls_score(hidden))
    picture = thin_maps_figure(to_pil_image(IMAGES[0]), box.tolist(), pooled.numpy(), "b 0.90")
    assert picture.mode == "RGB" and picture.size[0] > picture.size[1]


def _light_head_checkpoint(path: Path) -> Path:
    cfg = _config()
    torch.manual_seed(0)
    state = {**model_state(build_model(cfg.model), cfg, ["a", "b", "c"]), "iteration": 0}
    save_checkpoint(path, state)
    return path


def test_checkpoint_round_trip_and_refusal_of_the_other_heads(tmp_path: Path) -> None:
    checkpoint = _light_head_checkpoint(tmp_path / "light.pt")
    model, cfg, _ = load_model(checkpoint)
    assert isinstance(model.head, LightHead) and cfg.model.head == "light_head"
    for head in ("rfcn", "c4"):
        other = copy.deepcopy(cfg)
        other.model.head = head
        other.model.ps_roi_mode = "pool"
        with pytest.raises(
            UserError, match=rf"model\.head=light_head, config has model\.head={head}"
        ):
            load_model(checkpoint, cfg=other)
    thicker = copy.deepcopy(cfg)
    thicker.model.light_head_alpha = 3
    with pytest.raises(UserError, match=r"model\.light_head_alpha=2, config has"):
        load_model(checkpoint, cfg=thicker)


def test_config_choices_and_checks() -> None:
    assert _config().model.head == "light_head"
    for overrides, key in [
        ({"ps_roi_mode": "max"}, "model.ps_roi_mode"),
        ({"light_head_kernel": 4}, "model.light_head_kernel"),
        ({"light_head_mid_channels": -1}, "model.light_head_mid_channels"),
        ({"light_head_alpha": 0}, "model.light_head_alpha"),
        ({"deformable_psroi": True}, "model.deformable_psroi"),
        ({"head": "c4", "ps_roi_mode": "align_max"}, "model.ps_roi_mode"),
    ]:
        with pytest.raises(UserError) as error:
            _config(**overrides)
        assert error.value.source == key


def test_configs_follow_the_public_recipe() -> None:
    coco = load_config(CONFIGS / "coco_light_head_r101.yaml")
    model = coco.model
    assert (model.head, model.ps_roi_mode, model.ps_roi_sampling_ratio) == (
        "light_head",
        "align_max",
        2,
    )
    assert (model.k, model.light_head_alpha, model.light_head_kernel) == (7, 10, 15)
    assert mid_channels(model.backbone, model.light_head_mid_channels) == 256
    assert model.light_head_fc_channels == 2048 and model.box_mode == "class"
    assert model.light_head_init == "gaussian"
    assert len(model.anchor_sizes) * len(model.anchor_ratios) == 15
    assert (min(model.anchor_sizes), max(model.anchor_sizes)) == (32, 512)
    assert (model.rpn_pre_nms_train, model.rpn_post_nms_train) == (12000, 2000)
    assert (model.rpn_pre_nms_test, model.rpn_post_nms_test) == (6000, 1000)
    assert model.ohem and model.ohem_batch_per_image == 256
    assert model.head_box_weights == (10.0, 10.0, 5.0, 5.0)  # targets / (0.1, 0.1, 0.2, 0.2)
    assert (model.min_size, model.max_size) == ((800,), 1333)
    train = coco.train
    assert (train.images_per_batch, train.base_batch, train.base_lr) == (16, 16, 0.01)
    assert (train.iterations, train.lr_steps) == (150000, [95000, 125000])
    voc = load_config(CONFIGS / "voc0712_light_head_r101.yaml")
    assert voc.model.head == "light_head" and voc.model.ps_roi_mode == "align_max"
    assert len(voc.data.class_names) == voc.model.num_classes == 20
