"""Image decoding: every colour mode to RGB, EXIF orientation, and a clear error per bad file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rfcn.data.images import load_image, read_rgb_array
from rfcn.errors import UserError
from rfcn.files import printable_path


def _rgb_array(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_rgb_png_matches_pixels_exactly(tmp_path: Path) -> None:
    pixels = _rgb_array(5, 7)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.dtype == torch.float32
    assert image.shape == (3, 5, 7)
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(image, expected, rtol=0, atol=0)


def test_greyscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    pixels = read_rgb_array(tmp_path / "g.png")
    assert pixels.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[:, :, channel], grey)


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.concatenate([_rgb_array(4, 4), np.full((4, 4, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_rgb_array(tmp_path / "a.png"), rgba[:, :, :3])


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    # CMYK (0, 255, 255, 0) is pure red.
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    pixels = read_rgb_array(tmp_path / "c.jpg").astype(int)
    assert pixels.shape == (16, 16, 3)
    assert np.abs(pixels - np.array([255, 0, 0])).max() <= 8


def test_palette_with_transparency(tmp_path: Path) -> None:
    palette_image = Image.new("P", (4, 4), 1)
    palette_image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette_image.info["transparency"] = 0
    palette_image.save(tmp_path / "p.png")
    pixels = read_rgb_array(tmp_path / "p.png")
    assert (pixels == np.array([10, 200, 30], np.uint8)).all()


def test_sixteen_bit_greyscale_is_rescaled_not_saturated(tmp_path: Path) -> None:
    wide = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)  # 32896 = 128 * 257
    Image.fromarray(wide).save(tmp_path / "w.png")
    pixels = read_rgb_array(tmp_path / "w.png")
    np.testing.assert_array_equal(pixels[:, :, 0], [[0, 255], [128, 1]])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, left half red. Orientation 6 means "rotate 90 degrees clockwise
    # to display": the result is 20 wide x 40 high with the red half on top.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20, 0] = 255
    pixels[:, 20:, 2] = 255
    stored = Image.fromarray(pixels)
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "r.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "r.jpg")
    assert image.shape == (3, 40, 20)
    assert image[0, :18].mean() > 0.9 and image[2, :18].mean() < 0.1
    assert image[2, 22:].mean() > 0.9 and image[0, 22:].mean() < 0.1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found") as caught:
        load_image(tmp_path / "nope.jpg")
    assert caught.value.source.endswith("nope.jpg")


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        load_image(tmp_path / "empty.jpg")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "text.jpg").write_bytes(b"hello, this is no image" * 10)
    with pytest.raises(UserError, match="not an image"):
        load_image(tmp_path / "text.jpg")


def test_truncated_jpeg(tmp_path: Path) -> None:
    Image.fromarray(_rgb_array(64, 64)).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot decode") as caught:
        load_image(tmp_path / "cut.jpg")
    assert caught.value.source.endswith("cut.jpg")


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="folder"):
        load_image(tmp_path)


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    with pytest.raises(UserError, match="too large: 10x10"):
        load_image(tmp_path / "small.png", max_pixels=99)
    assert load_image(tmp_path / "small.png", max_pixels=100).shape == (3, 10, 10)


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    # 196 MP of a 1-bit image: a tiny file, over both our default limit and Pillow's own.
    Image.new("1", (14_000, 14_000)).save(tmp_path / "bomb.png")
    with pytest.raises(UserError, match="too large"):
        load_image(tmp_path / "bomb.png")
    with pytest.raises(UserError, match="too large"):
        load_image(tmp_path / "bomb.png", max_pixels=10**10)  # Pillow's refusal


def test_non_utf8_file_name(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/caf\xe9.png"
    try:
        with open(name, "wb") as handle:
            Image.fromarray(_rgb_array(3, 3)).save(handle, format="PNG")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    assert load_image(name).shape == (3, 3, 3)
    assert load_image(os.fsdecode(name)).shape == (3, 3, 3)
    (tmp_path / "caf\udce9.png").unlink()
    with pytest.raises(UserError) as caught:
        load_image(name)
    assert caught.value.source.endswith("caf\\xe9.png")
    str(caught.value).encode("utf-8")  # printable: no lone surrogates


def test_printable_path_escapes_undecodable_bytes() -> None:
    assert printable_path(b"/data/caf\xe9.jpg") == "/data/caf\\xe9.jpg"
    assert printable_path("/data/café.jpg") == "/data/café.jpg"
