"""Write output files atomically: a temporary file in the same folder, then ``os.replace``.

A reader (or a run killed half-way) sees either the old file or the complete new one,
never a half-written file. Torch-free, so the ONNX detection path can use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step; the folder must exist."""
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.fchmod(handle, 0o666 & ~_current_umask())
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """JSON with ASCII escapes, so names that are not valid UTF-8 survive the round trip."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def write_image(path: str | os.PathLike[str], image: Image.Image) -> None:
    """Encode ``image`` in the format its suffix names (JPEG, PNG, ...); write it atomically."""
    buffer = io.BytesIO()
    image_format = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    image.save(buffer, format=image_format)
    write_bytes(path, buffer.getvalue())
