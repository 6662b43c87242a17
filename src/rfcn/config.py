"""Typed configuration: dataclasses, YAML files and ``key=value`` overrides.

Config stays at the edge of the program: :func:`rfcn.modeling.rfcn.build_model`, the data
builders and the trainer read it; modules below them take plain numbers. The resolved
config is saved (as a plain dict) into every checkpoint and output folder.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rfcn.errors import UserError
from rfcn.files import write_text


@dataclass
class ModelConfig:
    """The detector (paper §2). Defaults are the paper's VOC ResNet-101 setting."""

    backbone: str = "resnet101"  # resnet18/34/50/101/152
    backbone_width: int = 64  # channels of conv1/res2; another width for resnet18/34 only
    # channels of res2..res5 (conv2_x..conv5_x); empty: backbone_width x (1, 2, 4, 8) as every
    # ResNet. Others for resnet18/34 only (the demo's narrower conv5: à trous, it runs at stride
    # 16, so its cost grows as its width squared)
    stage_channels: tuple[int, ...] = ()
    # residual blocks in res2..res5; empty: the ResNet's (2, 2, 2, 2 for resnet18). Others for
    # resnet18/34 only
    stage_blocks: tuple[int, ...] = ()
    # None: random init; "imagenet": torchvision's weights, downloaded once into the torch hub
    # cache (RFCN_OFFLINE=1: never downloaded); otherwise a path to a torchvision ResNet
    # state-dict file.
    pretrained: str | None = None
    atrous: bool = True  # conv5 stride 1, dilation 2: feature stride 16 (else 32)
    frozen_bn: bool = True
    freeze_at: int = 2  # 0: train all; 1: freeze stem; 2: stem + res2 (as the original code)
    num_classes: int = 20  # foreground classes C; the head predicts C + 1 with background
    k: int = 7  # k x k position-sensitive bins
    head_channels: int = 1024  # the randomly initialised 1x1 conv on conv5
    # "gaussian": std 0.01 for the head's three convs (the original code); "scaled": He init
    # for the 1x1 reduction and std 1/sqrt(head_channels) for the class maps, which lets a head
    # on a backbone trained from scratch start learning sooner (the demo)
    head_init: str = "gaussian"
    box_mode: str = "agnostic"  # "agnostic" (4k^2), "agnostic8" (8k^2), "class" (4k^2 C)
    ps_roi_mode: str = "pool"  # "pool" (paper Eq. 1) or "align" (bilinear)
    # Deformable ConvNets (Dai et al., ICCV 2017) on R-FCN, as their public code:
    # deformable PS-RoI pooling in the head (zero-initialised 1x1 offset convs, class-specific
    # offsets for the class maps, one group for the box maps, trans_std 0.1); replaces the
    # pooling of ps_roi_mode
    deformable_psroi: bool = False
    # "none", "v1" (deformable conv) or "v2" (modulated, DCNv2): the 3x3 convs of conv5, with
    # offsets (and v2 masks) from zero-initialised sibling 3x3 convs
    deformable_conv5: str = "none"
    deformable_conv5_groups: int = 4  # offset groups of deformable conv5 (the original's 4)
    ps_roi_sampling_ratio: int = 2  # "align" only: bilinear samples per bin side (>= 1)
    # "rfcn": the position-sensitive head (paper §2); "c4": the Faster R-CNN counterpart of the
    # paper's Tables 1 and 3 (RoI pooling on conv4, conv5 and fc layers per RoI, rfcn.modeling.
    # c4_baseline), trained and run by the same code; k, head_channels and head_init are then
    # unused, and ps_roi_mode chooses its RoI pooling: "pool" (RoIPool, the paper's) or
    # "align" (RoIAlign with ps_roi_sampling_ratio)
    head: str = "rfcn"
    # RPN (Faster R-CNN), on conv4
    anchor_sizes: tuple[float, ...] = (128.0, 256.0, 512.0)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_train: int = 6000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 6000
    rpn_post_nms_test: int = 300
    rpn_channels: int = 512  # the RPN's 3x3 conv (Faster R-CNN's 512)
    rpn_nms_thresh: float = 0.7
    rpn_min_size: float = 0.0
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    # RoI sampling and OHEM (paper §2, "Training")
    roi_fg_iou: float = 0.5
    roi_bg_iou_low: float = 0.0
    ohem: bool = True
    ohem_batch_per_image: int = 128  # B
    roi_batch_per_image: int = 128  # used when ohem is off
    roi_positive_fraction: float = 0.25  # used when ohem is off
    box_loss_weight: float = 1.0  # lambda
    rpn_box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    head_box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    # inference
    score_thresh: float = 0.001
    nms_thresh: float = 0.3
    detections_per_img: int = 100
    # test-time box voting (Gidaris and Komodakis 2015; not in the paper): above 0, each box
    # NMS keeps becomes the score-weighted mean of its class's boxes overlapping it by at least
    # this IoU. 0: off, as the paper
    box_voting_iou: float = 0.0
    # test-time box refinement (He et al. 2016, ResNet appendix A; not in the paper): each
    # RoI's regressed box is pooled again and the new predictions join the first ones before
    # NMS
    box_refinement: bool = False
    # transform (resize inside the model, as torchvision's detection models)
    min_size: tuple[int, ...] = (600,)  # training picks one at random per batch
    max_size: int = 1000
    size_divisible: int = 32
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    """Where the images and boxes come from."""

    format: str = "voc"  # "voc", "coco" or "synthetic"
    # VOC: dataset roots (each holds Annotations/, JPEGImages/, ImageSets/Main/), joined in order;
    # COCO: one root holding the image folder; synthetic: the folder it is generated into.
    roots: list[str] = field(default_factory=list)
    train_splits: list[str] = field(default_factory=lambda: ["trainval"])  # one per root
    test_split: str = "test"
    # VOC layout: the split validation during training (train.eval_every) scores; empty: the
    # test split. Choosing checkpoints or settings by a test split's score is the user's
    # choice (the paper reports test numbers of a fixed schedule); give a held-out split to
    # keep the test split untouched. COCO and synthetic data validate on their test set.
    val_split: str = ""
    coco_train_json: str = ""
    coco_test_json: str = ""
    coco_train_images: str = ""
    coco_test_images: str = ""
    class_names: list[str] = field(default_factory=list)  # empty: from the data
    use_difficult: bool = False  # difficult objects in training
    flip: bool = True
    aspect_grouping: bool = True
    workers: int = 2
    # keep the decoded training images in memory after their first epoch (H * W * 3 bytes
    # each, in every loader worker): later epochs skip reading and decoding the files
    cache_images: bool = False
    # synthetic data (rfcn.data.synthetic): sizes and seeds of the generated splits
    synthetic_train_images: int = 600
    synthetic_test_images: int = 150
    synthetic_image_size: int = 320
    synthetic_seed: int = 0
    # [smallest, largest] longer side of a synthetic object in pixels (the small-object
    # benchmark: [10, 48]); empty: 10% to 90% of the image side (the demo's shapes)
    synthetic_object_px: list[int] = field(default_factory=list)
    synthetic_max_objects: int = 4  # each synthetic image holds 1 to this many objects


@dataclass
class TrainConfig:
    """The optimisation recipe (paper §3: SGD, momentum 0.9, weight decay 5e-4)."""

    mode: str = "end_to_end"  # "end_to_end" (approximate joint) or "alternating" (4-step)
    iterations: int = 30000
    images_per_batch: int = 8
    base_lr: float = 1e-3
    base_batch: int = 8  # the batch base_lr is given for; lr scales linearly with the batch
    # "sgd" (the paper) or "adamw" (Loshchilov & Hutter, 2019: Adam with decoupled weight
    # decay; beta1 = momentum, beta2 = 0.999; weight_decay is then AdamW's decoupled decay)
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # after the warm-up: "step" (x lr_gamma at each of lr_steps, the paper) or "cosine" (a half
    # cosine from the peak lr to 0 at the last iteration; lr_steps and lr_gamma unused)
    lr_schedule: str = "step"
    lr_steps: list[int] = field(default_factory=lambda: [20000])
    lr_gamma: float = 0.1
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    # autocast of the training forward pass: "none" (float32), "bf16", "fp16" (CUDA) or "auto"
    # (bf16 where the device runs it natively: CUDA, CPUs with AVX512-BF16 or AMX; else none)
    amp: str = "none"
    # layout of the model's 4-D tensors in training: "contiguous" (NCHW), "channels_last"
    # (NHWC) or "auto" (channels_last under bf16 autocast, 0.91x an iteration on an AVX512-BF16
    # CPU; contiguous in float32, where NHWC was slower on that CPU and 1.17x on an AVX2 one)
    memory_format: str = "auto"
    # Deliver an exponential moving average of the weights (rfcn.engine.weight_average) with
    # this decay (~1 / (1 - decay) iterations averaged): model_final.pt, model_best.pt, the
    # stage files and validation use it; last.pt keeps the trained weights too. 0: off (paper)
    ema_decay: float = 0.0
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    checkpoint_every: int = 2000
    log_every: int = 20
    tensorboard: bool = True
    max_grad_norm: float = 0.0  # 0: no clipping
    # Every N iterations, and at the end, score the model on data.val_split with eval.metric
    # (metrics.jsonl, TensorBoard, the progress bar) and keep the best as model_best.pt; 0: off
    eval_every: int = 0
    # lr of the layers that predict deformable offsets (and v2 masks), as a factor of the lr
    # (the Deformable ConvNets paper's beta). 1: the original R-FCN code sets no lr_mult on them
    # (its Faster R-CNN uses 0.01 for an fc offset layer, which R-FCN does not have)
    offset_lr_factor: float = 1.0


@dataclass
class EvalConfig:
    """How a trained model is scored."""

    metric: str = "voc07"  # "voc07" (11-point), "voc" (area) or "coco"
    iou_thresh: float = 0.5
    scales: list[int] = field(default_factory=lambda: [600])  # paper: 200,400,600,800,1000
    flip: bool = False
    batch_size: int = 1


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/rfcn"


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Coerce a YAML value to the dataclass field's annotated type, or fail naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        item_hint = args[0] if args else Any
        items = [_convert(v, item_hint, key) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(key, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise UserError(key, f"expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads "2e-3" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(key, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(key, f"expected a string, got {value!r}")
        return str(value)
    return value


def _update(obj: Any, values: dict[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise UserError(key, f"unknown config key (known: {', '.join(sorted(names))})")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(key, "expected a mapping of settings")
            _update(current, value, f"{key}.")
        else:
            setattr(obj, name, _convert(value, hints[name], key))


def _parse_override(item: str) -> dict[str, Any]:
    """``"model.k=3"`` -> ``{"model": {"k": 3}}``; the value is read as YAML."""
    if "=" not in item:
        raise UserError(item, "an override must look like section.key=value")
    dotted, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise UserError(item, f"cannot read the value as YAML: {exc}") from None
    nested: dict[str, Any] = {}
    node = nested
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def config_from_dict(values: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A :class:`Config` from nested plain values, then ``key=value`` overrides on top."""
    cfg = Config()
    _update(cfg, values, "")
    for item in overrides:
        _update(cfg, _parse_override(item), "")
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config file (None: the defaults) and apply ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(path, "config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(path, f"cannot read config file: {exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(path, f"malformed YAML: {exc}".splitlines()[0]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(path, "a config file must be a mapping of sections")
        values = loaded
    try:
        return config_from_dict(values, overrides)
    except UserError as exc:
        if path is None or exc.source.startswith(str(path)):
            raise
        raise UserError(path, f"{exc.source}: {exc.problem}") from None


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dicts and lists (tuples become lists), ready for YAML, JSON or a checkpoint."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


# Settings that change only how a trained model is run and scored, never its training or its
# weights: a model trained once can be scored with other values of these.
TEST_TIME_SETTINGS = (
    "model.rpn_pre_nms_test",
    "model.rpn_post_nms_test",
    "model.score_thresh",
    "model.nms_thresh",
    "model.detections_per_img",
    "model.box_voting_iou",
    "model.box_refinement",
    "eval.metric",
    "eval.iou_thresh",
    "eval.scales",
    "eval.flip",
    "eval.batch_size",
)


def with_test_settings(trained: Config, settings_from: Config) -> Config:
    """A copy of ``trained`` with the :data:`TEST_TIME_SETTINGS` of ``settings_from``."""
    result = copy.deepcopy(trained)
    for key in TEST_TIME_SETTINGS:
        section, name = key.split(".")
        value = copy.deepcopy(getattr(getattr(settings_from, section), name))
        setattr(getattr(result, section), name, value)
    return result


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


_CHOICES = {
    "model.backbone": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "model.box_mode": ("agnostic", "agnostic8", "class"),
    "model.head": ("rfcn", "c4"),
    "model.head_init": ("gaussian", "scaled"),
    "model.ps_roi_mode": ("pool", "align"),
    "model.deformable_conv5": ("none", "v1", "v2"),
    "data.format": ("voc", "coco", "synthetic"),
    "train.mode": ("end_to_end", "alternating"),
    "train.optimizer": ("sgd", "adamw"),
    "train.lr_schedule": ("step", "cosine"),
    "train.amp": ("none", "bf16", "fp16", "auto"),
    "train.memory_format": ("auto", "channels_last", "contiguous"),
    "eval.metric": ("voc07", "voc", "coco"),
}


def validate(cfg: Config) -> None:
    """Reject values no component could run with, naming the key."""
    for dotted, allowed in _CHOICES.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise UserError(dotted, f"{value!r} is not one of {', '.join(allowed)}")
    positive = {
        "model.k": cfg.model.k,
        "model.ps_roi_sampling_ratio": cfg.model.ps_roi_sampling_ratio,
        "model.num_classes": cfg.model.num_classes,
        "model.rpn_channels": cfg.model.rpn_channels,
        "model.head_channels": cfg.model.head_channels,
        "model.max_size": cfg.model.max_size,
        "model.deformable_conv5_groups": cfg.model.deformable_conv5_groups,
        "data.synthetic_max_objects": cfg.data.synthetic_max_objects,
        "train.iterations": cfg.train.iterations,
        "train.images_per_batch": cfg.train.images_per_batch,
        "train.base_batch": cfg.train.base_batch,
        "train.log_every": cfg.train.log_every,
        "train.checkpoint_every": cfg.train.checkpoint_every,
        "eval.batch_size": cfg.eval.batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise UserError(key, f"must be positive, got {value}")
    if not cfg.model.min_size or min(cfg.model.min_size) <= 0:
        raise UserError("model.min_size", "needs at least one positive size")
    if cfg.train.eval_every < 0:
        raise UserError("train.eval_every", f"must be >= 0 (0: off), got {cfg.train.eval_every}")
    if cfg.data.val_split and cfg.data.format != "voc":
        raise UserError(
            "data.val_split",
            f"names a VOC split; {cfg.data.format} data validate on their test set",
        )
    if cfg.train.warmup_iters < 0:
        raise UserError("train.warmup_iters", f"must be >= 0, got {cfg.train.warmup_iters}")
    if not 0.0 < cfg.train.warmup_factor <= 1.0:
        raise UserError("train.warmup_factor", f"must lie in (0, 1], got {cfg.train.warmup_factor}")
    if cfg.model.head == "c4" and cfg.model.deformable_psroi:
        raise UserError(
            "model.deformable_psroi", "is a setting of the R-FCN head, not of model.head=c4"
        )
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise UserError(
            "train.ema_decay", f"must lie in [0, 1) (0: off), got {cfg.train.ema_decay}"
        )
    if cfg.train.offset_lr_factor < 0:
        raise UserError("train.offset_lr_factor", f"must be >= 0, got {cfg.train.offset_lr_factor}")
    if cfg.train.base_lr < 0:
        raise UserError("train.base_lr", f"must be >= 0, got {cfg.train.base_lr}")
    if cfg.train.weight_decay < 0:
        raise UserError("train.weight_decay", f"must be >= 0, got {cfg.train.weight_decay}")
    # SGD's momentum and AdamW's beta1 alike: 1 or more never forgets a gradient
    if not 0.0 <= cfg.train.momentum < 1.0:
        raise UserError("train.momentum", f"must lie in [0, 1), got {cfg.train.momentum}")
    if not 0.0 <= cfg.model.roi_positive_fraction <= 1.0:
        raise UserError("model.roi_positive_fraction", "must lie in [0, 1]")
    object_px = cfg.data.synthetic_object_px
    if object_px and not (
        len(object_px) == 2 and 1 <= object_px[0] <= object_px[1] <= cfg.data.synthetic_image_size
    ):
        raise UserError(
            "data.synthetic_object_px",
            "needs [smallest, largest] with 1 <= smallest <= largest <= "
            f"data.synthetic_image_size ({cfg.data.synthetic_image_size}), got {object_px}",
        )
