"""Turn what a user hands a predictor (paths, PIL images, numpy arrays) into RGB arrays.

Torch-free on purpose: the ONNX predictor runs with numpy, PIL and onnxruntime only.
Files are decoded by :func:`rfcn.data.images.read_rgb_array` (torch-free too), which turns
every problem with a user's file into a :class:`rfcn.errors.UserError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rfcn.data.images import read_rgb_array
from rfcn.errors import UserError
from rfcn.files import printable_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def as_rgb_array(image: Any) -> np.ndarray:
    """One image (path, PIL image or numpy array) as an ``(H, W, 3)`` RGB array.

    Arrays may be ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (alpha dropped);
    uint8 stays uint8 (0..255), floating point becomes float32 and must lie in 0..1.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_rgb_array(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) array, got {image.shape}")
        array = array[:, :, :3]
        if array.dtype == np.uint8:
            return array
        if np.issubdtype(array.dtype, np.floating):
            return array.astype(np.float32, copy=False)
        raise ValueError(f"expected a uint8 or floating point array, got {array.dtype}")
    raise TypeError(f"cannot read an image from a {type(image).__name__}")


def to_chw_float(array: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 or float RGB -> ``(3, H, W)`` float32 in 0..1, the models' input."""
    chw = np.ascontiguousarray(array.transpose(2, 0, 1))
    if chw.dtype == np.uint8:
        return chw.astype(np.float32) / np.float32(255.0)
    return chw.astype(np.float32, copy=False)


def find_images(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (searched recursively, sorted) into image files.

    A named file is kept whatever its suffix (reading it tells whether it is an image);
    inside folders only files with a known image suffix are taken.

    Raises:
        UserError: a path does not exist.
    """
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        elif path.exists():
            found.append(path)
        else:
            raise UserError(printable_path(path), "no such file or folder")
    return found
