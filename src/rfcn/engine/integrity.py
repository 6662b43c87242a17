"""Checkpoint integrity: a SHA-256 of the whole file, written into the file when it is saved.

:func:`torch.save` writes a zip archive. A zip may end with a comment (its last record, the
"end of central directory", says how long), which torch, Python's ``zipfile`` and ``unzip``
all skip; :func:`seal` sets that comment to ``rfcn-sha256:<hex digest>``, the digest of every
byte before it (the comment's length field included). :func:`verify` recomputes it, so any
changed byte anywhere in the file is found, also in places the zip's own CRC32s do not cover
(headers, padding, the central directory). A sealed checkpoint still loads with a plain
``torch.load``.

Checkpoints saved before the seal existed carry no comment: for them :func:`verify` checks the
zip's CRC32 of every record (``zipfile.ZipFile.testzip``), which covers the tensors' bytes.
"""

from __future__ import annotations

import hashlib
import zipfile
from typing import BinaryIO

from rfcn.errors import UserError, first_line

SEAL_PREFIX = b"rfcn-sha256:"
_SEAL_LENGTH = len(SEAL_PREFIX) + 64  # the prefix, then the hex digest
_END_RECORD_SIGNATURE = b"PK\x05\x06"
_END_RECORD_SIZE = 22  # without a comment; its last two bytes are the comment's length
_CHUNK = 1 << 20


def seal(archive: bytes) -> bytes:
    """``archive`` (a zip without a comment, as :func:`torch.save` writes) with its digest as
    the zip comment."""
    end = archive[-_END_RECORD_SIZE:]
    if not (end.startswith(_END_RECORD_SIGNATURE) and end.endswith(b"\0\0")):
        raise ValueError("not a zip archive without a comment")
    body = archive[:-2] + _SEAL_LENGTH.to_bytes(2, "little")
    return body + SEAL_PREFIX + hashlib.sha256(body).hexdigest().encode("ascii")


def verify(handle: BinaryIO, shown: str) -> None:
    """Check the file open in ``handle`` (read from its start; left at an unknown position)
    against its seal, or the zip CRCs of an unsealed file; ``shown`` names it in errors.

    Raises:
        UserError: a digest or CRC that does not match, a damaged seal, or no zip archive.
    """
    size = handle.seek(0, 2)
    handle.seek(max(size - _SEAL_LENGTH, 0))
    tail = handle.read()
    if tail.startswith(SEAL_PREFIX) and size > _SEAL_LENGTH:
        handle.seek(0)
        digest = _sha256(handle, size - _SEAL_LENGTH)
        if tail[len(SEAL_PREFIX) :] != digest.encode("ascii"):
            raise UserError(
                shown,
                "damaged checkpoint: its SHA-256 differs from the one written when it was saved "
                "(the file changed on disk or in transfer); use another copy",
            )
        return
    handle.seek(0)
    try:
        with zipfile.ZipFile(handle) as archive:
            comment, bad = archive.comment, archive.testzip()
    except Exception as exc:  # bytes that only look like a zip make zipfile raise many types
        raise UserError(
            shown, f"cannot read checkpoint (corrupt or not a checkpoint): {first_line(exc)}"
        ) from None
    if comment:
        raise UserError(shown, "damaged checkpoint: its integrity seal is unreadable")
    if bad is not None:
        raise UserError(shown, f"damaged checkpoint: the CRC of its record {bad!r} does not match")


def _sha256(handle: BinaryIO, length: int) -> str:
    digest = hashlib.sha256()
    left = length
    while left:
        chunk = handle.read(min(_CHUNK, left))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()
