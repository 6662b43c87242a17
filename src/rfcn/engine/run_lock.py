"""One training run per output folder: an exclusive ``flock`` on ``<folder>/.train.lock``.

Why ``flock`` and not a file holding a pid: the kernel drops the lock when the process ends,
however it ends (SIGKILL, OOM killer, a crashed node's NFS lease running out), so a lock left
by a killed run cannot block the next one and no staleness has to be guessed. A pid check would
guess wrong on pid reuse, and in containers, where every run may be pid 1 on a host name that
changes. The file holds the holder's pid and host only to name them in the refusal.

Linux NFS clients carry ``flock`` to the server as POSIX locks, so runs on two nodes sharing a
folder exclude each other too. A file system without locks (some Lustre mounts) runs unlocked
after a warning rather than not at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

from rfcn.errors import UserError
from rfcn.files import printable_path

LOCK_FILE = ".train.lock"


@contextlib.contextmanager
def run_lock(output_dir: Path) -> Iterator[None]:
    """Hold ``output_dir``'s lock inside (creating the folder); a folder this call created and
    that is still empty on exit is removed, so a run refused early leaves nothing.

    Raises:
        UserError: another process holds the lock (one line naming its pid and host).
    """
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    descriptor = _acquire(path)
    try:
        yield
    finally:
        if descriptor is not None:
            # Unlinked before the descriptor closes: a waiting process that opened this file
            # sees it gone (the inode check in _acquire) and makes a new one.
            path.unlink(missing_ok=True)
            os.close(descriptor)
        if created:
            with contextlib.suppress(OSError):
                output_dir.rmdir()


def _acquire(path: Path) -> int | None:
    """The open, locked lock file's descriptor; None where the file system has no locks."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(descriptor, 200).decode("utf-8", "replace").strip()
            os.close(descriptor)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise UserError(
                    printable_path(path.parent),
                    f"another training run ({holder or 'unknown process'}) is writing into this "
                    "folder; wait for it, stop it, or choose another folder",
                ) from None
            warnings.warn(
                f"{printable_path(path)}: the file system cannot lock ({exc.strerror}); "
                "nothing stops a second run from writing into this folder",
                stacklevel=4,
            )
            return None
        # The previous holder may have unlinked the file between our open and our flock.
        if _same_file(descriptor, path):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            return descriptor
        os.close(descriptor)


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
