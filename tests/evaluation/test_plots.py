"""Figures of evaluation results: one coloured curve per class, the best validation marked."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from rfcn.evaluation.plots import pr_curves_figure, validation_figure
from rfcn.evaluation.scores import PrecisionRecall


def pixels_of(image, rgb: tuple[int, int, int]) -> int:
    """How many pixels of ``image`` show the colour ``rgb`` over the white background, fully
    or anti-aliased (a pixel ``white + a (rgb - white)`` with ``a`` of at least 0.3)."""
    offsets = np.asarray(image).astype(float).reshape(-1, 3) - 255.0
    colour = np.array(rgb, dtype=float) - 255.0
    along = offsets @ colour / (colour @ colour)  # a, the share of the colour
    across = np.linalg.norm(offsets - along[:, None] * colour, axis=1)
    return int(((along >= 0.3) & (across <= 12.0)).sum())


def tab10(index: int) -> tuple[int, int, int]:
    return tuple(round(255 * channel) for channel in colormaps["tab10"](index)[:3])


def test_pr_curves_draw_one_curve_per_class_in_its_colour() -> None:
    recall = np.linspace(0.0, 1.0, 60)
    curves = {
        "cat": PrecisionRecall(recall, 1.0 - 0.5 * recall, 0.75),
        "dog": PrecisionRecall(recall[:30], np.full(30, 0.4), 0.2),
    }
    figure = pr_curves_figure(curves, "voc07")
    assert pixels_of(figure, tab10(0)) > 300 and pixels_of(figure, tab10(1)) > 150
    assert pixels_of(figure, tab10(2)) == 0  # no third class
    only_cat = pr_curves_figure({"cat": curves["cat"]}, "coco")
    assert pixels_of(only_cat, tab10(1)) == 0
    empty = pr_curves_figure({}, "voc", 0.7)  # no class with ground truth: still a figure
    assert empty.size == only_cat.size


def test_validation_figure_marks_the_first_best_value() -> None:
    history = [
        {"iteration": 10, "loss": 2.0},
        {"iteration": 10, "val_mAP": 0.2},
        {"iteration": 20, "loss": 1.0},
        {"iteration": 20, "val_mAP": 0.6},
        {"iteration": 30, "val_mAP": 0.6},
        {"iteration": 40, "val_mAP": None},  # could not be computed: not drawn
    ]
    figure = validation_figure(history, "mAP", "voc07")
    blue, red = (31, 119, 180), (214, 39, 40)
    assert pixels_of(figure, blue) > 100 and pixels_of(figure, red) > 50
    without_best = validation_figure([e for e in history if "loss" in e], "mAP", "voc07")
    assert pixels_of(without_best, red) == 0
