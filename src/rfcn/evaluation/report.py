"""Metrics for people (a table) and for programs (JSON with fractions in 0..1).

VOC metrics are ``{"mAP": float | None, "AP": {class name: float | None}}``; COCO metrics are
pycocotools' 12 numbers by name. None means "cannot be computed" (no ground truth) and is
written as JSON ``null``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rfcn.evaluation.coco import COCO_METRIC_DESCRIPTIONS


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    """A plain-text table: AP per class then mAP for VOC; the 12 named numbers for COCO.

    ``-`` marks a value that cannot be computed (a class with no ground truth).
    """
    if "AP" in metrics and isinstance(metrics["AP"], Mapping):
        rows = [(name, _number(ap)) for name, ap in metrics["AP"].items()]
        rows.append(("mAP", _number(metrics["mAP"])))
        header = ("class", "AP")
    else:
        rows = [
            (f"{name:<6} {COCO_METRIC_DESCRIPTIONS[name]}", _number(value))
            for name, value in metrics.items()
        ]
        header = ("metric", "value")
    width = max(len(label) for label, _ in [header, *rows])
    lines = [f"{header[0]:<{width}}  {header[1]:>6}"]
    lines += [f"{label:<{width}}  {value:>6}" for label, value in rows]
    return "\n".join(lines)
