"""Figures of evaluation results: precision-recall curves per class, and the validation metric
over a training run. Drawn with matplotlib's object API and the Agg backend, as
:mod:`rfcn.visualize`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from rfcn.evaluation.scores import PrecisionRecall
from rfcn.visualize import _figure_to_image

_TITLES = {
    "voc07": "VOC2007 11-point AP, IoU {iou:g}",
    "voc": "VOC2010+ area AP, IoU {iou:g}",
    "coco": "COCO AP, IoU 0.50:0.95 (precision averaged over IoUs)",
}


def pr_curves_figure(
    curves: Mapping[str, PrecisionRecall], metric: str, iou_thresh: float = 0.5
) -> Image.Image:
    """One precision-recall curve per class, its AP under ``metric`` in the legend (classes in
    the given order); ``iou_thresh`` is the VOC metrics' threshold, named in the title.

    VOC curves are the precision after each ranked detection; COCO curves the precision at
    101 recall levels averaged over the IoU thresholds 0.50:0.95 (their mean is the AP).
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    columns = 1 if len(curves) <= 20 else math.ceil(len(curves) / 20)
    figure = Figure(figsize=(6 + 2.2 * columns, 5), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    # ten well-separated colours, twenty (in light/dark pairs) for more classes
    palette = colormaps["tab10" if len(curves) <= 10 else "tab20"]
    for index, (name, curve) in enumerate(curves.items()):
        axes.plot(
            curve.recall,
            curve.precision,
            color=palette(index % palette.N),
            linewidth=1.2,
            label=f"{name} (AP {curve.ap:.3f})",
        )
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.grid(True, alpha=0.3)
    axes.set_title(_TITLES[metric].format(iou=iou_thresh))
    if curves:
        axes.legend(
            loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, ncol=columns, frameon=False
        )
    else:
        axes.text(0.5, 0.5, "no class has ground truth", ha="center", va="center")
    figure.tight_layout()
    return _figure_to_image(figure)


def validation_figure(history: Sequence[Mapping[str, Any]], name: str, metric: str) -> Image.Image:
    """The validation metric ``val_<name>`` against the iteration (the best one marked), over
    the training loss on a second, logarithmic axis; ``history`` holds the run's
    ``metrics.jsonl`` entries (:mod:`rfcn.engine.logging`)."""
    from matplotlib.figure import Figure

    key = f"val_{name}"
    validations = [entry for entry in history if entry.get(key) is not None]
    losses = [entry for entry in history if "loss" in entry]
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    if losses:
        loss_axes = axes.twinx()
        loss_axes.plot(
            [entry["iteration"] for entry in losses],
            [entry["loss"] for entry in losses],
            color="0.7",
            linewidth=1,
            label="training loss",
        )
        loss_axes.set_yscale("log")
        loss_axes.set_ylabel("training loss", color="0.5")
        axes.set_zorder(loss_axes.get_zorder() + 1)
        axes.patch.set_visible(False)
    iterations = [entry["iteration"] for entry in validations]
    values = [entry[key] for entry in validations]
    axes.plot(iterations, values, marker="o", color="tab:blue", linewidth=2, label=f"{name}")
    if values:
        best = max(range(len(values)), key=lambda index: (values[index], -index))
        axes.plot(
            [iterations[best]],
            [values[best]],
            marker="*",
            markersize=16,
            color="tab:red",
            linestyle="none",
            label=f"best {values[best]:.3f} at {iterations[best]}",
        )
    axes.set_xlabel("iteration")
    axes.set_ylabel(f"validation {name} ({metric})")
    axes.set_ylim(0.0, 1.0)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title(f"validation {name} during training")
    figure.tight_layout()
    return _figure_to_image(figure)
