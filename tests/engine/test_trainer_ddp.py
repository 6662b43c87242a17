"""DDP on CPU: two processes (gloo) train the tiny model; the replicas must stay identical, and
validation (each process scores its shard) equals scoring the weights in one process."""

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from engine_fixtures import tiny_config
from process_group import act_as_torchrun_process, free_port

from rfcn.config import Config
from rfcn.engine.checkpoint import load_model
from rfcn.engine.stage_run import IterationEnd
from rfcn.engine.trainer import train
from rfcn.engine.validation import Validator


def _worker(rank: int, world_size: int, port: int, data_root: Path, out: Path) -> None:
    """One torchrun-like process: the environment torchrun sets, then a plain ``train``."""
    act_as_torchrun_process(rank, world_size, port)
    torch.set_num_threads(1)

    def keep_weights(event: IterationEnd) -> None:
        if event.iteration in (1, 3):
            torch.save(event.model.state_dict(), out / f"rank{rank}_iter{event.iteration}.pt")

    train(_config(data_root), out / "run", progress=False, callbacks=[keep_weights])


def _config(data_root: Path) -> Config:
    return tiny_config(
        data_root,
        train={"iterations": 3, "images_per_batch": 4, "eval_every": 3},
        data={"val_split": "trainval"},
    )


@pytest.mark.slow
def test_two_cpu_processes_keep_identical_replicas(tiny_voc: Path, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), tiny_voc, tmp_path), nprocs=2, join=True)

    def weights(rank: int, iteration: int) -> dict[str, torch.Tensor]:
        return torch.load(tmp_path / f"rank{rank}_iter{iteration}.pt", weights_only=True)

    first, last = weights(0, 1), weights(0, 3)
    for iteration in (1, 3):
        other = weights(1, iteration)
        for name, value in weights(0, iteration).items():
            assert torch.equal(other[name], value), (iteration, name)
    changed = [name for name in last if not torch.equal(first[name], last[name])]
    assert any(name.startswith("head.") for name in changed)
    assert any(name.startswith("backbone.trunk.") for name in changed)
    # only rank 0 writes the run's files
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.yaml",
        "last.pt",
        "metrics.jsonl",
        "model_best.pt",
        "model_final.pt",
        "val_curve.png",
    ]
    # The two shards' detections, gathered, score what the final weights score in one process.
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    (validation,) = [entry for entry in logged if "val_mAP" in entry]
    model, cfg, _ = load_model(tmp_path / "run" / "model_final.pt")
    alone = Validator(cfg).evaluate(model)
    assert alone is not None and validation["val_mAP"] == alone["mAP"]
