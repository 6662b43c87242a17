"""The test split's ground truth scored as detections through a tool's own evaluation path.

A few training iterations find nothing (mAP 0), so their scores cannot tell a working
evaluation from a broken one. Handing the tool the ground truth as its detections can: every
metric must then be exactly 1, which a wrong class mapping, split or results wiring fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from rfcn.data.dataset import DetectionDataset

Detections = dict[str, dict[str, torch.Tensor]]


def score_ground_truth(monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    """Make ``module.detect_dataset`` run the model as before, then return the dataset's
    ground truth (its non-difficult boxes, score 1) in place of the model's detections."""
    detect: Callable[..., Detections | None] = module.detect_dataset

    def ground_truth(predictor: Any, dataset: DetectionDataset, *args: Any, **kwargs: Any):
        detect(predictor, dataset, *args, **kwargs)
        found: Detections = {}
        for _, target in dataset:
            keep = ~target["difficult"].bool()
            found[target["image_id"]] = {
                "boxes": target["boxes"][keep],
                "labels": target["labels"][keep],
                "scores": torch.ones(int(keep.sum())),
            }
        return found

    monkeypatch.setattr(module, "detect_dataset", ground_truth)
