"""``rfcn eval``: results files and metrics, the eval -> evaluate round trip, mismatch errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deploy_fixtures import tiny_config, write_checkpoint

from rfcn.cli import main
from rfcn.config import Config, config_from_dict, config_to_dict, save_config
from rfcn.data.build import build_dataset
from rfcn.data.synthetic import CLASS_NAMES, COCO_JSON, TEST_SPLIT, ensure_synthetic_dataset
from rfcn.evaluation.evaluator import evaluate_detections
from rfcn.inference.predictor import Predictor


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
    assert 0.0 <= metrics["mAP"] <= 1.0 and set(metrics["AP"]) <= set(CLASS_NAMES)
    assert "mAP" in capsys.readouterr().out


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
    _, config, weights = setup
    assert run_eval(config, weights, tmp_path / "single") == 0
    assert run_eval(config, weights, tmp_path / "tta", "--scales", "96", "128", "--flip") == 0
    single = (tmp_path / "single" / "results" / "comp4_det_test_circle.txt").read_text()
    augmented = (tmp_path / "tta" / "results" / "comp4_det_test_circle.txt").read_text()
    assert single != augmented


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
