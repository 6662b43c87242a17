"""VOC reader on fixtures written here: raw XML values, the box convention, real-world mess."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rfcn.data.voc import (
    VOC_CLASSES,
    VocAnnotation,
    VOCDetection,
    VocObject,
    read_voc_annotation,
    voc_class_names,
)
from rfcn.errors import DataWarning, UserError

Box = tuple[float, float, float, float]


def _xml(width: int, height: int, objects: list[tuple[str, Box, int]], filename: str = "") -> str:
    parts = [f"<annotation><filename>{filename}</filename>"]
    parts.append(f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>")
    for name, box, difficult in objects:
        coords = "".join(
            f"<{k}>{v:g}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
        )
        parts.append(
            f"<object><name>{name}</name><truncated>1</truncated>"
            f"<difficult>{difficult}</difficult><bndbox>{coords}</bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def _write(
    root: Path, image_id: str, image: Image.Image, xml: str, suffix: str = ".jpg", **save_args
) -> None:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    image.save(root / "JPEGImages" / f"{image_id}{suffix}", **save_args)
    (root / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")


def _split(root: Path, name: str, ids: list[str]) -> None:
    (root / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """Five images covering the mess the reader must handle (sizes are width x height)."""
    root = tmp_path / "voc"
    rgb = Image.fromarray(np.full((30, 40, 3), 120, np.uint8))
    _write(root, "rgb", rgb, _xml(40, 30, [("cat", (1, 1, 10, 20), 0), ("dog", (5, 6, 40, 30), 1)]))
    grey_objects = [
        ("cat", (10, 5, 9, 8), 0),  # zero width under the +1 rule: dropped
        ("cat", (20, 20, 5, 25), 0),  # inverted: dropped
        ("dog", (30, 2, 60, 12), 0),  # runs past the right edge: clipped
        ("dog", (50, 1, 55, 4), 0),  # wholly outside: dropped
    ]
    _write(root, "grey", Image.new("L", (40, 30), 90), _xml(40, 30, grey_objects), ".png")
    _write(root, "empty", Image.new("RGBA", (20, 30)), _xml(20, 30, []), ".png")
    _write(root, "cmyk", Image.new("CMYK", (30, 20)), _xml(30, 20, [("cat", (2, 2, 9, 9), 0)]))
    rotated = Image.new("RGB", (40, 20))
    exif = rotated.getexif()
    exif[0x0112] = 6  # displayed rotated: 20 wide, 40 high
    _write(root, "rotated", rotated, _xml(40, 20, [("cat", (1, 1, 40, 20), 0)]), exif=exif)
    _split(root, "trainval", ["rgb", "grey", "empty", "cmyk", "rotated"])
    return root


def _load(root: Path, **kwargs) -> VOCDetection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VOCDetection([(root, "trainval")], **kwargs)


def test_read_voc_annotation_keeps_raw_values(voc_root: Path) -> None:
    annotation = read_voc_annotation(voc_root / "Annotations" / "rgb.xml")
    assert (annotation.width, annotation.height) == (40, 30)
    assert annotation.filename == "rgb.jpg"  # empty <filename>: the XML stem
    cat, dog = annotation.objects
    assert (cat.name, cat.box, cat.difficult, cat.truncated) == ("cat", (1, 1, 10, 20), False, True)
    assert (dog.name, dog.box, dog.difficult) == ("dog", (5, 6, 40, 30), True)


def test_boxes_follow_the_project_convention(voc_root: Path) -> None:
    dataset = _load(voc_root)
    image, target = dataset[dataset.image_ids.index("rgb")]
    assert image.shape == (3, 30, 40)
    cat, dog = dataset.class_names.index("cat") + 1, dataset.class_names.index("dog") + 1
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0, 10, 20], [4, 5, 40, 30]]))
    assert target["labels"].tolist() == [cat, dog]
    assert target["difficult"].tolist() == [False, True]
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64


def test_voc_named_data_get_the_twenty_classes_others_sorted(voc_root: Path) -> None:
    assert _load(voc_root).class_names == list(VOC_CLASSES)

    def annotation(*names: str) -> VocAnnotation:
        return VocAnnotation(
            "x.jpg", 5, 5, [VocObject(n, (1, 1, 2, 2), False, False) for n in names]
        )

    assert voc_class_names([annotation("cat"), annotation("zebra", "raccoon")]) == [
        "cat",
        "raccoon",
        "zebra",
    ]
    assert voc_class_names([annotation("dog"), annotation()]) == list(VOC_CLASSES)


def test_given_class_names_set_the_labels(voc_root: Path) -> None:
    dataset = _load(voc_root, class_names=["dog", "cat"])
    _, target = dataset[dataset.image_ids.index("rgb")]
    assert target["labels"].tolist() == [2, 1]


def test_degenerate_and_outside_boxes_dropped_with_warnings(voc_root: Path) -> None:
    with pytest.warns(UserWarning) as caught:
        dataset = VOCDetection([(voc_root, "trainval")], class_names=["cat", "dog"])
    messages = [str(w.message) for w in caught]
    grey_xml = str(voc_root / "Annotations" / "grey.xml")
    for box in ("(10, 5, 9, 8)", "(20, 20, 5, 25)", "(50, 1, 55, 4)"):
        assert any(grey_xml in m and box in m for m in messages), box
    assert len(messages) == 3
    _, target = dataset[dataset.image_ids.index("grey")]
    torch.testing.assert_close(target["boxes"], torch.tensor([[29.0, 1, 40, 12]]))  # clipped


def test_image_without_objects(voc_root: Path) -> None:
    dataset = _load(voc_root)
    image, target = dataset[dataset.image_ids.index("empty")]
    assert image.shape == (3, 30, 20)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["difficult"].shape == (0,)


def test_difficult_dropped_for_training(voc_root: Path) -> None:
    dataset = _load(voc_root, keep_difficult=False)
    _, target = dataset[dataset.image_ids.index("rgb")]
    assert target["difficult"].tolist() == [False]
    assert len(target["boxes"]) == 1


def test_colour_modes_and_sizes(voc_root: Path) -> None:
    dataset = _load(voc_root)
    assert dataset.image_sizes == [(30, 40), (30, 40), (30, 20), (20, 30), (20, 40)]
    for index in range(len(dataset) - 1):
        image, _ = dataset[index]
        assert image.shape[0] == 3 and image.dtype == torch.float32


def test_size_mismatch_warns_and_clips_to_real_image(voc_root: Path) -> None:
    dataset = _load(voc_root)
    with pytest.warns(UserWarning, match="rotated.xml: states image size 40x20 but .* is 20x40"):
        image, target = dataset[dataset.image_ids.index("rotated")]
    assert image.shape == (3, 40, 20)
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0, 20, 20]]))


def test_several_roots_are_joined(voc_root: Path, tmp_path: Path) -> None:
    second = tmp_path / "second"
    _write(second, "x", Image.new("RGB", (8, 8)), _xml(8, 8, [("dog", (1, 1, 8, 8), 0)]))
    _split(second, "train", ["x"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = VOCDetection([(voc_root, "trainval"), (second, "train")])
    assert dataset.image_ids == ["rgb", "grey", "empty", "cmyk", "rotated", "x"]


def test_split_file_lines_with_flags_and_blank_lines(voc_root: Path) -> None:
    (voc_root / "ImageSets" / "Main" / "cat_x.txt").write_text("rgb  1\n\ncmyk -1\n")
    dataset = VOCDetection([(voc_root, "cat_x")])
    assert dataset.image_ids == ["rgb", "cmyk"]


@pytest.mark.parametrize(
    ("xml", "problem"),
    [
        ("<annotation><size>", "malformed XML"),
        ("<annotation><object/></annotation>", "missing <size>"),
        (_xml(10, 10, []).replace("<width>10</width>", ""), "size/width"),
        (_xml(-5, 10, []), "size/width"),
        (_xml(10, 10, [("cat", (1, 1, 2, 2), 0)]).replace("<name>cat</name>", ""), "name"),
        (_xml(10, 10, [("cat", (1, 1, 2, 2), 0)]).replace("<xmax>2</xmax>", ""), "bndbox/xmax"),
        (_xml(10, 10, [("cat", (1, float("nan"), 2, 2), 0)]), "bndbox/ymin"),
        (_xml(10, 10, [("cat", (1, 1, -2, 2), 0)]), "bndbox/xmax"),
        (
            _xml(10, 10, [("cat", (1, 1, 2, 2), 0)]).replace("<ymax>2<", "<ymax>abc<"),
            "not a number",
        ),
        (_xml(10, 10, [("cat", (1, 1, 2, 2), 7)]), "difficult"),
        (
            _xml(10, 10, [("cat", (1, 1, 2, 2), 0)])
            .replace("<bndbox>", "<bbox>")
            .replace("</bndbox>", "</bbox>"),
            "bndbox",
        ),
    ],
)
def test_bad_xml_names_file_and_field(tmp_path: Path, xml: str, problem: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(xml)
    with pytest.raises(UserError, match=problem) as caught:
        read_voc_annotation(path)
    assert caught.value.source == str(path)


def test_missing_annotation_and_split_file(voc_root: Path) -> None:
    (voc_root / "Annotations" / "cmyk.xml").unlink()
    with pytest.raises(UserError, match="annotation file not found") as caught:
        VOCDetection([(voc_root, "trainval")])
    assert caught.value.source.endswith("cmyk.xml")
    with pytest.raises(UserError, match="split file not found; splits there: trainval"):
        VOCDetection([(voc_root, "test")])


def test_missing_image_fails_at_construction(voc_root: Path) -> None:
    (voc_root / "JPEGImages" / "cmyk.jpg").unlink()
    with pytest.raises(UserError, match="image file not found") as caught:
        VOCDetection([(voc_root, "trainval")])
    assert "cmyk" in caught.value.source


def test_unknown_class_names_file_and_class(voc_root: Path) -> None:
    with pytest.raises(UserError, match="unknown class 'dog'") as caught:
        VOCDetection([(voc_root, "trainval")], class_names=["cat"])
    assert caught.value.source.endswith("rgb.xml")


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_unreadable_image_fails_at_load(voc_root: Path, damage: str) -> None:
    dataset = _load(voc_root)
    path = voc_root / "JPEGImages" / "rgb.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    with pytest.raises(UserError) as caught:
        dataset[0]
    assert caught.value.source == str(path)


def test_non_utf8_image_ids(tmp_path: Path) -> None:
    root = tmp_path / "latin1"
    name = os.fsdecode(b"caf\xe9")  # latin-1 bytes, not valid UTF-8
    try:
        _write(root, name, Image.new("RGB", (8, 6)), _xml(8, 6, [("cat", (1, 1, 4, 4), 0)]))
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    (root / "ImageSets" / "Main" / "train.txt").write_bytes(b"caf\xe9\n")
    dataset = VOCDetection([(root, "train")])
    image, target = dataset[0]
    assert image.shape == (3, 6, 8) and target["image_id"] == name
    (root / "JPEGImages" / f"{name}.jpg").unlink()
    with pytest.raises(UserError, match="image file not found") as caught:
        VOCDetection([(root, "train")])
    assert caught.value.source.endswith("caf\\xe9.jpg")


def test_lenient_reading_leaves_out_bad_files_and_objects_with_a_warning_each(
    voc_root: Path,
) -> None:
    (voc_root / "Annotations" / "cmyk.xml").write_text("<annotation><size>")  # malformed
    (voc_root / "JPEGImages" / "empty.png").unlink()  # missing image file
    with pytest.warns(DataWarning) as caught:
        dataset = VOCDetection([(voc_root, "trainval")], class_names=["cat"], lenient=True)
    problems = [(w.message.source, w.message.problem) for w in caught]
    assert dataset.image_ids == ["rgb", "grey", "rotated"]
    annotations = voc_root / "Annotations"
    expected_starts = [
        (str(voc_root / "JPEGImages" / "empty.jpg"), "image file not found"),
        (str(annotations / "cmyk.xml"), "malformed XML"),
        (str(annotations / "rgb.xml"), "unknown class 'dog' (known: cat); object left out"),
        (str(annotations / "grey.xml"), "unknown class 'dog'"),
        (str(annotations / "grey.xml"), "unknown class 'dog'"),
        (str(annotations / "grey.xml"), "dropping zero-area or inverted box (10, 5, 9, 8)"),
        (str(annotations / "grey.xml"), "dropping zero-area or inverted box (20, 20, 5, 25)"),
    ]
    assert len(problems) == len(expected_starts)
    for (source, problem), (want_source, want_start) in zip(problems, expected_starts, strict=True):
        assert source == want_source and problem.startswith(want_start), (source, problem)
    assert problems[1][1].endswith("; image left out")
    assert dataset.records[0].labels.tolist() == [1]  # rgb keeps its cat, not the dog
