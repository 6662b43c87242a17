"""The small-object mosaic copy of a VOC dataset (``rfcn mosaic``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rfcn.cli import main
from rfcn.data.mosaic import MANIFEST_NAME, MosaicSettings, shrink_scale, write_mosaic_dataset
from rfcn.data.voc import read_voc_split
from rfcn.data.writers import COCO_JSON
from rfcn.errors import UserError

RED = (230, 20, 20)
SPLITS = {"train": ["a0", "a1", "a2", "a3"], "val": ["b0", "b1"]}


def _write_source(root: Path) -> Path:
    """Grey photos of 200x150 (and one 120x160), each with one solid red box object."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, ids in SPLITS.items():
        for image_id in ids:
            width, height = (120, 160) if image_id == "a3" else (200, 150)
            w, h = (int(v) for v in rng.integers(40, 110, size=2))
            x1, y1 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            pixels = np.full((height, width, 3), 110, dtype=np.uint8)
            pixels[y1 : y1 + h, x1 : x1 + w] = RED
            Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.png")
            (root / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><filename>{image_id}.png</filename><size><width>{width}</width>"
                f"<height>{height}</height><depth>3</depth></size><object><name>box</name>"
                f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x1 + w}</xmax>"
                f"<ymax>{y1 + h}</ymax></bndbox></object></annotation>"
            )
        (root / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


SETTINGS = MosaicSettings(
    canvas=160, object_px=(16, 32), photos_per_canvas=(2, 4), train_canvases=6, test_canvases=3
)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mosaic")
    source = _write_source(root / "source")
    manifest = write_mosaic_dataset(source, root / "out", SETTINGS)
    return root / "out", manifest


def test_scale_puts_every_object_in_range() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scale = shrink_scale(np.array([100.0, 80.0]), (16, 48), rng)
        assert 16 / 80 <= scale <= 48 / 100
    # 20 and 400 px cannot both fit: the largest gets the largest size
    assert shrink_scale(np.array([20.0, 400.0]), (16, 48), rng) == pytest.approx(48 / 400)


def test_training_and_test_canvases_use_disjoint_photos(mosaic: tuple[Path, dict]) -> None:
    out, manifest = mosaic
    assert set(manifest["train"]["source_photos"]) <= set(SPLITS["train"])
    assert set(manifest["test"]["source_photos"]) <= set(SPLITS["val"])
    assert manifest == json.loads((out / MANIFEST_NAME).read_text())
    listed = {
        s: (out / "ImageSets/Main" / f"{s}.txt").read_text().split() for s in ("train", "test")
    }
    assert len(listed["train"]) == 6 and len(listed["test"]) == 3
    assert (out / "ImageSets/Main/trainval.txt").read_text().split() == listed["train"]


def test_boxes_cover_the_shrunk_objects(mosaic: tuple[Path, dict]) -> None:
    """Every box lies on red pixels (the fixture's objects) of the written canvas, and its
    longer side is in the range asked for (one pixel of rounding allowed)."""
    out, manifest = mosaic
    count = 0
    for split in ("train", "test"):
        for image in read_voc_split(out, split):
            pixels = np.asarray(Image.open(image.image_path).convert("RGB"), dtype=float)
            assert pixels.shape == (160, 160, 3)
            for obj in image.annotation.objects:
                x1, y1, x2, y2 = (int(v) for v in obj.box)  # 1-based inclusive
                assert 15 <= max(x2 - x1 + 1, y2 - y1 + 1) <= 33
                inner = pixels[y1 : y2 - 1, x1 : x2 - 1]  # one pixel in from each side
                assert np.abs(inner.mean(axis=(0, 1)) - RED).max() < 30, (image.image_id, obj)
                count += 1
    assert count == manifest["train"]["objects"] + manifest["test"]["objects"] > 0


def test_voc_and_coco_ground_truth_agree(mosaic: tuple[Path, dict]) -> None:
    from rfcn.evaluation.evaluator import evaluate_detections

    out, _ = mosaic
    perfect = {}
    for image in read_voc_split(out, "test"):
        boxes = np.array([obj.box for obj in image.annotation.objects]) - [1, 1, 0, 0]
        perfect[image.image_id] = {
            "boxes": boxes.astype(np.float32),
            "scores": np.ones(len(boxes), dtype=np.float32),
            "labels": np.ones(len(boxes), dtype=np.int64),
        }
    voc = evaluate_detections(perfect, ["box"], "voc07", dataset_root=out, split="test").metrics
    assert voc["mAP"] == pytest.approx(1.0)
    coco_json = out / COCO_JSON.format(split="test")
    coco = evaluate_detections(perfect, ["box"], "coco", coco_annotations=coco_json).metrics
    assert coco["AP"] == pytest.approx(1.0)


def test_same_settings_write_the_same_files(mosaic: tuple[Path, dict], tmp_path: Path) -> None:
    out, manifest = mosaic
    again = tmp_path / "again"
    write_mosaic_dataset(Path(manifest["source"]), again, SETTINGS)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        assert path.read_bytes() == (again / path.relative_to(out)).read_bytes(), path


def test_refuses_a_folder_that_is_not_a_mosaic(mosaic: tuple[Path, dict], tmp_path: Path) -> None:
    _, manifest = mosaic
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(UserError, match="not a mosaic copy"):
        write_mosaic_dataset(Path(manifest["source"]), tmp_path, SETTINGS)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_command_writes_and_summarises(
    mosaic: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, manifest = mosaic
    argv = ["mosaic", "--source", manifest["source"], "--out", str(tmp_path / "cli"),
            "--canvas", "160", "--object-px", "16", "32", "--canvases", "2", "1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "train: 2 canvases" in printed and "test: 1 canvases" in printed
    assert main([*argv[:-3], "--source-splits", "train", "train"]) == 2
    assert "two different splits" in capsys.readouterr().err
