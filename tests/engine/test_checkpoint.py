import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rfcn import files
from rfcn.config import Config, config_from_dict
from rfcn.engine import checkpoint
from rfcn.engine.checkpoint import (
    load_checkpoint,
    load_model,
    model_state,
    save_checkpoint,
)
from rfcn.errors import UserError
from rfcn.modeling.rfcn import build_model


def _small_config(num_classes: int) -> Config:
    return config_from_dict(
        {"model": {"backbone": "resnet18", "k": 3, "head_channels": 8, "num_classes": num_classes}}
    )


def _checkpoint(path: Path, num_classes: int) -> torch.nn.Module:
    cfg = _small_config(num_classes)
    model = build_model(cfg.model)
    names = [f"class{i}" for i in range(num_classes)]
    save_checkpoint(path, {**model_state(model, cfg, names), "iteration": 5})
    return model


def test_round_trip_rebuilds_the_model(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    trained = _checkpoint(path, 2)
    model, cfg, class_names = load_model(path)
    assert class_names == ["class0", "class1"]
    assert cfg.model.num_classes == 2 and not model.training
    for name, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert load_checkpoint(path)["iteration"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left


def test_test_settings_can_come_from_another_config(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    _checkpoint(path, 2)
    scoring = _small_config(5)  # another class count: only its test-time settings are taken
    scoring.model.box_voting_iou, scoring.model.nms_thresh = 0.5, 0.45
    model, cfg, class_names = load_model(path, test_settings=scoring)
    assert (model.box_voting_iou, model.nms_thresh) == (0.5, 0.45)
    assert cfg.model.box_voting_iou == 0.5 and cfg.model.num_classes == 2
    assert class_names == ["class0", "class1"]


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {}, "config": {}, "format_version": 1, "iteration": 1})
    before = path.read_bytes()

    def broken_save(obj: object, stream: object) -> None:
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"iteration": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_class_count_mismatch_is_named(tmp_path: Path) -> None:
    path = tmp_path / "voc.pt"
    _checkpoint(path, 20)
    with pytest.raises(UserError) as error:
        load_model(path, cfg=_small_config(3))
    assert error.value.source == str(path)
    assert error.value.problem == (
        "checkpoint has 21-way classifier (20 classes), config expects 4 (3 classes)"
    )


def test_structure_mismatch_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    _checkpoint(path, 2)
    other = _small_config(2)
    other.model.k = 5
    with pytest.raises(UserError, match=r"model\.k=3, config has model\.k=5"):
        load_model(path, cfg=other)


@pytest.mark.parametrize(
    ("saved", "wanted", "message"),
    [
        ({}, {"deformable_psroi": True}, r"model\.deformable_psroi=False, config has .*=True"),
        ({"deformable_conv5": "v1"}, {}, r"model\.deformable_conv5=v1, config has .*=none"),
        ({"deformable_conv5": "v1"}, {"deformable_conv5": "v2"}, r"deformable_conv5=v1, .*=v2"),
        (
            {"deformable_conv5": "v1", "deformable_conv5_groups": 2},
            {"deformable_conv5": "v1"},
            r"model\.deformable_conv5_groups=2, config has .*=4",
        ),
    ],
)
def test_deformable_settings_that_differ_are_named(
    tmp_path: Path, saved: dict, wanted: dict, message: str
) -> None:
    path = tmp_path / "deformable.pt"
    cfg = _small_config(2)
    cfg.model.__dict__.update(saved)
    names = ["a", "b"]
    save_checkpoint(path, {**model_state(build_model(cfg.model), cfg, names), "iteration": 1})
    other = _small_config(2)
    other.model.__dict__.update(wanted)
    with pytest.raises(UserError, match=message):
        load_model(path, cfg=other)


def test_offset_groups_do_not_matter_while_conv5_is_plain(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    _checkpoint(path, 2)
    other = _small_config(2)
    other.model.deformable_conv5_groups = 8
    _, cfg, _ = load_model(path, cfg=other)
    assert cfg.model.deformable_conv5_groups == 8


def test_missing_corrupt_and_foreign_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(UserError, match="not an rfcn checkpoint"):
        load_checkpoint(foreign)
    old = tmp_path / "old.pt"
    torch.save({"model": {}, "config": {}, "format_version": 0}, old)
    with pytest.raises(UserError, match="format version 0"):
        load_checkpoint(old)


@pytest.mark.parametrize(
    "content",
    [
        b"hello",  # torch.load raised KeyError on these 5 bytes
        b"ustar" + bytes(600),  # ... and IndexError (pop from empty list) on this tar-like file
    ],
    ids=["five_bytes_of_text", "ustar_605_bytes"],
)
def test_bytes_that_crashed_torch_load_are_user_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="cannot read checkpoint") as error:
        load_checkpoint(path)
    assert error.value.source == str(path) and len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({"model": [1, 2], "config": {}, "format_version": 1}, "weights are not tensors"),
        ({"model": {"w": "text"}, "config": {}, "format_version": 1}, "weights are not tensors"),
        ({"model": {}, "config": [1], "format_version": 1}, "config is not a mapping"),
    ],
)
def test_checkpoints_of_the_wrong_shape_are_user_errors(
    tmp_path: Path, state: dict, problem: str
) -> None:
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(UserError, match=problem):
        load_checkpoint(path)


class _Payload:
    def __reduce__(self) -> tuple:
        return (print, ("code ran while loading",))


def test_loading_never_runs_code_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "format_version": 1, "x": _Payload()}, path)
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_the_seal_is_checked_and_a_sealed_file_still_loads_with_torch(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(1000.0)}, "config": {}, "format_version": 1})
    assert path.read_bytes()[-76:].startswith(b"rfcn-sha256:")
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.arange(1000.0))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged checkpoint: its SHA-256 differs") as error:
        load_checkpoint(path)
    assert error.value.source == str(path)


def test_an_unsealed_checkpoint_is_checked_against_its_zip_crcs(tmp_path: Path) -> None:
    """A file saved before the seal existed: plain torch.save."""
    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.arange(1000.0)}, "config": {}, "format_version": 1}, path)
    assert load_checkpoint(path)["model"]["w"][7] == 7
    data = bytearray(path.read_bytes())
    data[data.index(torch.arange(1000.0).numpy().tobytes()[400:408])] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"damaged checkpoint: the CRC of its record .*/data/0"):
        load_checkpoint(path)


def test_a_full_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {}, "config": {}, "format_version": 1, "iteration": 1})
    before = path.read_bytes()

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)  # the temp file is written, then the disk is full
    with pytest.raises(
        UserError,
        match=r"last\.pt: cannot write the checkpoint: No space left on device; "
        "the previous file is intact",
    ):
        save_checkpoint(path, {"model": {}, "config": {}, "format_version": 1, "iteration": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    command = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)]
    if subprocess.run(command, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_really_full_disk_keeps_the_previous_checkpoint(small_tmpfs: Path) -> None:
    path = small_tmpfs / "last.pt"
    small = {"model": {"w": torch.zeros(1000)}, "config": {}, "format_version": 1}
    save_checkpoint(path, small)
    with pytest.raises(UserError, match="No space left on device; the previous file is intact"):
        save_checkpoint(path, {**small, "model": {"w": torch.zeros(1_000_000)}})
    assert torch.equal(load_checkpoint(path)["model"]["w"], small["model"]["w"])
    assert [p.name for p in small_tmpfs.iterdir()] == ["last.pt"]
