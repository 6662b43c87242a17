import math

import torch

from rfcn.modeling.losses import head_losses, ohem_select, per_roi_losses, rpn_losses


def test_ohem_select_picks_the_top_losses():
    generator = torch.Generator().manual_seed(0)
    losses = torch.rand(300, generator=generator)
    picked = ohem_select(losses, 128)
    expected = sorted(range(300), key=lambda i: -losses[i].item())[:128]
    assert picked.tolist() == expected
    assert picked.dtype == torch.int64


def test_ohem_select_with_ties_takes_the_largest_values():
    losses = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0, 0.5])
    picked = ohem_select(losses, 2)
    assert picked.numel() == 2 and len(set(picked.tolist())) == 2
    assert set(picked.tolist()) <= {1, 2, 4}
    picked = ohem_select(losses, 4)
    assert sorted(losses[picked].tolist()) == [2.0, 3.0, 3.0, 3.0]


def test_ohem_select_with_fewer_rois_than_batch_takes_all():
    losses = torch.tensor([0.2, 0.9, 0.1], requires_grad=True)
    picked = ohem_select(losses, 128)
    assert picked.tolist() == [1, 0, 2]
    assert not picked.requires_grad


def test_per_roi_losses_match_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1])
    pred = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.5, -2.0, 0.0, 0.0]])
    target = torch.zeros(2, 4)
    cls, box = per_roi_losses(logits, labels, pred, target, box_beta=1.0)
    expected_cls = [
        -math.log(math.exp(2) / (math.exp(2) + 2)),
        -math.log(math.e / (math.e + 2)),
    ]
    torch.testing.assert_close(cls, torch.tensor(expected_cls))
    # background has no box loss; smooth-L1 (beta 1): 0.5 * 0.5² + (2 - 0.5)
    torch.testing.assert_close(box, torch.tensor([0.0, 0.125 + 1.5]))


def test_per_roi_box_loss_takes_its_transition_point():
    logits = torch.zeros(1, 2)
    labels = torch.tensor([1])
    pred = torch.tensor([[0.05, -0.5, 0.0, 2.0]])
    # beta 1/9 (torchvision's): 0.5 * 0.05² / (1/9) below it, |x| - 1/18 above it
    _, box = per_roi_losses(logits, labels, pred, torch.zeros(1, 4), box_beta=1.0 / 9.0)
    expected = 4.5 * 0.05**2 + (0.5 - 1.0 / 18.0) + (2.0 - 1.0 / 18.0)
    torch.testing.assert_close(box, torch.tensor([expected]))
    # beta 0 is the L1 loss
    _, box = per_roi_losses(logits, labels, pred, torch.zeros(1, 4), box_beta=0.0)
    torch.testing.assert_close(box, torch.tensor([2.55]))


def test_head_losses_normalise_by_the_selected_count():
    cls = torch.tensor([1.0, 2.0, 3.0, 4.0])
    box = torch.tensor([0.0, 1.0, 0.0, 5.0])
    loss_cls, loss_box = head_losses(cls, box, torch.tensor([3, 1]), box_weight=2.0)
    torch.testing.assert_close(loss_cls, torch.tensor(3.0))
    torch.testing.assert_close(loss_box, torch.tensor(2.0 * 6.0 / 2))


def test_rpn_losses_hand_worked():
    objectness = torch.tensor([0.0, 0.0, 2.0])
    labels = torch.tensor([1, 0, 0])
    pred = torch.tensor([[1.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])
    target = torch.zeros(3, 4)
    loss_cls, loss_box = rpn_losses(objectness, labels, pred, target)
    expected_cls = (math.log(2) + math.log(2) + math.log(1 + math.exp(2))) / 3
    torch.testing.assert_close(loss_cls, torch.tensor(expected_cls))
    torch.testing.assert_close(loss_box, torch.tensor((1.0 - 0.5 / 9) / 3))
