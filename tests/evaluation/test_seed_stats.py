"""Mean ± sd over seeds and the two-sd test, against hand-worked numbers."""

from __future__ import annotations

import math

import pytest

from rfcn.evaluation.seed_stats import (
    compare,
    compare_paired,
    format_summary,
    spread,
    summarize,
)


def test_spread_is_the_sample_standard_deviation() -> None:
    values = spread([0.5, 0.6, None, 0.7])  # a metric a run could not compute is left out
    assert values.n == 3
    assert values.mean == pytest.approx(0.6)
    assert values.sd == pytest.approx(0.1)  # sqrt((0.01 + 0 + 0.01) / 2)
    assert spread([0.4]).sd is None and spread([]).mean is None


def test_two_sd_test_by_hand() -> None:
    high, low = spread([0.5, 0.6, 0.7]), spread([0.2, 0.3, 0.4])
    found = compare(high, low)
    assert found.difference == pytest.approx(0.3)
    assert found.sd == pytest.approx(math.sqrt(0.01 / 3 + 0.01 / 3))  # 0.0816
    assert found.holds  # 0.3 > 0.163
    close = compare(spread([0.5, 0.6, 0.7]), spread([0.45, 0.55, 0.65]))
    assert close.difference == pytest.approx(0.05) and not close.holds  # 0.05 < 0.163
    single = compare(spread([0.9]), low)
    assert single.difference == pytest.approx(0.6) and single.sd is None and single.holds is None
    assert compare(spread([None]), low) is None


def _runs(*values: float, seconds: float = 10.0) -> list[dict]:
    return [
        {"seed": seed, "voc07_mAP50": v, "coco_AP": None, "train_seconds": seconds}
        for seed, v in enumerate(values)
    ]


def test_summary_compares_every_variant_with_the_reference() -> None:
    runs = {"k7": _runs(0.5, 0.6, 0.7), "k3": _runs(0.2, 0.3, 0.4, seconds=8.0)}
    runs["k3"][0].update(resumed=True, train_seconds=1.0)  # only its last part was timed
    summary = summarize(runs, reference="k7")
    k3 = summary["variants"][1]
    assert k3["variant"] == "k3" and k3["seeds"] == [0, 1, 2] and k3["train_seconds"] == 8.0
    assert k3["spread"]["voc07_mAP50"]["mean"] == pytest.approx(0.3)
    assert k3["spread"]["coco_AP"] == {"mean": None, "sd": None, "n": 0}
    (difference,) = summary["differences"]  # only the metric both have
    assert difference["variant"] == "k3" and difference["metric"] == "voc07_mAP50"
    assert difference["difference"] == pytest.approx(-0.3) and difference["holds"]
    text = format_summary(summary, runs)
    assert "30.0 ± 10.0" in text and "-30.0 ± 8.2*" in text
    assert text.splitlines()[-3].split() == ["k3", "0", "20.0", "n/a", "n/a", "n/a", "n/a", "1"]
    assert "sd_A²/n_A" in text
    with pytest.raises(ValueError, match="reference"):
        summarize(runs, reference="k1")


def test_paired_test_by_hand() -> None:
    # Seed by seed A - B = 0.02, 0.03, 0.01: mean 0.02, sd 0.01, sd of the mean 0.01 / sqrt(3).
    a, b = {0: 0.50, 1: 0.60, 2: 0.70}, {0: 0.48, 1: 0.57, 2: 0.69}
    found = compare_paired(a, b)
    assert found.difference == pytest.approx(0.02)
    assert found.sd == pytest.approx(0.01 / math.sqrt(3))
    assert found.holds  # 0.02 > 0.0115
    # As independent means the seeds' own spread (sd 0.1 and 0.105) hides the same difference.
    assert not compare(spread(list(a.values())), spread(list(b.values()))).holds
    # Only the seeds both ran with a value count: seeds 0 and 1 here, d = 0.02, 0.03.
    two = compare_paired(a, {0: 0.48, 1: 0.57, 2: None, 3: 0.1})
    assert two.difference == pytest.approx(0.025) and two.sd == pytest.approx(0.005)
    one = compare_paired(a, {2: 0.60})
    assert one.difference == pytest.approx(0.1) and one.sd is None and one.holds is None
    assert compare_paired(a, {5: 0.3}) is None


def test_summary_pairs_the_runs_by_seed() -> None:
    runs = {"k7": _runs(0.50, 0.60, 0.70), "k3": _runs(0.48, 0.57, 0.69)}
    summary = summarize(runs, reference="k7")
    (difference,) = summary["differences"]
    assert not difference["holds"]
    paired = difference["paired"]
    assert paired["difference"] == pytest.approx(-0.02) and paired["holds"]
    text = format_summary(summary, runs)
    assert "-2.0 ± 8.4 " in text and "-2.0 ± 0.6*" in text and "paired by seed" in text


def test_a_diverged_run_is_counted_apart_from_the_means() -> None:
    runs = {"k7": _runs(0.50, 0.60, 0.70), "k3": _runs(0.48, 0.57, 0.69)}
    runs["k3"][1] = {"seed": 1, "iterations": 9, "images_per_batch": 2, "diverged_at": 7}
    summary = summarize(runs, reference="k7")
    k3 = summary["variants"][1]
    assert k3["seeds"] == [0, 1, 2] and k3["diverged"] == [1]
    assert summary["variants"][0]["diverged"] == []
    assert k3["spread"]["voc07_mAP50"]["n"] == 2
    assert k3["spread"]["voc07_mAP50"]["mean"] == pytest.approx(0.585)  # (0.48 + 0.69) / 2
    assert k3["train_seconds"] == 10.0
    (difference,) = summary["differences"]
    # paired over seeds 0 and 2 only: -0.02 and -0.01
    assert difference["paired"]["difference"] == pytest.approx(-0.015)
    text = format_summary(summary, runs)
    assert " 3 (1 diverged) " in text
    assert text.splitlines()[-2].split() == [
        "k3", "1", "n/a", "n/a", "n/a", "n/a", "n/a", "diverged", "at", "7"
    ]  # fmt: skip
