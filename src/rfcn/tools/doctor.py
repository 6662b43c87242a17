"""``rfcn doctor``: what to paste into a bug report, and whether this machine computes right.

Prints the versions of rfcn, Python and its libraries, the CPU and the instruction sets that
decide its speed (AVX2, AVX512, AVX512-BF16, AMX), threads, CUDA devices and their compute
capability, and the optional extras installed (:mod:`rfcn.diagnostics`). Then a self-test on
every available device, one line per check, ``ok`` or ``FAILED: <reason>``, with its time
(:mod:`rfcn.self_test`): PS-RoI pooling (both modes) and deformable PS-RoI pooling forward and
backward against a float64 CPU computation, one training step under the device's autocast,
one detection, and an ONNX export run by onnxruntime where the extra is installed.

Exit status: 0 every check passed (or was skipped); 1 a check failed.
"""

from __future__ import annotations

import argparse
import time


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="report versions, CPU, GPUs and extras, then self-test ops, training and export",
        description=__doc__.splitlines()[0].strip("`"),
        epilog="exit status: 0 all checks passed or skipped; 1 a check failed",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write the report and the checks as JSON"
    )
    parser.add_argument(
        "--no-self-test", action="store_true", help="only the report, no checks (a second)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rfcn.diagnostics import environment, format_environment
    from rfcn.files import write_json
    from rfcn.self_test import FAILED, format_result, run_self_test

    report = environment()
    print(format_environment(report), flush=True)
    results = []
    if not args.no_self_test:
        print("\nself-test", flush=True)
        started = time.perf_counter()
        results = run_self_test(on_result=lambda result: print(format_result(result), flush=True))
        failed = [r for r in results if r.status == FAILED]
        summary = f"{len(failed)} of {len(results)} checks FAILED" if failed else "all passed"
        print(f"{summary} in {time.perf_counter() - started:.1f} s")
    if args.json:
        checks = [asdict(result) for result in results]
        write_json(args.json, {"environment": report, "checks": checks})
        print(f"wrote {args.json}")
    return 1 if any(result.status == FAILED for result in results) else 0
