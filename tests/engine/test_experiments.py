"""Variants x seeds runs: planning, skipping finished runs, resuming, refusing other settings,
parallel processes; with a stand-in for training so that every test takes milliseconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rfcn.config import Config, config_from_dict
from rfcn.engine.experiments import (
    EXPERIMENT_FILE,
    METRICS_FILE,
    plan_runs,
    run_experiment,
)
from rfcn.errors import TrainingDiverged, UserError


def fake_run(cfg: Config, folder: Path, resume: bool, progress: bool) -> dict[str, Any]:
    """Stands in for training: records how it was called, fails for seed 13, diverges at
    iteration 4 for seed 21."""
    if cfg.train.seed == 13:
        raise UserError(folder, "seed 13 fails")
    if cfg.train.seed == 21:
        (folder / "calls.txt").open("a").write("diverged\n")
        raise TrainingDiverged(4, float("inf"))
    (folder / "calls.txt").open("a").write(f"resume={resume}\n")
    return {"seed": cfg.train.seed, "k": cfg.model.k, "train_seconds": 1.0}


def _configs(variant: str) -> Config:
    return config_from_dict({"model": {"k": {"a": 1, "b": 3}[variant]}, "train": {"seed": 5}})


def _calls(folder: Path) -> list[str]:
    path = folder / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_plan_gives_every_variant_every_seed_in_its_folder(tmp_path: Path) -> None:
    runs = plan_runs(tmp_path, ["a", "b"], [5, 6], _configs)
    assert [(r.variant, r.seed, r.cfg.train.seed, r.cfg.model.k) for r in runs] == [
        ("a", 5, 5, 1), ("a", 6, 6, 1), ("b", 5, 5, 3), ("b", 6, 6, 3)
    ]  # fmt: skip
    assert runs[1].folder == tmp_path / "a" / "seed6"


def test_finished_runs_are_skipped(tmp_path: Path) -> None:
    runs = plan_runs(tmp_path, ["a", "b"], [5, 6], _configs)
    seen = []
    first = run_experiment(runs, fake_run, progress=False, on_finished=seen.append)
    assert [f.metrics["k"] for f in first] == [1, 1, 3, 3]
    assert not any(f.skipped for f in first) and len(seen) == 4
    saved = json.loads((runs[2].folder / METRICS_FILE).read_text())
    assert saved == {"variant": "b", "seed": 5, "k": 3, "train_seconds": 1.0, "resumed": False}
    description = json.loads((runs[2].folder / EXPERIMENT_FILE).read_text())
    assert description["variant"] == "b" and description["config"]["train"]["seed"] == 5
    again = run_experiment(plan_runs(tmp_path, ["a", "b"], [5, 6, 7], _configs), fake_run)
    assert [f.skipped for f in again] == [True, True, False, True, True, False]
    assert [f.metrics for f in again[:2]] == [f.metrics for f in first[:2]]
    assert all(_calls(run.folder) == ["resume=False"] for run in runs)


def test_a_diverged_run_is_a_finished_run_without_scores(tmp_path: Path) -> None:
    runs = plan_runs(tmp_path, ["a"], [20, 21], _configs)
    finished = run_experiment(runs, fake_run, progress=False)
    assert finished[0].metrics["k"] == 1
    assert finished[1].metrics == {
        "variant": "a",
        "seed": 21,
        "iterations": runs[1].cfg.train.iterations,
        "images_per_batch": runs[1].cfg.train.images_per_batch,
        "diverged_at": 4,
        "resumed": False,
    }
    assert json.loads((runs[1].folder / METRICS_FILE).read_text()) == finished[1].metrics
    again = run_experiment(runs, fake_run, progress=False)  # the same seed would diverge again
    assert [f.skipped for f in again] == [True, True]
    assert _calls(runs[1].folder) == ["diverged"]


def test_half_finished_runs_resume_or_restart(tmp_path: Path) -> None:
    resumable, restarted = plan_runs(tmp_path, ["a"], [5, 6], _configs)
    for run in (resumable, restarted):
        run.folder.mkdir(parents=True)
        (run.folder / EXPERIMENT_FILE).write_text(json.dumps(run.description()))
        (run.folder / "metrics.jsonl").write_text('{"iteration": 3}\n')
    (resumable.folder / "last.pt").write_bytes(b"training state")
    finished = run_experiment([resumable, restarted], fake_run)
    assert _calls(resumable.folder) == ["resume=True"]
    assert _calls(restarted.folder) == ["resume=False"]
    assert (restarted.folder / "metrics.jsonl").read_text() == ""  # the stale log is cleared
    assert (resumable.folder / "metrics.jsonl").read_text() != ""  # the trainer truncates it
    assert [f.metrics["resumed"] for f in finished] == [True, False]


def test_a_folder_of_other_settings_is_refused(tmp_path: Path) -> None:
    run_experiment(plan_runs(tmp_path, ["a"], [5], _configs), fake_run)

    def other(variant: str) -> Config:
        cfg = _configs(variant)
        cfg.train.iterations = 7
        return cfg

    with pytest.raises(UserError, match=r"other settings \(config\.train\.iterations\)"):
        plan_runs(tmp_path, ["a"], [5], other)
    (tmp_path / "b" / "seed5").mkdir(parents=True)
    (tmp_path / "b" / "seed5" / "last.pt").write_bytes(b"someone else's run")
    with pytest.raises(UserError, match=r"no experiment\.json"):
        plan_runs(tmp_path, ["b"], [5], _configs)


def test_record_keeping_settings_may_change_between_sittings(tmp_path: Path) -> None:
    (finished,) = plan_runs(tmp_path, ["a"], [5], _configs)
    run_experiment([finished], fake_run)
    (half_done,) = plan_runs(tmp_path, ["b"], [5], _configs)
    half_done.folder.mkdir(parents=True)
    (half_done.folder / EXPERIMENT_FILE).write_text(json.dumps(half_done.description()))
    (half_done.folder / "last.pt").write_bytes(b"training state")

    def more_often(variant: str) -> Config:
        cfg = _configs(variant)
        cfg.train.checkpoint_every, cfg.train.log_every, cfg.train.tensorboard = 7, 3, False
        cfg.output_dir = "elsewhere"
        return cfg

    again = run_experiment(plan_runs(tmp_path, ["a", "b"], [5], more_often), fake_run)
    assert [f.skipped for f in again] == [True, False]
    assert _calls(half_done.folder) == ["resume=True"]
    saved = json.loads((half_done.folder / EXPERIMENT_FILE).read_text())
    assert saved["config"]["train"]["checkpoint_every"] == 7  # what the rest of it runs with


def test_a_run_saved_before_a_setting_existed_is_kept(tmp_path: Path) -> None:
    (run,) = plan_runs(tmp_path, ["a"], [5], _configs)
    run_experiment([run], fake_run)
    path = run.folder / EXPERIMENT_FILE
    description = json.loads(path.read_text())
    del description["config"]["model"]["box_voting_iou"]  # as written before that setting
    path.write_text(json.dumps(description))
    (again,) = run_experiment(plan_runs(tmp_path, ["a"], [5], _configs), fake_run)
    assert again.skipped and _calls(run.folder) == ["resume=False"]


@pytest.mark.slow
def test_parallel_processes_run_everything_and_keep_what_finished(tmp_path: Path) -> None:
    runs = plan_runs(tmp_path, ["a", "b"], [5, 13], _configs)
    with pytest.raises(UserError, match="seed 13 fails"):
        run_experiment(runs, fake_run, jobs=2, threads=1)
    finished = [run for run in runs if (run.folder / METRICS_FILE).is_file()]
    assert [(run.variant, run.seed) for run in finished] == [("a", 5), ("b", 5)]
    assert all(_calls(run.folder) == ["resume=False"] for run in finished)
    ok = plan_runs(tmp_path, ["a", "b"], [5], _configs)
    again = run_experiment(ok, fake_run, jobs=2, threads=1)
    assert [(f.run.variant, f.metrics["k"], f.skipped) for f in again] == [
        ("a", 1, True), ("b", 3, True)
    ]  # fmt: skip
    with pytest.raises(UserError, match="--jobs"):
        run_experiment(runs, fake_run, jobs=0)
