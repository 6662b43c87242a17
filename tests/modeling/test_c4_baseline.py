from dataclasses import replace

import pytest
import torch
from torchvision.ops import roi_align, roi_pool

from rfcn.config import ModelConfig
from rfcn.modeling.backbone import build_backbone
from rfcn.modeling.c4_baseline import C4Head, build_c4_detector, move_conv5_into_c4_head
from rfcn.modeling.rfcn import build_model


def _head(num_classes: int = 3, width: int = 64, stage_blocks: tuple[int, ...] = ()) -> tuple:
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="resnet18",
        num_classes=num_classes,
        backbone_width=width,
        stage_blocks=stage_blocks,
    )
    backbone = build_backbone("resnet18", atrous=True, width=width, stage_blocks=stage_blocks)
    atrous_conv5 = backbone.conv5
    head = move_conv5_into_c4_head(backbone, cfg, "class").eval()
    return atrous_conv5, backbone, head


@pytest.mark.parametrize(("width", "stage_blocks"), [(64, ()), (32, ()), (16, (1, 1, 1, 3))])
def test_conv5_keeps_stride_2_and_takes_the_backbone_weights(
    width: int, stage_blocks: tuple[int, ...]
) -> None:
    atrous_conv5, backbone, head = _head(width=width, stage_blocks=stage_blocks)
    assert isinstance(backbone.conv5, torch.nn.Identity)  # conv4 goes to the head
    assert len(head.conv5) == (stage_blocks[3] if stage_blocks else 2)
    assert head.conv5[0].conv1.stride == (2, 2)
    assert head.conv5[0].downsample[0].stride == (2, 2)
    assert atrous_conv5[0].conv1.stride == (1, 1)  # R-FCN's à trous conv5
    dilations = {m.dilation for m in head.conv5.modules() if isinstance(m, torch.nn.Conv2d)}
    assert dilations == {(1, 1)}
    assert head.cls_score.in_features == 8 * width
    for name, weight in atrous_conv5.state_dict().items():
        assert torch.equal(head.conv5.state_dict()[name], weight)


def test_each_roi_goes_through_conv5_alone() -> None:
    """Batched RoIs give what one RoI at a time through pool -> conv5 -> mean -> fc gives."""
    _, _, head = _head(num_classes=3)
    features = torch.randn(2, 256, 20, 30)
    rois = torch.tensor(
        [
            [0.0, 0.0, 0.0, 160.0, 160.0],
            [0.0, 40.0, 30.0, 300.0, 250.0],
            [1.0, 100.0, 50.0, 470.0, 310.0],
        ]
    )
    with torch.no_grad():
        logits, deltas = head(features, rois)
        assert logits.shape == (3, 4) and deltas.shape == (3, 3, 4)
        for row, roi in enumerate(rois):
            pooled = roi_pool(features, roi[None], output_size=14, spatial_scale=1 / 16)
            assert pooled.shape == (1, 256, 14, 14)
            vector = head.conv5(pooled).mean(dim=(2, 3))
            torch.testing.assert_close(logits[row], head.cls_score(vector)[0])
            torch.testing.assert_close(deltas[row].flatten(), head.bbox_pred(vector)[0])


def test_align_pooling_feeds_roi_align_samples_to_conv5() -> None:
    """``model.ps_roi_mode: align`` gives the C4 head RoIAlign (aligned, the configured
    sampling ratio) instead of RoI pooling; everything after the pooling is the same."""
    cfg = ModelConfig(
        backbone="resnet18", num_classes=2, head="c4", box_mode="class", ps_roi_mode="align",
        ps_roi_sampling_ratio=3,
    )  # fmt: skip
    torch.manual_seed(0)
    head = build_model(cfg).head.eval()
    assert (head.pooling, head.sampling_ratio) == ("align", 3)
    features = torch.randn(1, 256, 12, 12)
    rois = torch.tensor([[0.0, 10.0, 12.0, 42.0, 40.0]])  # about 2 x 2 cells
    with torch.no_grad():
        logits, _ = head(features, rois)
        pooled = roi_align(features, rois, 14, 1 / 16, sampling_ratio=3, aligned=True)
        expected = head.cls_score(head.conv5(pooled).mean(dim=(2, 3)))
        torch.testing.assert_close(logits, expected)
        head.pooling = "pool"
        assert not torch.allclose(head(features, rois)[0], expected)


@pytest.mark.parametrize("pooling", ["pool", "align"])
def test_pools_bf16_features_at_float32_rois(pooling: str) -> None:
    """Under bf16 autocast (``train.amp``) conv4 arrives in bf16 and the RoIs in float32: the
    head pools the features at the RoIs' dtype, as it pools float32 features."""
    _, _, head = _head(num_classes=2)
    head.pooling = pooling
    features = torch.randn(1, 256, 12, 12).bfloat16()
    rois = torch.tensor([[0.0, 10.5, 12.0, 150.0, 97.25]])
    with torch.no_grad():
        logits, _ = head(features, rois)
        expected, _ = head(features.float(), rois)
    torch.testing.assert_close(logits, expected)


def _tiny_pair() -> tuple:
    cfg = ModelConfig(
        backbone="resnet18",
        num_classes=3,
        k=3,
        head_channels=32,
        min_size=(96,),
        max_size=128,
        rpn_pre_nms_test=200,
        rpn_post_nms_test=20,
        rpn_pre_nms_train=200,
        rpn_post_nms_train=40,
        ohem_batch_per_image=8,
    )
    torch.manual_seed(0)
    rfcn = build_model(cfg)
    return cfg, rfcn, build_c4_detector(rfcn, cfg)


def test_c4_detector_shares_everything_but_the_head() -> None:
    _, rfcn, c4 = _tiny_pair()
    assert isinstance(c4.head, C4Head)
    assert isinstance(c4.backbone.conv5, torch.nn.Identity)
    assert not isinstance(rfcn.head, C4Head)  # the R-FCN model is left untouched
    for part in ("backbone.trunk", "rpn"):
        ours, theirs = rfcn.get_submodule(part).state_dict(), c4.get_submodule(part).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[name], theirs[name]) for name in ours)
        assert rfcn.get_submodule(part) is not c4.get_submodule(part)


def test_c4_detector_has_the_rfcn_output_format_and_trains() -> None:
    _, rfcn, c4 = _tiny_pair()
    images = [torch.rand(3, 90, 120), torch.rand(3, 100, 80)]
    rfcn.eval()
    c4.eval()
    with torch.no_grad():
        ours, theirs = rfcn(images), c4(images)
    assert len(ours) == len(theirs) == 2
    for a, b, image in zip(ours, theirs, images, strict=True):
        assert a.keys() == b.keys() == {"boxes", "labels", "scores"}
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].dim() == b[key].dim()
        assert b["boxes"].shape[1] == 4
        assert bool((b["boxes"][:, 2] <= image.shape[2]).all())
        assert bool(((b["labels"] >= 1) & (b["labels"] <= 3)).all())
    c4.train()
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[5.0, 20.0, 50.0, 90.0]]), "labels": torch.tensor([1])},
    ]
    losses = c4(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert c4.head.cls_score.weight.grad is not None
    assert c4.head.conv5[0].conv1.weight.grad.abs().sum() > 0


def test_c4_counterpart_of_a_deformable_model_takes_the_plain_weights() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", num_classes=3, k=3, head_channels=16)
    rfcn = build_model(replace(cfg, deformable_conv5="v1"))
    c4 = build_c4_detector(rfcn, cfg)
    torch.testing.assert_close(c4.head.conv5[1].conv2.weight, rfcn.backbone.conv5[1].conv2.weight)


def test_ohem_ranking_pass_gives_the_single_pass_losses_and_gradients() -> None:
    """With frozen BatchNorm each RoI's conv5 output is independent of the others, so ranking
    in a read-only pass and re-running the chosen RoIs must give what one pass over every RoI
    gives: the same losses and the same gradients."""
    cfg, _, _ = _tiny_pair()
    cfg.head, cfg.box_mode = "c4", "class"
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert model.ohem_ranking_pass
    images = [torch.rand(3, 90, 120), torch.rand(3, 100, 80)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[5.0, 20.0, 50.0, 90.0]]), "labels": torch.tensor([1])},
    ]
    results = {}
    for ranking_pass in (True, False):
        model.ohem_ranking_pass = ranking_pass
        model.zero_grad()
        torch.manual_seed(1)  # the RPN samples its anchors
        losses = model(images, targets)
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[ranking_pass] = (losses, grads)
    (two_pass, two_grads), (one_pass, one_grads) = results[True], results[False]
    for name in two_pass:
        torch.testing.assert_close(two_pass[name], one_pass[name])
    assert two_grads.keys() == one_grads.keys()
    for name in two_grads:
        torch.testing.assert_close(two_grads[name], one_grads[name], atol=1e-6, rtol=1e-4)


def test_ranking_pass_leaves_batchnorm_statistics_alone() -> None:
    from rfcn.modeling.heads import kept_running_stats

    layer = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    before = {name: b.clone() for name, b in layer.named_buffers()}
    with torch.no_grad(), kept_running_stats(layer):
        layer(torch.randn(5, 3, 8, 8) + 3.0)
    assert all(torch.equal(b, before[name]) for name, b in layer.named_buffers())
    layer(torch.randn(5, 3, 8, 8) + 3.0)
    assert not torch.equal(layer[1].running_mean, before["1.running_mean"])
