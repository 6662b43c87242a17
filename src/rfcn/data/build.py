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
"""

from __future__ import annotations

from pathlib import Path

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


class _SeededSamples(Dataset):
    """``dataset[(index, seed)]``: sample ``index`` augmented with a generator seeded ``seed``."""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> tuple[Tensor, Target]:
        index, seed = key
        return self.dataset.load(index, torch.Generator().manual_seed(seed))


def build_data_loader(
    dataset: DetectionDataset,
    images_per_batch: int,
    train: bool,
    seed: int,
    workers: int,
    aspect_grouping: bool,
    distributed: bool = False,
    start_iter: int = 0,
) -> DataLoader:
    """A loader of ``(list[image (3, H, W)], list[target])`` batches for this process.

    Training: endless, shuffled from ``seed``, flips seeded per sample, batches of
    same-orientation images when ``aspect_grouping``; ``start_iter`` skips the batches a
    resumed run already used, so it continues exactly. Evaluation: each image once, in
    order, the last batch possibly short. With ``distributed`` (torch.distributed
    initialised) each rank gets a disjoint shard (evaluation: indices ``rank::world_size``)
    and ``images_per_batch`` is per rank.
    """
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if train:
        if len(dataset) == 0:
            raise UserError("data", "the training set has no images")
        groups = aspect_groups(dataset.image_sizes) if aspect_grouping else None
        batch_sampler = TrainingBatchSampler(
            len(dataset), images_per_batch, seed, groups, rank, world_size, start_iter
        )
        return DataLoader(
            _SeededSamples(dataset),
            batch_sampler=batch_sampler,
            num_workers=workers,
            collate_fn=collate_detection,
        )
    return DataLoader(
        dataset,
        batch_size=images_per_batch,
        sampler=range(rank, len(dataset), world_size),
        drop_last=False,
        num_workers=workers,
        collate_fn=collate_detection,
    )
