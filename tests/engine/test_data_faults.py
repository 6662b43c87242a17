"""Unreadable images lose nothing: training saves its state before it stops naming the file,
or, with ``data.skip_unreadable``, leaves the image out and lists it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from engine_fixtures import deterministic, write_voc_fixture
from training_process import write_config

from rfcn.cli import main
from rfcn.engine.checkpoint import load_checkpoint
from rfcn.engine.preemption import ResumableError
from rfcn.engine.trainer import train


@pytest.fixture
def broken_voc(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """The tiny VOC set with image 3 truncated; returns the root, the image and its bytes."""
    root = write_voc_fixture(tmp_path / "voc")
    image = root / "JPEGImages" / "img003.jpg"
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 3])
    return root, image, good


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_saves_the_state_first_and_the_run_resumes_exactly(
    make_config: Callable,
    broken_voc: tuple[Path, Path, bytes],
    tmp_path: Path,
    workers: int,
) -> None:
    root, image, good = broken_voc
    cfg = make_config(data={"roots": [str(root)], "workers": workers})
    with deterministic():
        straight = train(make_config(), tmp_path / "straight", progress=False)
        with pytest.raises(ResumableError, match=rf"^{image}: cannot decode image") as error:
            train(cfg, tmp_path / "run", progress=False)
        state = load_checkpoint(tmp_path / "run" / "last.pt")
        assert state["iteration"] == error.value.iteration < 6
        image.write_bytes(good)
        resumed = train(cfg, tmp_path / "run", resume=True, progress=False)
    for name, value in load_checkpoint(straight.checkpoint)["model"].items():
        assert torch.equal(load_checkpoint(resumed.checkpoint)["model"][name], value), name


def test_the_command_names_the_file_and_the_resume_command(
    make_config: Callable,
    broken_voc: tuple[Path, Path, bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, image, _ = broken_voc
    config = write_config(make_config(data={"roots": [str(root)]}), tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: {image}: cannot decode image: ")
    iteration = load_checkpoint(out / "last.pt")["iteration"]
    assert err.endswith(
        f"; state saved at iteration {iteration}; fix it, then resume with: rfcn train "
        f"--config {config} --out {out} --resume --no-progress\n"
    )


def _split(root: Path, name: str, ids: list[str]) -> None:
    (root / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")


def test_skip_unreadable_leaves_images_out_and_lists_them(
    make_config: Callable, broken_voc: tuple[Path, Path, bytes], tmp_path: Path
) -> None:
    root, image, _ = broken_voc
    empty = root / "JPEGImages" / "img001.jpg"
    _split(root, "val", ["img001", "img002", "img003"])
    cfg = make_config(
        data={"roots": [str(root)], "skip_unreadable": True, "val_split": "val"},
        train={"eval_every": 6},
    )
    empty.write_bytes(b"")
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.skipped_images == {
        str(image): result.skipped_images[str(image)],
        str(empty): "empty image file (0 bytes)",
    }
    assert "truncated" in result.skipped_images[str(image)].lower()
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert logged[-1]["skipped_images"] == 2
    assert {entry["file"] for entry in logged[-1]["skipped_files"]} == {str(image), str(empty)}
    assert result.best_validation is not None  # validation ran on the readable image


def test_an_unreadable_validation_image_saves_the_state_and_validates_on_resume(
    make_config: Callable, broken_voc: tuple[Path, Path, bytes], tmp_path: Path
) -> None:
    root, image, good = broken_voc
    _split(root, "trainval", ["img000", "img001", "img002", "img004", "img005"])
    _split(root, "val", ["img003"])
    cfg = make_config(data={"roots": [str(root)], "val_split": "val"}, train={"eval_every": 3})
    with pytest.raises(ResumableError, match=rf"^{image}: cannot decode image") as error:
        train(cfg, tmp_path / "run", progress=False)
    assert error.value.iteration == 3
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["iteration"] == 3 and state["validation_pending"]
    image.write_bytes(good)
    resumed = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert [e["iteration"] for e in resumed.history if "val_mAP" in e] == [3, 6]
