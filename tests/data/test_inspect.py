"""rfcn.data.inspect on a VOC folder written here: every problem listed with its file, and
counts and histograms checked against the hand-made annotations."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rfcn.config import DataConfig
from rfcn.data.inspect import (
    inspect_split,
    sample_grid,
    sample_indices,
    split_dataset_config,
    summarize,
)
from rfcn.errors import UserError

# image id -> (file's w x h, stated w x h, objects (name, xmin, ymin, xmax, ymax, difficult))
IMAGES = {
    "a": ((40, 30), (40, 30), [("cat", 1, 1, 10, 10, 0), ("cat", 1, 11, 40, 20, 1)]),
    "b": ((40, 30), (40, 30), []),
    "c": (
        (40, 30),
        (40, 30),
        [("dog", 5, 5, 4, 9, 0), ("bird", 1, 1, 5, 5, 0), ("dog", 1, 1, 20, 5, 0)],
    ),
    "d": ((40, 30), (40, 30), [("cat", 1, 1, 8, 8, 0)]),
    "f": ((30, 40), (40, 30), [("dog", 1, 1, 20, 20, 0)]),
}


def write_voc(root: Path) -> DataConfig:
    """IMAGES, plus "e", listed in the split without an annotation; "d" is a corrupt JPEG."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, ((width, height), (stated_w, stated_h), objects) in IMAGES.items():
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="JPEG")
        content = buffer.getvalue()
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(
            content[:200] if image_id == "d" else content
        )
        xml = [f"<annotation><size><width>{stated_w}</width><height>{stated_h}</height></size>"]
        for name, x1, y1, x2, y2, difficult in objects:
            xml.append(
                f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                "</bndbox></object>"
            )
        (root / "Annotations" / f"{image_id}.xml").write_text("".join(xml) + "</annotation>")
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\nc\nd\ne\nf\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("a\nb\n")
    return DataConfig(
        format="voc", roots=[str(root)], train_splits=["train"], test_split="val",
        class_names=["cat", "dog"], workers=0,
    )  # fmt: skip


@pytest.fixture
def voc(tmp_path: Path) -> tuple[Path, DataConfig]:
    return tmp_path, write_voc(tmp_path)


def test_every_problem_is_listed_with_its_file(voc: tuple[Path, DataConfig]) -> None:
    root, cfg = voc
    inspection = inspect_split(cfg, "train", progress=False)
    assert inspection.dataset.image_ids == ["a", "b", "c", "d", "f"]
    assert inspection.unreadable == [3]  # "d"
    found = [(Path(p.file).relative_to(root).as_posix(), p.problem) for p in inspection.problems]
    assert [file for file, _ in found] == [
        "Annotations/c.xml",
        "Annotations/c.xml",
        "Annotations/e.xml",
        "Annotations/f.xml",
        "JPEGImages/d.jpg",
    ]
    problems = [problem for _, problem in found]
    assert problems[0] == "unknown class 'bird' (known: cat, dog); object left out"
    assert problems[1] == "dropping zero-area or inverted box (5, 5, 4, 9)"
    assert problems[2] == "annotation file not found; image left out"
    assert problems[3].startswith("states image size 40x30 but ") and "is 30x40" in problems[3]
    assert problems[4].startswith("cannot decode image")


def test_summary_counts_and_histograms(voc: tuple[Path, DataConfig]) -> None:
    _, cfg = voc
    summary = summarize(inspect_split(cfg, "train", progress=False), "difficult", 60, 100)
    assert summary["images"] == 5 and summary["objects"] == 5 and summary["difficult"] == 1
    assert summary["classes"] == {
        "cat": {"objects": 3, "difficult": 1},
        "dog": {"objects": 2, "difficult": 0},
    }
    assert summary["images_without_objects"] == ["b"]
    assert summary["image_size"] == {"width": [40, 40], "height": [30, 30]}
    # Box sizes sqrt(w * h) in pixels (VOC boxes: xmin - 1 .. xmax): a: 9x9 -> 9 and
    # 40x10 -> 20, c: 20x5 -> 10, d: 8x8 -> 8, f: 20x20 -> 20.
    assert summary["box_size"]["edges"][:4] == [0.0, 8.0, 16.0, 32.0]
    assert summary["box_size"]["counts"] == [0, 3, 2, 0, 0, 0, 0, 0, 0]
    # Resized to a 60-pixel short side (x2; the 100-pixel cap is not reached): 18, 40, 20, 16, 40.
    assert summary["box_size_at_input"]["counts"] == [0, 0, 3, 2, 0, 0, 0, 0, 0]
    # Aspect ratios h / w: 1, 0.25, 0.25, 1, 1 -> bins 0.18-0.35 and 0.71-1.41.
    assert summary["aspect_ratio"]["counts"] == [0, 2, 0, 3, 0, 0, 0]
    assert summary["unreadable_images"] == [str(Path(cfg.roots[0]) / "JPEGImages" / "d.jpg")]
    assert len(summary["problems"]) == 5


def test_split_choices_read_every_object_without_augmentation(
    voc: tuple[Path, DataConfig],
) -> None:
    _, cfg = voc
    data, train = split_dataset_config(cfg, "train")
    assert train and data.use_difficult and not data.flip and cfg.flip  # cfg left as it was
    data, train = split_dataset_config(cfg, "test")
    assert not train and data.test_split == "val"
    data, train = split_dataset_config(cfg, "trainval")
    assert not train and data.test_split == "trainval"
    inspection = inspect_split(cfg, "test", progress=False)
    assert inspection.dataset.image_ids == ["a", "b"]
    assert inspection.dataset.records[0].difficult.tolist() == [False, True]


def test_coco_splits(tmp_path: Path) -> None:
    cfg = DataConfig(format="coco", coco_train_json="t.json", coco_train_images="imgs")
    data, train = split_dataset_config(cfg, "train")
    # The test reader keeps crowd boxes (flagged), so it reads the training files.
    assert not train and (data.coco_test_json, data.coco_test_images) == ("t.json", "imgs")
    with pytest.raises(UserError, match="coco data have only train and test, not val"):
        split_dataset_config(cfg, "val")


def test_a_missing_split_stops_with_a_user_error(voc: tuple[Path, DataConfig]) -> None:
    _, cfg = voc
    with pytest.raises(UserError, match="split file not found"):
        inspect_split(cfg, "nope", progress=False)


def test_samples_skip_unreadable_images_and_spread_evenly(voc: tuple[Path, DataConfig]) -> None:
    _, cfg = voc
    inspection = inspect_split(cfg, "train", progress=False)
    assert sample_indices(inspection, 10) == [0, 1, 2, 4]
    assert sample_indices(inspection, 2) == [0, 4]
    assert sample_indices(inspection, 3) == [0, 2, 4]
    grid = sample_grid(inspection.dataset, [0, 4], "difficult")
    # Two thumbnails with a 384-pixel longer side: 40x30 -> 384x288, 30x40 -> 288x384.
    assert grid.size == (384 * 2 + 4, 384)
    pixels = np.asarray(grid)
    plain = np.array([90, 120, 150])
    # The boxes are drawn: image "a" has pixels far from its flat colour.
    assert np.abs(pixels[:288, :384].astype(int) - plain).max() > 100
