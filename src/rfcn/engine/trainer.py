"""Training: iteration-based, resumable exactly, DDP-ready, end-to-end or 4-step alternating.

``train(cfg, output_dir)`` runs the stages of ``train.mode`` (:mod:`rfcn.engine.stages`) and
leaves in ``output_dir``:

- ``model_final.pt``: the trained weights, config and class names (:mod:`rfcn.engine.checkpoint`);
  with ``train.ema_decay`` their moving average (:mod:`rfcn.engine.weight_average`), which is
  then also what validation scores and ``model_best.pt`` and the stage files hold;
- ``last.pt``: the full training state (weights, their moving average, optimiser, scheduler,
  AMP scaler, RNG states, stage and iteration), rewritten atomically every
  ``train.checkpoint_every`` iterations, at the end of every stage, and when the run stops
  early: on Ctrl-C, SIGTERM or SIGUSR1 (then :class:`~rfcn.engine.preemption.TrainingStopped`
  is raised, and ``rfcn train`` exits 128 + the signal's number) or on an image that cannot be
  read (:class:`~rfcn.engine.preemption.ResumableError`); ``resume=True`` continues from it;
- ``<stage>.pt`` per step of alternating training; ``config.yaml``, ``metrics.jsonl`` and
  ``tensorboard/`` (:mod:`rfcn.engine.logging`);
- with ``train.eval_every``: ``model_best.pt``, the weights that scored best on
  ``data.val_split`` (its ``"validation"`` entry says when and how well), and
  ``val_curve.png`` (:mod:`rfcn.engine.validation`). Validation runs in the stage that trains
  the whole detector: the only one end to end, the last (step 4) in alternating training.

Exact resume: the data order and flips depend only on (seed, position in the sample stream)
(the data loader's ``start_iter``), and the Python/NumPy/torch RNG states are saved after each
iteration, so the iterations after a resume compute the same losses as an uninterrupted run
(bitwise on CPU with ``torch.use_deterministic_algorithms``). The one exception is a Ctrl-C
that lands between the optimiser's update and the iteration count's increment, a window of a
few Python statements.

Classes: with ``data.class_names`` empty the classes are whatever the data holds and
``model.num_classes`` follows them (a warning says so when the config held another number);
with ``data.class_names`` given, ``model.num_classes`` must equal its length. The resolved
values are what ``config.yaml`` and the checkpoints record.

One run at a time writes into a folder (:mod:`rfcn.engine.run_lock`); with
``data.skip_unreadable`` the images left out are listed in the result and as the last entry
of ``metrics.jsonl``, ``{"stage", "iteration", "skipped_images": N, "skipped_files": [{"file",
"problem"}, ...]}``.

Batches: ``train.images_per_batch`` is the total over all processes (the paper's 8 images on
8 GPUs); each of N processes loads ``images_per_batch / N``.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rfcn.config import Config, config_to_dict
from rfcn.data.build import build_dataset
from rfcn.data.dataset import DetectionDataset
from rfcn.engine.checkpoint import load_checkpoint, save_checkpoint
from rfcn.engine.distributed import (
    barrier,
    gather_to_main,
    get_world_size,
    init_distributed,
    is_main_process,
    peer_lost,
    resolve_device,
    shutdown_distributed,
)
from rfcn.engine.logging import append_metrics, read_metrics, save_resolved_config, truncate_metrics
from rfcn.engine.preemption import StopRequest, stop_signals_caught
from rfcn.engine.run_lock import run_lock
from rfcn.engine.stage_run import LAST_CHECKPOINT, Callback, RunContext, StageRun
from rfcn.engine.stages import stages_for
from rfcn.engine.validation import Validator
from rfcn.errors import UserError
from rfcn.evaluation.plots import validation_figure
from rfcn.files import write_image
from rfcn.inference.fast_path import bf16_is_fast

FINAL_CHECKPOINT = "model_final.pt"
VALIDATION_FIGURE = "val_curve.png"


@dataclass
class TrainResult:
    """``checkpoint``: the final weights; ``history``: the log entries of this call (see
    :mod:`rfcn.engine.logging`); ``seconds``: wall time of this call; ``train_images``: the
    images of the training splits; ``best_validation``: ``{"metric", "name", "value",
    "iteration"}`` of ``model_best.pt`` (rank 0, with ``train.eval_every``), else None;
    ``skipped_images``: file -> problem of the unreadable images left out (rank 0, with
    ``data.skip_unreadable``)."""

    checkpoint: Path
    history: list[dict[str, Any]]
    seconds: float
    train_images: int
    best_validation: dict[str, Any] | None = None
    skipped_images: dict[str, str] = field(default_factory=dict)


def train(
    cfg: Config,
    output_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train R-FCN as ``cfg`` says; see the module docstring for what lands in ``output_dir``.

    Under ``torchrun`` this joins the process group (gloo on CPU, NCCL on CUDA); only rank 0
    logs and writes files.

    Raises:
        UserError: bad data or config, ``amp`` fp16 off CUDA, a folder that holds a
            run without ``resume`` (or no run with it) or that another run is writing into, a
            checkpoint that cannot be written; :class:`~rfcn.errors.TrainingDiverged` (a
            UserError) a loss that became NaN or infinite;
            :class:`~rfcn.engine.preemption.ResumableError` (a UserError) an image that cannot
            be read, after saving the state.
        TrainingStopped: Ctrl-C, SIGTERM or SIGUSR1, after saving the state.
        PeerLost: under torchrun, another process died or stopped answering.
    """
    started = time.perf_counter()
    device = resolve_device(cfg.train.device)
    _check_precision(cfg.train.amp, device)
    created_group = init_distributed(device, cfg.train.dist_timeout)
    try:
        with stop_signals_caught() as stop:
            result = _train(cfg, Path(output_dir), device, resume, progress, callbacks, stop)
    except RuntimeError as error:
        lost = peer_lost(error)
        if lost is None:
            raise
        raise lost from None
    finally:
        if created_group:
            shutdown_distributed()
    result.seconds = time.perf_counter() - started
    return result


def _check_precision(amp: str, device: torch.device) -> None:
    """UserError for fp16 off CUDA; a warning for bf16 where it is emulated (slower than
    float32; "auto" picks float32 there)."""
    if amp == "fp16" and device.type != "cuda":
        raise UserError(
            "train.amp", f"fp16 mixed precision needs CUDA; use bf16 or none on {device}"
        )
    if amp == "bf16" and not bf16_is_fast(device) and is_main_process():
        warnings.warn(
            f"train.amp=bf16: {device} has no native bf16 (AVX512-BF16 or AMX), so it is "
            "emulated and slower than float32; auto would train in float32 here",
            stacklevel=3,
        )


def _train(
    cfg: Config,
    output_dir: Path,
    device: torch.device,
    resume: bool,
    progress: bool,
    callbacks: Sequence[Callback],
    stop: StopRequest,
) -> TrainResult:
    world = get_world_size()
    if cfg.train.images_per_batch % world:
        raise UserError(
            "train.images_per_batch",
            f"{cfg.train.images_per_batch} images do not split over {world} processes",
        )
    dataset = build_dataset(cfg.data, train=True)
    cfg = resolve_classes(cfg, dataset.class_names)
    # Rank 0 writes the folder, so rank 0 holds it; before reading a state another run may be
    # rewriting.
    with run_lock(output_dir) if is_main_process() else contextlib.nullcontext():
        return _train_locked(cfg, dataset, output_dir, device, resume, progress, callbacks, stop)


def _train_locked(
    cfg: Config,
    dataset: DetectionDataset,
    output_dir: Path,
    device: torch.device,
    resume: bool,
    progress: bool,
    callbacks: Sequence[Callback],
    stop: StopRequest,
) -> TrainResult:
    resume_state = _resume_state(cfg, output_dir) if resume else None
    if not resume and (output_dir / LAST_CHECKPOINT).exists():
        raise UserError(
            output_dir,
            f"already holds a training run ({LAST_CHECKPOINT}); "
            "resume it (--resume) or choose another folder",
        )
    # Before anything is written: a validation split that cannot be read, or pretrained weights
    # that cannot be had (the first stage's model is built here), stop the run.
    validator = Validator(cfg) if cfg.train.eval_every > 0 else None
    stages = stages_for(cfg.train.mode)
    first = 0
    if resume_state is not None:
        first = [stage.name for stage in stages].index(resume_state["stage"])
    context = RunContext(cfg, dataset, device, output_dir, progress, callbacks, stop=stop)
    if validator is not None:
        context.skipped.update(validator.skipped)

    def stage_run_at(index: int) -> StageRun:
        state = resume_state if index == first else None
        # Only in the last stage is the model the whole detector: end to end, the one stage;
        # alternating, step 4 (step 3's RPN, its own head).
        stage_validator = validator if index == len(stages) - 1 else None
        return StageRun(
            context, stages[index], index * cfg.train.iterations, state, stage_validator
        )

    stage_run = stage_run_at(first)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, output_dir)
        if resume_state is not None:
            truncate_metrics(output_dir, first * cfg.train.iterations + resume_state["iteration"])
    for index in range(first, len(stages)):
        if index != first:
            stage_run = stage_run_at(index)
        stage_run.run()
        # The next stage reads this stage's weights on every process.
        barrier()
    final = output_dir / FINAL_CHECKPOINT
    skipped = _skipped_on_all_processes(context.skipped)
    if is_main_process():
        save_checkpoint(final, stage_run.weights_state())
        if skipped:
            iteration = len(stages) * cfg.train.iterations
            append_metrics(output_dir, _skipped_entry(stages[-1].name, iteration, skipped))
        if validator is not None:
            figure = validation_figure(read_metrics(output_dir), validator.name, cfg.eval.metric)
            write_image(output_dir / VALIDATION_FIGURE, figure)
    barrier()
    best = None if validator is None else validator.best
    return TrainResult(final, context.history, 0.0, len(dataset), best, skipped)


def _skipped_on_all_processes(skipped: dict[str, str]) -> dict[str, str]:
    """Every process's left-out images, on rank 0 ({} elsewhere); every process must call it."""
    gathered = gather_to_main(skipped)
    return {} if gathered is None else {k: v for part in gathered for k, v in part.items()}


def _skipped_entry(stage: str, iteration: int, skipped: dict[str, str]) -> dict[str, Any]:
    """The ``metrics.jsonl`` entry listing the images left out."""
    return {
        "stage": stage,
        "iteration": iteration,
        "skipped_images": len(skipped),
        "skipped_files": [{"file": file, "problem": problem} for file, problem in skipped.items()],
    }


def resolve_classes(cfg: Config, class_names: Sequence[str]) -> Config:
    """A copy of ``cfg`` whose ``data.class_names`` and ``model.num_classes`` are the data's.

    Raises:
        UserError: ``data.class_names`` given and ``model.num_classes`` disagreeing with it.
    """
    given = cfg.data.class_names
    if given and len(given) != cfg.model.num_classes:
        raise UserError(
            "model.num_classes",
            f"is {cfg.model.num_classes} but data.class_names lists {len(given)} classes",
        )
    if not given and cfg.model.num_classes != len(class_names) and is_main_process():
        warnings.warn(
            f"model.num_classes={cfg.model.num_classes} replaced by the {len(class_names)} "
            "classes found in the data (data.class_names is empty)",
            stacklevel=4,
        )
    resolved = copy.deepcopy(cfg)
    resolved.data.class_names = list(class_names)
    resolved.model.num_classes = len(class_names)
    return resolved


def _resume_state(cfg: Config, output_dir: Path) -> dict[str, Any]:
    """The saved training state to resume, checked against the config it must continue."""
    path = output_dir / LAST_CHECKPOINT
    if not path.is_file():
        raise UserError(path, "no training state to resume (start without --resume)")
    state = load_checkpoint(path)
    saved = state["config"]
    wanted = config_to_dict(cfg)
    changed = [f"model.{k}" for k in wanted["model"] if saved["model"].get(k) != wanted["model"][k]]
    changed += [
        f"train.{key}"
        for key, default in (("mode", None), ("optimizer", "sgd"))
        # a state saved before train.optimizer existed was trained with SGD
        if saved["train"].get(key, default) != getattr(cfg.train, key)
    ]
    if changed:
        raise UserError(path, f"cannot resume with a different {', '.join(changed)}")
    if "optimizer" not in state:
        raise UserError(path, "holds final weights only, no training state to resume")
    return state
