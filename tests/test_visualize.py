import numpy as np
import pytest
import torch
from PIL import Image

from rfcn.visualize import (
    class_colour,
    deformable_parts_figure,
    draw_detections,
    image_grid,
    loss_figure,
    score_map_figure,
    shifted_bins,
    to_pil_image,
)


def test_draw_detections_changes_exactly_the_box_outlines_and_labels() -> None:
    image = torch.full((3, 120, 160), 0.5)
    boxes = torch.tensor([[20.0, 40.0, 80.0, 100.0], [90.0, 10.0, 150.0, 60.0]])
    picture = draw_detections(
        image, boxes, torch.tensor([1, 2]), torch.tensor([0.9, 0.4]), ["a", "b"]
    )
    assert picture.size == (160, 120) and picture.mode == "RGB"
    array = np.asarray(picture)
    changed = (array != 128).any(axis=2)
    # the outline runs along the box edges in the class colour
    assert tuple(array[70, 20]) == class_colour(1)
    assert tuple(array[99, 50]) == class_colour(1)
    assert tuple(array[35, 149]) == class_colour(2)
    # the inside of a box below its label, and the far corner of the image, are untouched
    assert not changed[60:95, 25:75].any()
    assert not changed[110:, :15].any()
    # labels are written, so more than the outlines changed
    outline_pixels = 2 * (60 + 60) + 2 * (60 + 50)
    assert changed.sum() > outline_pixels
    assert np.asarray(to_pil_image(image)).max() == 128, "the input stays unchanged"


def test_draw_detections_accepts_pil_and_arrays_and_no_boxes() -> None:
    array = np.zeros((50, 60, 3), dtype=np.uint8)
    from_array = draw_detections(array, np.zeros((0, 4)), np.zeros(0), np.zeros(0), ["a"])
    assert np.array_equal(np.asarray(from_array), array)
    pil = Image.fromarray(array)
    drawn = draw_detections(pil, [[5, 5, 30, 30]], [1], None, ["thing"])
    assert (np.asarray(drawn) != 0).any() and (np.asarray(pil) == 0).all()


def test_to_pil_image_orders_channels() -> None:
    chw = torch.zeros(3, 4, 5)
    chw[0] = 1.0  # red
    assert np.asarray(to_pil_image(chw))[0, 0].tolist() == [255, 0, 0]


def test_image_grid_tiles_row_major() -> None:
    tiles = [Image.new("RGB", (10, 8), (i * 40, 0, 0)) for i in range(5)]
    grid = image_grid(tiles, columns=3, gap=2)
    assert grid.size == (3 * 10 + 2 * 2, 2 * 8 + 2)
    array = np.asarray(grid)
    assert array[0, 0, 0] == 0 and array[0, 12, 0] == 40 and array[10, 12, 0] == 160
    assert tuple(array[10, 30]) == (255, 255, 255), "the missing sixth cell stays blank"
    with pytest.raises(ValueError, match="no images to tile"):
        image_grid([], columns=2)


def test_figures_render() -> None:
    history = [
        {"iteration": i, "loss": 2.0 / i, "loss_cls": 1.0 / i, "lr": 0.01} for i in range(1, 6)
    ]
    assert loss_figure(history).size[0] > 100
    # validation entries in the history (train.eval_every) do not break the curves
    validated = [*history[:2], {"iteration": 2, "val_mAP": 0.5}, *history[2:]]
    assert loss_figure(validated).tobytes() == loss_figure(history).tobytes()
    k = 3
    maps = np.random.default_rng(0).normal(size=(k, k, 6, 8)).astype(np.float32)
    rois = [
        {"title": "on", "box": (16, 16, 64, 80), "bins": maps[:, :, 1, 1], "vote": 0.5,
         "probability": 0.9},
        {"title": "off", "box": (40, 16, 88, 80), "bins": maps[:, :, 1, 2], "vote": -0.5,
         "probability": 0.1},
    ]  # fmt: skip
    figure = score_map_figure(Image.new("RGB", (128, 96)), "circle", maps, 16.0, rois)
    assert figure.mode == "RGB" and figure.size[1] > figure.size[0] / 4


def test_shifted_bins_by_hand() -> None:
    # A 40 x 20 box at (10, 30) in 2 x 2 bins of 20 x 10; bin (0, 1) moves by 0.1 of the width
    # to the right (4 px), bin (1, 0) by 0.5 of the height up (10 px).
    shifts = np.zeros((2, 2, 2))
    shifts[0, 1, 0] = 0.1
    shifts[1, 0, 1] = -0.5
    bins = shifted_bins((10, 30, 50, 50), shifts)
    assert bins.tolist() == [
        [[10, 30, 30, 40], [34, 30, 54, 40]],
        [[10, 30, 30, 40], [30, 40, 50, 50]],
    ]


def test_deformable_parts_figure_renders() -> None:
    shifts = np.random.default_rng(0).normal(scale=0.05, size=(3, 3, 2))
    panels = [
        {"image": Image.new("RGB", (96, 80)), "box": (10, 10, 70, 60), "shifts": shifts,
         "title": f"circle {score}"}
        for score in (0.9, 0.8)
    ]  # fmt: skip
    figure = deformable_parts_figure(panels)
    assert figure.mode == "RGB" and figure.size[0] > figure.size[1]
    with pytest.raises(ValueError, match="no panels to draw"):
        deformable_parts_figure([])
    k = 3
    maps = np.random.default_rng(1).normal(size=(k, k, 6, 8)).astype(np.float32)
    rois = [{"title": "on", "box": (16, 16, 64, 80), "bins": maps[:, :, 1, 1], "vote": 0.5,
             "probability": 0.9, "shifts": shifts}]  # fmt: skip
    assert score_map_figure(Image.new("RGB", (128, 96)), "circle", maps, 16.0, rois).mode == "RGB"
