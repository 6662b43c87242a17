"""build_dataset for each format and build_data_loader: batches, determinism, resume, order."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rfcn.config import DataConfig
from rfcn.data.build import build_data_loader, build_dataset, collate_detection
from rfcn.errors import UserError


def _write_voc(root: Path, images: dict[str, tuple[int, int, list[tuple[str, int]]]]) -> None:
    """``images[id] = (width, height, [(class, difficult), ...])``; each object is the
    top-left quarter of its image; pixels are random so flips are visible."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for seed, (image_id, (width, height, objects)) in enumerate(images.items()):
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.png")
        body = "".join(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>1</xmin><ymin>1</ymin><xmax>{width // 2}</xmax><ymax>{height // 2}</ymax>"
            "</bndbox></object>"
            for name, difficult in objects
        )
        xml = f"<annotation><size><width>{width}</width><height>{height}</height></size>{body}"
        (root / "Annotations" / f"{image_id}.xml").write_text(xml + "</annotation>")


def _split(root: Path, name: str, ids: list[str]) -> None:
    (root / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")


@pytest.fixture
def voc_cfg(tmp_path: Path) -> DataConfig:
    root = tmp_path / "voc"
    train = {f"t{i}": (24 + 8 * (i % 2), 32 - 8 * (i % 2), [("zebra", 0)]) for i in range(6)}
    train["t0"] = (24, 32, [("zebra", 0), ("ant", 1)])
    test = {"v0": (20, 20, [("ant", 0), ("zebra", 1)]), "v1": (20, 16, []), "v2": (16, 20, [])}
    _write_voc(root, {**train, **test})
    _split(root, "trainval", list(train))
    _split(root, "test", list(test))
    return DataConfig(format="voc", roots=[str(root)])


def test_voc_train_and_test_sets(voc_cfg: DataConfig) -> None:
    train = build_dataset(voc_cfg, train=True)
    test = build_dataset(voc_cfg, train=False)
    assert train.class_names == test.class_names == ["ant", "zebra"]
    assert len(train) == 6 and test.image_ids == ["v0", "v1", "v2"]
    assert train.records[0].labels.tolist() == [2]  # the difficult ant is left out
    assert test.records[0].difficult.tolist() == [False, True]  # kept and flagged
    assert train.transform is not None and test.transform is None
    voc_cfg.use_difficult, voc_cfg.flip = True, False
    train = build_dataset(voc_cfg, train=True)
    assert train.records[0].labels.tolist() == [2, 1] and train.transform is None


def test_given_class_names_reach_the_test_set(voc_cfg: DataConfig) -> None:
    voc_cfg.class_names = ["zebra", "ant"]
    assert build_dataset(voc_cfg, train=False).records[0].labels.tolist() == [2, 1]


def test_config_errors_name_the_key(voc_cfg: DataConfig) -> None:
    with pytest.raises(UserError, match=r"data\.roots"):
        build_dataset(DataConfig(format="voc"), train=True)
    voc_cfg.roots = [voc_cfg.roots[0]] * 3
    voc_cfg.train_splits = ["trainval", "trainval"]
    with pytest.raises(UserError, match=r"data\.train_splits"):
        build_dataset(voc_cfg, train=True)
    with pytest.raises(UserError, match=r"data\.coco_train_json"):
        build_dataset(DataConfig(format="coco"), train=True)


def test_coco_paths_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "val" / "a.jpg")
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}],
        "categories": [{"id": 5, "name": "cup"}],
        "annotations": [{"image_id": 1, "category_id": 5, "bbox": [0, 0, 4, 4], "iscrowd": 1}],
    }
    (tmp_path / "val.json").write_text(json.dumps(data))
    cfg = DataConfig(
        format="coco",
        roots=[str(tmp_path)],
        coco_train_json="val.json",
        coco_train_images="val",
        coco_test_json=str(tmp_path / "val.json"),
        coco_test_images=str(tmp_path / "val"),
    )
    assert len(build_dataset(cfg, train=True).records[0].boxes) == 0  # crowd left out
    assert build_dataset(cfg, train=False).records[0].difficult.tolist() == [True]


def test_synthetic_format_reads_the_generated_voc_layout(tmp_path: Path) -> None:
    cfg = DataConfig(
        format="synthetic",
        roots=[str(tmp_path / "synthetic")],
        synthetic_train_images=3,
        synthetic_test_images=2,
        synthetic_image_size=48,
    )
    train, test = build_dataset(cfg, train=True), build_dataset(cfg, train=False)
    assert (len(train), len(test)) == (3, 2)
    assert train.class_names == test.class_names and len(train.class_names) > 1
    image, target = test[0]
    assert image.shape == (3, 48, 48) and target["labels"].min() >= 1


def _batches(loader, count: int) -> list:
    return list(itertools.islice(iter(loader), count))


def _assert_same(first: list, second: list) -> None:
    assert len(first) == len(second)
    for (images_a, targets_a), (images_b, targets_b) in zip(first, second, strict=True):
        for image_a, image_b in zip(images_a, images_b, strict=True):
            assert torch.equal(image_a, image_b)
        for target_a, target_b in zip(targets_a, targets_b, strict=True):
            assert target_a["image_id"] == target_b["image_id"]
            assert torch.equal(target_a["boxes"], target_b["boxes"])


def test_training_loader_is_deterministic_across_workers_and_resumes(voc_cfg: DataConfig) -> None:
    dataset = build_dataset(voc_cfg, train=True)
    make = lambda workers, start=0: build_data_loader(  # noqa: E731
        dataset, 2, True, seed=4, workers=workers, aspect_grouping=True, start_iter=start
    )
    reference = _batches(make(0), 8)
    images, targets = reference[0]
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == 2
    flipped = [t["boxes"][0, 0].item() > 0 for _, batch_targets in reference for t in batch_targets]
    assert any(flipped) and not all(flipped)  # the top-left boxes sometimes move right
    for batch_images, _ in reference:
        orientations = {image.shape[1] > image.shape[2] for image in batch_images}
        assert len(orientations) == 1
    _assert_same(_batches(make(1), 8), reference)
    _assert_same(_batches(make(0, start=5), 3), reference[5:])


def test_cached_training_images_load_as_read_and_need_no_file_again(voc_cfg: DataConfig) -> None:
    make = lambda dataset: build_data_loader(  # noqa: E731
        dataset, 2, True, seed=4, workers=0, aspect_grouping=True
    )
    reference = _batches(make(build_dataset(voc_cfg, train=True)), 8)
    voc_cfg.cache_images = True
    cached = build_dataset(voc_cfg, train=True)
    test_set = build_dataset(voc_cfg, train=False)
    test_set[0]
    # 16 samples of 6 images: later epochs flip the kept pixels without changing them.
    _assert_same(_batches(make(cached), 8), reference)
    for image_file in (Path(voc_cfg.roots[0]) / "JPEGImages").iterdir():
        image_file.unlink()
    _assert_same(_batches(make(cached), 8), reference)
    with pytest.raises(UserError, match=r"v0\.png: image file not found"):
        test_set[0]  # the test set is read once an evaluation, so it keeps nothing


def test_evaluation_loader_is_sequential_without_drop(voc_cfg: DataConfig) -> None:
    dataset = build_dataset(voc_cfg, train=False)
    batches = list(build_data_loader(dataset, 2, False, 0, 0, aspect_grouping=True))
    assert [[t["image_id"] for t in targets] for _, targets in batches] == [["v0", "v1"], ["v2"]]
    image, target = dataset[0]
    assert torch.equal(batches[0][0][0], image)
    assert torch.equal(batches[0][1][0]["boxes"], target["boxes"])


def test_empty_training_set_is_a_user_error(voc_cfg: DataConfig) -> None:
    _split(Path(voc_cfg.roots[0]), "none", [])
    voc_cfg.train_splits = ["none"]
    dataset = build_dataset(voc_cfg, train=True)
    with pytest.raises(UserError, match="no images"):
        build_data_loader(dataset, 2, True, 0, 0, aspect_grouping=False)


def test_collate_keeps_lists() -> None:
    batch = [(torch.zeros(3, 2, 2), {"image_id": "a"}), (torch.ones(3, 4, 1), {"image_id": "b"})]
    images, targets = collate_detection(batch)
    assert [image.shape[1] for image in images] == [2, 4]
    assert [target["image_id"] for target in targets] == ["a", "b"]
