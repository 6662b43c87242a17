"""Decode image files robustly into RGB: the one place the project turns a file into pixels.

Real photographs come in every colour mode, with EXIF orientation tags, truncated or empty,
or absurdly large. Each such problem becomes a :class:`rfcn.errors.UserError` naming the file;
whatever decodes comes back as 8-bit RGB with the EXIF orientation applied (as a viewer shows it).

:func:`read_rgb_array` imports only numpy and Pillow, so a torch-free caller (the ONNX
predictor) can share it; :func:`load_image` adds the tensor conversion the datasets need.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rfcn.errors import DataWarning, UserError
from rfcn.files import PathLike, printable_path

if TYPE_CHECKING:
    from torch import Tensor

# 100 megapixels: a float32 RGB copy of such an image already takes 1.2 GB, so larger images
# are refused from their header, before any pixel is decoded. Pillow's own hard refusal
# (DecompressionBombError, at about 179 MP) still applies above this.
MAX_IMAGE_PIXELS = 100_000_000

# Integer modes with more than 8 bits per sample (16-bit PNG/TIFF greyscale). Pillow's
# convert("RGB") would saturate them at 255, so they are rescaled from their 16-bit range.
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def read_rgb_array(path: PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file to an ``(H, W, 3)`` uint8 RGB array, EXIF orientation applied.

    Greyscale, palette, CMYK, 16-bit and alpha images are converted to RGB (alpha is dropped,
    as torchvision's ``read_image(mode=RGB)`` and OpenCV do). ``path`` may be bytes, or a
    string holding surrogate escapes, for file names that are not valid UTF-8.

    Raises:
        UserError: the file is missing, empty, not an image, truncated or corrupt, in a colour
            mode with no RGB conversion, or over ``max_pixels``.
    """
    file_path = Path(os.fsdecode(path))
    shown = printable_path(file_path)
    try:
        with warnings.catch_warnings():
            # Our own size check below refuses large images with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file_path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UserError(
                        shown,
                        f"image too large: {width}x{height} pixels is over the limit of "
                        f"{max_pixels} pixels",
                    )
                image.load()
                return _to_rgb_array(_apply_exif_orientation(image, shown))
    except FileNotFoundError:
        raise UserError(shown, "image file not found") from None
    except IsADirectoryError:
        raise UserError(shown, "is a folder, not an image file") from None
    except PermissionError:
        raise UserError(shown, "no permission to read the image file") from None
    except Image.DecompressionBombError as exc:
        raise UserError(shown, f"image too large: {exc}") from None
    except UnidentifiedImageError:
        empty = file_path.is_file() and file_path.stat().st_size == 0
        problem = "empty image file (0 bytes)" if empty else "not an image format Pillow can read"
        raise UserError(shown, problem) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data, and modes with no RGB form, through these.
        raise UserError(shown, f"cannot decode image: {exc}") from None


def load_image(path: PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Tensor:
    """Decode an image file to a ``(3, H, W)`` float32 RGB tensor in 0..1.

    See :func:`read_rgb_array` for the conversions and the errors raised.
    """
    return rgb_tensor(read_rgb_array(path, max_pixels))


def rgb_tensor(pixels: np.ndarray) -> Tensor:
    """``(H, W, 3)`` uint8 RGB array -> ``(3, H, W)`` float32 tensor in 0..1 (a new tensor)."""
    # Imported here so the module stays usable without torch (see the module docstring).
    import torch

    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float().div_(255.0)


def _apply_exif_orientation(image: Image.Image, shown: str) -> Image.Image:
    """Rotate/flip ``image`` as its EXIF orientation tag says; a broken EXIF block is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # Pillow raises many types on malformed EXIF data
        problem = f"ignoring unreadable EXIF orientation ({exc})"
        warnings.warn(DataWarning(shown, problem), stacklevel=3)
        return image


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow colour mode -> ``(H, W, 3)`` uint8 RGB."""
    if image.mode in _WIDE_INTEGER_MODES:
        wide = np.asarray(image, dtype=np.float64)
        grey = np.round(np.clip(wide, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P":
        # Palette transparency must go through RGBA, else Pillow warns and may pick wrong colours.
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)
