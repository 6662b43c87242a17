from typing import Any

import pytest

from rfcn.errors import UserError
from rfcn.evaluation.seed_stats import summarize
from rfcn.record_tables import END, fill_markers, render

MACHINE = {"cpu_model": "Test CPU", "torch_threads": 2, "torch": "2.14.1", "device": "cpu"}


def _record(kind: str, values: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    return {
        "schema": 1,
        "kind": kind,
        "command": f"rfcn {kind}",
        "version": "9.9.9",
        "date": "2026-12-06T00:00:00+00:00",
        "machine": MACHINE,
        "seeds": seeds,
        "values": values,
    }


def _run(seed: int, map50: float) -> dict[str, Any]:
    return {"seed": seed, "voc07_mAP50": map50, "train_seconds": 100.0}


def _records() -> dict[str, dict[str, Any]]:
    # k7: 0.90, 0.91, 0.92 (mean 91.0, sd 1.0); k1: 0.30, 0.40, 0.50 (mean 40.0, sd 10.0);
    # the difference, -51.0 ± sqrt(1/3 + 100/3) = ± 5.8, holds
    runs = {
        "k7": [_run(0, 0.90), _run(1, 0.91), _run(2, 0.92)],
        "k1": [_run(0, 0.30), _run(1, 0.40), _run(2, 0.50)],
        "k3": [_run(0, 0.84), _run(1, 0.86), _run(2, 0.88)],
    }
    demo = {
        "voc07_mAP50": 0.9181,
        "coco_AP": 0.6789,
        "train_seconds": 109.4,
        "total_seconds": 127.2,
        "train_autocast": "bf16",
    }
    return {
        "demo": _record("demo", demo, [0]),
        "table2": _record("ablate", summarize(runs, "k7"), [0, 1, 2]),
    }


def test_ablation_table_gives_mean_sd_and_marks_what_holds() -> None:
    table = render("ablation", ["table2"], _records(), "results/")
    assert "| k7 | 3 | 91.0 ± 1.0 |" in table
    assert "| k1 | 3 | 40.0 ± 10.0 * |" in table
    # paired by seed: differences -60, -51, -42, mean -51.0, sd 9.0 / sqrt(3) = 5.2
    assert "| paired by seed, minus k7 |" in table and "| k1 | -51.0 ± 5.2 * |" in table
    assert "[table2](results/table2.json) (v9.9.9, 2026-12-06)" in table
    assert "Test CPU, 2 threads" in table and "`rfcn ablate`" in table


def test_a_row_with_a_diverged_seed_says_so() -> None:
    records = _records()
    runs = {
        "k7": [_run(0, 0.90), _run(1, 0.91), _run(2, 0.92)],
        "k1": [_run(0, 0.30), {"seed": 1, "diverged_at": 5}, _run(2, 0.50)],
    }
    records["table2"]["values"] = summarize(runs, "k7")
    table = render("ablation", ["table2"], records, "results/")
    assert "| k1 | 3 (1 diverged) | 40.0 ± 14.1 * |" in table
    assert "A run whose training diverged has no scores and is left out of its row." in table
    assert "diverged" not in render("ablation", ["table2"], _records(), "results/")
    summary = render("summary", ["table2"], records, "results/")
    assert "`rfcn ablate` k1 (the best of 1 other rows), 3 (1 diverged) seeds: mAP@0.5" in summary


def test_demo_and_summary_rows_come_from_the_values() -> None:
    records = _records()
    demo = render("demo", [], records, "")
    assert "| [demo](demo.json) (v9.9.9, 2026-12-06) | Test CPU, 2 threads | bf16 " in demo
    assert "| 0.918 | 0.679 | 109 | 127 |" in demo
    summary = render("summary", [], records, "docs/results/")
    assert "| 0.918 in 127 s |" in summary
    assert "`rfcn ablate` k7, 3 seeds: mAP@0.5 | 91.0 ± 1.0 |" in summary
    # the other row with the highest mean, k3, paired by seed: differences -6, -5, -4, so
    # -5.0 ± 1.0 / sqrt(3); k1 is left to the full table
    best = "k3 (the best of 2 other rows), 3 seeds: mAP@0.5 | 86.0 ± 2.0; paired by seed, "
    assert best + "-5.0 ± 0.6 * against k7 |" in summary and "k1" not in summary
    assert render("summary", ["demo"], records, "").count("\n") == 2, "only the named record"


def test_markers_are_filled_and_refilled_in_place() -> None:
    text = "# Page\n\n<!-- table: demo -->\n\nafter\n\n<!-- table: list -->\nend\n"
    records = _records()
    filled = fill_markers(text, records, "")
    assert filled.startswith("# Page\n\n<!-- table: demo -->\n| record |")
    assert filled.count(END) == 2 and "\n\nafter\n\n" in filled and filled.endswith("end\n")
    assert fill_markers(filled, records, "") == filled, "filling twice changes nothing"
    records["demo"]["values"]["voc07_mAP50"] = 0.5
    refilled = fill_markers(filled, records, "")
    assert "| 0.500 |" in refilled and "| 0.918 |" not in refilled, "a stale table is replaced"


@pytest.mark.parametrize(
    ("kind", "names", "problem"),
    [
        ("ablation", ["missing"], "no record missing.json"),
        ("ablation", ["demo"], "demo.json is a demo record, not ablate"),
        ("ablation", [], "an ablation table names one record or more"),
        ("benchmark", [], "a benchmark table names one record"),
        ("ablation", ["table2", "demo"], "demo.json is a demo record, not ablate"),
        ("nope", [], "unknown table"),
    ],
)
def test_a_bad_marker_is_named(kind: str, names: list[str], problem: str) -> None:
    with pytest.raises(UserError, match=problem):
        render(kind, names, _records(), "")


def test_benchmark_summary_rows_give_the_speed_ratios() -> None:
    values = {
        "settings": {"backbone": "resnet101", "size": 600},
        "ratios": {"wall": {"rfcn_speedup_over_c4": {"pipeline": {"300": 3.954}}}},
        "heads": {"over_rfcn": {"resnet50": {"80": {"light_head": {"2000": {"head_cpu": 1.704}}}}}},
    }
    summary = render("summary", [], {"bench": _record("benchmark", values, [])}, "")
    assert "R-FCN over C4, resnet101, 600 px, 300 RoIs | 3.95x faster |" in summary
    assert (
        "light head's head CPU time over R-FCN's, resnet50, C = 80, 2000 RoIs | 1.70x |" in summary
    )


def _ablate_values(runs: dict[str, list[dict[str, Any]]], user_overrides: list[str]) -> dict:
    return {
        **summarize(runs, "k7"),
        "runs": runs,
        "overrides": {variant: [f"model.k={variant[1]}"] for variant in runs},
        "user_overrides": user_overrides,
        "config": "configs/small.yaml",
    }


def _seed_records() -> dict[str, dict[str, Any]]:
    """Seeds 0-1 and 2-3 of k7 and k1 in two records; the second also ran k3."""
    first = {"k7": [_run(0, 0.90), _run(1, 0.92)], "k1": [_run(0, 0.50), _run(1, 0.54)]}
    second = {
        "k7": [_run(2, 0.94), _run(3, 0.96)],
        "k1": [_run(2, 0.50), _run(3, 0.54)],
        "k3": [_run(2, 0.70), _run(3, 0.70)],
    }
    return {
        "first": _record("ablate", _ablate_values(first, ["train.lr=0.1"]), [0, 1]),
        "second": _record(
            "ablate", _ablate_values(second, ["train.seed=2", "train.lr=0.1"]), [2, 3]
        ),
    }


def test_an_ablation_table_of_several_records_pools_their_seeds() -> None:
    table = render("ablation", ["first", "second"], _seed_records(), "")
    # k7: 90, 92, 94, 96: mean 93.0, sample sd sqrt(20/3) = 2.6; k1: 50, 54, 50, 54: 52.0 ± 2.3
    assert "| k7 | 4 | 93.0 ± 2.6 |" in table and "| k1 | 4 | 52.0 ± 2.3 * |" in table
    # paired by seed: -40, -38, -44, -42: mean -41.0, sd sqrt(20/3) / 2 = 1.3
    assert "| k1 | -41.0 ± 1.3 * |" in table
    assert "k3" not in table, "a row only one record ran is left out"
    assert "over seeds 0, 1, 2, 3;" in table
    assert "Seeds 0, 1: Test CPU" in table and "Seeds 2, 3: Test CPU" in table
    assert "[second](second.json)" in table


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda values: values["user_overrides"].append("train.lr=0.2"), "ran other settings"),
        (lambda values: values.update(config="other.yaml"), "ran other settings"),
        (lambda values: values["overrides"].update(k1=["model.k=3"]), "ran other settings"),
        (lambda values: values["runs"]["k1"][0].update(seed=0), "repeat a seed of k1: 0, 1, 0, 3"),
        (lambda values: values["runs"]["k7"][0].update(iterations=9), "k7 on other budgets"),
        (lambda values: values["runs"].pop("k7"), "reference variant k7"),
    ],
)
def test_records_that_do_not_pool_are_refused(change: Any, problem: str) -> None:
    records = _seed_records()
    change(records["second"]["values"])
    with pytest.raises(UserError, match=problem):
        render("ablation", ["first", "second"], records, "")


def test_a_summary_entry_a_plus_b_pools_the_records_seeds() -> None:
    records = {**_records(), **_seed_records()}
    summary = render("summary", ["demo", "first+second"], records, "")
    # the pooled table's figures, worked by hand in the test above
    assert "`rfcn ablate` k7, 4 seeds: mAP@0.5 | 93.0 ± 2.6 | Test CPU, 2 threads |" in summary
    best = "k1 (the best of 1 other rows), 4 seeds: mAP@0.5 | 52.0 ± 2.3; paired by seed, "
    assert best + "-41.0 ± 1.3 * against k7 |" in summary
    assert "| [first](first.json) (v9.9.9, 2026-12-06), [second](second.json)" in summary
    assert "table2" not in summary and "| 0.918 in 127 s |" in summary
    filled = fill_markers("<!-- table: summary first+second -->\n", records, "")
    assert filled.count("`rfcn ablate`") == 2, "the marker reads A+B as one entry"


def test_a_summary_pools_ablate_records_only() -> None:
    records = {**_records(), **_seed_records()}
    with pytest.raises(UserError, match="demo\\+first pools ablate records only"):
        render("summary", ["demo+first"], records, "")
    records["second"]["values"]["config"] = "other.yaml"
    with pytest.raises(UserError, match="ran other settings"):
        render("summary", ["first+second"], records, "")
