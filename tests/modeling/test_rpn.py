import math

import pytest
import torch
from torch import Tensor

from rfcn.modeling.anchors import AnchorGenerator
from rfcn.modeling.rpn import RegionProposalNetwork, RPNHead


class FixedHead(RPNHead):
    """An RPN head whose outputs are set by the test."""

    def __init__(self, objectness: Tensor, deltas: Tensor) -> None:
        super().__init__(in_channels=1, num_anchors=1, channels=1)
        self.fixed = (objectness, deltas)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.fixed


def _rpn(head: RPNHead, post_nms: int = 10, pre_nms: int = 10) -> RegionProposalNetwork:
    return RegionProposalNetwork(
        head,
        AnchorGenerator((16.0,), (1.0,), stride=16),  # one 16x16 anchor per cell
        pre_nms_top_n={"train": pre_nms, "test": pre_nms},
        post_nms_top_n={"train": post_nms, "test": post_nms},
        nms_thresh=0.7,
        min_size=0.0,
        fg_iou=0.7,
        bg_iou=0.3,
        batch_per_image=4,
        positive_fraction=0.5,
        box_weights=(1.0, 1.0, 1.0, 1.0),
    ).eval()


def test_proposals_sorted_clipped_nms_per_image():
    # 2 images, 2x2 map, anchors centred at (8, 8), (24, 8), (8, 24), (24, 24)
    objectness = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]], [[[1.0, 2.0], [3.0, 4.0]]]])
    deltas = torch.zeros(2, 4, 2, 2)
    deltas[0, 0, 0, 1] = -0.9  # image 0: anchor 1 moves onto anchor 0 (IoU > 0.7), suppressed
    proposals, losses = _rpn(FixedHead(objectness, deltas))(
        torch.zeros(2, 1, 2, 2), [(32, 32), (20, 28)]
    )
    assert losses == {}
    expected_0 = torch.tensor(
        [[0.0, 0.0, 16.0, 16.0], [0.0, 16.0, 16.0, 32.0], [16.0, 16.0, 32.0, 32.0]]
    )
    torch.testing.assert_close(proposals[0], expected_0)
    expected_1 = torch.tensor(
        [
            [16.0, 16.0, 28.0, 20.0],
            [0.0, 16.0, 16.0, 20.0],
            [16.0, 0.0, 28.0, 16.0],
            [0.0, 0.0, 16.0, 16.0],
        ]
    )
    torch.testing.assert_close(proposals[1], expected_1)
    capped, _ = _rpn(FixedHead(objectness, deltas), post_nms=2)(
        torch.zeros(2, 1, 2, 2), [(32, 32), (20, 28)], post_nms_top_n=1
    )
    assert [p.shape[0] for p in capped] == [1, 1]


def test_losses_with_and_without_ground_truth():
    torch.manual_seed(0)
    head = RPNHead(in_channels=4, num_anchors=1, channels=8)
    rpn = _rpn(head).train()
    features = torch.randn(2, 4, 3, 3)
    gt = [torch.tensor([[16.0, 16.0, 32.0, 32.0]]), torch.zeros(0, 4)]
    _, losses = rpn(features, [(48, 48), (48, 48)], gt)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())


def test_losses_hand_worked_for_one_box_matching_one_anchor():
    """2x2 map of 16 px anchors: [0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32], [16, 16,
    32, 32]. The box [2, 1, 18, 17] overlaps anchor 0 at IoU 210 / 302 = 0.70 - below 0.7, so
    anchor 0 is positive as the box's best anchor - and the others below 0.3 (negatives).
    With 4 anchors sampled per image all four are taken: S = 4."""
    objectness = torch.tensor([[[[2.0, -1.0], [0.5, 0.0]]]])  # anchors 0, 1 / 2, 3
    deltas = torch.full((1, 4, 2, 2), 9.0)  # negatives' deltas: no loss whatever they are
    # anchor 0: the box's targets are (2/16, 1/16, log 1, log 1) with weights 1
    deltas[0, :, 0, 0] = torch.tensor([0.125 + 0.5, 0.0625, 0.0, -0.05])
    rpn = _rpn(FixedHead(objectness, deltas)).train()
    _, losses = rpn(torch.zeros(1, 1, 2, 2), [(32, 32)], [torch.tensor([[2.0, 1.0, 18.0, 17.0]])])
    bce = math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))  # anchor 0 (1), 1 (0)
    bce += math.log(1 + math.exp(0.5)) + math.log(2.0)  # anchors 2 and 3 (label 0)
    beta = 1 / 9  # smooth-L1: |d| - beta/2 above beta, d²/(2 beta) below
    smooth_l1 = (0.5 - beta / 2) + 0.05**2 / (2 * beta)
    assert losses["loss_rpn_cls"].item() == pytest.approx(bce / 4, rel=1e-5)
    assert losses["loss_rpn_box"].item() == pytest.approx(smooth_l1 / 4, rel=1e-5)


def test_channel_4a_plus_d_moves_anchor_a():
    generator = AnchorGenerator((16.0, 32.0, 64.0), (1.0,), stride=16)
    objectness = torch.zeros(1, 3, 2, 2)
    objectness[0, 2, 1, 0] = 5.0  # anchor 2 (64 x 64) at row 1, column 0: centre (8, 24)
    deltas = torch.zeros(1, 12, 2, 2)
    deltas[0, 4 * 2 + 0, 1, 0] = 0.25  # dx of anchor 2: centre moves right by 16
    deltas[0, 4 * 2 + 3, 1, 0] = -0.5  # dh of anchor 2: height * exp(-0.5)
    rpn = _rpn(FixedHead(objectness, deltas))
    rpn.anchor_generator = generator
    proposals, _ = rpn(torch.zeros(1, 1, 2, 2), [(200, 200)])
    half_h = 32.0 * torch.exp(torch.tensor(-0.5)).item()
    expected = torch.tensor([-8.0, 24.0 - half_h, 56.0, 24.0 + half_h]).clamp(min=0)
    torch.testing.assert_close(proposals[0][0], expected)
