import pytest
import torch
from torch import nn

from rfcn.errors import UserError
from rfcn.modeling.weights import load_weights


def test_weights_that_do_not_fit_are_listed() -> None:
    model = nn.Sequential(nn.Linear(2, 3))
    weights = {"0.weight": torch.zeros(4, 2), "0.extra": torch.zeros(1)}
    with pytest.raises(UserError) as error:
        load_weights(model, weights, "w.pt")
    problem = error.value.problem
    assert error.value.source == "w.pt"
    assert "missing 0.bias" in problem
    assert "unexpected 0.extra" in problem
    assert "0.weight (4, 2) in checkpoint vs (3, 2) in model" in problem


def test_ignored_keys_are_neither_required_nor_loaded() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    before = model[1].weight.detach().clone()
    weights = {
        "0.weight": torch.ones(3, 2),
        "0.bias": torch.ones(3),
        "1.weight": torch.zeros(7, 7),  # would not fit, but is ignored
        "head.weight": torch.zeros(1),  # the model has no such key, but it is ignored
    }
    load_weights(model, weights, "w.pt", lambda key: not key.startswith("0."))
    assert torch.equal(model[0].weight, torch.ones(3, 2))
    assert torch.equal(model[1].weight, before)
