"""``model.head: c4``: the Faster R-CNN counterpart trains, saves, loads, evaluates and predicts
through the same code as R-FCN."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rfcn.config import Config
from rfcn.engine.checkpoint import load_checkpoint, load_model
from rfcn.engine.trainer import train
from rfcn.errors import UserError
from rfcn.evaluation.evaluator import evaluate_detections
from rfcn.inference.predictor import Predictor
from rfcn.modeling.c4_baseline import C4Head
from rfcn.modeling.rfcn import build_model


@pytest.fixture(scope="module")
def c4_run(tmp_path_factory: pytest.TempPathFactory, tiny_voc: Path) -> tuple[Config, Path]:
    from engine_fixtures import tiny_config

    cfg = tiny_config(tiny_voc, model={"head": "c4", "box_mode": "class", "ohem": True})
    out = tmp_path_factory.mktemp("c4_run")
    result = train(cfg, out, progress=False)
    assert [entry["iteration"] for entry in result.history] == [1, 2, 3, 4, 5, 6]
    for entry in result.history:
        assert all(torch.isfinite(torch.tensor(entry[name])) for name in ("loss_cls", "loss_box"))
    return cfg, result.checkpoint


def test_training_changes_the_c4_head_and_its_conv5(c4_run: tuple[Config, Path]) -> None:
    cfg, checkpoint = c4_run
    torch.manual_seed(cfg.train.seed)
    initial = build_model(cfg.model).state_dict()
    trained = load_checkpoint(checkpoint)["model"]
    assert not any(name.startswith("backbone.conv5.") for name in trained)  # conv5 is per RoI
    for prefix in ("head.conv5.", "head.cls_score.", "head.bbox_pred."):
        names = [name for name in trained if name.startswith(prefix)]
        assert names
        assert any(not torch.equal(trained[n], initial[n]) for n in names), prefix


def test_checkpoint_round_trip_rebuilds_the_c4_model(c4_run: tuple[Config, Path]) -> None:
    _, checkpoint = c4_run
    model, cfg, class_names = load_model(checkpoint)
    assert isinstance(model.head, C4Head) and cfg.model.head == "c4"
    assert model.head.bbox_pred.out_features == 4 * len(class_names)  # class-specific boxes
    saved = load_checkpoint(checkpoint)["model"]
    assert model.state_dict().keys() == saved.keys()
    assert all(torch.equal(model.state_dict()[name], saved[name]) for name in saved)


def test_an_rfcn_config_refuses_c4_weights(c4_run: tuple[Config, Path]) -> None:
    _, checkpoint = c4_run
    saved = load_model(checkpoint)[1]
    saved.model.head = "rfcn"
    with pytest.raises(UserError, match=r"model\.head=c4, config has model\.head=rfcn"):
        load_model(checkpoint, cfg=saved)


def test_the_c4_model_predicts_and_evaluates(
    c4_run: tuple[Config, Path], tiny_voc: Path, make_config: Callable[..., Config]
) -> None:
    from rfcn.data.build import build_dataset

    _, checkpoint = c4_run
    dataset = build_dataset(make_config(data={"test_split": "trainval"}).data, train=False)
    predictor = Predictor.from_checkpoint(checkpoint, scales=[96, 128], flip=True)
    detections = {}
    for index in range(len(dataset)):
        image, _ = dataset[index]
        found = predictor.predict_tensors([image])[0]
        assert found["boxes"].shape[1] == 4 and found["boxes"].dtype == torch.float32
        detections[dataset.image_ids[index]] = found
    metrics = evaluate_detections(
        detections, dataset.class_names, "voc07", dataset_root=tiny_voc, split="trainval"
    ).metrics
    assert 0.0 <= metrics["mAP"] <= 1.0
