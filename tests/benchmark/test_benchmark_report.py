import pytest

from rfcn.benchmark.report import check_targets, deformable_overheads, summarize_ratios


def _case(median: float) -> dict:
    return {"time": {"median_ms": median, "cpu_median_ms": 2 * median}}


def test_targets_hand_worked() -> None:
    inference = {
        "backbone": _case(100.0),
        "pipeline": {"rfcn": {"300": _case(110.0)}, "c4": {"300": _case(440.0)}},
        "pipeline_given_rois": {
            "rfcn": {"300": _case(105.0), "2000": _case(126.0)},
            "c4": {"300": _case(420.0)},
        },
        "head": {
            "rfcn": {"300": _case(10.0), "2000": _case(11.0)},
            "c4": {"300": _case(300.0), "2000": _case(2000.0)},
        },
    }
    ratios = summarize_ratios(inference)
    assert ratios["rfcn_speedup_over_c4"]["pipeline"] == {"300": 4.0}
    assert ratios["rfcn_speedup_over_c4"]["head"]["2000"] == pytest.approx(2000 / 11)
    assert ratios["over_fewest_rois"]["rfcn_pipeline_given_rois"]["2000"] == pytest.approx(1.2)
    assert ratios["rfcn_over_backbone"]["pipeline"] == {"300": pytest.approx(1.1)}
    cpu = summarize_ratios(inference, "cpu_median_ms")
    assert cpu["rfcn_speedup_over_c4"]["pipeline"] == {"300": 4.0}  # CPU times all doubled
    inference["backbone"]["time"]["cpu_median_ms"] = 200.0  # one CPU time differs
    cpu = summarize_ratios(inference, "cpu_median_ms")
    assert cpu["rfcn_over_backbone"]["pipeline"] == {"300": pytest.approx(1.1)}
    checks = {c["name"]: c for c in check_targets(ratios, cpu)}
    assert checks["rfcn_speedup_over_c4"]["met"]  # 4.0 >= 3.5
    assert not checks["rfcn_most_over_fewest_rois"]["met"]  # 1.2 > 1.1
    assert checks["rfcn_pipeline_over_backbone"]["met"]  # 1.1 <= 1.15
    assert checks["rfcn_pipeline_over_backbone"]["value_cpu"] == pytest.approx(1.1)


def test_deformable_overheads_hand_worked() -> None:
    variants = {
        "plain": {"head": {"300": _case(10.0), "2000": _case(20.0)}},
        "dpsroi": {"head": {"300": _case(12.0), "2000": _case(30.0)}},
        "dconv5": {"head": {"300": _case(15.0), "2000": _case(25.0)}},
    }
    assert deformable_overheads(variants) == {
        "dpsroi": {"head": {"300": pytest.approx(1.2), "2000": pytest.approx(1.5)}},
        "dconv5": {"head": {"300": pytest.approx(1.5), "2000": pytest.approx(1.25)}},
    }
    variants["plain"]["head"]["300"]["time"]["cpu_median_ms"] = 40.0  # only CPU time differs
    cpu = deformable_overheads(variants, "cpu_median_ms")
    assert cpu["dpsroi"]["head"]["300"] == pytest.approx(24.0 / 40.0)
