"""Fixtures of the engine tests: the tiny VOC dataset and configs of :mod:`engine_fixtures`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from engine_fixtures import tiny_config, write_voc_fixture

from rfcn.config import Config


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_voc_fixture(tmp_path_factory.mktemp("tiny_voc"))


@pytest.fixture
def make_config(tiny_voc: Path) -> Callable[..., Config]:
    """``make_config(train={...}, model={...})``: :func:`tiny_config` on the tiny dataset."""

    def make(**sections: dict) -> Config:
        return tiny_config(tiny_voc, **sections)

    return make
