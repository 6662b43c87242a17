import pytest
import torch

from rfcn.engine.distributed import (
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    launched_by_torchrun,
    mean_over_processes,
    resolve_device,
)
from rfcn.errors import UserError


def test_single_process_is_a_world_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched_by_torchrun()
    assert init_distributed(torch.device("cpu")) is False
    assert (get_rank(), get_world_size()) == (0, 1)


def test_mean_over_one_process_is_the_values() -> None:
    values = {"loss": torch.tensor(1.25), "loss_cls": torch.tensor([0.5])}
    assert mean_over_processes(values) == {"loss": 1.25, "loss_cls": 0.5}
    assert mean_over_processes({}) == {}


def test_device_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="not a device"):
        resolve_device("gpu0")


def test_main_process_follows_torchrun_rank_outside_a_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
