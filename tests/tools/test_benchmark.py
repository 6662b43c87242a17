import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from rfcn.benchmark.cases import random_boxes
from rfcn.errors import UserError
from rfcn.tools import benchmark


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    benchmark.add_parser(parser.add_subparsers())
    return parser.parse_args(["benchmark", *argv])


def test_settings_quick_then_explicit_flags() -> None:
    settings = benchmark.settings_from_args(_parse(["--quick", "--size", "96", "--out", "x"]))
    assert settings.backbone == "resnet18"
    assert settings.size == 96
    assert settings.repeats == 2
    assert settings.c4_training
    full = benchmark.settings_from_args(_parse(["--out", "x", "--roi-counts", "300,2000"]))
    assert (full.backbone, full.size, full.roi_counts) == ("resnet101", 600, (300, 2000))
    assert not full.c4_training
    assert full.deformable and full.deformable_roi_counts == (300, 2000)
    assert not benchmark.settings_from_args(_parse(["--out", "x", "--no-deformable"])).deformable
    assert full.heads and not full.heads_only
    assert (full.heads_backbones, full.heads_num_classes) == (("resnet50", "resnet101"), (20, 80))
    assert full.heads_roi_counts == (300, 2000)
    assert settings.heads_backbones == ("resnet18",)
    heads = benchmark.settings_from_args(
        _parse(["--out", "x", "--heads-only", "--heads-backbones", "resnet18,resnet34"])
    )
    assert heads.heads_only and heads.heads_backbones == ("resnet18", "resnet34")
    assert (full.ps_roi_mode, full.rfcn_only) == (None, False)
    align = benchmark.settings_from_args(
        _parse(["--out", "x", "--ps-roi-mode", "align", "--rfcn-only"])
    )
    assert (align.ps_roi_mode, align.rfcn_only) == ("align", True)
    assert align.ps_roi_sampling_ratio is None  # the model's
    one = benchmark.settings_from_args(_parse(["--out", "x", "--ps-roi-sampling-ratio", "1"]))
    assert one.ps_roi_sampling_ratio == 1
    big = benchmark.settings_from_args(_parse(["--out", "x", "--size", "900"]))
    assert big.max_size >= 900 * 4 // 3  # the network input keeps its shorter side


@pytest.mark.parametrize(
    "bad",
    [
        ["--roi-counts", "0,5"],
        ["--roi-counts", "a"],
        ["--repeats", "0"],
        ["--ps-roi-mode", "max"],
        ["--ps-roi-sampling-ratio", "0"],
        ["--heads-backbones", "vgg16"],
        ["--heads-num-classes", "0"],
    ],
)
def test_bad_flags_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit, match=r"^2$"):  # argparse's usage error
        _parse(["--out", "x", *bad])


def test_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        benchmark.run(_parse(["--out", str(tmp_path / "missing" / "b.json")]))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="cuda"):
            benchmark.run(_parse(["--device", "cuda", "--out", str(tmp_path / "b.json")]))


def test_random_boxes_lie_inside_the_image() -> None:
    boxes = random_boxes(500, 60, 80, torch.Generator().manual_seed(0))
    assert boxes.shape == (500, 4)
    assert bool(
        (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 60).all()
    )
    assert bool((boxes[:, 2:] > boxes[:, :2]).all())


def _medians(tree: dict) -> list[float]:
    if "time" in tree:
        return [tree["time"]["median_ms"], tree["time"]["cpu_median_ms"]]
    return [m for value in tree.values() if isinstance(value, dict) for m in _medians(value)]


@pytest.mark.slow
def test_quick_benchmark_writes_the_documented_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = ["--quick", "--size", "96", "--roi-counts", "8,16", "--train-roi-counts", "16"]
    argv += ["--repeats", "2", "--deformable-roi-counts", "8,16", "--out", str(out)]
    argv += ["--heads-num-classes", "2", "--heads-roi-counts", "8"]
    assert benchmark.run(_parse(argv)) == 0
    result = json.loads(out.read_text())
    assert set(result) == {
        "heads",
        "deformable",
        "format_version",
        "machine",
        "settings",
        "inference",
        "ratios",
        "training",
        "fast_path",
        "targets",
    }
    assert result["machine"]["torch"] == torch.__version__
    assert result["settings"]["roi_counts"] == [8, 16]
    assert result["settings"]["network_input_hw"][0] == 96
    inference = result["inference"]
    assert set(inference["head"]["rfcn"]) == set(inference["head"]["c4"]) == {"8", "16"}
    assert set(inference["pipeline_given_rois"]["rfcn"]) == {"8", "16"}
    assert set(inference["pipeline"]["c4"]) == {"8"}
    assert inference["pipeline"]["rfcn"]["8"]["proposals"] == [8]
    assert set(result["training"]["rfcn"]) == set(result["training"]["c4"]) == {"16"}
    assert result["training"]["c4"]["16"]["rois"] == [16 + 3]  # given RoIs + ground truth
    variants = result["fast_path"]["variants"]
    assert {"no_grad", "inference_mode", "channels_last"} <= set(variants)
    for tree in (inference, result["training"], result["fast_path"]):
        medians = _medians(tree)
        assert medians and all(m > 0 and math.isfinite(m) for m in medians)
    for case in (inference["backbone"], result["training"]["rfcn"]["16"]):
        assert len(case["time"]["runs_ms"]) == 2
        assert case["time"]["q1_ms"] <= case["time"]["median_ms"] <= case["time"]["q3_ms"]
        assert case["memory"] is None or case["memory"]["peak_mib"] > 0
    # every ratio is the ratio of the medians it names
    assert set(result["ratios"]) == {"wall", "cpu"}
    ratios = result["ratios"]["wall"]
    head = inference["head"]
    assert ratios["rfcn_speedup_over_c4"]["head"]["16"] == pytest.approx(
        head["c4"]["16"]["time"]["median_ms"] / head["rfcn"]["16"]["time"]["median_ms"]
    )
    assert ratios["rfcn_over_backbone"]["pipeline"]["8"] == pytest.approx(
        inference["pipeline"]["rfcn"]["8"]["time"]["median_ms"]
        / inference["backbone"]["time"]["median_ms"]
    )
    given = inference["pipeline_given_rois"]["rfcn"]
    target = {t["name"]: t for t in result["targets"]}["rfcn_most_over_fewest_rois"]
    assert target["value"] == pytest.approx(
        given["16"]["time"]["median_ms"] / given["8"]["time"]["median_ms"]
    )
    assert target["met"] == (target["value"] <= 1.1)
    assert target["value_cpu"] == pytest.approx(
        given["16"]["time"]["cpu_median_ms"] / given["8"]["time"]["cpu_median_ms"]
    )
    reference = variants["inference_mode"]["time"]["median_ms"]
    assert variants["channels_last"]["speedup"] == pytest.approx(
        reference / variants["channels_last"]["time"]["median_ms"]
    )
    batched = result["fast_path"]["batched"]
    assert batched["per_image_ms"] == pytest.approx(batched["time"]["median_ms"] / 2)
    agreements = result["fast_path"]["bf16_agreement"]
    assert set(agreements) == {name for name in variants if "bf16" in name}
    for agreement in agreements.values():
        assert 0.0 <= agreement["detections"]["matched_fraction"] <= 1.0
        head = agreement["head_on_fixed_rois"]
        assert 0.0 < head["max_logit_error_relative"] < 0.5  # bf16 rounding, nothing worse
        assert 0.0 <= head["max_box_diff_px"] < 1.0
    for variant in variants.values():
        assert variant["over_backbone"] == pytest.approx(
            variant["time"]["median_ms"] / variant["backbone"]["time"]["median_ms"]
        )
    deformable = result["deformable"]
    assert list(deformable["variants"]) == ["plain", "dpsroi", "dconv5", "dpsroi_dconv5"]
    for cases in deformable["variants"].values():
        assert set(cases) == {"pipeline_given_rois", "head"}
        assert all(set(counts) == {"8", "16"} for counts in cases.values())
        medians = _medians(cases)
        assert medians and all(m > 0 and math.isfinite(m) for m in medians)
    both = deformable["variants"]["dpsroi_dconv5"]["head"]["16"]["time"]["median_ms"]
    plain = deformable["variants"]["plain"]["head"]["16"]["time"]["median_ms"]
    assert deformable["over_plain"]["wall"]["dpsroi_dconv5"]["head"]["16"] == pytest.approx(
        both / plain
    )
    table = capsys.readouterr().out
    assert "| 16 |" in table and "R-FCN head" in table and f"wrote {out}" in table
    assert "| dpsroi_dconv5 |" in table


def test_rfcn_only_align_benchmark_has_no_c4_rows(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = ["--quick", "--size", "64", "--roi-counts", "8,16", "--train-roi-counts", "16"]
    argv += ["--repeats", "1", "--rfcn-only", "--ps-roi-mode", "align", "--no-deformable"]
    argv += ["--ps-roi-sampling-ratio", "1", "--out", str(out)]
    assert benchmark.run(_parse(argv)) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["ps_roi_mode"] == "align"
    assert result["settings"]["ps_roi_sampling_ratio"] == 1
    inference = result["inference"]
    assert inference["head"]["c4"] == inference["pipeline"]["c4"] == {}
    assert set(inference["pipeline_given_rois"]["rfcn"]) == {"8", "16"}
    assert result["training"]["c4"] == {} and set(result["training"]["rfcn"]) == {"16"}
    assert result["fast_path"] is None
    targets = {t["name"]: t for t in result["targets"]}
    assert targets["rfcn_speedup_over_c4"]["value"] is None
    assert targets["rfcn_most_over_fewest_rois"]["value"] > 0
    table = capsys.readouterr().out
    assert "PS-RoI align (1x1 samples a bin)" in table and "| 16 | - | - |" in table


def test_calibrated_batch_norm_keeps_resnet101_at_unit_scale() -> None:
    """Random ResNet-101 activations blow up with initial statistics, not after calibration."""
    from rfcn.benchmark.cases import calibrate_batch_norm
    from rfcn.config import ModelConfig
    from rfcn.modeling.rfcn import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet101", min_size=(64,), max_size=100)).eval()
    image = [torch.rand(3, 64, 80)]
    batch, _ = model.transform(image)
    with torch.no_grad():
        before = model.backbone.trunk(batch.tensor).abs().mean()
        calibrate_batch_norm(model, image)
        after = model.backbone.trunk(batch.tensor)
    assert before > 1e3
    assert 0.05 < float(after.abs().mean()) < 20.0
    first_norm = model.backbone.trunk[1]
    stem = model.backbone.trunk[0](batch.tensor)
    torch.testing.assert_close(first_norm.running_mean, stem.mean(dim=(0, 2, 3)))


@pytest.mark.slow
def test_benchmark_runs_a_checkpoint_on_a_picture(tmp_path: Path) -> None:
    from PIL import Image

    from rfcn.config import Config, ModelConfig
    from rfcn.engine.checkpoint import model_state, save_checkpoint
    from rfcn.modeling.rfcn import build_model

    cfg = Config(model=ModelConfig(backbone="resnet18", num_classes=2, k=3, head_channels=32))
    save_checkpoint(tmp_path / "model.pt", model_state(build_model(cfg.model), cfg, ["cat", "dog"]))
    Image.fromarray((torch.rand(70, 120, 3) * 255).byte().numpy()).save(tmp_path / "p.png")
    out = tmp_path / "bench.json"
    argv = ["--quick", "--size", "80", "--roi-counts", "8,16", "--train-roi-counts", "16"]
    argv += ["--repeats", "1", "--no-c4-training", "--batch-size", "1", "--no-deformable"]
    argv += ["--weights", str(tmp_path / "model.pt"), "--image", str(tmp_path / "p.png")]
    assert benchmark.run(_parse([*argv, "--out", str(out)])) == 0
    result = json.loads(out.read_text())
    settings = result["settings"]
    assert (settings["num_classes"], settings["k"]) == (2, 3)
    assert settings["input_image_hw"] == [70, 120]
    assert settings["network_input_hw"][0] == 96  # 80 px shorter side, padded to 32
    assert result["training"]["c4"] == {}
    assert "deformable" not in result
    with pytest.raises(UserError, match="not found"):
        benchmark.run(_parse([*argv[:-2], "--image", str(tmp_path / "no.png"), "--out", str(out)]))


def test_benchmark_refuses_a_checkpoint_of_another_head(tmp_path: Path) -> None:
    from rfcn.config import Config, ModelConfig
    from rfcn.engine.checkpoint import model_state, save_checkpoint
    from rfcn.modeling.rfcn import build_model

    cfg = Config(model=ModelConfig(backbone="resnet18", backbone_width=8, head="light_head"))
    save_checkpoint(tmp_path / "light.pt", model_state(build_model(cfg.model), cfg, ["a"]))
    argv = ["--quick", "--weights", str(tmp_path / "light.pt"), "--out", str(tmp_path / "b.json")]
    with pytest.raises(UserError, match=r"light\.pt: holds a model.head=light_head model"):
        benchmark.run(_parse(argv))
    assert not (tmp_path / "b.json").exists()


def test_heads_side_by_side_alone(tmp_path: Path, capsys) -> None:
    """R-FCN, the light head, C4 and torchvision's FPN at two C, FLOPs and ratios over R-FCN."""
    out = tmp_path / "bench.json"
    argv = ["--quick", "--heads-only", "--size", "64", "--heads-num-classes", "2,5"]
    argv += ["--heads-roi-counts", "4,8", "--repeats", "1", "--out", str(out)]
    assert benchmark.run(_parse(argv)) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"format_version", "machine", "settings", "heads"}
    results = result["heads"]["results"]["resnet18"]
    assert set(results) == {"2", "5"}
    for detectors in results.values():
        assert list(detectors) == ["rfcn", "light_head", "c4", "tv_fpn"]
        for case in detectors.values():
            assert set(case["head"]) == set(case["pipeline_given_rois"]) == {"4", "8"}
            assert all(case["head"][n]["flops"] > 0 for n in ("4", "8"))
            assert _medians(case) and all(m > 0 for m in _medians(case))
        # per-RoI layers: twice the RoIs, twice their FLOPs; R-FCN's voting has none
        c4 = detectors["c4"]["head"]
        assert c4["8"]["flops"] == 2 * c4["4"]["flops"]
        assert detectors["rfcn"]["head"]["8"]["flops"] == detectors["rfcn"]["head"]["4"]["flops"]
    # R-FCN's score maps grow with C: (C + 1) k^2 channels
    assert results["5"]["rfcn"]["head"]["4"]["flops"] > results["2"]["rfcn"]["head"]["4"]["flops"]
    over = result["heads"]["over_rfcn"]["resnet18"]["5"]["light_head"]["8"]
    light, rfcn = results["5"]["light_head"]["head"]["8"], results["5"]["rfcn"]["head"]["8"]
    assert over["head_flops"] == pytest.approx(light["flops"] / rfcn["flops"])
    assert over["head"] == pytest.approx(light["time"]["median_ms"] / rfcn["time"]["median_ms"])
    table = capsys.readouterr().out
    assert "| resnet18 | 5 | 8 | light head |" in table and "torchvision FPN" in table
