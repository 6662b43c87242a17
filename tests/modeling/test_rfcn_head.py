import pytest
import torch

from rfcn.modeling.rfcn_head import RFCNHead, box_slot_of_label
from rfcn.ops import deform_ps_roi_pool


def test_channel_counts_per_box_mode():
    for mode, channels in (("agnostic", 4 * 9), ("agnostic8", 8 * 9), ("class", 4 * 9 * 5)):
        head = RFCNHead(64, 32, num_classes=5, k=3, box_mode=mode, spatial_scale=1 / 16)
        assert head.cls_conv.out_channels == 9 * 6
        assert head.box_conv.out_channels == channels


def test_voting_averages_the_bins():
    k, num_classes = 3, 2
    head = RFCNHead(8, 4, num_classes=num_classes, k=k, box_mode="agnostic", spatial_scale=1.0)
    # Score maps that are constant per channel: bin (i, j) of class c pools exactly its value.
    values = torch.arange(k * k * (num_classes + 1), dtype=torch.float32)
    maps = values.view(1, -1, 1, 1).expand(1, -1, 6, 6).contiguous()
    rois = torch.tensor([[0.0, 0.0, 0.0, 6.0, 6.0]])
    voted = head.vote(maps, rois)
    per_class = values.view(num_classes + 1, k * k)
    torch.testing.assert_close(voted, per_class.mean(dim=1, keepdim=True).T)
    torch.testing.assert_close(voted[0, 1], torch.tensor(sum(range(9, 18)) / 9.0))


def test_forward_shapes_and_box_slots():
    head = RFCNHead(16, 8, num_classes=4, k=3, box_mode="class", spatial_scale=1 / 16)
    conv5 = torch.randn(2, 16, 5, 7)
    rois = torch.tensor([[0.0, 0.0, 0.0, 40.0, 40.0], [1.0, 10.0, 5.0, 100.0, 70.0]])
    logits, deltas = head(conv5, rois)
    assert logits.shape == (2, 5) and deltas.shape == (2, 4, 4)
    labels = torch.tensor([0, 1, 4])
    assert box_slot_of_label(labels, "class").tolist() == [0, 0, 3]
    assert box_slot_of_label(labels, "agnostic8").tolist() == [0, 1, 1]
    assert box_slot_of_label(labels, "agnostic").tolist() == [0, 0, 0]


@pytest.mark.parametrize("box_mode", ["agnostic", "agnostic8", "class"])
@pytest.mark.parametrize("ps_roi_mode", ["pool", "align"])
def test_forward_pools_each_map_as_alone(box_mode, ps_roi_mode):
    """The class and box maps pooled in one call give what pooling each alone gives, forward and
    backward (``forward`` concatenates them; the reference here does not)."""
    torch.manual_seed(0)
    head = RFCNHead(
        16, 8, num_classes=3, k=3, box_mode=box_mode, spatial_scale=1 / 16,
        ps_roi_mode=ps_roi_mode,
    ).double()  # fmt: skip
    conv5 = torch.randn(2, 16, 6, 7, dtype=torch.float64)
    rois = torch.tensor(
        [[0.0, 3.0, 7.0, 60.0, 90.0], [1.0, 20.0, 5.0, 100.0, 70.0], [1.0, 0.0, 0.0, 111.0, 95.0]],
        dtype=torch.float64,
    )
    logits, deltas = head(conv5, rois)
    ((logits * 3).sum() + deltas.square().sum()).backward()
    together = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    maps = head.score_maps(conv5)
    alone_logits = head.vote(maps.cls, rois)
    alone_deltas = head.vote(maps.box, rois).view(-1, head.num_box_slots, 4)
    ((alone_logits * 3).sum() + alone_deltas.square().sum()).backward()
    torch.testing.assert_close(logits, alone_logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(deltas, alone_deltas, rtol=0, atol=1e-12)
    for grad, parameter in zip(together, head.parameters(), strict=True):
        torch.testing.assert_close(grad, parameter.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("init", ["gaussian", "scaled"])
def test_initialisation(init):
    torch.manual_seed(0)
    head = RFCNHead(256, 512, 3, 3, "agnostic", 1 / 16, init=init)
    reduce_std = (2 / 256) ** 0.5 if init == "scaled" else 0.01
    cls_std = 512**-0.5 if init == "scaled" else 0.01
    for conv, std in ((head.reduce, reduce_std), (head.cls_conv, cls_std), (head.box_conv, 0.01)):
        assert float(conv.weight.detach().std()) == pytest.approx(std, rel=0.05)
        assert not conv.bias.any()
    with pytest.raises(ValueError, match="init"):
        RFCNHead(256, 512, 3, 3, "agnostic", 1 / 16, init="uniform")


def _deformable_head(num_classes: int = 2, k: int = 3) -> RFCNHead:
    torch.manual_seed(0)
    return RFCNHead(16, 8, num_classes, k, "agnostic8", 1 / 16, deformable=True)


def test_deformable_head_has_zero_offset_convs_of_the_original_widths():
    head = _deformable_head()
    assert head.cls_offset_conv.out_channels == 2 * 9 * 3  # x, y per bin and class (G = C+1)
    assert head.box_offset_conv.out_channels == 2 * 9  # one group for all box channels
    for conv in (head.cls_offset_conv, head.box_offset_conv):
        assert not conv.weight.any() and not conv.bias.any()
    torch.manual_seed(0)
    plain = RFCNHead(16, 8, 2, 3, "agnostic8", 1 / 16)
    for name, parameter in plain.named_parameters():  # the same draw for the shared layers
        assert torch.equal(parameter, dict(head.named_parameters())[name]), name


def test_deformable_head_pools_with_the_pooled_offset_maps():
    """Bin offsets are the offset maps PS-RoI pooled without offsets; constant offset maps
    (the convs' biases) give those constants, then the score maps are pooled with them."""
    head = _deformable_head()
    with torch.no_grad():
        head.cls_offset_conv.bias.copy_(torch.linspace(-1.0, 1.0, 54))
        head.box_offset_conv.bias.copy_(torch.linspace(0.5, -0.5, 18))
    conv5 = torch.randn(2, 16, 6, 7)
    rois = torch.tensor([[0.0, 8.0, 4.0, 60.0, 50.0], [1.0, 30.0, 20.0, 100.0, 90.0]])
    maps = head.score_maps(conv5)
    assert maps.cls_offsets.shape == (2, 54, 6, 7) and maps.box_offsets.shape == (2, 18, 6, 7)
    offsets = head.bin_offsets(maps.cls_offsets, rois)
    expected = torch.linspace(-1.0, 1.0, 54).view(1, 6, 3, 3).expand(2, -1, -1, -1)
    torch.testing.assert_close(offsets, expected)
    logits, deltas = head(conv5, rois)
    box_offsets = torch.linspace(0.5, -0.5, 18).view(1, 2, 3, 3).expand(2, -1, -1, -1)
    torch.testing.assert_close(
        logits, deform_ps_roi_pool(maps.cls, rois, expected, 3, 1 / 16).mean(dim=(2, 3))
    )
    torch.testing.assert_close(
        deltas.flatten(1), deform_ps_roi_pool(maps.box, rois, box_offsets, 3, 1 / 16).mean((2, 3))
    )


def test_zero_offsets_pool_the_regular_bins_and_train_the_offset_convs():
    head = _deformable_head()
    conv5 = torch.randn(1, 16, 6, 7)
    rois = torch.tensor([[0.0, 8.0, 4.0, 60.0, 50.0]])
    logits, _ = head(conv5, rois)
    maps = head.score_maps(conv5)
    torch.testing.assert_close(
        logits, deform_ps_roi_pool(maps.cls, rois, None, 3, 1 / 16).mean(dim=(2, 3))
    )
    logits.logsumexp(dim=1).sum().backward()
    assert head.cls_offset_conv.weight.grad.abs().sum() > 0


def test_align_sampling_ratio_reaches_the_pooling():
    """``model.ps_roi_sampling_ratio`` goes from the config to the head's bilinear pooling.

    A horizontal ramp (value x at column x) and an RoI spanning x in [-1.5, 2.5] after the
    half-pixel shift: one sample per bin reads x = 0.5; four read x = -1, 0, 1, 2, of which
    x < 0 clamps to 0, so they average (0 + 0 + 1 + 2) / 4 = 0.75.
    """
    from rfcn.config import ModelConfig
    from rfcn.modeling.rfcn import build_model

    cfg = ModelConfig(
        backbone="resnet18", num_classes=1, k=1, head_channels=4, ps_roi_mode="align",
        ps_roi_sampling_ratio=4,
    )  # fmt: skip
    assert build_model(cfg).head.sampling_ratio == 4
    ramp = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8).expand(1, 2, 8, 8).contiguous()
    roi = torch.tensor([[0.0, -1.0, 0.5, 3.0, 4.5]])
    expected = {1: 0.5, 4: 0.75}
    for ratio, value in expected.items():
        head = RFCNHead(
            8, 4, num_classes=1, k=1, box_mode="agnostic", spatial_scale=1.0,
            ps_roi_mode="align", sampling_ratio=ratio,
        )  # fmt: skip
        assert head.vote(ramp, roi)[0, 0].item() == pytest.approx(value)
