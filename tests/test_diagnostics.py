"""``rfcn doctor``'s report: the fields a bug report needs, from the package's own metadata."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from rfcn import __version__
from rfcn.diagnostics import environment, format_environment, requirements


def test_requirements_come_from_the_package_metadata() -> None:
    core, extras = requirements()
    assert {"torch", "torchvision", "numpy", "pillow", "pycocotools"} <= set(core)
    # pyproject.toml's user-facing extras; "dev" and "docs" (developer tools) are not
    assert extras == {
        "tensorboard": ["tensorboard"],
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
    }


def test_the_report_has_every_field_and_is_json() -> None:
    env = environment()
    assert json.loads(json.dumps(env)) == env
    assert env["rfcn"] == __version__
    assert torch.__version__.startswith(env["packages"]["torch"])  # "+cu130" or not
    assert torchvision.__version__.startswith(env["packages"]["torchvision"])
    assert list(env["packages"])[:3] == ["torch", "torchvision", "numpy"]
    cpu = env["cpu"]
    assert cpu["model"] and cpu["torch_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert set(cpu["instruction_sets"]) == {"AVX2", "AVX512", "AVX512-VNNI", "AVX512-BF16", "AMX"}
    assert cpu["bf16_native"] == (
        cpu["instruction_sets"]["AVX512-BF16"] or cpu["instruction_sets"]["AMX"]
    )
    assert env["threads"]["torch"] == torch.get_num_threads() and env["threads"]["usable_cpus"] >= 1
    assert env["cuda"]["available"] == torch.cuda.is_available()
    assert len(env["cuda"]["devices"]) == (
        torch.cuda.device_count() if torch.cuda.is_available() else 0
    )
    assert set(env["extras"]) == {"onnx", "tensorboard"}
    text = format_environment(env)
    for line in ("rfcn ", "torch ", "instruction sets ", "threads ", "cuda ", "extra [onnx] "):
        assert any(row.startswith(line) for row in text.splitlines()), line


def test_a_missing_extra_reads_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "onnxruntime":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    env = environment()
    assert env["extras"]["onnx"]["onnxruntime"] is None
    assert "onnxruntime not installed" in format_environment(env)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_devices_are_listed_with_their_capability() -> None:
    devices = environment()["cuda"]["devices"]
    major, minor = torch.cuda.get_device_capability(0)
    assert devices[0]["device"] == "cuda:0" and devices[0]["capability"] == f"{major}.{minor}"
