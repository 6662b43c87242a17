"""Mean ± sd over seeds and the two-sd test, against hand-worked numbers."""

from __future__ import annotations

import math

import pytest

from rfcn.evaluation.seed_stats import compare, format_summary, spread, summarize


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
