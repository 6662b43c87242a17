"""What a measurement ran on: CPU model, threads, library versions, load.

Times in this project are quoted with the machine they come from (the same run can take twice
as long on one 2-core x86 machine as on another), so every JSON with a time carries this.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch
import torchvision

from rfcn.inference.fast_path import bf16_is_fast


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_instruction_sets() -> dict[str, bool]:
    """Which of the instruction sets that decide this project's CPU speed the CPU has.

    AVX2 and AVX512 decide which float32 kernels torch runs; AVX512-BF16 or AMX make bf16
    autocast native (:func:`~rfcn.inference.fast_path.bf16_is_fast`), else it is emulated and
    slower than float32. Asked of torch (the cpuinfo library torch chooses its kernels with),
    so the answer holds on every OS, not only where ``/proc/cpuinfo`` exists.
    """
    return {
        "AVX2": torch.cpu._is_avx2_supported(),
        "AVX512": torch.cpu._is_avx512_supported(),
        "AVX512-VNNI": torch.cpu._is_vnni_supported(),
        "AVX512-BF16": torch.cpu._is_avx512_bf16_supported(),
        "AMX": torch.cpu._is_amx_tile_supported(),
    }


def usable_cpus() -> int:
    """The logical CPUs this process may run on (its affinity mask, e.g. under taskset or a
    container's cpuset), else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_machine(device: torch.device | None = None) -> dict[str, Any]:
    """The hardware and software the numbers come from; the load average tells how busy the
    CPU was when the measurement started."""
    device = device or torch.device("cpu")
    model = cpu_model()
    machine: dict[str, Any] = {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "fast_bf16": bf16_is_fast(device),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else model,
    }
    if hasattr(os, "getloadavg"):
        machine["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    return machine
