"""Training batch order: seeded, resumable, sharded without overlap, grouped by aspect."""

from __future__ import annotations

import itertools

import pytest

from rfcn.data.samplers import (
    TrainingBatchSampler,
    aspect_groups,
    group_batches,
    infinite_positions,
)


def _take(sampler: TrainingBatchSampler, count: int) -> list[list[tuple[int, int]]]:
    return list(itertools.islice(iter(sampler), count))


def test_each_epoch_is_a_permutation_and_epochs_differ() -> None:
    stream = [index for _, index in itertools.islice(infinite_positions(7, seed=1), 21)]
    epochs = [stream[0:7], stream[7:14], stream[14:21]]
    for epoch in epochs:
        assert sorted(epoch) == list(range(7))
    assert len({tuple(epoch) for epoch in epochs}) > 1


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    groups = [0, 1, 1, 0, 0, 1, 0, 0, 1, 0]
    first = _take(TrainingBatchSampler(10, 3, seed=5, group_ids=groups), 30)
    assert first == _take(TrainingBatchSampler(10, 3, seed=5, group_ids=groups), 30)
    assert first != _take(TrainingBatchSampler(10, 3, seed=6, group_ids=groups), 30)


@pytest.mark.parametrize("groups", [None, [0, 1, 1, 0, 0, 1, 0, 0, 1, 0]])
def test_resume_continues_exactly(groups: list[int] | None) -> None:
    uninterrupted = _take(TrainingBatchSampler(10, 3, seed=2, group_ids=groups), 40)
    resumed = _take(TrainingBatchSampler(10, 3, seed=2, group_ids=groups, start_iter=17), 23)
    assert resumed == uninterrupted[17:]


def test_ranks_get_disjoint_shards_covering_the_stream() -> None:
    size, world = 9, 2
    single = list(itertools.islice(infinite_positions(size, seed=3), 4 * size))
    shards = [
        list(itertools.islice(infinite_positions(size, 3, rank, world), 2 * size))
        for rank in range(world)
    ]
    positions = [position for shard in shards for position, _ in shard]
    assert len(set(positions)) == len(positions)  # disjoint
    assert sorted(positions) == list(range(4 * size))  # together: the whole stream
    merged = sorted(item for shard in shards for item in shard)
    assert merged == single  # the same index at each position as a single process


def test_rank_batches_differ_but_are_each_deterministic() -> None:
    rank0 = _take(TrainingBatchSampler(12, 2, seed=0, rank=0, world_size=2), 12)
    rank1 = _take(TrainingBatchSampler(12, 2, seed=0, rank=1, world_size=2), 12)
    assert rank0 == _take(TrainingBatchSampler(12, 2, seed=0, rank=0, world_size=2), 12)
    seeds0 = {seed for batch in rank0 for _, seed in batch}
    seeds1 = {seed for batch in rank1 for _, seed in batch}
    assert not seeds0 & seeds1  # every draw gets its own augmentation seed


def test_group_batches_hand_worked() -> None:
    # Stream of (position, index); groups by index: 0 -> a, 1 -> b, 2 -> a, 3 -> b, 4 -> a.
    stream = iter([(0, 0), (1, 1), (2, 2), (3, 4), (4, 3), (5, 0)])
    batches = list(group_batches(stream, [0, 1, 0, 1, 0], batch_size=2))
    assert batches == [[(0, 0), (2, 2)], [(1, 1), (4, 3)], [(3, 4), (5, 0)]]


def test_aspect_grouping_keeps_orientations_apart() -> None:
    sizes = [(100, 200), (300, 100), (50, 50), (400, 300), (10, 20), (90, 30), (60, 61)]
    groups = aspect_groups(sizes)
    assert groups == [0, 1, 0, 1, 0, 1, 0]
    for batch in _take(TrainingBatchSampler(7, 2, seed=9, group_ids=groups), 50):
        assert len(batch) == 2
        assert len({groups[index] for index, _ in batch}) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        next(iter(TrainingBatchSampler(0, 2, seed=0)))
    with pytest.raises(ValueError, match="group ids"):
        TrainingBatchSampler(3, 2, seed=0, group_ids=[0, 1])
