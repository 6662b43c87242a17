"""``rfcn detect``: images or folders in, annotated pictures and one JSON of detections each out.

The weights are a checkpoint (``.pt``, run with PyTorch) or an ONNX export (``.onnx``, run
with onnxruntime; that path never imports torch, so this module imports it lazily).
With a checkpoint, ``--workers`` DataLoader processes decode the images and ``--batch-size``
images run per forward pass (:mod:`rfcn.inference.file_detection`); the detections are those
of one image at a time. An ONNX export runs one image at a time.

Exit codes: 0 every image done; 1 some images could not be read (each named in a warning on
stderr, the others done); 2 a user error that stops the run (bad weights, no images, the one
image given or none of several readable).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rfcn.errors import UserError
from rfcn.files import printable_path, write_image, write_json
from rfcn.inference.detections import Detections
from rfcn.inference.file_detection import detect_files
from rfcn.inference.image_input import find_images
from rfcn.optional import require

EPILOG = (
    "exit status: 0 all images done; 1 some images skipped (named in warnings); "
    "2 nothing done (error message on stderr)"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="detect objects in images with a checkpoint or an ONNX export",
        description=__doc__.splitlines()[0].strip("`"),
        epilog=EPILOG,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) or ONNX model (.onnx)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="drop detections below (default 0.5)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="checkpoints: images per forward pass (default 1)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="checkpoints: processes that decode images (default 0: the main process)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="checkpoints: channels-last convolutions, with bf16 autocast on all convs where "
        "the device runs bf16 natively (CUDA, CPUs with AVX512-BF16/AMX)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(out, "the output path exists and is not a folder")
    check_batching(args.weights, args.batch_size, args.workers)
    # Pictures of an earlier run inside an input folder are outputs, not inputs.
    images = [p for p in find_images(args.paths) if out.resolve() not in p.resolve().parents]
    if not images:
        raise UserError(" ".join(map(printable_path, args.paths)), "no image files found")
    predictor = load_predictor(args.weights, args.device, args.score_threshold, args.fast)
    out.mkdir(parents=True, exist_ok=True)
    names = output_names(images)
    skipped = 0
    for result in detect_files(predictor, images, args.batch_size, args.workers):
        if result.error is not None:
            if len(images) == 1:
                raise result.error
            print(f"warning: {result.error} (skipped)", file=sys.stderr)
            skipped += 1
            continue
        write_outputs(
            images[result.index], result.image, result.detections, out / names[result.index]
        )
    done = len(images) - skipped
    if done == 0:
        raise UserError(args.paths[0], f"none of the {len(images)} images could be read")
    print(f"wrote detections for {done} of {len(images)} images to {out}", file=sys.stderr)
    return 1 if skipped else 0


def check_batching(weights: str, batch_size: int, workers: int) -> None:
    """``--batch-size`` and ``--workers`` must be usable with these weights."""
    if batch_size < 1:
        raise UserError("--batch-size", f"must be at least 1, got {batch_size}")
    if workers < 0:
        raise UserError("--workers", f"must be 0 or more, got {workers}")
    if Path(weights).suffix.lower() == ".onnx" and (batch_size > 1 or workers > 0):
        raise UserError(
            "--batch-size" if batch_size > 1 else "--workers",
            "an ONNX export runs one image at a time in this process; batches and workers "
            "need a checkpoint (.pt)",
        )


def load_predictor(weights: str, device: str, score_threshold: float, fast: bool = False) -> Any:
    """An :class:`~rfcn.inference.onnx_predictor.OnnxPredictor` for ``.onnx`` files, else a
    PyTorch one (``fast``: on the fast inference path)."""
    if Path(weights).suffix.lower() == ".onnx":
        from rfcn.inference.onnx_predictor import OnnxPredictor

        available = require("onnxruntime", "onnx", weights).get_available_providers()
        return OnnxPredictor(weights, score_threshold, providers=onnx_providers(device, available))
    from rfcn.engine.distributed import resolve_device
    from rfcn.inference.predictor import Predictor

    try:
        torch_device = resolve_device(device)
    except UserError as exc:
        raise UserError("--device", exc.problem) from None
    from rfcn.inference.fast_path import bf16_is_fast

    return Predictor.from_checkpoint(
        weights,
        torch_device,
        score_threshold=score_threshold,
        channels_last=fast,
        bf16="convs" if fast and bf16_is_fast(torch_device) else None,
    )


def onnx_providers(device: str, available: list[str]) -> list[str]:
    """onnxruntime providers for a ``--device`` value, given the ``available`` ones: CUDA
    first where asked and available."""
    wants_cuda = device == "auto" or device.startswith("cuda")
    if wants_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device.startswith("cuda"):
        raise UserError("--device", "this onnxruntime has no CUDA support")
    return ["CPUExecutionProvider"]


def write_outputs(path: Path, image: np.ndarray, detections: Detections, stem: Path) -> None:
    """Write ``<stem>.jpg`` (the ``(H, W, 3)`` image with its boxes drawn) and ``<stem>.json``."""
    from PIL import Image

    from rfcn.visualize import draw_detections

    picture = draw_detections(
        Image.fromarray(image),
        detections.boxes,
        detections.labels,
        detections.scores,
        list(detections.class_names),
    )
    height, width = image.shape[:2]
    record = {
        "image": printable_path(path),
        "width": width,
        "height": height,
        **detections.to_dict(),
    }
    write_image(stem.with_name(stem.name + ".jpg"), picture)
    write_json(stem.with_name(stem.name + ".json"), record)


def output_names(images: Sequence[Path]) -> list[str]:
    """One output file stem per image: its own stem, numbered where two images share one."""
    names: list[str] = []
    taken: set[str] = set()
    for path in images:
        name, number = path.stem, 1
        while name in taken:
            number += 1
            name = f"{path.stem}-{number}"
        taken.add(name)
        names.append(name)
    return names
