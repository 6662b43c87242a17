"""DDP on CPU: two processes (gloo) train the tiny model; the replicas must stay identical, one
step of two processes is one process's step on their batches together (gradients averaged,
not summed), and validation (each process scores its shard) equals scoring the weights in one
process; a process that dies stops the other with a message."""

import json
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from engine_fixtures import tiny_config
from process_group import act_as_torchrun_process, free_port, torchrun_environment
from training_process import finish, start_training, wait_for_log, write_config

from rfcn.config import Config
from rfcn.engine.checkpoint import load_model
from rfcn.engine.rng import seed_everything
from rfcn.engine.stage_run import IterationEnd
from rfcn.engine.trainer import train
from rfcn.engine.validation import Validator
from rfcn.modeling import rpn
from rfcn.modeling.matching import BACKGROUND
from rfcn.modeling.rfcn import build_model


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


def test_a_rank_that_dies_stops_the_other_with_a_message(tiny_voc: Path, tmp_path: Path) -> None:
    config = write_config(tiny_config(tiny_voc, train={"iterations": 500}), tmp_path / "t.yaml")
    out, port = tmp_path / "run", free_port()
    ranks = [
        start_training(config, out, env=torchrun_environment(rank, 2, port)) for rank in (0, 1)
    ]
    try:
        wait_for_log(out, 2, ranks[0])
        ranks[1].send_signal(signal.SIGKILL)
        started = time.monotonic()
        code, _, err = finish(ranks[0], timeout=90)
    finally:
        for process in ranks:
            process.kill()
            process.wait()
    assert time.monotonic() - started < 60
    assert code == 1, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        "error: rank 0: another training process died or stopped answering ("
    ), err


def _first_anchors(matches: torch.Tensor, batch_size: int, positive_fraction: float):
    """``sample_balanced`` without its random draw (whose stream differs between one process
    and two): the first positive and negative anchors, as many of each as it takes."""
    positive = torch.nonzero(matches >= 0).flatten()
    negative = torch.nonzero(matches == BACKGROUND).flatten()
    count = min(positive.numel(), round(batch_size * positive_fraction))
    return positive[:count], negative[: min(negative.numel(), batch_size - count)]


def _one_step_config(data_root: Path) -> Config:
    # 4 images a step: one process takes stream positions 0-3, two take 0, 2 and 1, 3 (the
    # same images with the same flips). All 96x128, so no image is padded differently.
    return tiny_config(data_root, train={"iterations": 1, "images_per_batch": 4})


def _one_step_worker(rank: int, world_size: int, port: int, data_root: Path, out: Path) -> None:
    """One step of ``train`` in a world of ``world_size`` (1: a plain process); rank 0 keeps
    the weights after it."""
    if world_size > 1:
        act_as_torchrun_process(rank, world_size, port)
    torch.set_num_threads(1)
    rpn.sample_balanced = _first_anchors  # this spawned process only

    def keep_weights(event: IterationEnd) -> None:
        if rank == 0:
            torch.save(event.model.state_dict(), out / f"world{world_size}.pt")

    config = _one_step_config(data_root)
    train(config, out / f"run{world_size}", progress=False, callbacks=[keep_weights])


@pytest.mark.slow
def test_one_ddp_step_is_one_process_on_the_whole_batch(tiny_voc: Path, tmp_path: Path) -> None:
    """Each image's losses are normalised per image (32 anchors, 16 OHEM RoIs), so the mean
    over 4 images in one process is the mean of two processes' means over 2: averaging the
    replicas' gradients gives the same step, summing them twice its size."""
    for world_size in (1, 2):
        args = (world_size, free_port(), tiny_voc, tmp_path)
        mp.spawn(_one_step_worker, args=args, nprocs=world_size, join=True)
    seed_everything(_one_step_config(tiny_voc).train.seed)  # as the trainer, before its build
    initial = build_model(_one_step_config(tiny_voc).model).state_dict()
    alone, ddp = (torch.load(tmp_path / f"world{w}.pt", weights_only=True) for w in (1, 2))
    moved = 0
    for name, start in initial.items():
        step_alone, step_ddp = alone[name] - start, ddp[name] - start
        if step_alone.is_floating_point() and step_alone.abs().max() > 0:
            moved += 1
            torch.testing.assert_close(step_ddp, step_alone, rtol=1e-3, atol=1e-7, msg=name)
    assert moved > 20
    # the logged loss too: the mean of the two processes' losses is the one process's
    logged = [
        json.loads((tmp_path / f"run{w}" / "metrics.jsonl").read_text().splitlines()[0])
        for w in (1, 2)
    ]
    assert logged[1]["loss"] == pytest.approx(logged[0]["loss"], rel=1e-5)
