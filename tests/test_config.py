from pathlib import Path

import pytest

from rfcn.config import (
    TEST_TIME_SETTINGS,
    Config,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    with_test_settings,
)
from rfcn.errors import UserError


def test_defaults_are_the_paper_setting() -> None:
    cfg = Config()
    assert cfg.model.backbone == "resnet101"
    assert cfg.model.k == 7
    assert cfg.model.atrous
    assert cfg.model.rpn_post_nms_test == 300
    assert cfg.model.nms_thresh == 0.3
    assert cfg.model.ohem_batch_per_image == 128
    assert cfg.train.momentum == 0.9
    assert cfg.train.weight_decay == 5e-4
    assert cfg.train.eval_every == 0 and cfg.data.val_split == ""  # no validation by default
    # Plain R-FCN unless asked; the deformable settings default to the original code's.
    assert not cfg.model.deformable_psroi and cfg.model.deformable_conv5 == "none"
    assert cfg.model.deformable_conv5_groups == 4 and cfg.train.offset_lr_factor == 1.0


def test_yaml_and_overrides_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  k: 3\n  min_size: [400, 500]\ntrain:\n  base_lr: 0.01\n")
    cfg = load_config(path, ["model.atrous=false", "data.roots=[a, b]", "train.base_lr=2e-3"])
    assert cfg.model.k == 3
    assert cfg.model.min_size == (400, 500)
    assert cfg.model.atrous is False
    assert cfg.data.roots == ["a", "b"]
    assert cfg.train.base_lr == pytest.approx(2e-3)


def test_round_trip_through_dict_and_yaml(tmp_path: Path) -> None:
    cfg = config_from_dict({"model": {"k": 5, "anchor_sizes": [32, 64]}})
    assert config_from_dict(config_to_dict(cfg)) == cfg
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  kk: 3\n", "model.kk: unknown config key"),
        ("model:\n  k: three\n", "model.k: expected an integer"),
        ("model:\n  k: 0\n", "model.k: must be positive"),
        ("model:\n  rpn_channels: 0\n", "model.rpn_channels: must be positive"),
        ("model:\n  head_channels: -4\n", "model.head_channels: must be positive"),
        ("model:\n  box_mode: diagonal\n", "model.box_mode: 'diagonal' is not one of"),
        ("model:\n  head: fpn\n", "model.head: 'fpn' is not one of rfcn, c4"),
        ("model:\n  ps_roi_sampling_ratio: 0\n", "model.ps_roi_sampling_ratio: must be positive"),
        ("model: [1, 2\n", "malformed YAML"),
        ("- 1\n- 2\n", "a config file must be a mapping"),
        ("model:\n  atrous: 1\n", "model.atrous: expected true or false"),
        ("train:\n  checkpoint_every: 0\n", "train.checkpoint_every: must be positive"),
        ("train:\n  warmup_factor: 0\n", "train.warmup_factor: must lie in (0, 1]"),
        ("train:\n  eval_every: -1\n", "train.eval_every: must be >= 0"),
        ("data:\n  format: coco\n  val_split: val\n", "data.val_split: names a VOC split"),
        ("model:\n  deformable_conv5: v3\n", "model.deformable_conv5: 'v3' is not one of"),
        ("model:\n  deformable_conv5_groups: 0\n", "model.deformable_conv5_groups: must be"),
        ("model:\n  deformable_psroi: yes please\n", "model.deformable_psroi: expected true"),
        ("train:\n  offset_lr_factor: -1\n", "train.offset_lr_factor: must be >= 0"),
        (
            "model:\n  head: c4\n  deformable_psroi: true\n",
            "model.deformable_psroi: is a setting of the R-FCN head",
        ),
        ("train:\n  lr_schedule: linear\n", "train.lr_schedule: 'linear' is not one of"),
        ("train:\n  optimizer: adam\n", "train.optimizer: 'adam' is not one of sgd, adamw"),
        ("train:\n  momentum: 1.5\n", "train.momentum: must lie in [0, 1), got 1.5"),
        ("train:\n  weight_decay: -1\n", "train.weight_decay: must be >= 0, got -1"),
        ("train:\n  base_lr: -0.1\n", "train.base_lr: must be >= 0, got -0.1"),
        ("train:\n  memory_format: nhwc\n", "train.memory_format: 'nhwc' is not one of"),
        ("train:\n  ema_decay: 1.0\n", "train.ema_decay: must lie in [0, 1) (0: off), got 1.0"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file_and_bad_override(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match=r"section\.key=value"):
        load_config(None, ["model.k"])


def test_with_test_settings_takes_only_the_test_time_settings() -> None:
    trained = config_from_dict(
        {"model": {"k": 3, "num_classes": 2}, "data": {"class_names": ["a", "b"]}}
    )
    scoring = config_from_dict(
        {
            "model": {"k": 5, "num_classes": 7, "box_voting_iou": 0.5, "nms_thresh": 0.4},
            "eval": {"scales": [400, 600], "flip": True},
            "train": {"base_lr": 0.5},
        }
    )
    result = with_test_settings(trained, scoring)
    assert (result.model.box_voting_iou, result.model.nms_thresh) == (0.5, 0.4)
    assert (result.eval.scales, result.eval.flip) == ([400, 600], True)
    assert (result.model.k, result.model.num_classes, result.data.class_names) == (3, 2, ["a", "b"])
    assert result.train == trained.train
    assert trained.model.box_voting_iou == 0.0 and trained.eval.flip is False  # left as it was
    for key in TEST_TIME_SETTINGS:  # each names a setting that exists
        section, name = key.split(".")
        assert hasattr(getattr(Config(), section), name), key
