"""Validation during training: scores in metrics.jsonl, model_best.pt, the best kept across a
resume, and training bitwise unchanged by it."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_fixtures import LOSS_KEYS, deterministic
from PIL import Image

from rfcn.engine.checkpoint import load_checkpoint, load_model
from rfcn.engine.stage_run import IterationEnd
from rfcn.engine.trainer import train
from rfcn.engine.validation import Validator, training_state_kept
from rfcn.errors import UserError

# The tiny fixture has one split; validating on the training images is enough to test.
VALIDATION = {"val_split": "trainval"}


def _keep_weights(weights: dict[int, dict[str, torch.Tensor]]) -> Callable[[IterationEnd], None]:
    def callback(event: IterationEnd) -> None:
        weights[event.iteration] = {k: v.clone() for k, v in event.model.state_dict().items()}

    return callback


def _validations(history: list[dict]) -> list[dict]:
    return [entry for entry in history if "val_mAP" in entry]


def test_validation_leaves_training_bitwise_unchanged(
    make_config: Callable, tmp_path: Path
) -> None:
    # Trainable BatchNorm: evaluation must not touch its running statistics either.
    model = {"frozen_bn": False}
    plain = make_config(model=model, data=VALIDATION)
    validated = make_config(model=model, data=VALIDATION, train={"eval_every": 4})
    weights: dict[int, dict[str, torch.Tensor]] = {}
    with deterministic():
        reference = train(plain, tmp_path / "plain", progress=False)
        result = train(
            validated, tmp_path / "validated", progress=False, callbacks=[_keep_weights(weights)]
        )
    losses = [entry for entry in result.history if "loss" in entry]
    assert len(losses) == len(reference.history) == 6
    for ours, theirs in zip(losses, reference.history, strict=True):
        assert {k: ours[k] for k in LOSS_KEYS} == {k: theirs[k] for k in LOSS_KEYS}
    final = load_checkpoint(result.checkpoint)["model"]
    for name, value in load_checkpoint(reference.checkpoint)["model"].items():
        assert torch.equal(final[name], value), name
    assert not (tmp_path / "plain" / "model_best.pt").exists()

    validations = _validations(result.history)
    assert [entry["iteration"] for entry in validations] == [4, 6]  # every 4, and at the end
    values = [entry["val_mAP"] for entry in validations]
    best_index = 1 if values[1] > values[0] else 0  # the first of equal values wins
    best = {"value": values[best_index], "iteration": (4, 6)[best_index]}
    assert result.best_validation == {"metric": "voc07", "name": "mAP", **best}
    last = validations[-1]
    assert (last["best_val_mAP"], last["best_iteration"]) == (best["value"], best["iteration"])
    saved = load_checkpoint(tmp_path / "validated" / "model_best.pt")
    assert saved["validation"] == result.best_validation
    for name, value in weights[best["iteration"]].items():
        assert torch.equal(saved["model"][name], value), name
    logged = (tmp_path / "validated" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in logged] == result.history
    with Image.open(tmp_path / "validated" / "val_curve.png") as figure:
        assert figure.format == "PNG"
    # The last validation scored the final weights, as scoring them afresh does.
    model, trained_cfg, _ = load_model(result.checkpoint)
    rescored = Validator(trained_cfg).evaluate(model)
    assert rescored is not None and rescored["mAP"] == last["val_mAP"]


@pytest.mark.slow
def test_a_resumed_run_keeps_its_best_so_far(make_config: Callable, tmp_path: Path) -> None:
    cfg = make_config(data=VALIDATION, train={"eval_every": 2})

    def interrupt(event: IterationEnd) -> None:
        if event.iteration == 3:
            raise KeyboardInterrupt

    with deterministic():
        straight = train(cfg, tmp_path / "straight", progress=False)
        with pytest.raises(KeyboardInterrupt, match="SIGINT at iteration 3"):
            train(cfg, tmp_path / "resumed", progress=False, callbacks=[interrupt])
        state = load_checkpoint(tmp_path / "resumed" / "last.pt")
        first = _validations(straight.history)[0]
        assert state["best_validation"] == {
            "metric": "voc07",
            "name": "mAP",
            "value": first["val_mAP"],
            "iteration": 2,
        }
        resumed = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.best_validation == straight.best_validation

    def without_times(entries: list[dict]) -> list[dict]:
        return [{k: v for k, v in e.items() if k not in ("val_seconds", "time")} for e in entries]

    assert without_times(_validations(resumed.history)) == without_times(
        _validations(straight.history)[1:]
    )
    best = [load_checkpoint(tmp_path / run / "model_best.pt") for run in ("straight", "resumed")]
    assert best[0]["validation"] == best[1]["validation"]
    for name, value in best[0]["model"].items():
        assert torch.equal(best[1]["model"][name], value), name


def test_training_state_kept_restores_modes_gradients_and_generators() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model
    model[0].bias.requires_grad_(False)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(()))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with training_state_kept(model):
        model.eval()
        model.requires_grad_(False)
        _ = (random.random(), np.random.rand(), torch.rand(3))
    assert (model.training, model[0].training, model[1].training) == (True, True, False)
    assert (model[0].weight.requires_grad, model[0].bias.requires_grad) == (True, False)
    assert (random.random(), np.random.rand(), torch.rand(())) == expected


def test_a_validation_split_that_does_not_fit_stops_the_run(
    make_config: Callable, tmp_path: Path
) -> None:
    missing = make_config(data={"val_split": "nope"}, train={"eval_every": 2})
    with pytest.raises(UserError, match="nope"):
        train(missing, tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()  # stopped before writing anything
