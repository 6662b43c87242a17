"""Detections of one image as plain numpy arrays, shared by the PyTorch and ONNX predictors.

This module imports neither torch nor onnxruntime, so the ONNX path
(:mod:`rfcn.inference.onnx_predictor`) can use it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """The detections of one image, sorted by descending score.

    Attributes:
        boxes: ``(N, 4)`` float32 x1, y1, x2, y2 in continuous 0-based pixels of the input image.
        scores: ``(N,)`` float32 class probabilities.
        labels: ``(N,)`` int64 in ``1..C`` (0 is background and never returned).
        class_names: the C foreground class names; label ``l`` is ``class_names[l - 1]``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    @classmethod
    def from_arrays(
        cls, boxes: Any, scores: Any, labels: Any, class_names: list[str] | tuple[str, ...]
    ) -> Detections:
        """Build from array-likes (numpy, or CPU tensors via ``np.asarray``), sorting by score."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"boxes, scores and labels differ in length: {len(boxes)}, {len(scores)}, "
                f"{len(labels)}"
            )
        if len(labels) and (labels.min() < 1 or labels.max() > len(class_names)):
            raise ValueError(f"labels must lie in 1..{len(class_names)}, got {labels.tolist()}")
        order = np.argsort(-scores, kind="stable")
        return cls(boxes[order], scores[order], labels[order], tuple(class_names))

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def names(self) -> list[str]:
        """The class name of each detection, ``(N,)``."""
        return [self.class_names[label - 1] for label in self.labels.tolist()]

    def above(self, score_threshold: float) -> Detections:
        """The detections whose score is at least ``score_threshold``."""
        keep = self.scores >= score_threshold
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready list of ``{"box", "score", "label", "class_name"}``, highest score first."""
        return {
            "detections": [
                {
                    "box": [round(float(v), 3) for v in box],
                    "score": round(float(score), 6),
                    "label": int(label),
                    "class_name": name,
                }
                for box, score, label, name in zip(
                    self.boxes, self.scores, self.labels, self.names, strict=True
                )
            ]
        }
