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

    backbone: str = "resnet101"
    """The torchvision ResNet: resnet18, resnet34, resnet50, resnet101 or resnet152."""
    backbone_width: int = 64
    """Channels of conv1 and res2; another width for resnet18/34 only."""
    stage_channels: tuple[int, ...] = ()
    """Channels of res2..res5; empty: backbone_width x (1, 2, 4, 8) as every ResNet. Others for
    resnet18/34 only (conv5 runs at stride 16 when à trous, so its cost grows as its width
    squared)."""
    stage_blocks: tuple[int, ...] = ()
    """Residual blocks in res2..res5; empty: the ResNet's (2, 2, 2, 2 for resnet18). Others for
    resnet18/34 only."""
    pretrained: str | None = None
    """None: random init; "imagenet": torchvision's weights, downloaded once into the torch hub
    cache (RFCN_OFFLINE=1: never downloaded); otherwise a path to a torchvision ResNet
    state-dict file."""
    atrous: bool = True
    """conv5 with stride 1 and dilation 2, so the feature stride is 16 (false: 32)."""
    frozen_bn: bool = True
    """BatchNorm as fixed scale and shift (the statistics of the pretrained weights)."""
    freeze_at: int = 2
    """Frozen backbone stages: 0 trains all; 1 freezes the stem; 2 the stem and res2 (as the
    original code)."""
    num_classes: int = 20
    """Foreground classes C; the head predicts C + 1 with background."""
    k: int = 7
    """k x k position-sensitive bins (paper §2); the light head's p x p PSRoIAlign bins."""
    head_channels: int = 1024
    """Output channels of the randomly initialised 1x1 conv on conv5."""
    head_init: str = "gaussian"
    """"gaussian": std 0.01 for the head's three convs (the original code); "scaled": He init
    for the 1x1 reduction and std 1/sqrt(head_channels) for the class maps, which lets a head on
    a backbone trained from scratch start learning sooner (the demo)."""
    box_mode: str = "agnostic"
    """Box maps: "agnostic" (4k^2), "agnostic8" (8k^2) or "class" (4k^2 C)."""
    ps_roi_mode: str = "pool"
    """PS-RoI pooling: "pool" (paper Eq. 1), "align" (average of bilinear samples) or
    "align_max" (their maximum, without the half-pixel offset: Light-Head R-CNN's PSRoIAlign,
    as its public kernel)."""
    deformable_psroi: bool = False
    """Deformable PS-RoI pooling in the head (Deformable ConvNets, Dai et al. 2017, as their
    public code: zero-initialised 1x1 offset convs, class-specific offsets for the class maps,
    one group for the box maps, trans_std 0.1); replaces the pooling of ps_roi_mode."""
    deformable_conv5: str = "none"
    """The 3x3 convs of conv5: "none", "v1" (deformable conv) or "v2" (modulated, DCNv2), with
    offsets (and v2 masks) from zero-initialised sibling 3x3 convs."""
    deformable_conv5_groups: int = 4
    """Offset groups of deformable conv5 (the original's 4)."""
    ps_roi_sampling_ratio: int = 2
    """Bilinear samples per bin side (>= 1) of the "align" and "align_max" pooling."""
    head: str = "rfcn"
    """"rfcn": the position-sensitive head (paper §2); "c4": the Faster R-CNN counterpart of
    the paper's Tables 1 and 3 (RoI pooling on conv4, conv5 and fc layers per RoI), trained and
    run by the same code; k, head_channels and head_init are then unused, and ps_roi_mode
    chooses its RoI pooling: "pool" (RoIPool, the paper's) or "align" (RoIAlign); "light_head":
    Light-Head R-CNN's head (Li et al. 2017: a large separable conv to alpha k^2 thin maps,
    PSRoIAlign, one fc layer; rfcn.modeling.light_head), head_channels and head_init unused;
    "torchvision": torchvision's Faster R-CNN (its RPN, RoIAlign, two fc layers, sampler and
    losses) on conv1..conv4 of this trunk, end to end only (rfcn.modeling.torchvision_baseline)."""
    light_head_alpha: int = 10
    """Light head: channels a bin reads (alpha); the thin maps have alpha k^2 channels."""
    light_head_mid_channels: int = 0
    """Light head: middle width C_mid of the large separable conv; 0: by backbone, 256 for
    resnet50/101/152 and 64 for resnet18/34 (the paper's large and small models)."""
    light_head_kernel: int = 15
    """Light head: kernel length k of the large separable conv (k x 1 and 1 x k), odd."""
    light_head_fc_channels: int = 2048
    """Light head: width of the R-CNN subnet's fc layer."""
    light_head_init: str = "gaussian"
    """Light head: "gaussian", its public code's initialisation (N(0, 0.01), the box fc
    N(0, 0.001)); "scaled", its convs and fc layers by fan-in (rfcn.modeling.light_head)."""
    anchor_sizes: tuple[float, ...] = (128.0, 256.0, 512.0)
    """RPN anchor sides in input pixels (Faster R-CNN's three scales)."""
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    """RPN anchor aspect ratios (height / width)."""
    rpn_pre_nms_train: int = 6000
    """Top-scoring anchors an image kept before the RPN's NMS, in training."""
    rpn_post_nms_train: int = 2000
    """Proposals an image kept after the RPN's NMS, in training."""
    rpn_pre_nms_test: int = 6000
    """Top-scoring anchors an image kept before the RPN's NMS, at test time."""
    rpn_post_nms_test: int = 300
    """Proposals an image kept after the RPN's NMS, at test time (the paper's 300 RoIs)."""
    rpn_channels: int = 512
    """Channels of the RPN's 3x3 conv (Faster R-CNN's 512)."""
    rpn_nms_thresh: float = 0.7
    """IoU of the NMS among proposals."""
    rpn_min_size: float = 0.0
    """Proposals with a side shorter than this (input pixels) are dropped; 0 keeps all."""
    rpn_fg_iou: float = 0.7
    """An anchor with at least this IoU with a ground-truth box is an RPN positive."""
    rpn_bg_iou: float = 0.3
    """An anchor whose best IoU is below this is an RPN negative."""
    rpn_batch_per_image: int = 256
    """Anchors sampled an image for the RPN's losses."""
    rpn_positive_fraction: float = 0.5
    """Largest share of positives among the sampled anchors."""
    roi_fg_iou: float = 0.5
    """A proposal with at least this IoU with a ground-truth box is a positive RoI (paper §2,
    "Training")."""
    roi_bg_iou_low: float = 0.0
    """Lowest IoU of a background RoI (below roi_fg_iou)."""
    ohem: bool = True
    """Online hard example mining (paper §2): score all RoIs, back-propagate the B worst."""
    ohem_batch_per_image: int = 128
    """B: RoIs an image kept by OHEM."""
    roi_batch_per_image: int = 128
    """RoIs sampled an image when ohem is off."""
    roi_positive_fraction: float = 0.25
    """Largest share of positives among the sampled RoIs when ohem is off."""
    box_loss_weight: float = 1.0
    """lambda: the weight of the head's smooth-L1 box loss."""
    head_smooth_l1_beta: float = 1.0
    """Transition point of the head's smooth-L1 box loss: 1 is the original R-FCN code's
    (Fast R-CNN's), torchvision's Faster R-CNN takes 1/9; 0 is the L1 loss."""
    rpn_box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    """Scales (wx, wy, ww, wh) of the RPN's box-delta encoding."""
    head_box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    """Scales (wx, wy, ww, wh) of the head's box-delta encoding (the inverse of the original
    code's target std 0.1, 0.1, 0.2, 0.2)."""
    score_thresh: float = 0.001
    """Detections scoring below this are dropped before NMS."""
    nms_thresh: float = 0.3
    """IoU of the per-class NMS at test time (paper: 0.3)."""
    detections_per_img: int = 100
    """Most detections an image returns."""
    box_voting_iou: float = 0.0
    """Test-time box voting (Gidaris and Komodakis 2015; not in the paper): above 0, each box
    NMS keeps becomes the score-weighted mean of its class's boxes overlapping it by at least
    this IoU. 0: off, as the paper."""
    box_refinement: bool = False
    """Test-time box refinement (He et al. 2016, ResNet appendix A; not in the paper): each
    RoI's regressed box is pooled again and the new predictions join the first ones before
    NMS."""
    min_size: tuple[int, ...] = (600,)
    """Shorter image side after resizing inside the model; training picks one at random per
    batch (multi-scale training)."""
    max_size: int = 1000
    """Longest image side after resizing."""
    size_divisible: int = 32
    """Batched images are padded to a multiple of this."""
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    """Per-channel RGB mean (0..1) subtracted from the images (ImageNet's)."""
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    """Per-channel RGB standard deviation the images are divided by (ImageNet's)."""


@dataclass
class DataConfig:
    """Where the images and boxes come from."""

    format: str = "voc"
    """Dataset layout: "voc", "coco" or "synthetic"."""
    roots: list[str] = field(default_factory=list)
    """VOC: dataset roots (each holds Annotations/, JPEGImages/, ImageSets/Main/), joined in
    order; COCO: one root holding the image folder; synthetic: the folder it is generated
    into."""
    train_splits: list[str] = field(default_factory=lambda: ["trainval"])
    """VOC training splits, one per root."""
    test_split: str = "test"
    """VOC split that `rfcn eval` scores."""
    val_split: str = ""
    """VOC split that validation during training (train.eval_every) scores; empty: the test
    split. Give a held-out split to keep the test split untouched. COCO and synthetic data
    validate on their test set."""
    coco_train_json: str = ""
    """COCO: the training annotation file, relative to the root."""
    coco_test_json: str = ""
    """COCO: the test annotation file, relative to the root."""
    coco_train_images: str = ""
    """COCO: the training image folder, relative to the root."""
    coco_test_images: str = ""
    """COCO: the test image folder, relative to the root."""
    class_names: list[str] = field(default_factory=list)
    """Foreground class names in label order; empty: from the data."""
    use_difficult: bool = False
    """Train on objects marked difficult too."""
    flip: bool = True
    """Random horizontal flips in training."""
    aspect_grouping: bool = True
    """Batch images of like aspect ratio (less padding)."""
    workers: int = 2
    """DataLoader worker processes."""
    skip_unreadable: bool = False
    """Training and validation leave out images that cannot be read or decoded (each one in
    place of an unreadable training image: the next readable one of the set), and list them at
    the end of training and in metrics.jsonl; false: the first one stops training, after it
    saved its state for --resume. A left-out validation image counts as one with no
    detections."""
    cache_images: bool = False
    """Keep the decoded training images in memory after their first epoch (H * W * 3 bytes
    each, in every loader worker): later epochs skip reading and decoding the files."""
    synthetic_train_images: int = 600
    """Synthetic data (rfcn.data.synthetic): images in the generated training split."""
    synthetic_test_images: int = 150
    """Synthetic data: images in the generated test split."""
    synthetic_image_size: int = 320
    """Synthetic data: side of the square images in pixels."""
    synthetic_seed: int = 0
    """Synthetic data: the seed that draws the images (another seed, another split)."""
    synthetic_object_px: list[int] = field(default_factory=list)
    """Synthetic data: [smallest, largest] longer side of an object in pixels (the small-object
    benchmark: [10, 48]); empty: 10% to 90% of the image side (the demo's shapes)."""
    synthetic_max_objects: int = 4
    """Synthetic data: each image holds 1 to this many objects."""


@dataclass
class TrainConfig:
    """The optimisation recipe (paper §3: SGD, momentum 0.9, weight decay 5e-4)."""

    mode: str = "end_to_end"
    """"end_to_end" (approximate joint training) or "alternating" (the paper's 4 steps)."""
    iterations: int = 30000
    """Optimizer steps in all."""
    images_per_batch: int = 8
    """Images in one step (across all processes under torchrun)."""
    base_lr: float = 1e-3
    """Learning rate for a batch of base_batch images."""
    base_batch: int = 8
    """The batch base_lr is given for; the lr scales linearly with images_per_batch."""
    optimizer: str = "sgd"
    """"sgd" (the paper) or "adamw" (Loshchilov & Hutter 2019: beta1 = momentum, beta2 = 0.999,
    weight_decay is AdamW's decoupled decay)."""
    momentum: float = 0.9
    """SGD momentum (AdamW's beta1)."""
    weight_decay: float = 5e-4
    """L2 weight decay (AdamW: decoupled decay)."""
    lr_schedule: str = "step"
    """After the warm-up: "step" (x lr_gamma at each of lr_steps, the paper) or "cosine" (a
    half cosine from the peak lr to 0 at the last iteration)."""
    lr_steps: list[int] = field(default_factory=lambda: [20000])
    """Iterations at which the "step" schedule multiplies the lr by lr_gamma."""
    lr_gamma: float = 0.1
    """Factor of each lr step."""
    warmup_iters: int = 500
    """Iterations of linear warm-up from warmup_factor x lr; 0: none."""
    warmup_factor: float = 0.001
    """Fraction of the lr at the first warm-up iteration, in (0, 1]."""
    amp: str = "none"
    """Autocast of the training forward pass: "none" (float32), "bf16", "fp16" (CUDA) or "auto"
    (bf16 where the device runs it natively: CUDA, CPUs with AVX512-BF16 or AMX; else none)."""
    memory_format: str = "auto"
    """Layout of the model's 4-D tensors in training: "contiguous" (NCHW), "channels_last"
    (NHWC) or "auto" (channels_last under bf16 autocast, contiguous in float32)."""
    ema_decay: float = 0.0
    """Deliver an exponential moving average of the weights with this decay (~1 / (1 - decay)
    iterations averaged): model_final.pt, model_best.pt and validation use it; last.pt keeps
    the trained weights too. 0: off (the paper)."""
    seed: int = 0
    """Seed of every random draw in training (same seed, same run)."""
    device: str = "auto"
    """"auto" (CUDA when there is one), "cpu", "cuda", "cuda:1", ..."""
    checkpoint_every: int = 2000
    """Iterations between saves of the training state (last.pt) for --resume."""
    dist_timeout: float = 600.0
    """Under torchrun: seconds a process waits for the others at a collective operation before
    it stops with an error (a process that died is noticed at once; this bounds a hung one)."""
    log_every: int = 20
    """Iterations between lines of metrics.jsonl and TensorBoard."""
    tensorboard: bool = True
    """Write TensorBoard event files when the tensorboard extra is installed."""
    max_grad_norm: float = 0.0
    """Clip the gradients' global norm to this; 0: no clipping."""
    eval_every: int = 0
    """Every N iterations, and at the end, score the model on data.val_split with eval.metric
    (metrics.jsonl, TensorBoard, the progress bar) and keep the best as model_best.pt; 0: off."""
    offset_lr_factor: float = 1.0
    """lr of the layers that predict deformable offsets (and v2 masks), as a factor of the lr
    (the Deformable ConvNets paper's beta)."""


@dataclass
class EvalConfig:
    """How a trained model is scored."""

    metric: str = "voc07"
    """"voc07" (11-point AP, the paper's), "voc" (area AP, VOC2010+) or "coco"."""
    iou_thresh: float = 0.5
    """IoU a detection needs with a ground-truth box to count (VOC metrics)."""
    scales: list[int] = field(default_factory=lambda: [600])
    """Shorter sides tested; several: multi-scale testing (the paper's 200 to 1000)."""
    flip: bool = False
    """Test on the horizontally flipped image too and merge the detections."""
    batch_size: int = 1
    """Images a forward pass at test time."""


@dataclass
class Config:
    """The whole configuration: one section a part of the program."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The detector."""
    data: DataConfig = field(default_factory=DataConfig)
    """The datasets."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training recipe."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """How a trained model is scored."""
    output_dir: str = "runs/rfcn"
    """Where `rfcn train` writes when --out is not given."""


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
    "model.head": ("rfcn", "c4", "light_head", "torchvision"),
    "model.head_init": ("gaussian", "scaled"),
    "model.light_head_init": ("gaussian", "scaled"),
    "model.ps_roi_mode": ("pool", "align", "align_max"),
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
        "model.light_head_alpha": cfg.model.light_head_alpha,
        "model.light_head_kernel": cfg.model.light_head_kernel,
        "model.light_head_fc_channels": cfg.model.light_head_fc_channels,
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
    if cfg.model.head in ("c4", "light_head") and cfg.model.deformable_psroi:
        raise UserError(
            "model.deformable_psroi",
            f"is a setting of the R-FCN head, not of model.head={cfg.model.head}",
        )
    if cfg.model.head == "c4" and cfg.model.ps_roi_mode == "align_max":
        raise UserError("model.ps_roi_mode", "model.head=c4 pools by 'pool' or 'align'")
    if cfg.model.head_smooth_l1_beta < 0:
        raise UserError(
            "model.head_smooth_l1_beta", f"must be >= 0, got {cfg.model.head_smooth_l1_beta}"
        )
    if cfg.model.light_head_kernel % 2 == 0:
        raise UserError(
            "model.light_head_kernel", f"must be odd, got {cfg.model.light_head_kernel}"
        )
    if cfg.model.light_head_mid_channels < 0:
        raise UserError(
            "model.light_head_mid_channels",
            f"must be >= 0 (0: by backbone), got {cfg.model.light_head_mid_channels}",
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
