"""What a training run leaves in its output folder, and the progress bar.

- ``config.yaml``: the resolved config (class names and class count as trained);
- ``metrics.jsonl``: one JSON object per log step, ``{"stage", "iteration" (counted over all
  stages), "stage_iteration", "lr", "loss", "loss_rpn_cls", ..., "images_per_s", "time"}``;
  losses are means over the iterations since the previous log step and over all processes;
  with ``train.eval_every``, one object per validation, ``{"stage", "iteration",
  "stage_iteration", "val_metric", "val_<name>", "best_val_<name>", "best_iteration",
  "val_seconds"}`` (``<name>``: ``mAP`` for VOC metrics, ``AP`` for COCO);
- ``tensorboard/``: the same scalars (``train/...`` and ``val/<name>``), when
  ``train.tensorboard`` is on (without the ``tensorboard`` package: one warning line naming
  the extra to install, and no scalars);
- ``val_curve.png``: the validation metric against the iteration, when validating;
- a tqdm progress bar on stderr with the loss, the lr, the speed, and the last and best
  validation values.

Only the main process (rank 0) writes; the others construct a :class:`TrainingLog` with
``enabled=False``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rfcn.config import Config, save_config
from rfcn.errors import UserError
from rfcn.files import write_text
from rfcn.optional import require

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


def save_resolved_config(cfg: Config, output_dir: Path) -> None:
    save_config(cfg, output_dir / CONFIG_FILE)


def read_metrics(output_dir: Path) -> list[dict[str, Any]]:
    """The entries of the run's ``metrics.jsonl``, in order; torn lines are skipped."""
    path = output_dir / METRICS_FILE
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def truncate_metrics(output_dir: Path, last_iteration: int) -> None:
    """Drop log lines after ``last_iteration`` (and torn lines) before a resume appends.

    A run killed after its last checkpoint logged iterations that the resume will run again.
    """
    path = output_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = [
        json.dumps(entry) + "\n"
        for entry in read_metrics(output_dir)
        if entry.get("iteration", 0) <= last_iteration
    ]
    write_text(path, "".join(kept))


def append_metrics(output_dir: Path, entry: dict[str, Any]) -> None:
    """Add ``entry`` as a line of the run's ``metrics.jsonl``.

    Raises:
        UserError: the file cannot be written (a full disk), naming it.
    """
    path = output_dir / METRICS_FILE
    try:
        with path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(entry) + "\n")
    except OSError as exc:
        raise UserError(path, f"cannot append to the training log: {exc.strerror or exc}") from None


def _summary_writer(log_dir: Path) -> Any:
    """A TensorBoard ``SummaryWriter``; None, after a one-line warning naming the extra to
    install, when the tensorboard package is missing (training goes on without it)."""
    try:
        tensorboard = require("torch.utils.tensorboard", "tensorboard", "train.tensorboard")
    except UserError as exc:
        print(f"warning: {exc} (or set train.tensorboard=false); no TensorBoard", file=sys.stderr)
        return None
    return tensorboard.SummaryWriter(log_dir=str(log_dir))


class TrainingLog:
    """Progress bar, ``metrics.jsonl`` and TensorBoard for one training stage.

    Args:
        output_dir: the run's folder (exists).
        stage: the stage's name, shown on the bar and written with every entry.
        total: iterations of the stage; ``start``: iterations already done (resume).
        images_per_iteration: images per iteration over all processes (for the speed).
        progress: show the bar; ``tensorboard``: write TensorBoard scalars.
        enabled: False on every process but rank 0 (then nothing is shown or written).
    """

    def __init__(
        self,
        output_dir: Path,
        stage: str,
        total: int,
        start: int,
        images_per_iteration: int,
        progress: bool,
        tensorboard: bool,
        enabled: bool,
    ) -> None:
        self.output_dir = output_dir
        self.stage = stage
        self.images_per_iteration = images_per_iteration
        self.enabled = enabled
        self.bar = tqdm(
            total=total,
            initial=start,
            desc=stage,
            unit="it",
            dynamic_ncols=True,
            disable=not (enabled and progress),
        )
        self.writer = (
            _summary_writer(output_dir / "tensorboard") if enabled and tensorboard else None
        )
        self.started = time.perf_counter()
        self.window_start = (start, self.started)
        self.postfix: dict[str, str] = {}  # the bar's latest values, training and validation

    def advance(self) -> None:
        """One iteration done."""
        self.bar.update(1)

    def record(self, iteration: int, stage_iteration: int, scalars: dict[str, float]) -> dict:
        """Log the scalars of the iterations since the previous call; returns the entry.

        Args:
            iteration: iterations done over all stages (the x axis of every plot).
            stage_iteration: iterations done in this stage.
            scalars: ``{"loss": ..., "loss_rpn_cls": ..., "lr": ...}`` already averaged.
        """
        now = time.perf_counter()
        first, since = self.window_start
        images = (stage_iteration - first) * self.images_per_iteration
        speed = images / max(now - since, 1e-9)
        self.window_start = (stage_iteration, now)
        entry = {
            "stage": self.stage,
            "iteration": iteration,
            "stage_iteration": stage_iteration,
            **scalars,
            "images_per_s": speed,
            "time": now - self.started,
        }
        if not self.enabled:
            return entry
        self._append(entry)
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(f"train/{name}", value, iteration)
            self.writer.add_scalar("train/images_per_s", speed, iteration)
        self.postfix.update(
            loss=f"{scalars['loss']:.3f}", lr=f"{scalars['lr']:.2e}", img_s=f"{speed:.1f}"
        )
        self.bar.set_postfix(self.postfix)
        return entry

    def record_validation(
        self,
        iteration: int,
        stage_iteration: int,
        metric: str,
        name: str,
        value: float | None,
        best: dict[str, Any] | None,
        seconds: float,
    ) -> dict:
        """Log one validation; returns the entry. Its ``seconds`` do not count towards the
        training speed.

        Args:
            iteration, stage_iteration: as for :meth:`record`.
            metric: ``eval.metric``; ``name``: its headline number (``"mAP"``, ``"AP"``);
            value: that number (None: it cannot be computed).
            best: the best validation so far, ``{"value", "iteration", ...}``, or None.
            seconds: how long the validation took.
        """
        first, since = self.window_start
        self.window_start = (first, since + seconds)
        best_value = None if best is None else best["value"]
        entry = {
            "stage": self.stage,
            "iteration": iteration,
            "stage_iteration": stage_iteration,
            "val_metric": metric,
            f"val_{name}": value,
            f"best_val_{name}": best_value,
            "best_iteration": None if best is None else best["iteration"],
            "val_seconds": seconds,
        }
        if not self.enabled:
            return entry
        self._append(entry)
        if self.writer is not None and value is not None:
            self.writer.add_scalar(f"val/{name}", value, iteration)
        self.postfix.update(val=_shown(value), best=_shown(best_value))
        self.bar.set_postfix(self.postfix)
        return entry

    def _append(self, entry: dict[str, Any]) -> None:
        append_metrics(self.output_dir, entry)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
