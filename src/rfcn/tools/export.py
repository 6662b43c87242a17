"""``rfcn export``: the whole detector as one ONNX graph.

The graph and its metadata are described in :mod:`rfcn.inference.export`. ``--check`` runs
PyTorch and onnxruntime on images and reports how far apart they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rfcn.errors import UserError

# The export module imports nothing heavy at import time; torch and onnx load when it runs.
from rfcn.inference.export import DEFAULT_OPSET
from rfcn.optional import require


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX",
        description=__doc__.splitlines()[0].strip("`"),
    )
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) from rfcn train")
    parser.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="onnx (the default)")
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {DEFAULT_OPSET} (the default) or newer",
    )
    parser.add_argument(
        "--check",
        nargs="+",
        metavar="IMAGE",
        default=[],
        help="after exporting, run PyTorch and onnxruntime on these images and compare",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rfcn.config import config_to_dict
    from rfcn.data.images import read_rgb_array
    from rfcn.engine.checkpoint import load_model
    from rfcn.inference.export import check_exportable, compare_with_onnx, export_onnx

    out = Path(args.out)
    if args.opset < DEFAULT_OPSET:
        # Older opsets go through onnx's version converter, which fails on this graph.
        raise UserError("--opset", f"must be {DEFAULT_OPSET} or newer, got {args.opset}")
    if not out.parent.is_dir():
        raise UserError(out, "the output folder does not exist")
    if args.check:
        require("onnxruntime", "onnx", "--check")  # before the export, not after it
    check_images = [read_rgb_array(path) for path in args.check]
    model, cfg, class_names = load_model(args.weights, "cpu")
    check_exportable(cfg.model, args.weights)
    export_onnx(model, class_names, config_to_dict(cfg), out, args.opset)
    print(f"wrote {out} (ONNX opset {args.opset}, dynamic image size)", file=sys.stderr)
    if not check_images:
        return 0
    report = compare_with_onnx(model, out, check_images)
    print(report.summary(), file=sys.stderr)
    return 0 if report.agrees() else 1
