import torch

from rfcn.modeling.postprocess import class_boxes, postprocess_detections
from rfcn.ops.box_coder import BoxCoder


def _run(logits, deltas, proposals, box_mode, sizes=((100, 100),), **kwargs):
    settings = {"score_thresh": 0.05, "nms_thresh": 0.3, "detections_per_img": 100} | kwargs
    return postprocess_detections(
        logits, deltas, proposals, list(sizes), BoxCoder(), box_mode, **settings
    )


def test_per_class_nms_keeps_overlapping_boxes_of_different_classes():
    proposals = [torch.tensor([[10.0, 10.0, 50.0, 50.0], [12.0, 12.0, 52.0, 52.0]])]
    # RoI 0 says class 1, RoI 1 says class 1 a bit less and class 2 strongly
    logits = torch.log(torch.tensor([[0.1, 0.9, 0.0001], [0.1, 0.3, 0.6]]))
    deltas = torch.zeros(2, 1, 4)
    (result,) = _run(logits, deltas, proposals, "agnostic", score_thresh=0.2)
    assert result["labels"].tolist() == [1, 2]  # the second class-1 box is suppressed
    torch.testing.assert_close(result["scores"], torch.tensor([0.9, 0.6]), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(result["boxes"], proposals[0])
    assert result["labels"].dtype == torch.int64


def test_box_voting_moves_the_kept_box_to_the_score_weighted_mean_of_its_class():
    proposals = [torch.tensor([[10.0, 10.0, 50.0, 50.0], [12.0, 12.0, 52.0, 52.0]])]
    logits = torch.log(torch.tensor([[0.1, 0.9, 0.0001], [0.1, 0.3, 0.6]]))
    deltas = torch.zeros(2, 1, 4)
    (result,) = _run(logits, deltas, proposals, "agnostic", score_thresh=0.2, box_voting_iou=0.5)
    assert result["labels"].tolist() == [1, 2]
    # class 1: the kept box (0.9) and the suppressed one (0.3), IoU 0.82; class 2: alone
    probabilities = torch.tensor([0.9 / 1.0001, 0.3])  # row sums 1.0001 and 1
    class_1 = (probabilities[:, None] * proposals[0]).sum(0) / probabilities.sum()
    torch.testing.assert_close(result["boxes"], torch.stack((class_1, proposals[0][1])))
    torch.testing.assert_close(result["scores"], torch.tensor([0.9, 0.6]), rtol=1e-3, atol=1e-3)


def test_decode_clip_threshold_and_top_n_per_image():
    proposals = [torch.tensor([[80.0, 80.0, 120.0, 120.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    logits = torch.zeros(2, 4)  # every class 0.25
    deltas = torch.zeros(2, 3, 4)
    deltas[1, 2] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # class 3 of image 1 moves right by 10
    results = _run(logits, deltas, proposals, "class", sizes=((100, 100), (50, 50)))
    assert [len(r["scores"]) for r in results] == [3, 3]
    torch.testing.assert_close(results[0]["boxes"], torch.tensor([[80.0, 80.0, 100.0, 100.0]] * 3))
    assert sorted(results[1]["labels"].tolist()) == [1, 2, 3]
    moved = results[1]["boxes"][results[1]["labels"] == 3]
    torch.testing.assert_close(moved, torch.tensor([[10.0, 0.0, 20.0, 10.0]]))
    sizes = ((100, 100), (50, 50))
    empty = _run(logits, deltas, proposals, "class", sizes=sizes, score_thresh=0.3)
    assert empty[0]["boxes"].shape == (0, 4)
    limited = _run(logits, deltas, proposals, "class", sizes=sizes, detections_per_img=2)
    assert [len(r["scores"]) for r in limited] == [2, 2]


def test_class_boxes_uses_the_foreground_slot():
    deltas = torch.arange(8.0).view(1, 2, 4)
    torch.testing.assert_close(class_boxes(deltas, "agnostic8", 3), deltas[:, 1:].expand(1, 3, 4))
    single = deltas[:, :1]
    torch.testing.assert_close(class_boxes(single, "agnostic", 2), single.expand(1, 2, 4))
