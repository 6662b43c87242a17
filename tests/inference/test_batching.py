"""same_key_batches: full batches as soon as they fill, the rest at the end, nothing lost."""

from __future__ import annotations

import pytest

from rfcn.inference.batching import same_key_batches


def test_groups_by_key_and_flushes_the_rest_in_arrival_order() -> None:
    items = ["a1", "b1", "a2", "c1", "a3", "b2", "b3", "a4", "c2"]
    batches = list(same_key_batches(items, key=lambda item: item[0], batch_size=3))
    assert batches == [["a1", "a2", "a3"], ["b1", "b2", "b3"], ["c1", "c2"], ["a4"]]


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_every_item_once_and_no_batch_mixes_keys(batch_size: int) -> None:
    items = [(index % 3, index) for index in range(17)]
    batches = list(same_key_batches(items, key=lambda item: item[0], batch_size=batch_size))
    assert sorted(item for batch in batches for item in batch) == sorted(items)
    assert all(len({key for key, _ in batch}) == 1 for batch in batches)
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    # at most one short batch per key
    short = [batch[0][0] for batch in batches if len(batch) < batch_size]
    assert len(short) == len(set(short))


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        next(same_key_batches([1], key=lambda item: item, batch_size=0))
