from pathlib import Path

import pytest
import torch
from torch import nn

from rfcn.engine.weight_average import WeightAverage
from rfcn.errors import UserError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_average_follows_the_recurrence_worked_by_hand() -> None:
    """Weights set to known values before each update: the average is the recurrence
    a <- d_n a + (1 - d_n) w with d_n = min(decay, (1 + n) / (10 + n)), here in float64."""
    model = _model()
    average = WeightAverage(model, decay=0.3)
    expected = {name: value.double() for name, value in model.state_dict().items()}
    for n, value in enumerate([1.0, -2.0, 4.0, 0.5], start=1):
        for tensor in model.state_dict().values():
            tensor.fill_(value if tensor.is_floating_point() else 10 * n)
        average.update()
        decay = min(0.3, (1 + n) / (10 + n))  # 2/11, 0.25, then the cap 0.3 twice
        for name, tensor in expected.items():
            if model.state_dict()[name].is_floating_point():
                expected[name] = decay * tensor + (1 - decay) * value
            else:
                expected[name] = torch.full_like(tensor, 10 * n)
    for name, value in average.model.state_dict().items():
        assert torch.allclose(value.double(), expected[name], atol=1e-6), name
    assert average.model.state_dict()["1.num_batches_tracked"].item() == 40
    assert not any(p.requires_grad for p in average.model.parameters())
    assert not average.model.training


def test_state_round_trip_and_a_state_that_does_not_fit(tmp_path: Path) -> None:
    model = _model()
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    average.update()
    restored = WeightAverage(_model(), decay=0.5)
    restored.load_state_dict(average.state_dict(), tmp_path / "last.pt")
    assert restored.updates == 1
    for name, value in average.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], value), name
    other = WeightAverage(nn.Linear(3, 4), decay=0.5)
    with pytest.raises(UserError, match=r"last\.pt"):
        other.load_state_dict(average.state_dict(), tmp_path / "last.pt")
    with pytest.raises(UserError, match=r"last\.pt: its weight_average entry is not a saved"):
        average.load_state_dict({"model": "random bytes"}, tmp_path / "last.pt")
