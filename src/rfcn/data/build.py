"""From a :class:`rfcn.config.DataConfig` to datasets, and loaders of ``(images, targets)``.

Which data each format reads:

- ``voc``: training joins ``(roots[i], train_splits[i])`` (one split given for several roots
  applies to each); testing reads ``(roots[0], test_split)`` (VOC 07+12 trains on both years
  and tests on 2007). Without ``class_names`` the test set takes the training set's class
  list (:mod:`rfcn.data.voc`), so both number the classes alike.
- ``coco``: ``coco_{train,test}_json`` and ``coco_{train,test}_images``; relative paths are
  taken inside ``roots[0]`` when a root is given.
- ``synthetic``: generated into ``roots[0]`` (once) by :mod:`rfcn.data.synthetic`, then read
  as VOC with splits ``train`` and ``test`` and the generator's class list.

An image that cannot be read raises its :class:`~rfcn.errors.UserError` in the process that
iterates the loader, whether a DataLoader worker decoded it or not (a worker's exception
would otherwise come back as a RuntimeError holding a traceback). A training loader built with
``skip_unreadable`` serves the next readable image of the set in its place instead, and names
the images it left out in the target's ``"skipped"`` list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from rfcn.config import DataConfig
from rfcn.data.coco import COCODetection
from rfcn.data.dataset import DetectionDataset, Target
from rfcn.data.samplers import SampleKey, TrainingBatchSampler, aspect_groups
from rfcn.data.transforms import Compose, RandomHorizontalFlip
from rfcn.data.voc import VOCDetection, read_voc_split, voc_class_names
from rfcn.errors import UserError


def build_dataset(cfg: DataConfig, train: bool, lenient: bool = False) -> DetectionDataset:
    """The training (flip when ``cfg.flip``, difficult objects only with ``use_difficult``,
    no crowd boxes, decoded images kept in memory when ``cache_images``) or test (all
    objects, difficult flagged) set the config describes.

    ``lenient``: the readers leave out bad files, entries and objects with a
    :class:`~rfcn.errors.DataWarning` each instead of raising (``rfcn data`` lists them).

    Raises:
        UserError: a missing setting (naming the config key) or bad data (naming the file).
    """
    dataset = _read_dataset(cfg, train, lenient)
    if train and cfg.cache_images:
        dataset.keep_decoded_images()
    return dataset


def _read_dataset(cfg: DataConfig, train: bool, lenient: bool) -> DetectionDataset:
    """:func:`build_dataset` before the image cache: the reader the format calls for."""
    transform = Compose([RandomHorizontalFlip(0.5)]) if train and cfg.flip else None
    class_names = cfg.class_names or None
    if cfg.format == "coco":
        split = "train" if train else "test"
        json_path = _coco_path(cfg, f"coco_{split}_json")
        image_dir = _coco_path(cfg, f"coco_{split}_images")
        return COCODetection(
            json_path, image_dir, class_names, not train, transform, lenient=lenient
        )
    if cfg.format == "synthetic":
        # Imported here: only this format needs the generator.
        from rfcn.data import synthetic

        root = synthetic.ensure_synthetic_dataset(_roots(cfg)[0], cfg)
        split = synthetic.TRAIN_SPLIT if train else synthetic.TEST_SPLIT
        names = class_names or list(synthetic.CLASS_NAMES)
        keep_difficult = not train or cfg.use_difficult
        return VOCDetection([(root, split)], names, keep_difficult, transform, lenient=lenient)
    train_sources = _voc_train_sources(cfg)
    if train:
        return VOCDetection(
            train_sources, class_names, cfg.use_difficult, transform, lenient=lenient
        )
    if class_names is None:
        train_images = [i for source in train_sources for i in read_voc_split(*source, lenient)]
        class_names = voc_class_names(image.annotation for image in train_images)
    test_source = (_roots(cfg)[0], cfg.test_split)
    return VOCDetection([test_source], class_names, keep_difficult=True, lenient=lenient)


def _roots(cfg: DataConfig) -> list[Path]:
    if not cfg.roots:
        raise UserError("data.roots", f"{cfg.format} data need a dataset folder; none is set")
    return [Path(root) for root in cfg.roots]


def _voc_train_sources(cfg: DataConfig) -> list[tuple[Path, str]]:
    """The ``(root, split)`` pairs VOC training joins."""
    roots = _roots(cfg)
    splits = list(cfg.train_splits)
    if len(splits) == 1:
        splits *= len(roots)
    if len(splits) != len(roots):
        raise UserError(
            "data.train_splits",
            f"give one split per root ({len(roots)} roots, {len(splits)} splits) or a single one",
        )
    return list(zip(roots, splits, strict=True))


def _coco_path(cfg: DataConfig, key: str) -> Path:
    value = getattr(cfg, key)
    if not value:
        raise UserError(f"data.{key}", "not set (coco data need it)")
    path = Path(value)
    return Path(cfg.roots[0]) / path if cfg.roots and not path.is_absolute() else path


def collate_detection(batch: list[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """A batch stays a list of differently sized images and their targets; the model pads."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def _collate_or_error(
    batch: list[tuple[Tensor, Target] | UserError],
) -> tuple[list[Tensor], list[Target]] | UserError:
    """:func:`collate_detection`, or the first sample's error: it travels as the batch."""
    for sample in batch:
        if isinstance(sample, UserError):
            return sample
    return collate_detection(batch)  # type: ignore[arg-type]


class _DetectionLoader(DataLoader):
    """Raises the :class:`UserError` a batch carries (see the module docstring)."""

    def __iter__(self) -> Iterator[Any]:
        # Created now, not at the first batch: creating it draws the workers' base seed from
        # torch's generator, which the trainer seeds or restores after calling iter().
        return _raising_carried_errors(super().__iter__())


def _raising_carried_errors(batches: Iterator[Any]) -> Iterator[Any]:
    for batch in batches:
        if isinstance(batch, UserError):
            raise batch
        yield batch


class _Samples(Dataset):
    """``dataset[index]`` (evaluation), or its :class:`UserError` as the sample."""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Target] | UserError:
        try:
            return self.dataset[index]
        except UserError as error:
            return error


class _SeededSamples(Dataset):
    """``dataset[(index, seed)]``: sample ``index`` augmented with a generator seeded ``seed``;
    with ``skip_unreadable`` the next readable image when it cannot be read, its target's
    ``"skipped"`` naming those passed over; else the image's :class:`UserError`."""

    def __init__(self, dataset: DetectionDataset, skip_unreadable: bool) -> None:
        self.dataset = dataset
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> tuple[Tensor, Target] | UserError:
        index, seed = key
        skipped: list[UserError] = []
        for offset in range(len(self.dataset)):
            try:
                image, target = self.dataset.load(
                    (index + offset) % len(self.dataset), torch.Generator().manual_seed(seed)
                )
            except UserError as error:
                if not self.skip_unreadable:
                    return error
                skipped.append(error)
                continue
            return image, {**target, "skipped": skipped}
        return UserError("data", f"none of the {len(self.dataset)} training images can be read")


def build_data_loader(
    dataset: DetectionDataset,
    images_per_batch: int,
    train: bool,
    seed: int,
    workers: int,
    aspect_grouping: bool,
    distributed: bool = False,
    start_iter: int = 0,
    skip_unreadable: bool = False,
    worker_init_fn: Callable[[int], None] | None = None,
) -> DataLoader:
    """A loader of ``(list[image (3, H, W)], list[target])`` batches for this process.

    Training: endless, shuffled from ``seed``, flips seeded per sample, batches of
    same-orientation images when ``aspect_grouping``; ``start_iter`` skips the batches a
    resumed run already used, so it continues exactly. Evaluation: each image once, in
    order, the last batch possibly short. With ``distributed`` (torch.distributed
    initialised) each rank gets a disjoint shard (evaluation: indices ``rank::world_size``)
    and ``images_per_batch`` is per rank. ``skip_unreadable`` (training): see the module
    docstring; ``worker_init_fn`` runs first in each worker process.

    Raises:
        UserError: an empty training set; while iterating, an image that cannot be read.
    """
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if train:
        if len(dataset) == 0:
            raise UserError("data", "the training set has no images")
        groups = aspect_groups(dataset.image_sizes) if aspect_grouping else None
        batch_sampler = TrainingBatchSampler(
            len(dataset), images_per_batch, seed, groups, rank, world_size, start_iter
        )
        return _DetectionLoader(
            _SeededSamples(dataset, skip_unreadable),
            batch_sampler=batch_sampler,
            num_workers=workers,
            collate_fn=_collate_or_error,
            worker_init_fn=worker_init_fn,
        )
    return _DetectionLoader(
        _Samples(dataset),
        batch_size=images_per_batch,
        sampler=range(rank, len(dataset), world_size),
        drop_last=False,
        num_workers=workers,
        collate_fn=_collate_or_error,
        worker_init_fn=worker_init_fn,
    )
