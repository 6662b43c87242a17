import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from rfcn.config import DataConfig
from rfcn.data.synthetic import (
    CLASS_NAMES,
    COCO_JSON,
    MANIFEST_NAME,
    ensure_synthetic_dataset,
    object_size_range,
    render_image,
    write_synthetic_dataset,
)
from rfcn.errors import UserError


def _tiny_config(**changes: int) -> DataConfig:
    values = {"synthetic_train_images": 3, "synthetic_test_images": 2, "synthetic_image_size": 96}
    values.update(changes)
    return DataConfig(format="synthetic", **values)


def test_same_seed_same_image_and_objects() -> None:
    first_image, first_objects = render_image(3, "train", 5, 128)
    second_image, second_objects = render_image(3, "train", 5, 128)
    assert np.array_equal(np.asarray(first_image), np.asarray(second_image))
    assert first_objects == second_objects


def test_seeds_splits_and_indices_give_different_images() -> None:
    reference = np.asarray(render_image(0, "train", 0, 128)[0])
    for seed, split, index in ((1, "train", 0), (0, "test", 0), (0, "train", 1)):
        other = np.asarray(render_image(seed, split, index, 128)[0])
        assert not np.array_equal(reference, other)


@pytest.mark.parametrize("size", [96, 320])
def test_objects_have_classes_and_sizes_in_range(size: int) -> None:
    low, high = object_size_range(size)
    counts = np.zeros(len(CLASS_NAMES), dtype=int)
    for index in range(25):
        _, objects = render_image(7, "train", index, size)
        assert objects, "every image holds at least one object"
        for obj in objects:
            counts[obj.label - 1] += 1
            fx1, fy1, fx2, fy2 = obj.full_box
            assert 0 <= fx1 < fx2 <= size and 0 <= fy1 < fy2 <= size
            assert low <= max(fx2 - fx1, fy2 - fy1) <= high
            x1, y1, x2, y2 = obj.box
            assert fx1 <= x1 < x2 <= fx2 and fy1 <= y1 < y2 <= fy2
    assert (counts > 0).all(), f"every class appears: {counts}"


def test_boxes_cover_exactly_the_drawn_pixels() -> None:
    """Compare with the same picture drawn without objects (same background, lines and noise):
    every pixel the objects changed lies in some box, and the top object's box is tight."""
    size = 160
    for index in range(6):
        image, objects = render_image(11, "test", index, size)
        empty, none = render_image(11, "test", index, size, draw_objects=False)
        assert none == []
        changed = np.abs(np.asarray(image, float) - np.asarray(empty, float)).max(axis=2) > 0
        inside = np.zeros_like(changed)
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            inside[y1:y2, x1:x2] = True
        # anti-aliased edges may spill one pixel out of the binary mask the boxes come from
        grown = inside.copy()
        grown[1:] |= inside[:-1]
        grown[:-1] |= inside[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        assert not (changed & ~grown).any()
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            # the object on top of the stack was never occluded, so its box is tight; within
            # one pixel, as the final lines may hide a shape's single-pixel tip
            patch = changed[y1:y2, x1:x2]
            if obj is objects[-1]:
                assert patch[:2].any() and patch[-2:].any()
                assert patch[:, :2].any() and patch[:, -2:].any()


def test_dataset_round_trips_through_the_voc_reader(tmp_path: Path) -> None:
    from rfcn.data.voc import read_voc_annotation

    cfg = _tiny_config()
    root = ensure_synthetic_dataset(tmp_path / "synthetic", cfg)
    train_ids = (root / "ImageSets/Main/train.txt").read_text().split()
    test_ids = (root / "ImageSets/Main/test.txt").read_text().split()
    assert len(train_ids) == 3 and len(test_ids) == 2 and not set(train_ids) & set(test_ids)
    for split, ids in (("train", train_ids), ("test", test_ids)):
        for index, image_id in enumerate(ids):
            _, objects = render_image(cfg.synthetic_seed, split, index, 96)
            annotation = read_voc_annotation(root / "Annotations" / f"{image_id}.xml")
            assert (annotation.width, annotation.height) == (96, 96)
            assert (root / "JPEGImages" / annotation.filename).is_file()
            read_back = [(o.name, tuple(o.box), o.difficult) for o in annotation.objects]
            expected = [
                (CLASS_NAMES[o.label - 1], (o.box[0] + 1, o.box[1] + 1, o.box[2], o.box[3]), False)
                for o in objects
            ]
            assert read_back == expected


def test_dataset_is_reused_or_regenerated_by_its_manifest(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    ensure_synthetic_dataset(root, _tiny_config())
    marker = root / "JPEGImages" / "train_000000.jpg"
    stamp = marker.stat().st_mtime_ns
    ensure_synthetic_dataset(root, _tiny_config())
    assert marker.stat().st_mtime_ns == stamp, "same parameters: kept as is"
    ensure_synthetic_dataset(root, _tiny_config(synthetic_train_images=4))
    assert (root / "ImageSets/Main/train.txt").read_text().split()[-1] == "train_000003"
    assert json.loads((root / MANIFEST_NAME).read_text())["train_images"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"], "no temp folder left"


def test_workers_write_the_same_files_as_one_process(tmp_path: Path) -> None:
    cfg = _tiny_config(synthetic_train_images=5, synthetic_test_images=3)
    write_synthetic_dataset(tmp_path / "one", cfg, workers=1)
    write_synthetic_dataset(tmp_path / "three", cfg, workers=3)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*"))
    assert len([f for f in files if f.suffix == ".jpg"]) == 8
    assert files == sorted(
        p.relative_to(tmp_path / "three") for p in (tmp_path / "three").rglob("*")
    )
    for name in files:
        if (tmp_path / "one" / name).is_file():
            assert (tmp_path / "one" / name).read_bytes() == (
                tmp_path / "three" / name
            ).read_bytes()


def test_refuses_to_overwrite_a_folder_that_is_not_a_synthetic_dataset(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(UserError, match="not a synthetic dataset"):
        ensure_synthetic_dataset(tmp_path, _tiny_config())
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_voc_and_coco_ground_truth_agree(tmp_path: Path) -> None:
    """The ground truth itself, given as detections, scores 1 under both metrics: the VOC XML
    and the COCO JSON hold the same boxes in the project's convention."""
    from rfcn.evaluation.evaluator import evaluate_detections

    cfg = _tiny_config(synthetic_test_images=4, synthetic_image_size=160)
    root = ensure_synthetic_dataset(tmp_path / "synthetic", cfg)
    perfect = {}
    for index in range(4):
        _, objects = render_image(cfg.synthetic_seed, "test", index, 160)
        perfect[f"test_{index:06d}"] = {
            "boxes": np.array([o.box for o in objects], dtype=np.float32),
            "scores": np.ones(len(objects), dtype=np.float32),
            "labels": np.array([o.label for o in objects]),
        }
    voc = evaluate_detections(
        perfect, CLASS_NAMES, "voc07", dataset_root=root, split="test"
    ).metrics
    assert voc["mAP"] == pytest.approx(1.0)
    coco_json = root / COCO_JSON.format(split="test")
    coco = evaluate_detections(perfect, CLASS_NAMES, "coco", coco_annotations=coco_json).metrics
    assert coco["AP"] == pytest.approx(1.0)


def test_default_images_are_the_demos_bit_for_bit() -> None:
    """The small-object options and the faster bookkeeping leave the default drawing alone:
    these images and objects hash as they did before either existed (the demo's data must not
    change)."""
    digest = hashlib.sha256()
    for split, index in (("train", 0), ("train", 1), ("test", 0), ("test", 7)):
        image, objects = render_image(0, split, index, 256)
        digest.update(np.asarray(image).tobytes())
        digest.update(repr(objects).encode())
    assert digest.hexdigest() == "621edacdc932e5192607528a37a7ea5259eb936f443a34c5254197326ed356c8"


def test_small_object_variant_draws_objects_of_the_given_pixel_sizes() -> None:
    counts = np.zeros(len(CLASS_NAMES), dtype=int)
    objects_per_image = []
    for index in range(30):
        _, objects = render_image(0, "train", index, 384, object_px=(10, 48), max_objects=8)
        objects_per_image.append(len(objects))
        for obj in objects:
            counts[obj.label - 1] += 1
            fx1, fy1, fx2, fy2 = obj.full_box
            assert 10 <= max(fx2 - fx1, fy2 - fy1) <= 48
    assert (counts > 0).all(), f"every class appears: {counts}"
    assert min(objects_per_image) >= 1 and max(objects_per_image) > 4  # more than the default


def test_small_object_dataset_follows_the_config(tmp_path: Path) -> None:
    from rfcn.data.voc import read_voc_annotation

    cfg = _tiny_config(synthetic_image_size=128, synthetic_max_objects=6)
    cfg.synthetic_object_px = [10, 20]
    root = ensure_synthetic_dataset(tmp_path / "small", cfg)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["object_px"] == [10, 20] and manifest["max_objects"] == 6
    for image_id in (root / "ImageSets/Main/train.txt").read_text().split():
        for obj in read_voc_annotation(root / "Annotations" / f"{image_id}.xml").objects:
            x1, y1, x2, y2 = obj.box
            assert max(x2 - x1 + 1, y2 - y1 + 1) <= 20  # VOC boxes are 1-based inclusive


@pytest.mark.parametrize("sizes", [[10], [30, 20], [0, 20], [10, 500]])
def test_bad_object_sizes_are_refused_by_name(sizes: list[int]) -> None:
    from rfcn.config import config_from_dict

    with pytest.raises(UserError, match=r"data\.synthetic_object_px"):
        config_from_dict({"data": {"synthetic_image_size": 384, "synthetic_object_px": sizes}})
