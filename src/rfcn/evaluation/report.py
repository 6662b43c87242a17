"""Metrics for people (a table) and for programs (JSON with fractions in 0..1).

VOC metrics are ``{"mAP": float | None, "AP": {class name: float | None}}``; COCO metrics are
pycocotools' 12 numbers by name and ``"per_class"``: ``{class name: {"AP", "AP50", "AP75"}}``.
None means "cannot be computed" (no ground truth) and is written as JSON ``null``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rfcn.evaluation.coco import COCO_METRIC_DESCRIPTIONS, COCO_METRIC_NAMES

PER_CLASS_COLUMNS = ("AP", "AP50", "AP75")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a plain table: the first column left-aligned, the others right-aligned."""
    columns = list(zip(header, *rows, strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    widths[1:] = [max(width, 6) for width in widths[1:]]
    return [
        "  ".join(
            f"{cell:<{width}}" if index == 0 else f"{cell:>{width}}"
            for index, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in (header, *rows)
    ]


# The one number a run is judged by, per metric: the mAP for VOC metrics, AP (IoU 0.50:0.95)
# for COCO.
HEADLINE = {"voc07": "mAP", "voc": "mAP", "coco": "AP"}


def is_voc(metrics: Mapping[str, Any]) -> bool:
    """VOC metrics hold the AP of every class under ``"AP"``; COCO's ``"AP"`` is one number."""
    return isinstance(metrics.get("AP"), Mapping)


def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    """A plain-text table: AP per class then mAP for VOC; for COCO the 12 named numbers, then
    AP, AP50 and AP75 per class.

    ``-`` marks a value that cannot be computed (a class with no ground truth).
    """
    if is_voc(metrics):
        rows = [(name, _number(ap)) for name, ap in metrics["AP"].items()]
        rows.append(("mAP", _number(metrics["mAP"])))
        return "\n".join(_table(("class", "AP"), rows))
    summary = [
        (f"{name:<6} {COCO_METRIC_DESCRIPTIONS[name]}", _number(metrics[name]))
        for name in COCO_METRIC_NAMES
    ]
    lines = _table(("metric", "value"), summary)
    per_class = metrics.get("per_class") or {}
    if per_class:
        rows = [
            (name, *(_number(values[column]) for column in PER_CLASS_COLUMNS))
            for name, values in per_class.items()
        ]
        lines += ["", *_table(("class", *PER_CLASS_COLUMNS), rows)]
    return "\n".join(lines)
