import argparse
import json
from pathlib import Path

import pytest
import torch
from ground_truth import score_ground_truth

from rfcn.config import TEST_TIME_SETTINGS, config_to_dict
from rfcn.engine.experiments import METRICS_FILE, plan_runs, run_experiment
from rfcn.errors import TrainingDiverged, UserError
from rfcn.modeling.rfcn import build_model
from rfcn.record_tables import render
from rfcn.records import load_records
from rfcn.tools import ablate, demo
from rfcn.tools.demo import demo_config


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ablate.add_parser(parser.add_subparsers())
    return parser.parse_args(["ablate", *argv])


def _changed(base: dict, other: dict, prefix: str = "") -> set[str]:
    if isinstance(base, dict):
        return {k for key in base for k in _changed(base[key], other[key], f"{prefix}{key}.")}
    return set() if base == other else {prefix.rstrip(".")}


def test_each_variant_changes_only_its_own_keys(tmp_path: Path) -> None:
    base = config_to_dict(demo_config(tmp_path))
    for name, overrides in ablate.VARIANTS.items():
        keys = {item.split("=")[0] for item in overrides}
        variant = config_to_dict(demo_config(tmp_path, overrides=list(overrides)))
        assert _changed(base, variant) <= keys, name
    for name, trained_as in ablate.TRAINED_AS.items():  # scored with trained_as's weights
        scored = config_to_dict(demo_config(tmp_path, overrides=list(ablate.VARIANTS[name])))
        trained = config_to_dict(demo_config(tmp_path, overrides=list(ablate.VARIANTS[trained_as])))
        assert _changed(trained, scored) <= set(TEST_TIME_SETTINGS), name
    plain_nms = demo_config(tmp_path, overrides=list(ablate.VARIANTS["k7_nms"]))
    assert demo_config(tmp_path).model.box_voting_iou == 0.5  # the demo votes
    assert (plain_nms.model.box_voting_iou, plain_nms.model.box_refinement) == (0.0, False)
    table_2 = [demo_config(tmp_path, overrides=list(ablate.VARIANTS[n])) for n in ablate.TABLE_2]
    assert [(c.model.k, c.model.atrous) for c in table_2] == [
        (1, True), (3, True), (7, True), (7, False)
    ]  # fmt: skip


def test_a_test_time_row_of_a_diverged_run_is_recorded_as_diverged(tmp_path: Path) -> None:
    """``pool_vote`` scores ``pool``'s weights; where ``pool``'s training diverged there are
    none, and its run is kept as the same divergence."""
    trained = tmp_path / "pool" / "seed0"
    trained.mkdir(parents=True)
    (trained / METRICS_FILE).write_text(json.dumps({"seed": 0, "diverged_at": 9}))
    runs = plan_runs(tmp_path, ["pool_vote"], [0], lambda v: demo_config(tmp_path, quick=True))
    weights_of = {str(runs[0].folder): str(trained)}
    with pytest.raises(TrainingDiverged) as caught:
        ablate.score_trained_weights(weights_of, runs[0].cfg, runs[0].folder, False, False)
    assert caught.value.iteration == 9
    (finished,) = run_experiment(
        runs, lambda *a: ablate.score_trained_weights(weights_of, *a), progress=False
    )
    assert finished.metrics["diverged_at"] == 9 and "voc07_mAP50" not in finished.metrics


def test_the_torchvision_settings_are_those_torchvision_builds(tmp_path: Path) -> None:
    """TV_SETTINGS must name what the tv_faster_rcnn row gets from torchvision's own defaults:
    read them off the model torchvision builds for that row."""
    model = build_model(demo_config(tmp_path, overrides=["model.head=torchvision"]).model)
    rpn, heads = model.rpn, model.head
    given = demo_config(tmp_path, overrides=list(ablate.TV_SETTINGS)).model
    assert not given.ohem
    assert (given.rpn_pre_nms_train, given.rpn_post_nms_train) == (
        rpn._pre_nms_top_n["training"], rpn._post_nms_top_n["training"]
    )  # fmt: skip
    assert (given.rpn_pre_nms_test, given.rpn_post_nms_test) == (
        rpn._pre_nms_top_n["testing"], rpn._post_nms_top_n["testing"]
    )  # fmt: skip
    sampler = heads.fg_bg_sampler
    assert (given.roi_batch_per_image, given.roi_positive_fraction, given.nms_thresh) == (
        sampler.batch_size_per_image, sampler.positive_fraction, heads.nms_thresh
    )  # fmt: skip


def test_a_learning_rate_search_trains_each_row_at_each_rate(tmp_path: Path) -> None:
    rows, trained_as = ablate.plan_rows(["pool_vote"], [0.02, 0.1])
    assert list(rows) == ["pool_lr0.02", "pool_vote_lr0.02", "pool_lr0.1", "pool_vote_lr0.1"]
    # a test-time row scores the weights trained at its own rate
    assert trained_as == {"pool_vote_lr0.02": "pool_lr0.02", "pool_vote_lr0.1": "pool_lr0.1"}
    for name, rate in (("pool_lr0.1", 0.1), ("pool_vote_lr0.02", 0.02)):
        cfg = demo_config(tmp_path, overrides=list(rows[name]))
        assert (cfg.train.base_lr, cfg.model.ps_roi_mode) == (rate, "pool")
    assert cfg.model.box_voting_iou == 0.5
    assert ablate.plan_rows(["pool_vote"]) == (
        {"pool": ablate.VARIANTS["pool"], "pool_vote": ablate.VARIANTS["pool_vote"]},
        {"pool_vote": "pool"},
    )
    # a row may name its own rate: the same row as --learning-rates gives
    named = ablate.plan_rows(["k7", "pool_vote_lr0.1"])
    assert list(named[0]) == ["k7", "pool_lr0.1", "pool_vote_lr0.1"]
    assert named[0]["pool_vote_lr0.1"] == rows["pool_vote_lr0.1"]
    assert named[1] == {"pool_vote_lr0.1": "pool_lr0.1"}


def test_bad_arguments_are_user_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="--reference"):
        ablate.run(_parse(["--out", str(tmp_path), "--quick", "--reference", "k7",
                           "--variants", "k1", "k3"]))  # fmt: skip
    with pytest.raises(UserError, match="--seeds"):
        ablate.run(_parse(["--out", str(tmp_path), "--quick", "--seeds", "0"]))
    for row in ("k8", "k7_lr", "k7_lr0", "k7_lr-1", "k7_lrnan", "k9_lr0.1"):
        with pytest.raises(UserError, match=f"unknown row '{row}'"):
            ablate.run(_parse(["--out", str(tmp_path), "--quick", "--variants", row]))
    with pytest.raises(UserError, match="--learning-rates"):
        ablate.run(_parse(["--out", str(tmp_path), "--quick", "--learning-rates", "0.1", "0"]))
    with pytest.raises(UserError, match="--learning-rates"):
        ablate.run(_parse(["--out", str(tmp_path), "--quick", "--learning-rates", "0.1",
                           "--variants", "k7_lr0.2"]))  # fmt: skip
    with pytest.raises(UserError, match="--learning-rates"):
        ablate.run(_parse(["--out", str(tmp_path), "--quick", "--learning-rates", "0.1",
                           "--set", "train.base_lr=0.2"]))  # fmt: skip
    with pytest.raises(UserError, match="--learning-rates"):  # --set must not override a row's rate
        ablate.run(_parse(["--out", str(tmp_path), "--quick", "--variants", "k7_lr0.1",
                           "--set", "train.base_lr=0.2"]))  # fmt: skip
    monkeypatch.setitem(ablate.VARIANTS, "other_data", ("data.synthetic_seed=3",))
    with pytest.raises(UserError, match=r"must not change data\.\*"):
        ablate.run(_parse(["--out", str(tmp_path), "--quick", "--variants", "k1", "other_data"]))


@pytest.mark.slow
def test_quick_ablation_with_seeds_resumes_and_summarises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, records = tmp_path / "ablation", tmp_path / "records"
    records.mkdir()
    argv = ["--out", str(out), "--quick", "--threads", "1", "--no-progress", "--jobs", "2",
            "--iterations", "2", "--variants", "k7_dpsroi", "c4_vote", "--seeds", "2",
            "--record", str(records / "first.json")]  # fmt: skip
    # seed 2 of the same rows, in another command, pools with seeds 0 and 1 into one table
    more_seeds = ["--out", str(tmp_path / "more"), *argv[2:-1], str(records / "more.json"),
                  "--set", "train.seed=2", "--seeds", "1"]  # fmt: skip
    threads = torch.get_num_threads()
    try:
        assert ablate.run(_parse(argv)) == 0
        first = json.loads((out / "ablation.json").read_text())
        assert ablate.run(_parse(argv)) == 0  # every run is found finished
        assert ablate.run(_parse(more_seeds)) == 0
    finally:
        torch.set_num_threads(threads)
    pooled = render("ablation", ["first", "more"], load_records(records), "")
    assert "| k7_dpsroi | 3 |" in pooled and "| c4_vote | 3 |" in pooled
    assert "over seeds 0, 1, 2;" in pooled and "Seeds 2: " in pooled
    printed = capsys.readouterr().out
    assert printed.count("scored with the weights of") == 3
    assert printed.count("finished earlier") == 6
    result = json.loads((out / "ablation.json").read_text())
    assert result["runs"] == first["runs"]
    assert result["reference"] == "k7_dpsroi"
    # c4_vote only re-scores c4's weights, so c4 is trained and reported too
    assert [row["variant"] for row in result["variants"]] == ["k7_dpsroi", "c4", "c4_vote"]
    for variant in ("k7_dpsroi", "c4", "c4_vote"):
        runs = result["runs"][variant]
        assert [run["seed"] for run in runs] == [0, 1]
        for run in runs:
            assert 0.0 <= run["voc07_mAP50"] <= 1.0 and 0.0 <= run["recall50"] <= 1.0
            assert run["iterations"] == 2
            trained = variant != "c4_vote"
            assert (Path(run["folder"]) / "model_final.pt").is_file() == trained
            # only deformable PS-RoI pooling has learned bin positions to draw
            parts = (Path(run["folder"]) / "deformable_parts.png").is_file()
            assert parts == (variant == "k7_dpsroi")
    for c4, voted in zip(result["runs"]["c4"], result["runs"]["c4_vote"], strict=True):
        assert voted["weights_from"] == c4["folder"]
        assert voted["train_seconds"] == c4["train_seconds"]
        assert voted["test_objects"] == c4["test_objects"]
    assert {d["variant"] for d in result["differences"]} == {"c4", "c4_vote"}
    assert result["overrides"]["c4"] == [
        "model.head=c4",
        "model.box_mode=class",
        "model.ps_roi_mode=pool",
    ]
    assert "mean ± sd over seeds" in printed and "every run" in printed


@pytest.mark.slow
def test_the_torchvision_and_light_head_rows_train_save_and_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchvision's Faster R-CNN and the light head go through the same trainer, checkpoint
    and evaluator. Two iterations find nothing, so each run scores the test split's ground
    truth as its detections (the model still runs): every row must report exactly 1."""
    out = tmp_path / "ablation"
    argv = ["--out", str(out), "--quick", "--threads", "1", "--no-progress",
            "--iterations", "2", "--variants", "tv_faster_rcnn", "light_head"]  # fmt: skip
    assert "tv_faster_rcnn" in ablate.VARIANTS
    score_ground_truth(monkeypatch, demo)  # --jobs 1: the runs go in this process
    threads = torch.get_num_threads()
    try:
        assert ablate.run(_parse(argv)) == 0
    finally:
        torch.set_num_threads(threads)
    runs = json.loads((out / "ablation.json").read_text())["runs"]
    for variant in ("light_head", "tv_faster_rcnn"):
        (row,) = runs[variant]
        scores = [row[key] for key in ("voc07_mAP50", "coco_AP", "recall50")]
        assert scores == [1.0, 1.0, 1.0], variant
    (run,) = runs["tv_faster_rcnn"]
    assert run["iterations"] == 2
    assert run["coco_AP"] is not None and run["recall50_small"] is not None
    saved = torch.load(Path(run["folder"]) / "model_final.pt", weights_only=True)
    assert saved["config"]["model"]["head"] == "torchvision"
    assert any(name.startswith("head.box_head.") for name in saved["model"])
