"""Multi-process training with DDP, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m rfcn.cli train ...`` (or ``torchrun ... $(which rfcn) train``)
starts N processes and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them. CUDA runs use the NCCL backend with one
GPU per process (``cuda:LOCAL_RANK``); CPU runs use gloo, so DDP also works (and is tested)
without a GPU. A plain ``rfcn train`` (no torchrun) is a world of one and needs none of this.
Multi-node runs (``torchrun --nnodes=M --node_rank=... --rdzv_endpoint=...``) work the same
way; ``--resume`` then needs the output folder on a file system every node sees, since every
process reads ``last.pt``.

A process that dies (or hangs) must not leave the others waiting: a collective with a dead
peer fails at once (its sockets close), one with a hung peer after ``timeout`` (the group's
``train.dist_timeout``), and :func:`peer_lost` turns either failure into one line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from rfcn.errors import UserError, first_line


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(name: str) -> torch.device:
    """The training device from ``train.device``; under torchrun, CUDA becomes ``cuda:LOCAL_RANK``.

    Raises:
        UserError: CUDA asked for but not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(
            "train.device", f"{name!r} is not a device (cpu, cuda, cuda:1, ...)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("train.device", f"{name!r} asked for, but CUDA is not available")
        if launched_by_torchrun():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_distributed(device: torch.device, timeout: float = 600.0) -> bool:
    """Join the process group torchrun describes; returns True when this call created it.

    ``timeout``: seconds a collective waits for the other processes before it fails.
    Returns False (and does nothing) for a single process or an already initialised group.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return False
    wait = timedelta(seconds=timeout)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method="env://", device_id=device, timeout=wait)
    else:
        dist.init_process_group("gloo", init_method="env://", timeout=wait)
    return True


class PeerLost(RuntimeError):
    """Another process of the group died or stopped answering; this one stops too."""


# What gloo and NCCL say when a peer's connection closes or a collective times out; they raise
# plain RuntimeErrors (gloo) or DistErrors (NCCL, newer gloo).
_PEER_FAILURES = ("gloo/transport", "Connection reset by peer", "Connection closed by peer", "NCCL")


def peer_lost(error: BaseException) -> PeerLost | None:
    """``error`` as a one-line :class:`PeerLost` when it is a failed collective of a group of
    several processes, else None."""
    if get_world_size() == 1 or not isinstance(error, RuntimeError):
        return None
    text = str(error)
    if not isinstance(error, dist.DistError) and not any(t in text for t in _PEER_FAILURES):
        return None
    return PeerLost(
        f"rank {get_rank()}: another training process died or stopped answering "
        f"({first_line(error)}); see its output"
    )


def shutdown_distributed() -> None:
    """Leave the process group (the counterpart of a True :func:`init_distributed`)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main_process() -> bool:
    """Rank 0: the one process that logs and writes files.

    Outside an initialised group (e.g. after training left it) torchrun's ``RANK`` decides.
    """
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_over_processes(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Average scalar tensors over all processes (for logging); one all-reduce for the dict.

    Every process must call this with the same keys in the same order.
    """
    if not values:
        return {}
    names = list(values)
    stacked = torch.stack([values[name].detach().float().reshape(()) for name in names])
    if dist.is_initialized():
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
    return dict(zip(names, stacked.tolist(), strict=True))


def max_over_processes(values: Sequence[int], device: torch.device) -> list[int]:
    """The element-wise maximum of ``values`` over all processes (flags every process must
    agree on); one all-reduce, which every process must call with as many values."""
    if get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def gather_to_main(value: Any) -> list[Any] | None:
    """Every process's picklable ``value``, in rank order, on rank 0; None on the others.

    Every process must call it. A single process gets ``[value]``.
    """
    if get_world_size() == 1:
        return [value]
    gathered: list[Any] | None = [None] * dist.get_world_size() if is_main_process() else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics) of ``module``.

    Under DDP each process updates its own BatchNorm statistics in the forward pass, and the
    next training forward overwrites them with rank 0's; evaluating every process's shard with
    rank 0's model needs them equal now.
    """
    if get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)
