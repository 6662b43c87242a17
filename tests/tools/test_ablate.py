import argparse
import json
from pathlib import Path

import pytest
import torch

from rfcn.tools import ablate


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ablate.add_parser(parser.add_subparsers())
    return parser.parse_args(["ablate", *argv])


def test_format_table_lists_every_variant() -> None:
    rows = [
        {"variant": "k1", "k": 1, "atrous": True, "voc07_mAP50": 0.5, "coco_AP": None,
         "train_seconds": 12.0, "deformable_psroi": False, "deformable_conv5": "none"},
        {"variant": "k7_no_atrous", "k": 7, "atrous": False, "voc07_mAP50": 0.875,
         "coco_AP": 0.4, "train_seconds": 9.4, "deformable_psroi": False,
         "deformable_conv5": "none"},
        {"variant": "k7_dpsroi_dconv5", "k": 7, "atrous": True, "voc07_mAP50": 0.9,
         "coco_AP": 0.5, "train_seconds": 20.0, "deformable_psroi": True,
         "deformable_conv5": "v1"},
    ]  # fmt: skip
    lines = ablate.format_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[1].split() == ["k1", "1", "yes", "-", "50.0", "n/a", "12"]
    assert lines[2].split() == ["k7_no_atrous", "7", "no", "-", "87.5", "40.0", "9"]
    assert lines[3].split() == [
        "k7_dpsroi_dconv5", "7", "yes", "PS-RoI", "+", "conv5", "v1", "90.0", "50.0", "20"
    ]  # fmt: skip


def test_variants_differ_only_in_k_atrous_and_deformable_modules(tmp_path: Path) -> None:
    from rfcn.config import config_to_dict
    from rfcn.tools.demo import demo_config

    configs = {
        name: config_to_dict(demo_config(tmp_path, False, None, list(overrides)))
        for name, overrides in ablate.VARIANTS.items()
    }
    assert [(c["model"]["k"], c["model"]["atrous"]) for c in configs.values()] == [
        (1, True), (3, True), (7, True), (7, False), (7, True), (7, True), (7, True)
    ]  # fmt: skip
    deformable = [
        (c["model"]["deformable_psroi"], c["model"]["deformable_conv5"]) for c in configs.values()
    ]
    assert deformable == [(False, "none")] * 4 + [(True, "none"), (False, "v1"), (True, "v1")]
    for c in configs.values():
        for key in ("k", "atrous", "deformable_psroi", "deformable_conv5"):
            c["model"].pop(key)
    first = next(iter(configs.values()))
    assert all(c == first for c in configs.values())


@pytest.mark.slow
def test_quick_ablation_writes_all_variants(tmp_path: Path) -> None:
    out = tmp_path / "ablation"
    args = _parse(["--out", str(out), "--quick", "--threads", "1", "--no-progress",
                   "--iterations", "2"])  # fmt: skip
    threads = torch.get_num_threads()
    try:
        assert ablate.run(args) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((out / "ablation.json").read_text())
    rows = result["variants"]
    assert [row["variant"] for row in rows] == list(ablate.VARIANTS)
    for row in rows:
        assert 0.0 <= row["voc07_mAP50"] <= 1.0
        assert row["iterations"] == 2
        assert (out / row["variant"] / "model_final.pt").is_file()
        parts = out / row["variant"] / "deformable_parts.png"
        assert parts.is_file() == row["deformable_psroi"]
    assert [row["k"] for row in rows] == [1, 3, 7, 7, 7, 7, 7]
    assert [row["atrous"] for row in rows] == [True, True, True, False, True, True, True]
