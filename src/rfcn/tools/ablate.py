"""``rfcn ablate``: variants x seeds on one data set and budget, mean ± sd, differences that hold.

By default, the paper's Table 2 in miniature on the demo's data and budget: R-FCN with k×k =
1×1 (no position sensitivity), 3×3 and 7×7 position-sensitive bins, and 7×7 without the à trous
trick (stride 32 score maps; Table 3's neighbour). Deformable ConvNets (Dai et al., ICCV 2017,
Table 1) rows add deformable PS-RoI pooling and deformable conv5 to the k = 7 model, alone and
together (``k7_dpsroi``, ``k7_dconv5``, ``k7_dpsroi_dconv5``; a deformable PS-RoI run also
draws ``deformable_parts.png`` in its folder). Beside R-FCN: its Faster R-CNN C4 counterpart
trained with R-FCN's recipe (``c4``, ``c4_align``), the light head with either PSRoIAlign
(``light_head``, ``light_head_align``, and the latter initialised by fan-in,
``light_head_align_scaled_init``; :mod:`rfcn.modeling.light_head`) and torchvision's own
Faster R-CNN on the same trunk, data, budget and seeds (``tv_faster_rcnn``,
:mod:`rfcn.modeling.torchvision_baseline`), and R-FCN's head and the light head with that row's
proposal, sampling and NMS settings (``pool_tv_settings``, ``light_head_tv_settings``,
``light_head_align_tv_settings``); the last with torchvision's head box loss (smooth-L1 at 1/9,
``light_head_align_tv_box_loss``), half the box loss's weight (``light_head_align_tv_half_box``),
a wider large separable conv (``light_head_align_tv_mid128``), a shorter one
(``light_head_align_tv_k7``), a narrower fc layer (``light_head_align_tv_fc1024``) or layers
initialised by fan-in (``light_head_align_tv_scaled_init``).
``--config`` takes another base config, such as the small-object benchmarks
(``configs/small_objects_synthetic.yaml``, ``configs/raccoon_small_cpu.yaml``), and
``--variants`` picks rows from :data:`VARIANTS`; a row ``<variant>_lr<rate>`` trains the variant
at that learning rate, and ``--learning-rates`` trains every variant at each rate: a
learning-rate search, to be scored on a validation split (``--set data.synthetic_seed=1``, or a
VOC root whose test split is held out from training photos) so that the test split stays
untouched.

Every variant trains from scratch with every seed (``train.seed``; the data stay the same)
and is scored on the same held-out split (:func:`rfcn.tools.demo.train_and_evaluate`). A
variant that changes only test-time settings (plain NMS, box voting, box refinement:
``k7_nms``, ``pool_vote``, ``pool_refine_vote``, ``c4_vote``, ...; :data:`TRAINED_AS`) is not
trained again: it scores the weights its training variant trained with the same seed, whose
runs are added to the table when not asked for. Runs land in ``OUT/<variant>/seed<N>/``; a
finished run is kept and a rerun skips it, so a long table can be built over several sittings
(:mod:`rfcn.engine.experiments`). The tables (mean ± sd, the differences from ``--reference``
with the two-sd test of :mod:`rfcn.evaluation.seed_stats`, every run) are printed and saved as
``OUT/ablation.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from rfcn.config import Config, config_to_dict
from rfcn.data.synthetic import ensure_synthetic_dataset
from rfcn.engine.experiments import (
    METRICS_FILE,
    FinishedRun,
    plan_runs,
    run_experiment,
    run_folder,
)
from rfcn.engine.trainer import FINAL_CHECKPOINT
from rfcn.errors import TrainingDiverged, UserError
from rfcn.evaluation.seed_stats import METRICS, diverged, format_summary, summarize
from rfcn.files import read_json, write_image, write_json
from rfcn.machine import describe_machine
from rfcn.records import begin_record, make_record, write_record
from rfcn.tools.arguments import add_config_overrides, add_progress_switch, add_record_option
from rfcn.tools.demo import (
    DEFORMABLE_PARTS,
    deformable_parts_picture,
    demo_config,
    evaluate_trained,
    set_threads,
    train_and_evaluate,
)

LIGHT_HEAD_MAX = (
    "model.head=light_head",
    "model.ps_roi_mode=align_max",
    "model.ps_roi_sampling_ratio=2",
)
LIGHT_HEAD_ALIGN = (
    "model.head=light_head",
    "model.ps_roi_mode=align",
    "model.ps_roi_sampling_ratio=2",
)
# torchvision's FasterRCNN defaults where R-FCN's configs follow the paper: 2000 training
# proposals, 512 RoIs an image sampled at 1/4 positives instead of OHEM, 1000 test proposals,
# NMS at 0.5
TV_SETTINGS = (
    "model.rpn_pre_nms_train=2000",
    "model.rpn_post_nms_train=2000",
    "model.ohem=false",
    "model.roi_batch_per_image=512",
    "model.roi_positive_fraction=0.25",
    "model.rpn_pre_nms_test=1000",
    "model.rpn_post_nms_test=1000",
    "model.nms_thresh=0.5",
)
LIGHT_HEAD_ALIGN_TV = (*LIGHT_HEAD_ALIGN, *TV_SETTINGS)
# name -> config overrides on the base config; every other setting is the base config's.
VARIANTS: dict[str, tuple[str, ...]] = {
    # the paper's Table 2 (and Table 3's à trous row)
    "k1": ("model.k=1", "model.atrous=true"),
    "k3": ("model.k=3", "model.atrous=true"),
    "k7": ("model.k=7", "model.atrous=true"),
    "k7_no_atrous": ("model.k=7", "model.atrous=false"),
    # Deformable ConvNets on R-FCN: deformable PS-RoI pooling, deformable conv5 (v1), both
    "k7_dpsroi": ("model.k=7", "model.atrous=true", "model.deformable_psroi=true"),
    "k7_dconv5": ("model.k=7", "model.atrous=true", "model.deformable_conv5=v1"),
    "k7_dpsroi_dconv5": (
        "model.k=7",
        "model.atrous=true",
        "model.deformable_psroi=true",
        "model.deformable_conv5=v1",
    ),
    # PS-RoI pooling: Eq. (1) against bilinear sampling with 1, 2 or 4 samples per bin side
    "pool": ("model.ps_roi_mode=pool",),
    "align_s1": ("model.ps_roi_mode=align", "model.ps_roi_sampling_ratio=1"),
    "align_s2": ("model.ps_roi_mode=align", "model.ps_roi_sampling_ratio=2"),
    "align_s4": ("model.ps_roi_mode=align", "model.ps_roi_sampling_ratio=4"),
    # box regression: one class-agnostic box against one box per class
    "agnostic_boxes": ("model.box_mode=agnostic",),
    "class_boxes": ("model.box_mode=class",),
    # the Faster R-CNN C4 counterpart with the same recipe (paper Tables 1 and 3), with the
    # paper's RoI pooling or with RoIAlign (2 x 2 samples per bin)
    "c4": ("model.head=c4", "model.box_mode=class", "model.ps_roi_mode=pool"),
    "c4_align": (
        "model.head=c4",
        "model.box_mode=class",
        "model.ps_roi_mode=align",
        "model.ps_roi_sampling_ratio=2",
    ),
    # Light-Head R-CNN's head (issue 35) with its PSRoIAlign (the maximum of 2 x 2 bilinear
    # samples a bin, the official kernel) or with the average of them (R-FCN's "align")
    "light_head": LIGHT_HEAD_MAX,
    "light_head_align": LIGHT_HEAD_ALIGN,
    # the latter initialised by fan-in, as the demo's and the small-object configs' R-FCN head
    # (head_init: scaled), instead of the public code's std-0.01 layers
    "light_head_align_scaled_init": (*LIGHT_HEAD_ALIGN, "model.light_head_init=scaled"),
    # torchvision's Faster R-CNN (its RPN, RoIAlign 7 x 7, two fc layers, sampler and losses)
    # on conv1..conv4 of the same trunk: the detector a user picks instead of R-FCN (issue 35)
    "tv_faster_rcnn": ("model.head=torchvision",),
    # R-FCN's head, and the light head, with the settings tv_faster_rcnn takes from torchvision
    # instead of the paper's (TV_SETTINGS): beside that row, they separate what a head does
    # from what these settings do
    "pool_tv_settings": ("model.ps_roi_mode=pool", *TV_SETTINGS),
    "light_head_tv_settings": (*LIGHT_HEAD_MAX, *TV_SETTINGS),
    "light_head_align_tv_settings": LIGHT_HEAD_ALIGN_TV,
    # that row with one change: torchvision's head box loss (the one training setting of
    # torchvision's Faster R-CNN that TV_SETTINGS leaves at the original code's: the smooth-L1
    # transition point, 1/9 instead of 1), half the box loss's weight (lambda of Eq. 3), or the
    # large separable conv twice as wide inside (C_mid 128 instead of the small nets' 64), or
    # shorter (k = 7 instead of 15: on a 384-px input's 24 x 24 stride-16 map, k = 15 spans
    # most of the image, far more context than a 16-48 px object has), or the fc layer as wide
    # as torchvision's two (1024 instead of 2048: less to fit from a few hundred images), or
    # initialised by fan-in (the public code's std-0.01 layers suit an ImageNet backbone; on
    # one trained from random weights they start with logits of about 0.01)
    "light_head_align_tv_box_loss": (
        *LIGHT_HEAD_ALIGN_TV,
        "model.head_smooth_l1_beta=0.1111111111111111",
    ),
    "light_head_align_tv_half_box": (*LIGHT_HEAD_ALIGN_TV, "model.box_loss_weight=0.5"),
    "light_head_align_tv_mid128": (*LIGHT_HEAD_ALIGN_TV, "model.light_head_mid_channels=128"),
    "light_head_align_tv_k7": (*LIGHT_HEAD_ALIGN_TV, "model.light_head_kernel=7"),
    "light_head_align_tv_fc1024": (*LIGHT_HEAD_ALIGN_TV, "model.light_head_fc_channels=1024"),
    "light_head_align_tv_scaled_init": (*LIGHT_HEAD_ALIGN_TV, "model.light_head_init=scaled"),
}
TABLE_2 = ("k1", "k3", "k7", "k7_no_atrous")  # the default rows
RATE_SETTING = "train.base_lr="  # the override a rated row adds (<variant>_lr<rate>)
# Test-time settings (rfcn.config.TEST_TIME_SETTINGS) that the variant <trained>_<suffix> adds to
# the variant <trained>: the paper's plain NMS (the demo votes), box voting after NMS, box
# refinement (the regressed boxes pooled again, He et al. 2016), both. Each sets both options, so
# it means the same on any base config.
TEST_TIME_SUFFIXES: dict[str, tuple[str, ...]] = {
    "nms": ("model.box_refinement=false", "model.box_voting_iou=0"),
    "vote": ("model.box_refinement=false", "model.box_voting_iou=0.5"),
    "refine": ("model.box_refinement=true", "model.box_voting_iou=0"),
    "refine_vote": ("model.box_refinement=true", "model.box_voting_iou=0.5"),
}
# Such a variant is scored with the weights its training variant trained with the same seed
# instead of training again; asking for one runs (or finds) its training variant's runs too.
TRAINED_AS: dict[str, str] = {
    f"{trained}_{suffix}": trained
    for trained, suffixes in {
        "k7": ("nms", "vote", "refine_vote"),
        "pool": ("vote", "refine", "refine_vote"),
        "align_s2": ("vote", "refine_vote"),
        "c4": ("vote", "refine_vote"),
        "pool_tv_settings": ("vote", "refine_vote"),
        "light_head_tv_settings": ("vote", "refine_vote"),
        "light_head_align_tv_settings": ("vote", "refine_vote"),
    }.items()
    for suffix in suffixes
}
VARIANTS.update(
    {
        name: (*VARIANTS[trained], *TEST_TIME_SUFFIXES[name.removeprefix(f"{trained}_")])
        for name, trained in TRAINED_AS.items()
    }
)
TRAINING_FIGURES = (
    "data_seconds",
    "train_seconds",
    "train_seconds_per_iteration",
    "train_images",
)


def train_and_score(cfg: Config, folder: Path, resume: bool, progress: bool) -> dict[str, Any]:
    """One run's metrics (an :data:`rfcn.engine.experiments.RunFunction`); a deformable PS-RoI
    run also draws its learned bin positions."""
    run = train_and_evaluate(cfg, folder, progress, resume)
    if cfg.model.deformable_psroi:
        write_image(folder / DEFORMABLE_PARTS, deformable_parts_picture(run))
    return run.metrics


def score_trained_weights(
    weights_of: dict[str, str], cfg: Config, folder: Path, resume: bool, progress: bool
) -> dict[str, Any]:
    """The metrics of a test-time variant's run (a :data:`rfcn.engine.experiments.RunFunction`
    once ``weights_of`` is bound): the finished run in ``weights_of[str(folder)]`` scored with
    ``cfg``'s test-time settings, with that run's training figures."""
    trained = Path(weights_of[str(folder)])
    trained_metrics = read_json(trained / METRICS_FILE, "run metrics")
    if diverged(trained_metrics):  # no weights to score: recorded as the same divergence
        raise TrainingDiverged(trained_metrics["diverged_at"], math.nan)
    training = {key: trained_metrics[key] for key in TRAINING_FIGURES}
    training["weights_from"] = str(trained)
    return evaluate_trained(trained / FINAL_CHECKPOINT, cfg, training).metrics


def _row_name(variant: str, learning_rate: float | None) -> str:
    return variant if learning_rate is None else f"{variant}_lr{learning_rate:g}"


def _is_rate(value: float) -> bool:
    return value > 0 and math.isfinite(value)


def _sets_rate(settings: Iterable[str]) -> bool:
    return any(setting.startswith(RATE_SETTING) for setting in settings)


def parse_row(name: str) -> tuple[str, float | None]:
    """A row's variant and learning rate: ``<variant>`` trains at the config's rate,
    ``<variant>_lr<rate>`` at ``rate`` (``train.base_lr``)."""
    if name in VARIANTS:
        return name, None
    variant, marker, rate = name.rpartition("_lr")
    if marker and variant in VARIANTS:
        try:
            value = float(rate)
        except ValueError:
            value = math.nan
        if _is_rate(value):
            return variant, value
    raise UserError(
        "--variants",
        f"unknown row {name!r}: a variant that rfcn ablate --help lists, optionally followed "
        "by _lr<rate> (such as tv_faster_rcnn_lr0.12)",
    )


def plan_rows(
    names: list[str], learning_rates: list[float] | None = None
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """The table's rows: each of ``names`` (:func:`parse_row`), or, given ``learning_rates``,
    each at each rate, with the training row of each test-time row just before it. Returns
    row -> config overrides (``train.base_lr`` last), and each test-time row -> the row whose
    weights it scores (same seed, same rate)."""
    requested = [parse_row(name) for name in names]
    if learning_rates:
        if not all(_is_rate(rate) for rate in learning_rates):
            raise UserError("--learning-rates", f"must be positive, got {learning_rates}")
        if any(rate is not None for _, rate in requested):
            raise UserError("--learning-rates", "a row that names its rate (_lr) takes no other")
        requested = [(variant, rate) for variant, _ in requested for rate in learning_rates]
    rows: dict[str, tuple[str, ...]] = {}
    trained_as: dict[str, str] = {}
    for variant, rate in requested:
        rate_setting = () if rate is None else (f"{RATE_SETTING}{rate:g}",)
        training = TRAINED_AS.get(variant)
        if training is not None:
            rows[_row_name(training, rate)] = (*VARIANTS[training], *rate_setting)
            trained_as[_row_name(variant, rate)] = _row_name(training, rate)
        rows[_row_name(variant, rate)] = (*VARIANTS[variant], *rate_setting)
    return rows, trained_as


def _check_same_data(configs: list[Config]) -> None:
    """Every run must read the same data (a variant or override changed data.*)."""
    first = config_to_dict(configs[0])["data"]
    for cfg in configs[1:]:
        if config_to_dict(cfg)["data"] != first:
            raise UserError("--variants", "the variants must not change data.* settings")


def run_ablation(args: argparse.Namespace) -> dict[str, Any]:
    """Plan, run what is missing, summarise; returns what ``ablation.json`` holds."""
    started = time.perf_counter()
    rows, trained_as = plan_rows(args.variants, args.learning_rates)
    if any(_sets_rate(row) for row in rows.values()) and _sets_rate(args.overrides):
        raise UserError("--learning-rates", "give the rates in the rows or train.base_lr in --set")
    variants = list(rows)
    reference = args.reference or variants[0]
    if reference not in variants:
        raise UserError("--reference", f"{reference!r} is not among the rows run")
    if args.seeds <= 0:
        raise UserError("--seeds", f"must be positive, got {args.seeds}")

    def make_config(variant: str) -> Config:
        overrides = [*rows[variant], *args.overrides]
        return demo_config(args.out, args.quick, args.iterations, overrides, args.config)

    first_seed = make_config(variants[0]).train.seed
    seeds = list(range(first_seed, first_seed + args.seeds))
    runs = plan_runs(args.out, variants, seeds, make_config)
    _check_same_data([run.cfg for run in runs])
    if runs[0].cfg.data.format == "synthetic":
        # once, here: parallel runs would each generate the shared folder
        ensure_synthetic_dataset(Path(runs[0].cfg.data.roots[0]), runs[0].cfg.data)

    def report(finished: FinishedRun) -> None:
        metrics, run = finished.metrics, finished.run
        if diverged(metrics):
            print(
                f"[{run.variant} seed {run.seed}] training diverged at iteration "
                f"{metrics['diverged_at']}",
                flush=True,
            )
            return
        scores = ", ".join(
            f"{title} {'n/a' if metrics.get(key) is None else f'{100 * metrics[key]:.1f}'}"
            for key, title in METRICS.items()
        )
        if finished.skipped:
            note = "finished earlier"
        elif "weights_from" in metrics:
            note = f"scored with the weights of {metrics['weights_from']}"
        else:
            note = f"{metrics['train_seconds']:.0f} s"
        print(f"[{run.variant} seed {run.seed}] {scores} ({note})", flush=True)

    trained = [run for run in runs if run.variant not in trained_as]
    scored = [run for run in runs if run.variant in trained_as]
    weights_of = {
        str(run.folder): str(run_folder(args.out, trained_as[run.variant], run.seed))
        for run in scored
    }
    finished = run_experiment(
        trained, train_and_score, args.jobs, args.threads, args.progress, report
    )
    finished += run_experiment(
        scored, partial(score_trained_weights, weights_of), args.jobs, args.threads, False, report
    )
    by_variant: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    for item in finished:
        kept = {key: value for key, value in item.metrics.items() if key not in ("machine", "coco")}
        by_variant[item.run.variant].append({**kept, "folder": str(item.run.folder)})
    return {
        **summarize(by_variant, reference),
        "runs": by_variant,
        "overrides": {variant: list(rows[variant]) for variant in variants},
        "user_overrides": list(args.overrides),
        "config": str(args.config) if args.config else "packaged demo.yaml",
        "jobs": args.jobs,
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": describe_machine(),
    }


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate",
        help="train variants with several seeds on the same data and budget; mean ± sd",
        description=(
            "Train every variant (default: the paper's Table 2 rows k1, k3, k7, k7_no_atrous on "
            "the demo's data and budget) with --seeds seeds on the same data, score each on the "
            "held-out split, print mean ± sd, the differences from the reference variant that "
            "exceed two standard deviations, and every run; save OUT/ablation.json. Finished "
            "runs in OUT are kept and skipped by a rerun."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="base config (default: the demo's)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(TABLE_2),
        metavar="NAME",
        help=f"rows to run, from: {', '.join(VARIANTS)}; NAME_lr<rate> trains NAME at that "
        f"train.base_lr (default: {' '.join(TABLE_2)})",
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="seeds per variant: train.seed, +1, ... (default 1)"
    )
    parser.add_argument(
        "--reference", metavar="NAME", help="variant the others are compared with (default: first)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once, in separate processes (default 1)"
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads per run (default: all cores / jobs)"
    )
    parser.add_argument(
        "--iterations", type=int, help="training iterations per run (default: the config's)"
    )
    parser.add_argument(
        "--learning-rates",
        nargs="+",
        type=float,
        metavar="LR",
        help="train every variant at each of these train.base_lr; rows <variant>_lr<LR> "
        "(a learning-rate search: score it on a validation split)",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny budget (tests)")
    add_config_overrides(parser, "train.base_lr=0.02")
    add_progress_switch(parser)
    add_record_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    source = begin_record(args.record)
    result = run_ablation(args)
    write_json(args.out / "ablation.json", result)
    if args.record:
        values = {key: value for key, value in result.items() if key != "machine"}
        seeds = sorted({seed for row in result["variants"] for seed in row["seeds"]})
        write_record(
            args.record,
            make_record("ablate", args.command_words, values, seeds, started_from=source),
        )
    print(format_summary(result, result["runs"]))
    print(f"saved {args.out / 'ablation.json'}")
    return 0
