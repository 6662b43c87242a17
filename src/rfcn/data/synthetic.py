"""A seeded synthetic detection dataset of textured shapes on cluttered backgrounds, in VOC layout.

The demo (``rfcn demo``) and the ablation (``rfcn ablate``) train on it: it needs no download and
is hard in the ways R-FCN's position-sensitive score maps address (paper §2, Figures 3 and 4):

- every class draws its colour and texture (solid, stripes, noise) from the same distribution,
  so only the shape decides the class (a ring differs from a circle only in its middle, a square
  from a circle only in its corners);
- objects overlap and occlude each other (each keeps at least ``MIN_VISIBLE_FRACTION`` of its
  pixels), and same-class objects are often placed next to each other, so a translation-invariant
  score (k = 1) cannot tell an RoI on one object from an RoI straddling two;
- sizes span ``OBJECT_SIZE_RANGE`` of the image side (26 to 230 px at 256 px), with varied aspect
  ratio and rotation, on gradients with soft blobs and lines of other colours.

A small-object variant is chosen by config: ``data.synthetic_object_px: [10, 48]`` draws objects
whose longer side spans 10 to 48 px whatever the image size (in 384-px images most span one to
three cells of a stride-16 score map), and ``data.synthetic_max_objects`` puts more of them in an
image. With both at their defaults the images and boxes are the demo's, bit for bit.

Every image is drawn from its own random stream, ``(seed, split, index)``, so the train and test
splits never share a stream and a split is the same whatever order it is generated in. Boxes are
the tight boxes of each object's visible pixels, written as VOC does (1-based, inclusive) and
again as a COCO instances JSON per split (for COCO AP), so both readers and both metrics serve.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from rfcn.config import DataConfig
from rfcn.data.writers import (
    COCO_JSON,
    WrittenImage,
    WrittenObject,
    coco_instances,
    replace_folder,
    voc_annotation_xml,
)
from rfcn.errors import UserError

# Bump when the drawing changes, so stored datasets are regenerated.
GENERATOR_VERSION = 3
CLASS_NAMES = ("circle", "ring", "square", "triangle", "star", "cross")
MANIFEST_NAME = "synthetic.json"
TRAIN_SPLIT = "train"
TEST_SPLIT = "test"
_SPLIT_CODES = {TRAIN_SPLIT: 0, TEST_SPLIT: 1}

OBJECT_SIZE_RANGE = (0.1, 0.9)  # an object's longer side, as a fraction of the image side
MAX_OBJECTS = 4
MIN_VISIBLE_FRACTION = 0.8  # an occluded object keeps at least this much of its area
NEIGHBOUR_PROBABILITY = 0.25  # chance that an object is a same-class neighbour of an earlier one
MIN_COLOUR_DISTANCE = 90.0  # RGB distance (0..255) between an object and what lies under it
_SUPERSAMPLE = 4  # masks are drawn at 4x and box-filtered down, for anti-aliased edges
_ASPECT_RANGE = {  # width / height
    "circle": (0.7, 1.4),
    "ring": (0.75, 1.33),
    "square": (0.5, 2.0),
    "triangle": (0.7, 1.4),
    "star": (0.8, 1.25),
    "cross": (0.7, 1.4),
}


@dataclass(frozen=True)
class SyntheticObject:
    """One drawn object: ``label`` in 1..C, ``box`` the tight box of its visible pixels and
    ``full_box`` that of the whole shape, both ``(x1, y1, x2, y2)`` in continuous pixels;
    ``area`` its visible pixels (COCO's ``area``, which sorts objects into small/medium/large)."""

    label: int
    box: tuple[int, int, int, int]
    full_box: tuple[int, int, int, int]
    area: int


def object_size_range(image_size: int, object_px: tuple[int, int] | None = None) -> tuple[int, int]:
    """The smallest and largest longer side (px) of a whole object in an image of this side:
    ``object_px`` when given, else :data:`OBJECT_SIZE_RANGE` of the image side."""
    if object_px is not None:
        return object_px
    low, high = OBJECT_SIZE_RANGE
    return max(8, round(low * image_size)), round(high * image_size)


def _unit_polygon(kind: str, rng: np.random.Generator) -> np.ndarray:
    """``(P, 2)`` vertices of a polygonal shape, rotated at random, before fitting to a box."""
    if kind == "triangle":
        angles = np.deg2rad(np.array([90.0, 210.0, 330.0]) + rng.uniform(-15, 15, size=3))
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif kind == "star":
        inner = rng.uniform(0.38, 0.5)
        angles = np.deg2rad(90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        points = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    elif kind == "cross":
        half = rng.uniform(0.15, 0.22)  # half the arm thickness, the arm length being 1
        a, b = half, 0.5
        points = np.array(
            [[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a],
             [-b, a], [-b, -a], [-a, -a]]
        )  # fmt: skip
    else:
        raise ValueError(f"not a polygonal shape: {kind}")
    turn = rng.uniform(0.0, 2.0 * math.pi)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    return points @ rotation.T


def _shape_alpha(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """``(height, width)`` float32 coverage in 0..1 of a shape filling the box edge to edge."""
    s = _SUPERSAMPLE
    canvas = Image.new("L", (width * s, height * s), 0)
    draw = ImageDraw.Draw(canvas)
    full = (0, 0, width * s - 1, height * s - 1)
    if kind in ("circle", "ring"):
        draw.ellipse(full, fill=255)
        if kind == "ring":
            hole = rng.uniform(0.45, 0.65)
            dx, dy = (1 - hole) * width * s / 2, (1 - hole) * height * s / 2
            draw.ellipse((dx, dy, width * s - 1 - dx, height * s - 1 - dy), fill=0)
    elif kind == "square":
        draw.rectangle(full, fill=255)
    else:
        points = _unit_polygon(kind, rng)
        points = (points - points.min(0)) / (points.max(0) - points.min(0))
        points = points * np.array([width * s - 1, height * s - 1])
        draw.polygon([tuple(p) for p in points.tolist()], fill=255)
    small = canvas.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _texture(colour: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """``(height, width, 3)`` float32 fill: solid, stripes of two colours, or coloured noise."""
    kind = rng.integers(3)
    fill = np.broadcast_to(colour, (height, width, 3)).astype(np.float32)
    if kind == 1:
        other = _random_colour(rng)
        while np.linalg.norm(other - colour) < 60:
            other = _random_colour(rng)
        period = rng.uniform(4, 12)
        angle = rng.uniform(0, math.pi)
        ys, xs = np.mgrid[0:height, 0:width]
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
        fill = np.where((phase % 1.0 < 0.5)[..., None], fill, other)
    elif kind == 2:
        fill = fill + rng.normal(0, 30, size=(height, width, 3)).astype(np.float32)
    return np.clip(fill, 0, 255)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """``(size, size, 3)`` float32: a linear gradient, soft blobs and thin lines."""
    start, end = _random_colour(rng), _random_colour(rng)
    angle = rng.uniform(0, 2 * math.pi)
    position = np.arange(size) / max(size - 1, 1)  # the same values a 2-D grid would hold
    t = (position * math.cos(angle) + position[:, None] * math.sin(angle)).astype(np.float32)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    canvas = Image.fromarray(
        (start + (end - start) * t[..., None]).clip(0, 255).astype(np.uint8), "RGB"
    )
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(3, 9)):
        cx, cy = rng.uniform(0, size, size=2)
        rx, ry = rng.uniform(0.05, 0.25, size=2) * size
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=tuple(rng.integers(0, 256, 3)))
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=size / 40))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(4, 12)):
        x1, y1, x2, y2 = rng.uniform(0, size, size=4)
        width = int(rng.integers(1, 4))
        draw.line((x1, y1, x2, y2), fill=tuple(rng.integers(0, 256, 3)), width=width)
    return np.asarray(canvas, dtype=np.float32)


def _place(
    rng: np.random.Generator,
    size: int,
    width: int,
    height: int,
    neighbour_of: tuple[int, int, int, int] | None,
) -> tuple[int, int]:
    """Top-left corner for a ``width x height`` shape: anywhere inside the image, or touching
    or slightly overlapping the box ``neighbour_of``."""
    if neighbour_of is None:
        return int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
    x1, y1, x2, y2 = neighbour_of
    direction = rng.uniform(0, 2 * math.pi)
    reach = rng.uniform(0.75, 1.05)  # centre distance, in units of the two half-extents
    cx = (x1 + x2) / 2 + math.cos(direction) * reach * ((x2 - x1) + width) / 2
    cy = (y1 + y2) / 2 + math.sin(direction) * reach * ((y2 - y1) + height) / 2
    left = int(np.clip(round(cx - width / 2), 0, size - width))
    top = int(np.clip(round(cy - height / 2), 0, size - height))
    return left, top


def render_image(
    seed: int,
    split: str,
    index: int,
    size: int,
    draw_objects: bool = True,
    object_px: tuple[int, int] | None = None,
    max_objects: int = MAX_OBJECTS,
) -> tuple[Image.Image, list[SyntheticObject]]:
    """Draw image ``index`` of ``split``: an RGB ``size x size`` image and its objects.

    The background, the objects and the final lines and noise come from separate random
    streams, so ``draw_objects=False`` gives the same picture without the objects (the
    tests compare the two to check that the boxes cover what was drawn). ``object_px``
    (:func:`object_size_range`) and ``max_objects`` (1 to that many objects are tried) choose
    the small-object variant.
    """
    streams = np.random.SeedSequence([seed, _SPLIT_CODES[split], index]).spawn(3)
    background_rng, object_rng, finish_rng = (np.random.default_rng(s) for s in streams)
    canvas = _background(size, background_rng)
    owner = np.full((size, size), -1, dtype=np.int64)  # index of the object on top, per pixel
    owned = np.zeros(0, dtype=np.int64)  # pixels each object still shows: counts of ``owner``
    areas: list[int] = []
    labels: list[int] = []
    full_boxes: list[tuple[int, int, int, int]] = []
    colours: list[np.ndarray] = []
    low, high = object_size_range(size, object_px)
    for _ in range(int(object_rng.integers(1, max_objects + 1)) if draw_objects else 0):
        neighbour = None
        if labels and object_rng.random() < NEIGHBOUR_PROBABILITY:
            neighbour = int(object_rng.integers(len(labels)))
            label = labels[neighbour]
            x1, y1, x2, y2 = full_boxes[neighbour]
            longer = max(x2 - x1, y2 - y1) * object_rng.uniform(0.8, 1.25)
        else:
            label = int(object_rng.integers(len(CLASS_NAMES))) + 1
            longer = math.exp(object_rng.uniform(math.log(low), math.log(high)))
        kind = CLASS_NAMES[label - 1]
        aspect = math.exp(object_rng.uniform(*np.log(_ASPECT_RANGE[kind])))
        width = int(np.clip(round(longer * min(1.0, aspect)), low // 2, high))
        height = int(np.clip(round(longer / max(1.0, aspect)), low // 2, high))
        if max(width, height) < low:
            width, height = (low, height) if width >= height else (width, low)
        alpha = _shape_alpha(kind, width, height, object_rng)
        covered = alpha > 0.5
        for _attempt in range(10):
            left, top = _place(
                object_rng,
                size,
                width,
                height,
                None if neighbour is None else full_boxes[neighbour],
            )
            region = (slice(top, top + height), slice(left, left + width))
            under = owner[region][covered]
            hidden = np.bincount(under[under >= 0], minlength=len(areas))
            visible = owned - hidden
            if all(visible[j] >= MIN_VISIBLE_FRACTION * areas[j] for j in range(len(areas))):
                break
        else:
            continue
        under_colour = canvas[region][covered].mean(axis=0)
        colour = _random_colour(object_rng)
        below = [colours[j] for j in np.unique(under[under >= 0])]
        for _attempt in range(20):
            if np.linalg.norm(colour - under_colour) >= MIN_COLOUR_DISTANCE and all(
                np.linalg.norm(colour - c) >= MIN_COLOUR_DISTANCE for c in below
            ):
                break
            colour = _random_colour(object_rng)
        fill = _texture(colour, width, height, object_rng)
        canvas[region] = canvas[region] * (1 - alpha[..., None]) + fill * alpha[..., None]
        owner[region][covered] = len(areas)
        areas.append(int(covered.sum()))
        owned = np.append(visible, areas[-1])
        labels.append(label)
        full_boxes.append((left, top, left + width, top + height))
        colours.append(colour)
    finished = Image.fromarray(canvas.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(finished)
    for _ in range(finish_rng.integers(0, 4)):
        x1, y1, x2, y2 = finish_rng.uniform(0, size, size=4)
        draw.line((x1, y1, x2, y2), fill=tuple(finish_rng.integers(0, 256, 3)), width=1)
    # In place, in float64 as before: noise + pixels, clipped (the same values, fewer copies).
    noisy = finish_rng.normal(0, 6, (size, size, 3))
    noisy += np.asarray(finished)
    image = Image.fromarray(np.clip(noisy, 0, 255, out=noisy).astype(np.uint8), "RGB")
    objects = []
    for j, (label, full_box) in enumerate(zip(labels, full_boxes, strict=True)):
        left, top, right, bottom = full_box  # every pixel object j shows lies in its full box
        rows, cols = np.nonzero(owner[top:bottom, left:right] == j)
        box = (
            left + int(cols.min()),
            top + int(rows.min()),
            left + int(cols.max()) + 1,
            top + int(rows.max()) + 1,
        )
        objects.append(SyntheticObject(label, box, full_box, area=len(rows)))
    return image, objects


def _manifest(cfg: DataConfig) -> dict[str, object]:
    """Everything the generated files depend on; a stored dataset is reused only if it matches."""
    return {
        "generator_version": GENERATOR_VERSION,
        "class_names": list(CLASS_NAMES),
        "image_size": cfg.synthetic_image_size,
        "train_images": cfg.synthetic_train_images,
        "test_images": cfg.synthetic_test_images,
        "seed": cfg.synthetic_seed,
        "object_px": list(cfg.synthetic_object_px),
        "max_objects": cfg.synthetic_max_objects,
    }


def _read_manifest(root: Path) -> dict[str, object] | None:
    try:
        return json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def configured_object_px(cfg: DataConfig) -> tuple[int, int] | None:
    """``data.synthetic_object_px`` as ``(smallest, largest)`` (checked by
    :func:`rfcn.config.validate`), or None for the default sizes."""
    if not cfg.synthetic_object_px:
        return None
    smallest, largest = cfg.synthetic_object_px
    return smallest, largest


def _write_image(root: Path, cfg: DataConfig, job: tuple[str, int]) -> WrittenImage:
    """Render image ``index`` of ``split`` (``job``) and write its JPEG and VOC annotation."""
    split, index = job
    image_id = f"{split}_{index:06d}"
    size = cfg.synthetic_image_size
    image, objects = render_image(
        cfg.synthetic_seed,
        split,
        index,
        size,
        True,
        configured_object_px(cfg),
        cfg.synthetic_max_objects,
    )
    image.save(root / "JPEGImages" / f"{image_id}.jpg", quality=92)
    entry = WrittenImage(
        image_id,
        size,
        size,
        [WrittenObject(CLASS_NAMES[o.label - 1], o.box, o.area) for o in objects],
    )
    (root / "Annotations" / f"{image_id}.xml").write_bytes(
        voc_annotation_xml(entry, folder="synthetic")
    )
    return entry


def _write_images(
    root: Path, cfg: DataConfig, jobs: list[tuple[str, int]], workers: int
) -> list[WrittenImage]:
    """:func:`_write_image` for every job, in ``workers`` processes; results in job order."""
    write = functools.partial(_write_image, root, cfg)
    if workers <= 1 or len(jobs) <= 1:
        return [write(job) for job in jobs]
    # fork on Linux: the workers need not import the program again
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    with ProcessPoolExecutor(min(workers, len(jobs)), context) as pool:
        return list(pool.map(write, jobs, chunksize=max(1, len(jobs) // (8 * workers))))


def write_synthetic_dataset(root: Path, cfg: DataConfig, workers: int | None = None) -> None:
    """Generate both splits into the empty or new folder ``root``: VOC layout, a COCO
    instances JSON per split (:data:`COCO_JSON`) and the manifest.

    Images are drawn in ``workers`` processes (default: one per usable CPU); every image comes
    from its own random stream, so the files are the same whatever the number of workers.
    """
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    counts = {TRAIN_SPLIT: cfg.synthetic_train_images, TEST_SPLIT: cfg.synthetic_test_images}
    jobs = [(split, index) for split, count in counts.items() for index in range(count)]
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    images = iter(_write_images(root, cfg, jobs, workers))
    for split, count in counts.items():
        written = list(itertools.islice(images, count))
        listing = "".join(f"{entry.image_id}\n" for entry in written)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(listing, encoding="utf-8")
        if split == TRAIN_SPLIT:  # VOC's usual training split name, so the defaults work too
            (root / "ImageSets" / "Main" / "trainval.txt").write_text(listing, encoding="utf-8")
        coco = coco_instances(written, CLASS_NAMES)
        (root / COCO_JSON.format(split=split)).write_text(json.dumps(coco), encoding="utf-8")
    text = json.dumps(_manifest(cfg), indent=2)
    (root / MANIFEST_NAME).write_text(text, encoding="utf-8")


def ensure_synthetic_dataset(root: Path, cfg: DataConfig) -> Path:
    """Return ``root`` holding the synthetic dataset ``cfg`` describes, generating it if needed.

    An existing dataset is kept when its manifest matches ``cfg``; otherwise it is generated
    anew into a temporary sibling folder which then replaces ``root``, so an interrupted run
    never leaves a half-written dataset behind. A non-empty ``root`` that is not a synthetic
    dataset is left alone (UserError), never deleted.
    """
    root = Path(root)
    for name in (
        "synthetic_train_images",
        "synthetic_test_images",
        "synthetic_image_size",
        "synthetic_max_objects",
    ):
        if getattr(cfg, name) <= 0:
            raise UserError(f"data.{name}", f"must be positive, got {getattr(cfg, name)}")
    wanted = _manifest(cfg)
    stored = _read_manifest(root)
    if stored == wanted:
        return root
    if root.exists() and stored is None and any(root.iterdir()):
        raise UserError(root, "folder exists and is not a synthetic dataset; choose another root")
    replace_folder(root, lambda folder: write_synthetic_dataset(folder, cfg))
    return root
