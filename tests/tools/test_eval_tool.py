"""``rfcn eval``: results files and metrics, the eval -> evaluate round trip, mismatch errors,
batches that give the batch-1 detections, and torchrun shards that give one process's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from deploy_fixtures import record_batches, tiny_config, write_checkpoint, write_voc_test_split
from overfit import Overfit, one_thread, write_overfit_run
from process_group import act_as_torchrun_process, free_port

from rfcn.cli import main
from rfcn.config import Config, config_from_dict, config_to_dict, save_config
from rfcn.data.build import build_dataset
from rfcn.data.synthetic import CLASS_NAMES, COCO_JSON, TEST_SPLIT, ensure_synthetic_dataset
from rfcn.evaluation.evaluator import evaluate_detections
from rfcn.inference.predictor import Predictor

# (width, height): at 128 px (longest side 160) 128x96 and 128x100 both pad to 128x160, so
# they may share a batch; the others pad to sizes of their own.
SIZES = [(128, 96), (128, 100), (96, 128), (128, 96), (140, 100), (128, 100), (90, 90)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, Path]:
    """The tiny config (saved as YAML), its checkpoint, and the generated synthetic data."""
    root = tmp_path_factory.mktemp("eval")
    cfg = tiny_config(root / "data")
    ensure_synthetic_dataset(root / "data", cfg.data)
    save_config(cfg, root / "config.yaml")
    return cfg, root / "config.yaml", write_checkpoint(root / "tiny.pt", cfg)


def run_eval(config: Path, weights: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "eval",
            "--config",
            str(config),
            "--weights",
            str(weights),
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]
    )


def run_evaluate(root: Path, results: Path, metric: str, out: Path, *extra: str) -> int:
    """``rfcn evaluate`` on the test split of ``root``: scores a results file with no model."""
    return main(
        [
            "evaluate",
            "--dataset",
            str(root),
            "--split",
            TEST_SPLIT,
            "--detections",
            str(results),
            "--metric",
            metric,
            "--out",
            str(out),
            *extra,
        ]
    )


def test_voc_results_round_trip_through_rfcn_evaluate(
    setup: tuple[Config, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, config, weights = setup
    assert run_eval(config, weights, tmp_path / "eval") == 0
    results = tmp_path / "eval" / "results"
    assert sorted(p.name for p in results.iterdir()) == sorted(
        f"comp4_det_test_{name}.txt" for name in CLASS_NAMES
    )
    line = next(line for p in results.iterdir() for line in p.read_text().splitlines())
    image_id, *numbers = line.split()
    assert image_id.startswith("test_") and len(numbers) == 5
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    root = Path(cfg.data.roots[0])
    code = run_evaluate(root, results, "voc07", tmp_path / "evaluate.json")
    assert code == 0
    assert json.loads((tmp_path / "evaluate.json").read_text()) == metrics
    # Independently: the Predictor over the same images, scored in memory (no files).
    dataset = build_dataset(cfg.data, train=False)
    predictor = Predictor.from_checkpoint(weights)
    detections = {
        target["image_id"]: predictor.predict_tensors([image])[0] for image, target in dataset
    }
    in_memory = evaluate_detections(
        detections, list(CLASS_NAMES), "voc07", dataset_root=root, split=TEST_SPLIT
    ).metrics
    assert in_memory == metrics
    # not 0 == 0: the random model finds a triangle or two (its trained counterpart is below)
    assert metrics["mAP"] > 0.0 and set(metrics["AP"]) <= set(CLASS_NAMES)
    assert "mAP" in capsys.readouterr().out


def test_a_trained_checkpoint_finds_the_object_it_learned(
    overfit_square: Overfit, tmp_path: Path
) -> None:
    """A real trained checkpoint (:mod:`overfit`) on the image it was trained on: its top
    square detection is the square, so AP 1.0, which a head that ranks or places boxes wrongly,
    a wrong label mapping or a results file written or read back wrongly would not score."""
    config, weights = write_overfit_run(overfit_square, tmp_path / "run")
    with one_thread():
        assert run_eval(config, weights, tmp_path / "eval") == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics == {"mAP": 1.0, "AP": {"circle": None, "square": 1.0}}  # circle: no object


def test_coco_results_round_trip(setup: tuple[Config, Path, Path], tmp_path: Path) -> None:
    cfg, _, weights = setup
    root = Path(cfg.data.roots[0])
    values = config_to_dict(cfg)
    values["data"].update(
        format="coco",
        coco_test_json=COCO_JSON.format(split=TEST_SPLIT),
        coco_test_images="JPEGImages",
    )
    values["eval"]["metric"] = "coco"
    config = tmp_path / "coco.yaml"
    save_config(config_from_dict(values), config)
    assert run_eval(config, weights, tmp_path / "eval") == 0
    results = tmp_path / "eval" / "detections.json"
    assert {"image_id", "category_id", "bbox", "score"} <= set(json.loads(results.read_text())[0])
    code = run_evaluate(
        root,
        results,
        "coco",
        tmp_path / "evaluate.json",
        "--annotations",
        str(root / COCO_JSON.format(split=TEST_SPLIT)),
    )
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert json.loads((tmp_path / "evaluate.json").read_text()) == metrics
    assert "AP" in metrics and "AP50" in metrics


def test_multi_scale_and_flip_options_reach_the_predictor(
    setup: tuple[Config, Path, Path], tmp_path: Path
) -> None:
    """Each option alone changes the detections, and the two together differ from either
    alone: an option that did not take effect would leave a pair of results files equal."""
    _, config, weights = setup
    runs = {
        "single": (),
        "scales": ("--scales", "96", "128"),
        "flip": ("--flip",),
        "both": ("--scales", "96", "128", "--flip"),
    }
    results = {}
    for name, flags in runs.items():
        assert run_eval(config, weights, tmp_path / name, *flags) == 0
        results[name] = (tmp_path / name / "results" / "comp4_det_test_circle.txt").read_text()
    assert results["scales"] != results["single"]
    assert results["flip"] != results["single"]
    assert results["both"] != results["scales"] and results["both"] != results["flip"]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (["model.num_classes=5"], "6 classes), config expects 6 (5 classes)"),
        (["model.k=5"], "model.k=3, config has model.k=5"),
        (
            ["data.class_names=[ring, circle, square, triangle, star, cross]"],
            "differ from the test",
        ),
        (["eval.scales=[0]"], "eval.scales"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_a_clear_error(
    setup: tuple[Config, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    problem: str,
) -> None:
    _, config, weights = setup
    code = run_eval(config, weights, tmp_path / "eval", "--set", *overrides)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and problem in err and "Traceback" not in err
    assert not (tmp_path / "eval" / "metrics.json").exists()


@pytest.fixture(scope="module")
def varied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A config on a VOC test split of images of several sizes, and the tiny checkpoint."""
    root = tmp_path_factory.mktemp("varied")
    values = config_to_dict(tiny_config(root / "unused"))
    values["data"].update(
        format="voc",
        roots=[str(write_voc_test_split(root / "voc", SIZES))],
        class_names=list(CLASS_NAMES),
    )
    cfg = config_from_dict(values)
    save_config(cfg, root / "config.yaml")
    return root / "config.yaml", write_checkpoint(root / "tiny.pt", cfg)


def read_results(folder: Path) -> dict[str, list[list[str]]]:
    return {p.name: [line.split() for line in p.read_text().splitlines()] for p in folder.iterdir()}


def test_batches_give_the_batch_1_detections(
    varied: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, weights = varied
    batches = record_batches(monkeypatch)
    assert run_eval(config, weights, tmp_path / "one") == 0
    assert [len(batch) for batch in batches] == [1] * len(SIZES)
    batches.clear()
    batched = ("--set", "eval.batch_size=4", "data.workers=2")
    assert run_eval(config, weights, tmp_path / "four", *batched) == 0
    assert sorted(len(batch) for batch in batches) == [1, 1, 1, 4]
    assert any(len(set(batch)) > 1 for batch in batches)  # 128x96 and 128x100 ran together
    single, several = (read_results(tmp_path / run / "results") for run in ("one", "four"))
    assert single.keys() == several.keys()
    lines = 0
    for name, expected in single.items():
        assert len(several[name]) == len(expected), name
        for ours, theirs in zip(several[name], expected, strict=True):
            assert ours[0] == theirs[0]  # image id; the order is the split's
            numbers = [float(v) for v in ours[1:]]
            assert numbers == pytest.approx([float(v) for v in theirs[1:]], abs=1e-3)
            lines += 1
    assert lines > 50
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("one", "four")]
    assert metrics[1]["mAP"] == pytest.approx(metrics[0]["mAP"], abs=1e-6)


def _eval_process(
    rank: int, world_size: int, port: int, config: Path, weights: Path, out: Path, log: Path
) -> None:
    """One torchrun-like process of ``rfcn eval``; writes how many images it detected."""
    act_as_torchrun_process(rank, world_size, port)
    torch.set_num_threads(1)
    batches = record_batches(pytest.MonkeyPatch())  # this process only; it ends with the test
    assert run_eval(config, weights, out) == 0
    (log / f"rank{rank}.txt").write_text(str(sum(map(len, batches))))


@pytest.mark.slow
def test_torchrun_shards_write_what_one_process_writes(
    varied: tuple[Path, Path], tmp_path: Path
) -> None:
    config, weights = varied
    for world_size in (1, 2):
        log = tmp_path / f"log{world_size}"
        log.mkdir()
        out = tmp_path / f"world{world_size}"
        args = (world_size, free_port(), config, weights, out, log)
        mp.spawn(_eval_process, args=args, nprocs=world_size, join=True)
    # 7 images: rank 0 detects images 0, 2, 4, 6 and rank 1 images 1, 3, 5
    assert (tmp_path / "log2" / "rank0.txt").read_text() == "4"
    assert (tmp_path / "log2" / "rank1.txt").read_text() == "3"
    one, two = tmp_path / "world1", tmp_path / "world2"
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert Path("pr_curves.png") in files and len(files) == len(CLASS_NAMES) + 2
    for name in files:
        if name.suffix != ".png":
            assert (two / name).read_bytes() == (one / name).read_bytes(), name
