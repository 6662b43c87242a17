import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rfcn.config import config_to_dict, load_config
from rfcn.errors import UserError
from rfcn.tools import train as train_tool

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rfcn")
    train_tool.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_train_command_trains_then_resumes_a_longer_run(
    make_config: Callable, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(config_to_dict(make_config())))
    out = tmp_path / "run"
    common = ["train", "--config", str(config), "--out", str(out), "--no-progress"]
    args = _parse([*common, "--set", "train.iterations=2", "train.log_every=2"])
    assert args.func(args) == 0
    assert f"weights: {out / 'model_final.pt'}" in capsys.readouterr().out
    with pytest.raises(UserError, match="already holds a training run"):
        args.func(args)
    longer = _parse(
        [*common, "--set", "train.iterations=3", "--set", "train.log_every=2", "--resume"]
    )
    assert longer.func(longer) == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in logged] == [2, 3]


def test_paper_voc_config() -> None:
    cfg = load_config(CONFIGS / "voc0712_r101.yaml")
    assert (cfg.model.backbone, cfg.model.k, cfg.model.atrous) == ("resnet101", 7, True)
    assert cfg.model.ohem and cfg.model.ohem_batch_per_image == 128
    assert cfg.model.min_size == (600,) and cfg.model.max_size == 1000
    assert len(cfg.data.class_names) == cfg.model.num_classes == 20
    assert cfg.data.train_splits == ["trainval", "trainval"] and cfg.data.test_split == "test"
    assert (cfg.train.base_lr, cfg.train.lr_steps, cfg.train.iterations) == (1e-3, [20000], 30000)
    assert (cfg.train.images_per_batch, cfg.train.momentum, cfg.train.weight_decay) == (
        8,
        0.9,
        5e-4,
    )
    multiscale = load_config(CONFIGS / "voc0712_r101_multiscale.yaml")
    assert multiscale.model.min_size == (400, 500, 600, 700, 800)
    assert load_config(CONFIGS / "voc0712_r50.yaml").model.backbone == "resnet50"


def test_deformable_voc_config_follows_the_deformable_convnets_code() -> None:
    cfg = load_config(CONFIGS / "voc0712_r101_dcn.yaml")
    model = cfg.model
    assert model.deformable_psroi and model.deformable_conv5 == "v1"
    assert model.deformable_conv5_groups == 4 and model.box_mode == "agnostic8"
    assert (model.rpn_post_nms_train, model.rpn_post_nms_test) == (300, 300)
    # 4 images a batch at lr 5e-4, 7 epochs of 2 x 16551 images with a step after 4.83.
    train = cfg.train
    assert (train.images_per_batch, train.base_batch, train.base_lr) == (4, 4, 5e-4)
    assert train.iterations == 7 * 2 * 16551 // 4
    assert train.lr_steps == [round(4.83 * 2 * 16551 / 4)]
    assert train.offset_lr_factor == 1.0
    # The same detector as the R-FCN VOC config otherwise.
    plain = load_config(CONFIGS / "voc0712_r101.yaml")
    assert (model.backbone, model.k, model.min_size) == (
        plain.model.backbone,
        plain.model.k,
        plain.model.min_size,
    )
    assert cfg.data == plain.data


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_loads(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.train.iterations > max(cfg.train.lr_steps)
