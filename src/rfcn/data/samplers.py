"""Training batch order: infinite, seeded, resumable, sharded across DDP ranks, grouped by aspect.

The sample stream is a deterministic function of the seed alone: epoch ``e`` is a permutation
drawn from ``(seed, e)``, and the stream is the epochs one after another. Under DDP, rank ``r``
of ``w`` takes the stream positions ``p`` with ``p % w == r`` (disjoint shards). Each drawn
sample also gets its own augmentation seed from ``(seed, p)``, so its flip does not depend on
worker processes. Resuming at iteration ``k`` replays the (cheap, index-only) batching and
skips ``k`` batches: the batches that follow are exactly those of an uninterrupted run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

SampleKey = tuple[int, int]  # (dataset index, augmentation seed)

# First key of derive_seed, so permutation and augmentation seeds never coincide.
_PERMUTATION, _AUGMENTATION = 0, 1


def derive_seed(*keys: int) -> int:
    """A well-mixed 64-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])


def aspect_groups(image_sizes: Sequence[tuple[int, int]]) -> list[int]:
    """Group id per image from its ``(height, width)``: 0 landscape or square, 1 portrait."""
    return [int(height > width) for height, width in image_sizes]


def infinite_positions(
    size: int, seed: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[int, int]]:
    """``(stream position, dataset index)`` of this rank's shard of the endless shuffled stream."""
    if size <= 0:
        raise ValueError("cannot sample from an empty dataset")
    for epoch in itertools.count():
        generator = torch.Generator().manual_seed(derive_seed(seed, _PERMUTATION, epoch))
        permutation = torch.randperm(size, generator=generator).tolist()
        start = epoch * size
        first = (rank - start) % world_size  # first offset in this epoch that belongs to rank
        for offset in range(first, size, world_size):
            yield start + offset, permutation[offset]


def group_batches(
    stream: Iterator[tuple[int, int]], group_ids: Sequence[int], batch_size: int
) -> Iterator[list[tuple[int, int]]]:
    """Batches of ``batch_size`` stream items whose dataset indices share a group id.

    Each group fills its own buffer; a batch is emitted the moment one is full, so batches
    keep the stream's order within a group (as torchvision's GroupedBatchSampler, without the
    end-of-epoch leftovers an endless stream never has).
    """
    buffers: dict[int, list[tuple[int, int]]] = {}
    for item in stream:
        buffer = buffers.setdefault(group_ids[item[1]], [])
        buffer.append(item)
        if len(buffer) == batch_size:
            yield buffer.copy()
            buffer.clear()


def _chunks(stream: Iterator[tuple[int, int]], batch_size: int) -> Iterator[list[tuple[int, int]]]:
    while True:
        yield list(itertools.islice(stream, batch_size))


class TrainingBatchSampler(Sampler[list[SampleKey]]):
    """Endless batches of :data:`SampleKey` for one rank (see the module docstring).

    Args:
        size: the dataset length.
        batch_size: images per batch on this rank.
        seed: the run's seed.
        group_ids: per dataset index, a group (e.g. :func:`aspect_groups`); None: no grouping.
        rank, world_size: this process's DDP rank and the number of ranks.
        start_iter: batches already consumed (resume).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        group_ids: Sequence[int] | None = None,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if group_ids is not None and len(group_ids) != size:
            raise ValueError(f"{len(group_ids)} group ids for {size} samples")
        super().__init__()
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.group_ids = group_ids
        self.rank = rank
        self.world_size = world_size
        self.start_iter = start_iter

    def __iter__(self) -> Iterator[list[SampleKey]]:
        stream = infinite_positions(self.size, self.seed, self.rank, self.world_size)
        if self.group_ids is None:
            batches = _chunks(stream, self.batch_size)
        else:
            batches = group_batches(stream, self.group_ids, self.batch_size)
        for batch in itertools.islice(batches, self.start_iter, None):
            yield [
                (index, derive_seed(self.seed, _AUGMENTATION, position))
                for position, index in batch
            ]
