import pytest
import torch

from rfcn.modeling.matching import BACKGROUND, IGNORE, Matcher, sample_balanced


def test_matcher_thresholds_without_low_quality():
    # 2 ground-truth boxes x 6 candidates
    iou = torch.tensor(
        [
            [0.80, 0.50, 0.40, 0.05, 0.00, 0.20],
            [0.10, 0.60, 0.45, 0.00, 0.00, 0.70],
        ]
    )
    matches = Matcher(fg_iou=0.5, bg_iou_high=0.5, bg_iou_low=0.1)(iou)
    assert matches.tolist() == [0, 1, BACKGROUND, IGNORE, IGNORE, 1]


def test_matcher_rpn_ignores_middle_band_and_keeps_best_anchors():
    iou = torch.tensor(
        [
            [0.65, 0.50, 0.10, 0.20],  # best anchor 0 at 0.65 < 0.7: kept as low-quality
            [0.00, 0.55, 0.75, 0.00],
            [0.00, 0.00, 0.00, 0.00],  # no overlap: claims nothing
        ]
    )
    plain = Matcher(0.7, 0.3)(iou)
    assert plain.tolist() == [IGNORE, IGNORE, 1, BACKGROUND]
    low_quality = Matcher(0.7, 0.3, allow_low_quality=True)(iou)
    assert low_quality.tolist() == [0, IGNORE, 1, BACKGROUND]


def test_matcher_low_quality_ties_all_kept():
    iou = torch.tensor([[0.4, 0.4, 0.1]])
    assert Matcher(0.7, 0.3, allow_low_quality=True)(iou).tolist() == [0, 0, BACKGROUND]


def test_matcher_without_ground_truth():
    assert Matcher(0.5, 0.5)(torch.zeros(0, 3)).tolist() == [BACKGROUND] * 3
    assert Matcher(0.5, 0.5, 0.1)(torch.zeros(0, 2)).tolist() == [IGNORE] * 2


def test_matcher_rejects_inconsistent_thresholds():
    with pytest.raises(ValueError, match=r"bg_iou_high <= fg_iou, got 0\.0, 0\.7, 0\.3"):
        Matcher(0.3, 0.7)


def test_sample_balanced_respects_fraction_and_never_takes_ignored():
    torch.manual_seed(0)
    matches = torch.tensor([0] * 10 + [BACKGROUND] * 30 + [IGNORE] * 5)
    positive, negative = sample_balanced(matches, batch_size=16, positive_fraction=0.25)
    assert positive.numel() == 4 and negative.numel() == 12
    assert (matches[positive] >= 0).all() and (matches[negative] == BACKGROUND).all()
    assert len(set(positive.tolist())) == 4 and len(set(negative.tolist())) == 12


def test_sample_balanced_fills_with_background_when_few_positives():
    matches = torch.tensor([1, BACKGROUND, BACKGROUND, IGNORE, BACKGROUND])
    positive, negative = sample_balanced(matches, batch_size=8, positive_fraction=0.5)
    assert positive.tolist() == [0]
    assert sorted(negative.tolist()) == [1, 2, 4]
