"""Batches of images that pad to the same network input, formed from a stream.

A detector pads a batch to its largest image, and zero padding changes the features near an
image's lower and right borders (the convolutions see padding where, alone, the image had its
border). Batching only images whose padded input size is the same (a predictor's
``batch_key``) keeps every image's detections what they are at batch size 1.

Torch-free, so it serves ``rfcn detect`` and dataset evaluation alike.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")


def same_key_batches(
    items: Iterable[Item], key: Callable[[Item], Hashable], batch_size: int
) -> Iterator[list[Item]]:
    """Group a stream into batches of up to ``batch_size`` items with equal ``key(item)``.

    A batch is yielded as soon as it is full; what is left is yielded at the end of the
    stream, the oldest group first. At most ``batch_size - 1`` items per distinct key wait.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    waiting: dict[Hashable, list[Item]] = {}
    for item in items:
        item_key = key(item)
        group = waiting.setdefault(item_key, [])
        group.append(item)
        if len(group) == batch_size:
            yield waiting.pop(item_key)
    yield from waiting.values()
