import torch

from rfcn.modeling.matching import Matcher
from rfcn.modeling.roi_targets import assign_roi_targets
from rfcn.ops.box_coder import BoxCoder


def test_ohem_mode_keeps_all_non_ignored_rois_and_appends_ground_truth():
    proposals = [
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 8.0], [50.0, 50.0, 60.0, 60.0]]),
        torch.tensor([[5.0, 5.0, 15.0, 15.0]]),
    ]
    gt_boxes = [torch.tensor([[0.0, 0.0, 10.0, 9.0]]), torch.zeros(0, 4)]
    gt_labels = [torch.tensor([3]), torch.zeros(0, dtype=torch.int64)]
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    # bg_iou_low 0.1 makes proposal 2 of image 0 (IoU 0) ignored
    targets = assign_roi_targets(
        proposals, gt_boxes, gt_labels, Matcher(0.5, 0.5, 0.1), coder, None
    )
    assert targets.counts == [3, 0]
    assert targets.rois[:, 0].tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(targets.rois[:, 1:], torch.cat((proposals[0][:2], gt_boxes[0])))
    assert targets.labels.tolist() == [3, 3, 3]
    expected = coder.encode(gt_boxes[0].expand(3, 4), targets.rois[:, 1:])
    torch.testing.assert_close(targets.target_deltas, expected)
    torch.testing.assert_close(targets.target_deltas[2], torch.zeros(4))  # the gt box itself

    everything = assign_roi_targets(proposals, gt_boxes, gt_labels, Matcher(0.5, 0.5), coder, None)
    assert everything.counts == [4, 1]
    assert everything.labels.tolist() == [3, 3, 0, 3, 0]
    torch.testing.assert_close(everything.target_deltas[2], torch.zeros(4))


def test_sampling_mode_limits_the_batch():
    torch.manual_seed(0)
    proposals = [torch.rand(40, 2).repeat(1, 2) * 50 + torch.tensor([0.0, 0.0, 20.0, 20.0])]
    gt_boxes = [torch.tensor([[10.0, 10.0, 40.0, 40.0]])]
    targets = assign_roi_targets(
        proposals, gt_boxes, [torch.tensor([1])], Matcher(0.5, 0.5), BoxCoder(), (8, 0.25)
    )
    assert targets.counts == [8]
    assert 1 <= int((targets.labels > 0).sum()) <= 2
