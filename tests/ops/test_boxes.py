import pytest
import torch
import torchvision

from rfcn.ops import boxes as boxes_module
from rfcn.ops.boxes import (
    box_area,
    box_iou,
    clip_boxes,
    nonempty_boxes,
    scale_boxes,
    vote_boxes,
)


def test_box_iou_hand_worked_example():
    # a: 10 x 10 at origin; b: shifted by (5, 5) -> overlap 5 x 5 = 25, union 100 + 100 - 25.
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 40.0]])
    iou = box_iou(a, b)
    assert iou.shape == (1, 3)
    torch.testing.assert_close(iou, torch.tensor([[25.0 / 175.0, 1.0, 0.0]]))


def test_box_iou_contained_box_and_empty_boxes():
    outer = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    inner = torch.tensor([[1.0, 1.0, 3.0, 2.0]])  # area 2 inside area 16
    torch.testing.assert_close(box_iou(outer, inner), torch.tensor([[2.0 / 16.0]]))
    empty = torch.tensor([[3.0, 3.0, 3.0, 3.0]])
    assert box_iou(empty, empty).item() == 0.0
    assert box_iou(torch.zeros(0, 4), outer).shape == (0, 1)


def test_box_area_counts_inverted_boxes_as_empty():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [5.0, 5.0, 4.0, 8.0]])
    torch.testing.assert_close(box_area(boxes), torch.tensor([6.0, 0.0]))


def test_clip_boxes_with_numbers_and_per_row_tensors():
    boxes = torch.tensor([[-5.0, -1.0, 50.0, 20.0], [3.0, 4.0, 8.0, 9.0]])
    expected = torch.tensor([[0.0, 0.0, 30.0, 20.0], [3.0, 4.0, 8.0, 9.0]])
    torch.testing.assert_close(clip_boxes(boxes, 20, 30), expected)
    per_row = clip_boxes(boxes, torch.tensor([[10.0], [5.0]]), torch.tensor([[30.0], [6.0]]))
    torch.testing.assert_close(
        per_row, torch.tensor([[0.0, 0.0, 30.0, 10.0], [3.0, 4.0, 6.0, 5.0]])
    )


def test_nonempty_boxes_with_and_without_min_size():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 16.0, 20.0]])
    assert nonempty_boxes(boxes, 0.0).tolist() == [True, False, True]
    assert nonempty_boxes(boxes, 16.0).tolist() == [False, False, True]


@pytest.mark.parametrize(("sx", "sy"), [(2.0, 0.5), (1.0, 1.0)])
def test_scale_boxes(sx, sy):
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(
        scale_boxes(boxes, sx, sy), torch.tensor([[sx, 2 * sy, 3 * sx, 4 * sy]])
    )


def _nms_per_group_reference(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float
) -> list[int]:
    """Plain NMS per group, kept indices merged best first: what batched NMS must equal."""
    kept: list[int] = []
    for group in groups.unique().tolist():
        members = torch.nonzero(groups == group).flatten()
        kept.extend(members[torchvision.ops.nms(boxes[members], scores[members], iou)].tolist())
    return sorted(kept, key=lambda i: -scores[i].item())


@pytest.mark.parametrize("exporting", [False, True])
def test_batched_nms_is_nms_per_group(monkeypatch: pytest.MonkeyPatch, exporting: bool) -> None:
    monkeypatch.setattr(boxes_module, "is_exporting", lambda: exporting)
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(300, 2, generator=generator) * 100
    sizes = torch.rand(300, 2, generator=generator) * 40 + 1
    boxes = torch.cat((corners, corners + sizes), dim=1)
    scores = torch.rand(300, generator=generator)
    groups = torch.randint(0, 5, (300,), generator=generator)
    kept = boxes_module.batched_nms(boxes, scores, groups, 0.5)
    assert kept.tolist() == _nms_per_group_reference(boxes, scores, groups, 0.5)
    empty = boxes_module.batched_nms(boxes[:0], scores[:0], groups[:0], 0.5)
    assert empty.shape == (0,)


@pytest.mark.parametrize("exporting", [False, True])
@pytest.mark.parametrize("limit", [1, 7, 40, 1000])
def test_batched_nms_top_is_the_first_kept_of_full_nms(
    monkeypatch: pytest.MonkeyPatch, exporting: bool, limit: int
) -> None:
    """Early stopping (NMS over the best boxes only) keeps exactly what full NMS keeps first."""
    monkeypatch.setattr(boxes_module, "is_exporting", lambda: exporting)
    generator = torch.Generator().manual_seed(1)
    corners = torch.rand(400, 2, generator=generator) * 60  # crowded: NMS removes many
    boxes = torch.cat((corners, corners + torch.rand(400, 2, generator=generator) * 30 + 1), 1)
    scores = torch.rand(400, generator=generator)
    for groups in (torch.zeros(400, dtype=torch.int64), torch.randint(0, 6, (400,))):
        full = _nms_per_group_reference(boxes, scores, groups, 0.3)
        kept = boxes_module.batched_nms_top(boxes, scores, groups, 0.3, limit)
        assert kept.tolist() == full[:limit]


def test_vote_boxes_averages_the_overlapping_boxes_of_the_kept_ones_group_by_score():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # kept, group 1, score 0.6
            [0.0, 0.0, 10.0, 12.0],  # group 1, IoU 100/120 with box 0: votes
            [20.0, 20.0, 30.0, 30.0],  # group 1, no overlap: does not vote
            [0.0, 0.0, 10.0, 10.0],  # kept, group 2: votes only for itself
        ]
    )
    scores = torch.tensor([0.6, 0.3, 0.1, 0.9])
    groups = torch.tensor([1, 1, 1, 2])
    kept = torch.tensor([3, 0])
    voted = vote_boxes(kept, boxes, scores, groups, 0.5)
    # box 0: (0.6 * [0, 0, 10, 10] + 0.3 * [0, 0, 10, 12]) / 0.9
    expected = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.6 / 0.9]])
    torch.testing.assert_close(voted, expected)
    # no other box overlaps by 0.9: every kept box stays as it was
    torch.testing.assert_close(vote_boxes(kept, boxes, scores, groups, 0.9), boxes[kept])
