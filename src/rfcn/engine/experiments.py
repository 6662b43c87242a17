"""Many training runs of one experiment: variants x seeds, resumable, in parallel processes.

``rfcn ablate`` runs every variant (a set of config overrides) with every seed (``train.seed``;
the data stay the same) into ``OUT/<variant>/seed<N>/``. What a run leaves there:

- ``experiment.json``: the variant, seed and the whole config it runs with, written first;
- what training writes (:mod:`rfcn.engine.trainer`: ``last.pt``, ``config.yaml``, ...);
- ``metrics.json``: the scores, written last and atomically. A folder with it is a finished
  run: a rerun loads it and skips the run. A run whose loss diverged
  (:class:`~rfcn.errors.TrainingDiverged`) is finished too: its ``metrics.json`` holds no
  scores but ``diverged_at``, the iteration, since the same settings and seed diverge again;
  a summary counts it apart (:func:`rfcn.evaluation.seed_stats.summarize`).

A run interrupted before ``metrics.json`` is picked up safely: from its ``last.pt`` when there
is one (the trainer resumes exactly; a finished training is only evaluated), else from
scratch (its partial log is cleared first). A folder whose ``experiment.json`` holds another
config is never overwritten: the rerun stops with a UserError naming the first setting that
differs, so an ablation cannot mix runs of different budgets. Settings of how a run is logged
and saved (``RECORD_KEEPING``) are not compared: a rerun may checkpoint more often and still
continue the runs already there.

What trains and scores one run is a function handed in (``RunFunction``), so this module
does not depend on the command-line tools. With ``jobs > 1`` runs go to that many spawned
processes with ``threads`` torch threads each; a finished run is kept whatever happens to the
others.
"""

from __future__ import annotations

import copy
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rfcn.config import Config, config_from_dict, config_to_dict
from rfcn.engine.logging import truncate_metrics
from rfcn.engine.stage_run import LAST_CHECKPOINT
from rfcn.errors import TrainingDiverged, UserError
from rfcn.files import read_json, write_json

EXPERIMENT_FILE = "experiment.json"
METRICS_FILE = "metrics.json"

# Settings that change what a run records, not what it computes.
RECORD_KEEPING = frozenset(
    {"output_dir", "train.checkpoint_every", "train.log_every", "train.tensorboard"}
)

# cfg, run folder, resume from its last.pt, show progress -> the run's metrics (JSON-ready)
RunFunction = Callable[[Config, Path, bool, bool], dict[str, Any]]


@dataclass(frozen=True)
class PlannedRun:
    """One (variant, seed) run: ``cfg`` is the full config (``train.seed`` = ``seed``)."""

    variant: str
    seed: int
    cfg: Config
    folder: Path

    def description(self) -> dict[str, Any]:
        return {"variant": self.variant, "seed": self.seed, "config": config_to_dict(self.cfg)}


@dataclass(frozen=True)
class FinishedRun:
    """A run's metrics; ``skipped``: they were already in its folder."""

    run: PlannedRun
    metrics: dict[str, Any]
    skipped: bool


def run_folder(out: Path, variant: str, seed: int) -> Path:
    return out / variant / f"seed{seed}"


def plan_runs(
    out: Path,
    variants: Sequence[str],
    seeds: Sequence[int],
    make_config: Callable[[str], Config],
) -> list[PlannedRun]:
    """Every (variant, seed) run, variant by variant; ``make_config(variant)`` gives the
    variant's config, whose ``train.seed`` each run replaces.

    Raises:
        UserError: a run folder holds a run of another config (see the module docstring).
    """
    runs = []
    for variant in variants:
        base = make_config(variant)
        for seed in seeds:
            cfg = copy.deepcopy(base)
            cfg.train.seed = seed
            run = PlannedRun(variant, seed, cfg, run_folder(out, variant, seed))
            _check_folder(run)
            runs.append(run)
    return runs


def _differences(saved: Any, wanted: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        for key in sorted(saved.keys() | wanted.keys()):
            yield from _differences(saved.get(key), wanted.get(key), f"{prefix}{key}.")
    elif saved != wanted:
        yield prefix.rstrip(".")


def _with_current_defaults(description: Any) -> Any:
    """A saved description whose config is read by today's Config: keys added since take their
    defaults. A config today's Config cannot read is left as it was (and so differs)."""
    try:
        config = config_to_dict(config_from_dict(description["config"]))
    except (UserError, KeyError, TypeError):
        return description
    return {**description, "config": config}


def _check_folder(run: PlannedRun) -> None:
    path = run.folder / EXPERIMENT_FILE
    if not path.is_file():
        if (run.folder / METRICS_FILE).exists() or (run.folder / LAST_CHECKPOINT).exists():
            raise UserError(
                run.folder, f"holds a run with no {EXPERIMENT_FILE}; choose another --out"
            )
        return
    saved = _with_current_defaults(read_json(path, "experiment description"))
    changed = [
        key
        for key in _differences(saved, run.description())
        if key.removeprefix("config.") not in RECORD_KEEPING
    ]
    if changed:
        raise UserError(
            path,
            f"this folder holds a run with other settings ({', '.join(changed[:3])}); "
            "use another --out or the same settings",
        )


def finished_metrics(run: PlannedRun) -> dict[str, Any] | None:
    """The metrics of a finished run, or None."""
    path = run.folder / METRICS_FILE
    return read_json(path, "run metrics") if path.is_file() else None


def execute(run: PlannedRun, run_function: RunFunction, progress: bool) -> dict[str, Any]:
    """Train and score one run in its folder (resuming or restarting a half-finished one),
    then write its ``metrics.json``; returns the metrics (:func:`diverged_metrics` for a run
    whose training diverged)."""
    run.folder.mkdir(parents=True, exist_ok=True)
    write_json(run.folder / EXPERIMENT_FILE, run.description())
    resume = (run.folder / LAST_CHECKPOINT).is_file()
    if not resume:
        truncate_metrics(run.folder, 0)  # an interrupted start's log lines
    try:
        metrics = {"variant": run.variant, **run_function(run.cfg, run.folder, resume, progress)}
    except TrainingDiverged as error:
        metrics = diverged_metrics(run, error.iteration)
    metrics["resumed"] = resume
    write_json(run.folder / METRICS_FILE, metrics)
    return metrics


def diverged_metrics(run: PlannedRun, iteration: int) -> dict[str, Any]:
    """The metrics of a run whose loss diverged at ``iteration``: no scores, and the budget
    that the finished runs record too."""
    return {
        "variant": run.variant,
        "seed": run.seed,
        "iterations": run.cfg.train.iterations,
        "images_per_batch": run.cfg.train.images_per_batch,
        "diverged_at": iteration,
    }


def _execute_in_worker(run: PlannedRun, run_function: RunFunction, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    return execute(run, run_function, progress=False)


def run_experiment(
    runs: Sequence[PlannedRun],
    run_function: RunFunction,
    jobs: int = 1,
    threads: int | None = None,
    progress: bool = True,
    on_finished: Callable[[FinishedRun], None] = lambda finished: None,
) -> list[FinishedRun]:
    """Run what is not finished yet; returns every run's metrics in the order of ``runs``.

    Args:
        jobs: processes running at once (1: in this process, with progress bars).
        threads: torch threads per run (default: this process's count, divided among jobs).
        on_finished: called in this process as each run ends or is found finished.

    Raises:
        UserError (or what else a run raised): the first failed run's error, after every
            other run has finished (their metrics are kept).
    """
    if jobs < 1:
        raise UserError("--jobs", f"must be positive, got {jobs}")
    threads = threads or max(1, torch.get_num_threads() // jobs)
    results: dict[int, FinishedRun] = {}
    pending = []
    for index, run in enumerate(runs):
        metrics = finished_metrics(run)
        if metrics is None:
            pending.append(index)
        else:
            results[index] = FinishedRun(run, metrics, skipped=True)
            on_finished(results[index])
    if jobs == 1:
        torch.set_num_threads(threads)
        for index in pending:
            results[index] = FinishedRun(
                runs[index], execute(runs[index], run_function, progress), False
            )
            on_finished(results[index])
    else:
        _run_in_processes(runs, pending, run_function, jobs, threads, results, on_finished)
    return [results[index] for index in range(len(runs))]


def _run_in_processes(
    runs: Sequence[PlannedRun],
    pending: list[int],
    run_function: RunFunction,
    jobs: int,
    threads: int,
    results: dict[int, FinishedRun],
    on_finished: Callable[[FinishedRun], None],
) -> None:
    """Run ``pending`` in ``jobs`` processes. A run that fails does not stop the others: its
    error is raised once they are all done. Ctrl-C stops everything (each training saves its
    ``last.pt`` on the way out, so a rerun resumes it)."""
    # spawn, not fork: a forked child would inherit this process's torch thread pools.
    context = multiprocessing.get_context("spawn")
    errors: list[Exception] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures: dict[Future[dict[str, Any]], int] = {
            pool.submit(_execute_in_worker, runs[index], run_function, threads): index
            for index in pending
        }
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    metrics = future.result()
                except Exception as exc:  # kept for after the other runs
                    errors.append(exc)
                    continue
                results[index] = FinishedRun(runs[index], metrics, skipped=False)
                on_finished(results[index])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if errors:
        raise errors[0]
