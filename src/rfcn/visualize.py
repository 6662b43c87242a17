"""Pictures of what the detector does: labelled boxes, loss curves, position-sensitive score maps,
the learned bin positions of deformable PS-RoI pooling, and the light head's thin maps for one RoI.

:func:`draw_detections` needs only numpy and PIL (``rfcn detect`` uses it on the ONNX path,
which loads no torch); the figures are drawn with matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Colours that stay apart on most photographs; class ``label`` uses ``_PALETTE[label % n]``.
_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)


def to_pil_image(image: Any) -> Image.Image:
    """An RGB PIL image from a PIL image, a ``(3, H, W)`` float tensor/array in 0..1, or an
    ``(H, W, 3)`` uint8 array."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[2] != 3:
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return Image.fromarray(array, "RGB")


def class_colour(label: int) -> tuple[int, int, int]:
    """The drawing colour of class ``label`` (1..C)."""
    return _PALETTE[(label - 1) % len(_PALETTE)]


def draw_detections(
    image: Any,
    boxes: Any,
    labels: Any,
    scores: Any,
    class_names: Sequence[str],
) -> Image.Image:
    """Draw labelled boxes on a copy of ``image``.

    Args:
        image: PIL image, ``(3, H, W)`` float in 0..1 (tensor or array) or ``(H, W, 3)`` uint8.
        boxes: ``(N, 4)`` x1, y1, x2, y2 in continuous pixels of ``image``.
        labels: ``(N,)`` in 1..C; ``class_names[label - 1]`` is written on the box.
        scores: ``(N,)`` in 0..1, written after the name; None writes the name only.
        class_names: the C foreground class names.

    Returns:
        A new RGB PIL image; ``image`` is left unchanged.
    """
    canvas = to_pil_image(image).copy()
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    scores = None if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
    draw = ImageDraw.Draw(canvas)
    side = min(canvas.size)
    line_width = max(1, round(side / 250))
    font = ImageFont.load_default(size=max(10, round(side / 40)))
    for index in range(len(boxes)):
        x1, y1, x2, y2 = boxes[index].tolist()
        label = int(labels[index])
        colour = class_colour(label)
        # A box of continuous extent [x1, x2) covers pixel columns x1 .. x2 - 1.
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=colour, width=line_width)
        text = class_names[label - 1]
        if scores is not None:
            text = f"{text} {scores[index]:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        text_top = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        draw.rectangle(
            (x1, text_top, x1 + right - left + 3, text_top + bottom - top + 2), fill=colour
        )
        brightness = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text(
            (x1 + 2 - left, text_top + 1 - top),
            text,
            fill=(0, 0, 0) if brightness > 140 else (255, 255, 255),
            font=font,
        )
    return canvas


def image_grid(images: Sequence[Image.Image], columns: int, gap: int = 4) -> Image.Image:
    """Tile images (row-major) into one white-gapped picture; each cell is the largest size."""
    if not images:
        raise ValueError("no images to tile")
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    grid = Image.new(
        "RGB", (columns * cell_w + (columns - 1) * gap, rows * cell_h + (rows - 1) * gap), "white"
    )
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid.paste(image, (column * (cell_w + gap), row * (cell_h + gap)))
    return grid


def _figure_to_image(figure: Any) -> Image.Image:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def loss_figure(history: Sequence[dict[str, float]]) -> Image.Image:
    """Loss curves: one line per ``loss*`` key of the per-log-step ``history`` records (the
    trainer's total ``loss`` in black), against their ``iteration``; records without a loss
    (validation entries) are left out."""
    from matplotlib.figure import Figure

    history = [record for record in history if "loss" in record]
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    iterations = [record["iteration"] for record in history]
    names = sorted({key for record in history for key in record if key.startswith("loss")})
    for name in names:
        values = [record.get(name, math.nan) for record in history]
        if name == "loss":  # the trainer's total
            axes.plot(iterations, values, label="total", color="black", linewidth=2)
        else:
            axes.plot(iterations, values, label=name, linewidth=1)
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    axes.set_title("training losses")
    figure.tight_layout()
    return _figure_to_image(figure)


def box_distribution_figure(
    sizes: np.ndarray,
    ratios: np.ndarray,
    anchor_sizes: Sequence[float],
    anchor_ratios: Sequence[float],
    size_label: str,
) -> Image.Image:
    """Histograms of box sizes and aspect ratios (log scales) with the anchors' marked, to see
    at a glance whether the RPN's anchors cover a dataset's objects.

    Args:
        sizes: ``(N,)`` box sizes ``sqrt(w * h)`` in pixels.
        ratios: ``(N,)`` aspect ratios ``h / w``.
        anchor_sizes, anchor_ratios: the model's anchors, drawn as dashed lines.
        size_label: the size axis' label (which pixels the sizes are in).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), dpi=100)
    panels = [
        (sizes, anchor_sizes, size_label, "anchor sizes"),
        (ratios, anchor_ratios, "aspect ratio h / w", "anchor ratios"),
    ]
    for column, (values, anchors, label, anchor_label) in enumerate(panels, 1):
        axes = figure.add_subplot(1, 2, column)
        # Log-spaced bins over the values and the anchors, a little wider on both sides.
        shown = np.concatenate([np.asarray(values, np.float64), np.asarray(anchors, np.float64)])
        shown = shown[np.isfinite(shown) & (shown > 0)]
        low, high = (shown.min() / 1.5, shown.max() * 1.5) if shown.size else (0.1, 10.0)
        axes.hist(values, bins=np.geomspace(low, high, 41), color="#4477aa")
        for index, anchor in enumerate(anchors):
            axes.axvline(
                anchor, color="#cc3311", ls="--", lw=1, label=anchor_label if index == 0 else None
            )
        axes.set_xscale("log")
        # Powers of two as ticks (anchors come in them), written as plain numbers.
        powers = 2.0 ** np.arange(np.floor(np.log2(low)), np.ceil(np.log2(high)) + 1)
        axes.set_xticks(powers, [f"{p:g}" for p in powers], minor=False)
        axes.set_xticks([], minor=True)
        axes.set_xlim(low, high)
        axes.set_xlabel(label)
        axes.set_ylabel("boxes")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best", fontsize=8)
    figure.suptitle(f"{len(sizes)} boxes")
    figure.tight_layout()
    return _figure_to_image(figure)


def score_map_figure(
    image: Image.Image,
    class_name: str,
    maps: np.ndarray,
    map_stride: float,
    rois: Sequence[dict[str, Any]],
) -> Image.Image:
    """The paper's Figures 3 and 4: one class's k×k position-sensitive score maps and RoI votes.

    One row per RoI: the image with the RoI and its k×k bins; the k² score maps around
    the RoIs, tile (i, j) showing map (i, j) with the RoI's bin (i, j) outlined (the only part
    of that map the RoI pools, Eq. 1); the pooled k×k scores ``r_c(i, j)``; and the vote (their
    mean, Eq. 2) with the class probability after the softmax over all classes. With deformable
    PS-RoI pooling the bins are drawn where the learned offsets moved them.

    Args:
        image: the input image the RoIs are drawn on.
        class_name: the class c the maps score.
        maps: ``(k, k, h, w)`` class c's score maps, map (i, j) for bin row i, column j.
        map_stride: input-image pixels per score-map cell (16 / the network's resize scale).
        rois: per row ``{"title": str, "box": (x1, y1, x2, y2) input pixels,
            "bins": (k, k) pooled scores, "vote": float, "probability": float}``, and for
            deformable PS-RoI pooling ``"shifts"``: ``(k, k, 2)`` bin shifts (see
            :func:`shifted_bins`).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    k = maps.shape[0]
    bins_of_rois = [
        shifted_bins(roi["box"], np.asarray(roi.get("shifts", np.zeros((k, k, 2))))) for roi in rois
    ]  # (k, k, 4) per RoI, input pixels
    # Show only the cells around the RoIs and their bins (one cell of margin), so the bins
    # stay visible.
    boxes = [np.array([roi["box"] for roi in rois], dtype=np.float64)]
    corners = np.concatenate(boxes + [b.reshape(-1, 4) for b in bins_of_rois]) / map_stride
    row0 = max(int(np.floor(corners[:, 1].min())) - 1, 0)
    col0 = max(int(np.floor(corners[:, 0].min())) - 1, 0)
    row1 = min(int(np.ceil(corners[:, 3].max())) + 1, maps.shape[2])
    col1 = min(int(np.ceil(corners[:, 2].max())) + 1, maps.shape[3])
    crop = maps[:, :, row0:row1, col0:col1]
    height, width = crop.shape[2:]
    gap = 1
    tiles = np.full((k * (height + gap) - gap, k * (width + gap) - gap), np.nan, np.float32)
    for i in range(k):
        for j in range(k):
            tiles[i * (height + gap) : i * (height + gap) + height,
                  j * (width + gap) : j * (width + gap) + width] = crop[i, j]  # fmt: skip
    low, high = float(np.nanmin(crop)), float(np.nanmax(crop))
    figure = Figure(figsize=(15, 4.2 * len(rois)), dpi=100)
    grid = figure.add_gridspec(len(rois), 4, width_ratios=[1, 1.5, 0.8, 0.6])
    for row, roi in enumerate(rois):
        x1, y1, x2, y2 = (float(v) for v in roi["box"])
        bins = bins_of_rois[row]
        picture = figure.add_subplot(grid[row, 0])
        picture.imshow(image)
        for left, top, right, bottom in bins.reshape(-1, 4):
            picture.add_patch(
                Rectangle(
                    (left, top), right - left, bottom - top, fill=False, color="yellow", lw=0.6
                )
            )
        picture.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", lw=2))
        picture.set_title(roi["title"], fontsize=10)
        picture.axis("off")

        montage = figure.add_subplot(grid[row, 1])
        montage.imshow(tiles, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        # RoI and bins in score-map cells; bin (i, j) is outlined on tile (i, j).
        cells = bins / map_stride - np.array([col0, row0, col0, row0])
        cx1, cx2 = x1 / map_stride - col0, x2 / map_stride - col0
        cy1, cy2 = y1 / map_stride - row0, y2 / map_stride - row0
        for i in range(k):
            for j in range(k):
                tile_left, tile_top = j * (width + gap) - 0.5, i * (height + gap) - 0.5
                montage.add_patch(
                    Rectangle(
                        (tile_left + cx1, tile_top + cy1), cx2 - cx1, cy2 - cy1,
                        fill=False, color="white", lw=0.4, linestyle=":",
                    )
                )  # fmt: skip
                left, top, right, bottom = cells[i, j]
                montage.add_patch(
                    Rectangle(
                        (tile_left + left, tile_top + top), right - left, bottom - top,
                        fill=False, color="red", lw=0.8,
                    )
                )  # fmt: skip
        montage.set_title(f"{k}×{k} position-sensitive score maps of '{class_name}'", fontsize=10)
        montage.axis("off")

        pooled = figure.add_subplot(grid[row, 2])
        pooled.imshow(roi["bins"], cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        pooled.set_title("pooled bins r_c(i, j)", fontsize=10)
        pooled.set_xticks([])
        pooled.set_yticks([])

        vote = figure.add_subplot(grid[row, 3])
        vote.axis("off")
        text = f"vote (mean of bins)\n= {roi['vote']:.2f}\n\n"
        text += f"p({class_name}) = {roi['probability']:.2f}"
        vote.text(0.0, 0.5, text, fontsize=12, va="center")
    figure.tight_layout()
    return _figure_to_image(figure)


def shifted_bins(box: Sequence[float], shifts: np.ndarray) -> np.ndarray:
    """``(k, k, 4)`` x1, y1, x2, y2 of the k×k bins of ``box``, each moved by its shift.

    Args:
        box: x1, y1, x2, y2 of the RoI.
        shifts: ``(k, k, 2)`` x and y shift of bin (i, j) as a fraction of the RoI's width and
            height: the normalised offset times ``trans_std`` in deformable PS-RoI pooling
            (zeros: the regular grid).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    k = shifts.shape[0]
    bin_w, bin_h = (x2 - x1) / k, (y2 - y1) / k
    left = x1 + np.arange(k)[None, :] * bin_w + shifts[..., 0] * (x2 - x1)
    top = y1 + np.arange(k)[:, None] * bin_h + shifts[..., 1] * (y2 - y1)
    return np.stack((left, top, left + bin_w, top + bin_h), axis=-1)


def deformable_parts_figure(panels: Sequence[dict[str, Any]], columns: int = 3) -> Image.Image:
    """The Deformable ConvNets paper's Figure 7: RoIs with their bins at their learned places.

    Each panel shows an image, an RoI on an object (yellow), its k×k bins where deformable
    PS-RoI pooling samples them for the object's class (red) and, dotted, where they would be
    without offsets.

    Args:
        panels: ``{"image": PIL image, "box": (x1, y1, x2, y2) pixels of the image, "shifts":
            (k, k, 2) bin shifts (see :func:`shifted_bins`), "title": str}`` each.
        columns: panels per row.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if not panels:
        raise ValueError("no panels to draw")
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.5 * columns, 4.5 * rows), dpi=100)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(panel["image"])
        shifts = np.asarray(panel["shifts"], dtype=np.float64)
        for bins, style in (
            (shifted_bins(panel["box"], np.zeros_like(shifts)), {"color": "white", "ls": ":"}),
            (shifted_bins(panel["box"], shifts), {"color": "red", "ls": "-"}),
        ):
            for left, top, right, bottom in bins.reshape(-1, 4):
                axes.add_patch(
                    Rectangle((left, top), right - left, bottom - top, fill=False, lw=0.7, **style)
                )
        x1, y1, x2, y2 = (float(v) for v in panel["box"])
        axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="yellow", lw=2))
        axes.set_title(panel["title"], fontsize=10)
        axes.axis("off")
    figure.suptitle("deformable PS-RoI pooling: RoI (yellow), learned bin positions (red)")
    figure.tight_layout()
    return _figure_to_image(figure)


def thin_maps_figure(
    image: Image.Image, box: Sequence[float], pooled: np.ndarray, title: str, columns: int = 5
) -> Image.Image:
    """Light-Head R-CNN's thin maps as one RoI sees them (Li et al. 2017, §3.2): the image with
    the RoI and its p×p PSRoIAlign bins, and the alpha channels pooled for it, one p×p tile a
    channel (tile c, bin (i, j) read thin map (c p + i) p + j): the ``alpha p²`` numbers the
    R-CNN subnet's fc layer reads.

    Args:
        image: the input image.
        box: x1, y1, x2, y2 of the RoI in input pixels.
        pooled: ``(alpha, p, p)`` the RoI's pooled bins.
        title: the picture's title (e.g. the detection's class and score).
        columns: tiles per row.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    alpha, p = pooled.shape[0], pooled.shape[1]
    columns = min(columns, alpha)
    rows = math.ceil(alpha / columns)
    figure = Figure(figsize=(4.5 + 1.6 * columns, max(3.5, 2.1 * rows)), dpi=100)
    grid = figure.add_gridspec(rows, columns + 3)
    picture = figure.add_subplot(grid[:, :3])
    picture.imshow(image)
    for left, top, right, bottom in shifted_bins(box, np.zeros((p, p, 2))).reshape(-1, 4):
        picture.add_patch(
            Rectangle((left, top), right - left, bottom - top, fill=False, color="yellow", lw=0.6)
        )
    x1, y1, x2, y2 = (float(v) for v in box)
    picture.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", lw=2))
    picture.set_title(title, fontsize=10)
    picture.axis("off")
    low, high = float(pooled.min()), float(pooled.max())
    for channel in range(alpha):
        tile = figure.add_subplot(grid[channel // columns, 3 + channel % columns])
        tile.imshow(pooled[channel], cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        tile.set_title(f"thin channel {channel}", fontsize=8)
        tile.set_xticks([])
        tile.set_yticks([])
    figure.suptitle(f"{alpha} thin channels × {p}×{p} PSRoIAlign bins pooled for the RoI (red)")
    figure.tight_layout()
    return _figure_to_image(figure)
