"""``model.head: c4``: the Faster R-CNN counterpart trains, saves, loads, evaluates and predicts
through the same code as R-FCN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from overfit import (
    IMAGE_ID,
    LABEL,
    one_thread,
    overfit,
    overfit_config,
    write_overfit_run,
    write_voc_image,
)

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


@pytest.fixture(scope="module")
def c4_overfit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    """:mod:`overfit`'s one-image training with ``model.head: c4`` (a few seconds): its config
    and checkpoint."""
    root = write_voc_image(tmp_path_factory.mktemp("c4_overfit") / "voc")
    trained = overfit(overfit_config(root, head="c4", box_mode="class"))
    return trained.cfg, write_overfit_run(trained, root.parent / "run")[1]


def test_the_c4_model_predicts_and_evaluates(c4_overfit: tuple[Config, Path]) -> None:
    """The C4 model trained on one image finds its square through the predictor and the
    evaluator: AP 1.0 (at its one training scale: test-time augmentation of a model that saw
    one image at one scale only runs, shapes checked)."""
    from rfcn.data.build import build_dataset

    cfg, checkpoint = c4_overfit
    dataset = build_dataset(cfg.data, train=False)
    augmented = Predictor.from_checkpoint(checkpoint, scales=[96, 128], flip=True)
    predictor = Predictor.from_checkpoint(checkpoint)
    detections = {}
    with one_thread():
        for index in range(len(dataset)):
            image, _ = dataset[index]
            found = augmented.predict_tensors([image])[0]
            assert found["boxes"].shape[1] == 4 and found["boxes"].dtype == torch.float32
            detections[dataset.image_ids[index]] = predictor.predict_tensors([image])[0]
    root = Path(cfg.data.roots[0])
    metrics = evaluate_detections(
        detections, dataset.class_names, "voc07", dataset_root=root, split="test"
    ).metrics
    assert metrics == {"mAP": 1.0, "AP": {"circle": None, "square": 1.0}}  # circle: no object
    assert detections[IMAGE_ID]["labels"][0] == LABEL  # no circle outranks the square
