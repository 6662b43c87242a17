"""Files in and out: printable names, atomic writes, JSON reads with errors that name the file.

Writes go to a temporary file in the same folder, then ``os.replace``: a reader (or a run
killed half-way) sees either the old file or the complete new one, never a half-written file.
Torch-free, so the ONNX detection path can use it.
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

from rfcn.errors import UserError

PathLike = str | bytes | os.PathLike[str]


def printable_path(path: PathLike) -> str:
    """``path`` as text safe to print: bytes that are not UTF-8 appear as ``\\xNN`` escapes.

    File names on Linux are bytes; Python maps undecodable ones to lone surrogates, which
    cannot be written to a UTF-8 terminal, so error messages use this form instead.
    """
    raw = os.fsencode(path)
    return raw.decode("utf-8", errors="backslashreplace")


def read_json(path: PathLike, what: str) -> Any:
    """Parse the JSON file at ``path``; ``what`` names it in errors ("results file", ...).

    Raises:
        UserError: the file is missing, unreadable, not UTF-8 or not valid JSON.
    """
    shown = printable_path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UserError(shown, f"{what} not found") from None
    except json.JSONDecodeError as exc:
        raise UserError(shown, f"malformed JSON at line {exc.lineno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(shown, f"cannot read {what}: {exc}") from None


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
