"""Helpers for tests that start a process group of several CPU processes (gloo)."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port nothing listens on now (for a test's process group)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun_environment(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The environment torchrun gives process ``rank`` of ``world_size`` on this machine."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def act_as_torchrun_process(rank: int, world_size: int, port: int) -> None:
    """Set :func:`torchrun_environment` in this process."""
    os.environ.update(torchrun_environment(rank, world_size, port))
