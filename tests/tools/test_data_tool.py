"""``rfcn data`` end to end on tiny VOC and COCO folders written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from rfcn.cli import main


def write_voc(root: Path) -> Path:
    """Two 64x48 images: "one" with a cat and a difficult dog, "two" with a dog; a config."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    objects = {
        "one": [("cat", 1, 1, 32, 32, 0), ("dog", 33, 1, 64, 16, 1)],
        "two": [("dog", 9, 9, 24, 40, 0)],
    }
    for image_id, boxes in objects.items():
        Image.new("RGB", (64, 48), (200, 180, 40)).save(root / "JPEGImages" / f"{image_id}.jpg")
        xml = "<annotation><size><width>64</width><height>48</height></size>"
        for name, x1, y1, x2, y2, difficult in boxes:
            xml += (
                f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}"
                f"</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            )
        (root / "Annotations" / f"{image_id}.xml").write_text(xml + "</annotation>")
    (root / "ImageSets" / "Main" / "train.txt").write_text("one\ntwo\n")
    config = root / "config.yaml"
    data = {"format": "voc", "roots": [str(root)], "train_splits": ["train"], "workers": 0}
    config.write_text(yaml.safe_dump({"data": data, "model": {"min_size": [96]}}))
    return config


def run_data(config: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str):
    code = main(["data", "--config", str(config), "--out", str(out), "--no-progress", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_voc_split_summary_pictures_and_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_voc(tmp_path / "voc")
    code, out, err = run_data(config, tmp_path / "out", capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "box_sizes.png", "samples.jpg", "summary.json"
    ]  # fmt: skip
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["split"], summary["format"], summary["images"]) == ("train", "voc", 2)
    # With no class names given, VOC names take the 20 PASCAL classes in their order.
    assert summary["classes"]["cat"] == {"objects": 1, "difficult": 0}
    assert summary["classes"]["dog"] == {"objects": 2, "difficult": 1}
    assert summary["box_size_at_input"]["short_side"] == 96
    assert summary["problems"] == [] and summary["unreadable_images"] == []
    assert out.startswith(f"train split of {config} (voc)\n2 images, 3 objects (1 difficult)")
    rows = [line.split() for line in out.splitlines()]
    assert ["cat", "1", "0"] in rows and ["dog", "2", "1"] in rows
    assert out.rstrip().endswith("problems: 0 (0 unreadable images)")
    assert Image.open(tmp_path / "out" / "box_sizes.png").size == (1100, 400)
    # Two 64x48 images at 384 px on their longer side, side by side.
    assert Image.open(tmp_path / "out" / "samples.jpg").size == (2 * 384 + 4, 288)


def test_an_unreadable_image_is_listed_and_the_exit_status_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_voc(tmp_path / "voc")
    broken = tmp_path / "voc" / "JPEGImages" / "two.jpg"
    broken.write_bytes(b"not a jpeg")
    code, out, _ = run_data(config, tmp_path / "out", capsys, "--samples", "0")
    assert code == 1
    assert f"  {broken}: not an image format Pillow can read" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["unreadable_images"] == [str(broken)]
    assert not (tmp_path / "out" / "samples.jpg").exists()  # --samples 0


def test_coco_counts_crowd_boxes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (50, 40)).save(tmp_path / "images" / "a.jpg")
    instances = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 50, "height": 40}],
        "categories": [{"id": 5, "name": "kite"}],
        "annotations": [
            {"image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 20], "iscrowd": 0},
            {"image_id": 1, "category_id": 5, "bbox": [0, 0, 50, 40], "iscrowd": 1},
        ],
    }
    (tmp_path / "train.json").write_text(json.dumps(instances))
    data = {"format": "coco", "roots": [str(tmp_path)], "coco_train_json": "train.json"}
    data["coco_train_images"] = "images"
    (tmp_path / "coco.yaml").write_text(yaml.safe_dump({"data": data}))
    code, out, err = run_data(tmp_path / "coco.yaml", tmp_path / "out", capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["classes"] == {"kite": {"objects": 2, "crowd": 1}} and summary["crowd"] == 1
    assert "1 images, 2 objects (1 crowd)" in out


@pytest.mark.parametrize(
    ("extra", "source", "problem"),
    [
        (["--split", "nope"], "nope.txt", "split file not found; splits there: train"),
        (["--samples", "-1"], "--samples", "must be >= 0"),
        (["--set", "data.roots=[]"], "data.roots", "need a dataset folder"),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    source: str,
    problem: str,
) -> None:
    config = write_voc(tmp_path / "voc")
    code, out, err = run_data(config, tmp_path / "out", capsys, *extra)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and source in err and problem in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
