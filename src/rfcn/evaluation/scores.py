"""What scoring a split returns: the metrics, and the precision-recall curve of every class.

``metrics`` is JSON-ready, fractions in 0..1 (see :mod:`rfcn.evaluation.report`); ``curves``
holds, for every class with ground truth, the curve its AP summarises, for the
``pr_curves.png`` figure (:func:`rfcn.evaluation.plots.pr_curves_figure`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PrecisionRecall:
    """One class's precision-recall curve and its AP.

    Attributes:
        recall: ``(R,)`` non-decreasing recall values.
        precision: ``(R,)`` the precision at each.
        ap: the class's average precision under the metric that produced the curve.
    """

    recall: np.ndarray
    precision: np.ndarray
    ap: float


@dataclass(frozen=True)
class Evaluation:
    """``metrics``: the numbers by name; ``curves``: class name -> :class:`PrecisionRecall`
    (classes without ground truth have none)."""

    metrics: dict[str, Any]
    curves: dict[str, PrecisionRecall] = field(default_factory=dict)
