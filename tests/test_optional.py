"""rfcn.optional: a missing optional package is one line naming the extra to install."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rfcn.errors import UserError
from rfcn.optional import require


def test_an_installed_module_is_returned() -> None:
    assert require("json", "none", "test") is json


def test_a_missing_module_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail as if absent
    with pytest.raises(UserError) as error:
        require("onnx", "onnx", "ONNX export")
    assert str(error.value) == 'ONNX export: onnx is not installed: pip install "rfcn[onnx]"'


def test_the_missing_submodule_is_the_one_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.utils.tensorboard imports tensorboard: the error names the package to install.
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(UserError) as error:
        require("torch.utils.tensorboard", "tensorboard", "train.tensorboard")
    assert error.value.problem == 'tensorboard is not installed: pip install "rfcn[tensorboard]"'


def test_a_broken_install_says_it_cannot_be_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An installed package whose import fails (a missing shared library, say).
    (tmp_path / "broken_runtime.py").write_text(
        'raise ImportError("libruntime.so: cannot open shared object file\\nmore detail")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError) as error:
        require("broken_runtime", "onnx", "model.onnx")
    assert str(error.value) == (
        "model.onnx: broken_runtime cannot be imported (libruntime.so: cannot open shared "
        'object file): pip install "rfcn[onnx]"'
    )
