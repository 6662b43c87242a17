"""One training stage: model, optimiser and data set up for it, then the iteration loop.

:mod:`rfcn.engine.trainer` runs one :class:`StageRun` for end-to-end training and four for
alternating training (:mod:`rfcn.engine.stages`). A stage starts fresh or from a saved
training state (``last.pt``); in both cases the loop begins with the same RNG states, and the
data loader's ``start_iter`` replays the data order, so a resumed stage computes what an
uninterrupted one would have.

Faults that must not lose the run (:mod:`rfcn.engine.preemption`) are handled at the iteration
boundary, after the next batch is loaded and before it is used: a stop signal, or an image
that cannot be read. There every process agrees on them (one all-reduce), the training state
is saved (rank 0), and each process raises: :class:`TrainingStopped`, or a
:class:`ResumableError` naming the file. An unreadable validation image stops the run the
same way, and the resumed run validates first.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from rfcn.config import Config
from rfcn.data.build import build_data_loader
from rfcn.data.dataset import DetectionDataset
from rfcn.engine.checkpoint import load_checkpoint, load_weights, model_state, save_checkpoint
from rfcn.engine.distributed import (
    barrier,
    get_rank,
    get_world_size,
    is_main_process,
    max_over_processes,
    mean_over_processes,
)
from rfcn.engine.logging import TrainingLog
from rfcn.engine.optim import build_optimizer, build_scheduler
from rfcn.engine.preemption import (
    ResumableError,
    StopRequest,
    TrainingStopped,
    data_worker_signals,
)
from rfcn.engine.rng import capture_rng_state, restore_rng_state, seed_everything
from rfcn.engine.stages import Stage, configure_stage, set_train_mode
from rfcn.engine.validation import BEST_CHECKPOINT, Validator
from rfcn.engine.weight_average import WeightAverage
from rfcn.errors import TrainingDiverged, UserError
from rfcn.inference.fast_path import bf16_is_fast
from rfcn.modeling.rfcn import RFCN, build_model

LAST_CHECKPOINT = "last.pt"

Batch = tuple[list[Tensor], list[dict[str, Any]]]


@dataclass(frozen=True)
class IterationEnd:
    """What a callback sees after every iteration (on every process).

    ``losses`` are this process's losses of the iteration, detached; ``model`` is the model
    being trained (unwrapped from DDP). A callback may raise (KeyboardInterrupt included): the
    trainer then behaves as on Ctrl-C.
    """

    stage: str
    iteration: int
    losses: dict[str, Tensor]
    model: nn.Module


Callback = Callable[[IterationEnd], None]


@dataclass
class RunContext:
    """What every stage of a run shares. ``cfg`` is resolved (class names from the data);
    ``stop`` is set by a stop signal; ``skipped`` holds the unreadable images this process left
    out (``data.skip_unreadable``), file -> problem."""

    cfg: Config
    dataset: DetectionDataset
    device: torch.device
    output_dir: Path
    progress: bool
    callbacks: Sequence[Callback] = ()
    history: list[dict[str, Any]] = field(default_factory=list)
    stop: StopRequest = field(default_factory=StopRequest)
    skipped: dict[str, str] = field(default_factory=dict)


def stage_weights_path(output_dir: Path, stage_name: str) -> Path:
    """Where alternating training keeps a finished stage's weights."""
    return output_dir / f"{stage_name}.pt"


def _load_stage_model(cfg: Config, output_dir: Path, stage_name: str) -> RFCN:
    source = stage_weights_path(output_dir, stage_name)
    model = build_model(cfg.model)
    load_weights(model, load_checkpoint(source)["model"], source)
    return model


class StageRun:
    """Build everything one stage needs; :meth:`run` trains it.

    Args:
        context: the run's shared settings.
        stage: what this stage trains.
        offset: iterations of the earlier stages (log entries count over the whole run).
        state: a training state from ``last.pt`` to continue, or None to start the stage.
        validator: validates the model every ``train.eval_every`` iterations and at the end
            (:mod:`rfcn.engine.validation`); None: no validation in this stage.
    """

    def __init__(
        self,
        context: RunContext,
        stage: Stage,
        offset: int,
        state: dict[str, Any] | None,
        validator: Validator | None = None,
    ) -> None:
        cfg, device = context.cfg, context.device
        self.context = context
        self.stage = stage
        self.validator = validator
        self.offset = offset
        self.total = cfg.train.iterations
        # The same seed before every build: stages that start "from the initial weights"
        # (alternating steps 1 and 2) start from the same random draw.
        seed_everything(cfg.train.seed)
        if stage.init_from is None:
            self.model = build_model(cfg.model)
        else:
            self.model = _load_stage_model(cfg, context.output_dir, stage.init_from)
        self.trainable = configure_stage(self.model, stage)
        # Resolved once: "auto" asks the hardware, which does not change between iterations.
        self.autocast = autocast_dtype(cfg.train.amp, device)
        self.model.to(
            device, memory_format=training_memory_format(cfg.train.memory_format, self.autocast)
        )
        self.optimizer = build_optimizer(self.trainable, cfg.train, self.model.offset_parameters())
        self.scheduler = build_scheduler(self.optimizer, cfg.train)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.autocast is torch.float16)
        self.done = 0
        # Set when validation met an unreadable image: the state saved then validates first.
        self.validation_pending = False
        if state is not None:
            self._restore(state)
        self.average = None
        if cfg.train.ema_decay > 0:
            # From the resumed weights when the saved state has no average (ema_decay was 0).
            self.average = WeightAverage(self.model, cfg.train.ema_decay)
            if state is not None and state.get("weight_average") is not None:
                saved = context.output_dir / LAST_CHECKPOINT
                self.average.load_state_dict(state["weight_average"], saved)
        self.proposer = None
        if stage.proposals_from is not None:
            # A frozen copy of an earlier stage: its RPN proposes this stage's RoIs.
            proposer = _load_stage_model(cfg, context.output_dir, stage.proposals_from)
            self.proposer = proposer.requires_grad_(False).to(device).eval()
        self.network: nn.Module = self.model
        if get_world_size() > 1:
            device_ids = [device.index] if device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=device_ids)
        loader = build_data_loader(
            context.dataset,
            images_per_batch=cfg.train.images_per_batch // get_world_size(),
            train=True,
            seed=cfg.train.seed,
            workers=cfg.data.workers,
            aspect_grouping=cfg.data.aspect_grouping,
            distributed=get_world_size() > 1,
            start_iter=self.done,
            skip_unreadable=cfg.data.skip_unreadable,
            worker_init_fn=data_worker_signals,
        )
        self.batches = iter(loader)
        # After everything above drew its random numbers: the loop starts from the same RNG
        # states whether the stage starts fresh or resumes.
        if state is not None:
            restore_rng_state(state["rng"])
        else:
            seed_everything(cfg.train.seed + get_rank())
        self.rng = capture_rng_state()

    def _restore(self, state: dict[str, Any]) -> None:
        load_weights(self.model, state["model"], self.context.output_dir / LAST_CHECKPOINT)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["grad_scaler"] is not None:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.done = min(state["iteration"], self.total)
        self.context.skipped.update(state.get("skipped_images") or {})
        if self.validator is not None:
            self.validator.best = state.get("best_validation")
            self.validation_pending = bool(state.get("validation_pending"))

    @property
    def delivered_model(self) -> nn.Module:
        """The model this stage delivers and validates: the weight average with
        ``train.ema_decay``, else the trained model."""
        return self.model if self.average is None else self.average.model

    def _state_of(self, model: nn.Module) -> dict[str, Any]:
        cfg = self.context.cfg
        return {
            **model_state(model, cfg, cfg.data.class_names),
            "stage": self.stage.name,
            "iteration": self.done,
        }

    def weights_state(self) -> dict[str, Any]:
        """The delivered weights, config and class names, with this stage's name and
        iteration."""
        return self._state_of(self.delivered_model)

    def training_state(self) -> dict[str, Any]:
        """Everything an exact resume needs (the RNG states as after the last iteration): the
        trained weights, and the weight average's state beside them."""
        return {
            **self._state_of(self.model),
            "weight_average": None if self.average is None else self.average.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": self.rng,
            "best_validation": None if self.validator is None else self.validator.best,
            "validation_pending": self.validation_pending,
            "skipped_images": dict(self.context.skipped),
        }

    def _save_training_state(self) -> None:
        if is_main_process():
            save_checkpoint(self.context.output_dir / LAST_CHECKPOINT, self.training_state())

    def _next_batch(self) -> tuple[Batch | None, UserError | None]:
        """The next batch, or the error of an image in it that cannot be read; the images
        left out in its place (``data.skip_unreadable``) are noted and reported once."""
        try:
            images, targets = next(self.batches)
        except UserError as error:
            return None, error
        for target in targets:
            for error in target.pop("skipped"):
                if error.source not in self.context.skipped:
                    self.context.skipped[error.source] = error.problem
                    print(
                        f"warning: {error}; left out (data.skip_unreadable)",
                        file=sys.stderr,
                        flush=True,
                    )
        return (images, targets), None

    def _stop_if_asked(self, fault: UserError | None) -> None:
        """At the iteration boundary: when any process got a stop signal or met an unreadable
        image, save the training state and raise (see the module docstring)."""
        signal_number, faulted = max_over_processes(
            [self.context.stop.signal_number, fault is not None], self.context.device
        )
        if not (signal_number or faulted):
            return
        self._save_training_state()
        barrier()  # no process leaves (and has torchrun stop the others) before the state is saved
        iteration = self.offset + self.done
        if fault is not None:
            raise ResumableError(fault, iteration)
        if faulted:
            problem = "another training process could not read an image (its error names it)"
            raise ResumableError(UserError("data", problem), iteration)
        raise TrainingStopped(signal_number, iteration)

    def step(self, batch: Batch | None = None) -> tuple[Tensor, dict[str, Tensor], float]:
        """One SGD iteration on ``batch`` (None: the loader's next); returns the total loss,
        the losses and the lr it used."""
        cfg, device = self.context.cfg, self.context.device
        images, targets = _to_device(next(self.batches) if batch is None else batch, device)
        with torch.autocast(device.type, dtype=self.autocast, enabled=self.autocast is not None):
            proposals = None
            if self.proposer is not None:
                proposals = self.proposer.propose(images, cfg.model.rpn_post_nms_train)
            losses = self.network(images, targets, proposals=proposals)
        loss = sum(losses.values())
        if not torch.isfinite(loss).item():
            raise TrainingDiverged(self.offset + self.done + 1, loss.item())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.train.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trainable, cfg.train.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.average is not None:
            self.average.update()
        self.done += 1
        self.rng = capture_rng_state()
        return loss.detach(), {name: value.detach() for name, value in losses.items()}, lr

    def _validate(self, validator: Validator, log: TrainingLog) -> None:
        """Score the model on the validation split (every process its shard); rank 0 logs the
        score and saves the weights as ``model_best.pt`` when they score best so far."""
        started = time.perf_counter()
        try:
            metrics = validator.evaluate(self.delivered_model)
        except UserError as error:
            self.validation_pending = True
            self._save_training_state()
            raise ResumableError(error, self.offset + self.done) from None
        self.validation_pending = False
        if metrics is None:  # not rank 0
            return
        iteration = self.offset + self.done
        value = metrics[validator.name]
        if validator.offer(value, iteration):
            save_checkpoint(
                self.context.output_dir / BEST_CHECKPOINT,
                {**self.weights_state(), "validation": validator.best},
            )
        entry = log.record_validation(
            iteration,
            self.done,
            self.context.cfg.eval.metric,
            validator.name,
            value,
            validator.best,
            time.perf_counter() - started,
        )
        self.context.history.append(entry)

    def run(self) -> nn.Module:
        """Train the remaining iterations; save ``last.pt`` periodically, at the end, and
        before raising :class:`TrainingStopped` (a stop signal, Ctrl-C) or
        :class:`ResumableError` (an unreadable image); returns the delivered model."""
        cfg, context = self.context.cfg, self.context
        log = TrainingLog(
            context.output_dir,
            self.stage.name,
            self.total,
            self.done,
            cfg.train.images_per_batch,
            context.progress,
            cfg.train.tensorboard,
            is_main_process(),
        )
        window: dict[str, Tensor] = {}
        window_start = self.done
        set_train_mode(self.model)
        try:
            if self.validation_pending and self.validator is not None:
                self._validate(self.validator, log)
            while self.done < self.total:
                batch, fault = self._next_batch()
                self._stop_if_asked(fault)
                loss, losses, lr = self.step(batch)
                for name, value in {"loss": loss, **losses}.items():
                    window[name] = window.get(name, 0) + value.float()
                log.advance()
                if self.done % cfg.train.log_every == 0 or self.done == self.total:
                    count = self.done - window_start
                    means = mean_over_processes({k: v / count for k, v in window.items()})
                    entry = log.record(self.offset + self.done, self.done, {**means, "lr": lr})
                    context.history.append(entry)
                    window, window_start = {}, self.done
                # Before the checkpoint: last.pt then holds the best score up to this iteration.
                if self.validator is not None and self.validator.due(self.done, self.total):
                    self._validate(self.validator, log)
                if self.done % cfg.train.checkpoint_every == 0 and self.done < self.total:
                    self._save_training_state()
                for callback in context.callbacks:
                    callback(IterationEnd(self.stage.name, self.done, losses, self.model))
        except TrainingStopped:
            raise
        except KeyboardInterrupt:
            self._save_training_state()
            raise TrainingStopped(signal.SIGINT, self.offset + self.done) from None
        except RuntimeError:
            # A stop signal sent to the whole job also ended the data workers, which the
            # DataLoader reports as a RuntimeError wherever the run is, as Ctrl-C does.
            if not self.context.stop.signal_number:
                raise
            self._save_training_state()
            raise TrainingStopped(
                self.context.stop.signal_number, self.offset + self.done
            ) from None
        finally:
            log.close()
        if is_main_process() and cfg.train.mode == "alternating":
            path = stage_weights_path(context.output_dir, self.stage.name)
            save_checkpoint(path, self.weights_state())
        self._save_training_state()
        return self.delivered_model


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``train.amp`` means on ``device``, None for float32 throughout.

    "auto" is bf16 where ``device`` runs bf16 convolutions natively (CUDA; CPUs with
    AVX512-BF16 or AMX), else float32: elsewhere bf16 is emulated and slower than float32.
    """
    if amp == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def training_memory_format(memory_format: str, autocast: torch.dtype | None) -> torch.memory_format:
    """The layout ``train.memory_format`` means for a model trained under ``autocast``.

    "auto" is channels_last under bf16: on the demo's training (2 cores, AMD EPYC with
    AVX512-BF16) a bf16 iteration took 0.9x the time in NHWC; in float32 NHWC gained nothing
    there and took 1.17x on an AMD EPYC with AVX2 only (2 threads).
    """
    if memory_format == "auto":
        return torch.channels_last if autocast is torch.bfloat16 else torch.contiguous_format
    layouts = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    return layouts[memory_format]


def _to_device(
    batch: tuple[list[Tensor], list[dict[str, Any]]], device: torch.device
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    images, targets = batch
    moved_images = [image.to(device, non_blocking=True) for image in images]
    moved_targets = [
        {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()}
        for t in targets
    ]
    return moved_images, moved_targets
