"""Detection over image files for ``rfcn detect``: decode, batch, run; one result per file.

One by one (``batch_size=1, workers=0``) this needs no torch, so it runs the ONNX predictor
too. Otherwise ``workers`` DataLoader processes decode the files while the model runs, and
``batch_size`` images that pad to the same network input (:mod:`rfcn.inference.batching`) go
through each forward pass of a PyTorch predictor, which gives every image the detections it
gets alone. A file that cannot be read gives a result that carries its error, and the other
files go on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rfcn.data.images import read_rgb_array
from rfcn.errors import UserError
from rfcn.inference.batching import same_key_batches
from rfcn.inference.detections import Detections


@dataclass(frozen=True)
class FileDetections:
    """The outcome for ``paths[index]``: its ``(H, W, 3)`` uint8 ``image`` and ``detections``,
    or the ``error`` that kept it from being read (then both are None)."""

    index: int
    image: np.ndarray | None = None
    detections: Detections | None = None
    error: UserError | None = None


class _DecodedFiles:
    """``files[i] -> (i, (H, W, 3) uint8 array or (source, problem))``, a map-style dataset.

    A worker returns the problem rather than raising it: one bad file must not end the
    others, and a UserError does not survive the trip between processes.
    """

    def __init__(self, paths: Sequence[os.PathLike[str] | str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | tuple[str, str]]:
        try:
            return index, read_rgb_array(self.paths[index])
        except UserError as exc:
            return index, (exc.source, exc.problem)


def _as_is(sample: Any) -> Any:
    """The DataLoader's per-sample conversion: none (its default makes arrays tensors)."""
    return sample


def _decoded(
    paths: Sequence[os.PathLike[str] | str], workers: int
) -> Iterator[tuple[int, np.ndarray | UserError]]:
    """Every file decoded, in order: by ``workers`` DataLoader processes, or here (torch-free)
    when ``workers`` is 0."""
    files = _DecodedFiles(paths)
    if workers == 0:
        samples: Any = (files[index] for index in range(len(files)))
    else:
        from torch.utils.data import DataLoader

        samples = DataLoader(files, batch_size=None, num_workers=workers, collate_fn=_as_is)
    for index, result in samples:
        yield index, UserError(*result) if isinstance(result, tuple) else result


def detect_files(
    predictor: Any,
    paths: Sequence[os.PathLike[str] | str],
    batch_size: int = 1,
    workers: int = 0,
) -> Iterator[FileDetections]:
    """One :class:`FileDetections` per path, as batches complete (``index`` says which).

    Args:
        predictor: a :class:`~rfcn.inference.predictor.Predictor` (any ``batch_size`` and
            ``workers``) or an :class:`~rfcn.inference.onnx_predictor.OnnxPredictor` (one by
            one, no workers); it returns :class:`Detections` for a list of arrays.
        paths: the image files.
        batch_size: images per forward pass; ``workers``: decoding processes (0: decode here).
    """
    failures: list[FileDetections] = []

    def readable() -> Iterator[tuple[int, np.ndarray]]:
        for index, result in _decoded(paths, workers):
            if isinstance(result, UserError):
                failures.append(FileDetections(index, error=result))
            else:
                yield index, result

    def key(item: tuple[int, np.ndarray]) -> Any:
        return predictor.batch_key(*item[1].shape[:2]) if batch_size > 1 else None

    for batch in same_key_batches(readable(), key, batch_size):
        yield from failures
        failures.clear()
        found = predictor([image for _, image in batch])
        for (index, image), detections in zip(batch, found, strict=True):
            yield FileDetections(index, image, detections)
    yield from failures
