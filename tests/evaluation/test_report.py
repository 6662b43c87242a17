"""The printed metrics tables: VOC per class and mAP; COCO's 12 numbers, then per class."""

from __future__ import annotations

from rfcn.evaluation.coco import COCO_METRIC_NAMES
from rfcn.evaluation.report import format_metrics_table


def test_voc_table() -> None:
    table = format_metrics_table({"mAP": 0.5, "AP": {"cat": 1.0, "dog": 0.0, "bird": None}})
    assert table.splitlines() == [
        "class      AP",
        "cat    1.0000",
        "dog    0.0000",
        "bird        -",
        "mAP    0.5000",
    ]


def test_coco_table_has_the_summary_then_a_row_per_class() -> None:
    metrics = {name: index / 100 for index, name in enumerate(COCO_METRIC_NAMES)}
    metrics["APs"] = None
    metrics["per_class"] = {
        "cat": {"AP": 0.25, "AP50": 0.5, "AP75": 0.125},
        "hot dog": {"AP": None, "AP50": None, "AP75": None},
    }
    lines = format_metrics_table(metrics).splitlines()
    assert len(lines) == 1 + 12 + 1 + 3
    assert lines[1].startswith("AP     precision IoU=0.50:0.95") and lines[1].endswith("0.0000")
    assert lines[4].endswith("      -")  # APs: no small objects
    assert lines[13] == ""
    assert lines[14:] == [
        "class        AP    AP50    AP75",
        "cat      0.2500  0.5000  0.1250",
        "hot dog       -       -       -",
    ]
