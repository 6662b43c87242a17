"""``rfcn mosaic``: write a small-object copy of a VOC dataset (:mod:`rfcn.data.mosaic`).

Example (the raccoon photographs with raccoons of 16 to 48 px, for the small-object
benchmark ``configs/raccoon_small_cpu.yaml``)::

    rfcn mosaic --source ../shared/data/raccoon --out data/raccoon_small
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rfcn.data.mosaic import MANIFEST_NAME, MosaicSettings, write_mosaic_dataset

_DEFAULTS = MosaicSettings()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mosaic",
        help="write a small-object copy of a VOC dataset (shrunk photos on mosaic canvases)",
        description=(
            "Shrink the photos of a VOC dataset so that their objects span --object-px and lay "
            "several on each square canvas; training canvases take photos of one source split, "
            "test canvases of another. Writes VOC layout (splits train, trainval, test), a COCO "
            f"instances JSON per split and {MANIFEST_NAME} into OUT."
        ),
    )
    parser.add_argument("--source", required=True, type=Path, metavar="DIR", help="VOC root")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument(
        "--source-splits",
        nargs=2,
        default=[_DEFAULTS.source_train_split, _DEFAULTS.source_test_split],
        metavar=("TRAIN", "TEST"),
        help="the source splits the training and test canvases take photos from (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--canvas", type=int, default=_DEFAULTS.canvas, help="canvas side in px (%(default)s)"
    )
    parser.add_argument(
        "--object-px",
        nargs=2,
        type=int,
        default=list(_DEFAULTS.object_px),
        metavar=("MIN", "MAX"),
        help="longer side of a shrunk object, px (default: %(default)s)",
    )
    parser.add_argument(
        "--photos",
        nargs=2,
        type=int,
        default=list(_DEFAULTS.photos_per_canvas),
        metavar=("FEWEST", "MOST"),
        help="photos tried per canvas (default: %(default)s)",
    )
    parser.add_argument(
        "--canvases",
        nargs=2,
        type=int,
        default=[_DEFAULTS.train_canvases, _DEFAULTS.test_canvases],
        metavar=("TRAIN", "TEST"),
        help="canvases per split (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="(default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = MosaicSettings(
        canvas=args.canvas,
        object_px=tuple(args.object_px),
        photos_per_canvas=tuple(args.photos),
        train_canvases=args.canvases[0],
        test_canvases=args.canvases[1],
        source_train_split=args.source_splits[0],
        source_test_split=args.source_splits[1],
        seed=args.seed,
    )
    manifest = write_mosaic_dataset(args.source, args.out, settings)
    for split in ("train", "test"):
        summary = manifest[split]
        sides = summary["longer_side_px"] or {"min": 0, "median": 0, "max": 0}
        print(
            f"{split}: {summary['canvases']} canvases, {summary['objects']} objects from "
            f"{len(summary['source_photos'])} photos; longer side {sides['min']}-{sides['max']} "
            f"px, median {sides['median']:.0f}"
        )
    print(f"wrote {args.out}")
    return 0
