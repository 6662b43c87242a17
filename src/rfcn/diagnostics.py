"""What ``rfcn doctor`` reports about the machine a user runs on: the versions of rfcn, Python
and the libraries it uses, the CPU and the instruction sets that decide its speed, threads,
CUDA devices, and the optional extras installed (``pip install "rfcn[onnx]"``...).

The self-test that follows the report lives in :mod:`rfcn.self_test`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from typing import Any

import torch

from rfcn import __version__
from rfcn.inference.fast_path import bf16_is_fast
from rfcn.machine import cpu_instruction_sets, cpu_model, usable_cpus

# Developer tools (pytest, ruff; the documentation site), not features a user runs: left out of
# the report.
_DEVELOPER_EXTRAS = ("dev", "docs")
# Reported first, and also when rfcn runs from a source tree without its package metadata.
_KEY_PACKAGES = ("torch", "torchvision", "numpy")


def requirements() -> tuple[list[str], dict[str, list[str]]]:
    """The distributions rfcn depends on, and those of each user-facing extra, as the
    installed package's metadata declares them (``pyproject.toml``'s lists, one source).

    Returns ``(core, {extra: names})``; both empty when rfcn runs from an uninstalled tree.
    """
    try:
        declared = importlib.metadata.requires("rfcn") or []
    except importlib.metadata.PackageNotFoundError:
        return [], {}
    core: list[str] = []
    extras: dict[str, list[str]] = {}
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0)
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if extra is None:
            core.append(name)
        elif extra.group(1) not in _DEVELOPER_EXTRAS:
            extras.setdefault(extra.group(1), []).append(name)
    return core, extras


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def cuda_devices() -> list[dict[str, Any]]:
    """Each visible CUDA device: index, name, compute capability, memory and bf16 support."""
    devices = []
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        properties = torch.cuda.get_device_properties(index)
        devices.append(
            {
                "device": f"cuda:{index}",
                "name": properties.name,
                "capability": f"{properties.major}.{properties.minor}",
                "memory_gib": round(properties.total_memory / 2**30, 1),
                "bf16": bf16_is_fast(torch.device("cuda", index)),
            }
        )
    return devices


def environment() -> dict[str, Any]:
    """Everything ``rfcn doctor`` reports before its self-test, as JSON-ready values."""
    core, extras = requirements()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "rfcn": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
        "packages": {
            name: installed_version(name) for name in dict.fromkeys((*_KEY_PACKAGES, *core))
        },
        "cpu": {
            "model": cpu_model(),
            "instruction_sets": cpu_instruction_sets(),
            "torch_kernels": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": bf16_is_fast(torch.device("cpu")),
        },
        "threads": {
            "torch": torch.get_num_threads(),
            "torch_interop": torch.get_num_interop_threads(),
            "usable_cpus": usable_cpus(),
        },
        "cuda": {
            "torch_built_with": torch.version.cuda,
            "cudnn": cudnn,
            "available": torch.cuda.is_available(),
            "devices": cuda_devices(),
        },
        "extras": {
            extra: {name: installed_version(name) for name in names}
            for extra, names in extras.items()
        },
    }


def format_environment(env: dict[str, Any]) -> str:
    """The report of :func:`environment` as aligned ``name  value`` lines."""
    cpu, threads, cuda = env["cpu"], env["threads"], env["cuda"]
    sets = ", ".join(
        f"{name} {'yes' if has else 'no'}" for name, has in cpu["instruction_sets"].items()
    )
    rows = [
        ("rfcn", env["rfcn"]),
        ("python", env["python"]),
        ("platform", env["platform"]),
        *((name, version or "not installed") for name, version in env["packages"].items()),
        ("cpu", cpu["model"]),
        ("instruction sets", sets),
        ("torch cpu kernels", cpu["torch_kernels"]),
        ("bf16 on cpu", "native" if cpu["bf16_native"] else "emulated (slower than float32)"),
        (
            "threads",
            f"torch {threads['torch']} (inter-op {threads['torch_interop']}), "
            f"{threads['usable_cpus']} usable CPUs",
        ),
        (
            "cuda",
            f"torch built with {cuda['torch_built_with'] or 'no CUDA'}, cuDNN {cuda['cudnn']}, "
            f"{'available' if cuda['available'] else 'not available'}",
        ),
        *(
            (
                device["device"],
                f"{device['name']}, capability {device['capability']}, "
                f"{device['memory_gib']} GiB, bf16 {'yes' if device['bf16'] else 'no'}",
            )
            for device in cuda["devices"]
        ),
        *(
            (
                f"extra [{extra}]",
                ", ".join(
                    f"{name} {version or 'not installed'}" for name, version in names.items()
                ),
            )
            for extra, names in env["extras"].items()
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
