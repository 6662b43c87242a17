"""The analysis half of ``rfcn benchmark``: ratios of the measured medians, the issue's targets,
and a Markdown table of a result (the JSON that :func:`rfcn.benchmark.run.run_benchmark`
returns)."""

from __future__ import annotations

from typing import Any

# The targets on a CPU: (name, comparison, bound).
TARGETS = (
    ("rfcn_speedup_over_c4", ">=", 3.5),
    ("rfcn_most_over_fewest_rois", "<=", 1.1),
    ("rfcn_pipeline_over_backbone", "<=", 1.15),
)


def summarize_ratios(inference: dict[str, Any], statistic: str = "median_ms") -> dict[str, Any]:
    """Ratios of the ``statistic`` of the cases (``median_ms``: wall clock, ``cpu_median_ms``:
    process CPU time), side by side; RoI counts as string keys (JSON)."""
    pipeline, given, head = (
        inference["pipeline"],
        inference["pipeline_given_rois"],
        inference["head"],
    )
    counts = list(head["rfcn"])
    fewest, most = counts[0], counts[-1]

    def ms(case: dict[str, Any]) -> float:
        return float(case["time"][statistic])

    def over(numerators: dict[str, Any], denominator: dict[str, Any]) -> dict[str, float]:
        return {n: ms(case) / ms(denominator) for n, case in numerators.items()}

    def speedup(part: dict[str, Any]) -> dict[str, float]:
        return {n: ms(part["c4"][n]) / ms(part["rfcn"][n]) for n in part["c4"]}

    c4_head = over(head["c4"], head["c4"][fewest]) if head["c4"] else {}

    return {
        "rfcn_speedup_over_c4": {
            "pipeline": speedup(pipeline),
            "pipeline_given_rois": speedup(given),
            "head": speedup(head),
        },
        "over_fewest_rois": {
            "rfcn_pipeline_given_rois": over(given["rfcn"], given["rfcn"][fewest]),
            "rfcn_head": over(head["rfcn"], head["rfcn"][fewest]),
            "c4_head": c4_head,
        },
        "rfcn_over_backbone": {
            "pipeline": over(pipeline["rfcn"], inference["backbone"]),
            "pipeline_given_rois": over(given["rfcn"], inference["backbone"]),
        },
        "fewest_rois": fewest,
        "most_rois": most,
    }


def _target_values(ratios: dict[str, Any]) -> dict[str, float | None]:
    """The targets' values; None for the speed-up when the C4 counterpart was not timed."""
    fewest, most = ratios["fewest_rois"], ratios["most_rois"]
    return {
        "rfcn_speedup_over_c4": ratios["rfcn_speedup_over_c4"]["pipeline"].get(fewest),
        "rfcn_most_over_fewest_rois": ratios["over_fewest_rois"]["rfcn_pipeline_given_rois"][most],
        "rfcn_pipeline_over_backbone": ratios["rfcn_over_backbone"]["pipeline"][fewest],
    }


def check_targets(wall: dict[str, Any], cpu: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against the ratios of whole pipelines, from wall-clock medians
    (``value``, ``met``) and from process-CPU medians (``value_cpu``, ``met_cpu``: the steadier
    reading on a shared machine)."""

    def meets(value: float | None, comparison: str, bound: float) -> bool | None:
        if value is None:
            return None
        return value >= bound if comparison == ">=" else value <= bound

    wall_values, cpu_values = _target_values(wall), _target_values(cpu)
    return [
        {
            "name": name,
            "target": f"{comparison} {bound}",
            "value": wall_values[name],
            "met": meets(wall_values[name], comparison, bound),
            "value_cpu": cpu_values[name],
            "met_cpu": meets(cpu_values[name], comparison, bound),
        }
        for name, comparison, bound in TARGETS
    ]


def deformable_overheads(
    variants: dict[str, Any], statistic: str = "median_ms"
) -> dict[str, dict[str, dict[str, float]]]:
    """Each Deformable ConvNets variant's ``statistic`` over plain R-FCN's, per case and RoI
    count: ``{variant: {case: {N: ratio}}}`` from ``deformable["variants"]`` of a result."""
    plain = variants["plain"]
    return {
        name: {
            case: {
                n: float(timed["time"][statistic]) / float(plain[case][n]["time"][statistic])
                for n, timed in counts.items()
            }
            for case, counts in cases.items()
        }
        for name, cases in variants.items()
        if name != "plain"
    }


def heads_over_rfcn(results: dict[str, Any]) -> dict[str, Any]:
    """Each detector's figures over R-FCN's, per backbone, C and N, from the ``results`` of
    :func:`rfcn.benchmark.heads.head_comparison`: ``head`` and ``pipeline_given_rois`` from the
    wall-clock medians, ``head_cpu`` from the process-CPU ones, ``head_flops``."""

    def ratios(case: dict[str, Any], reference: dict[str, Any], key: str) -> dict[str, float]:
        head, ref_head = case["head"][key], reference["head"][key]
        pipeline, ref_pipeline = (
            case["pipeline_given_rois"][key],
            reference["pipeline_given_rois"][key],
        )
        return {
            "head": head["time"]["median_ms"] / ref_head["time"]["median_ms"],
            "head_cpu": head["time"]["cpu_median_ms"] / ref_head["time"]["cpu_median_ms"],
            "head_flops": head["flops"] / ref_head["flops"],
            "pipeline_given_rois": pipeline["time"]["median_ms"]
            / ref_pipeline["time"]["median_ms"],
        }

    return {
        backbone: {
            classes: {
                name: {key: ratios(case, detectors["rfcn"], key) for key in case["head"]}
                for name, case in detectors.items()
                if name != "rfcn"
            }
            for classes, detectors in by_classes.items()
        }
        for backbone, by_classes in results.items()
    }


HEAD_TITLES = {"rfcn": "R-FCN", "light_head": "light head", "c4": "C4", "tv_fpn": "torchvision FPN"}


def _heads_lines(heads: dict[str, Any]) -> list[str]:
    """Markdown rows of the heads side by side: FLOPs, medians and the ratios over R-FCN."""
    lines = [
        "",
        "| backbone | C | RoIs | detector | head GFLOPs | head ms | pipeline ms (given RoIs) "
        "| head x R-FCN | pipeline x R-FCN |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for backbone, by_classes in heads["results"].items():
        for classes, detectors in by_classes.items():
            for key in detectors["rfcn"]["head"]:
                for name, case in detectors.items():
                    head = case["head"][key]
                    over = heads["over_rfcn"][backbone][classes].get(name, {}).get(key)
                    shown = "" if over is None else f"x{over['head']:.2f}"
                    pipeline = "" if over is None else f"x{over['pipeline_given_rois']:.2f}"
                    lines.append(
                        f"| {backbone} | {classes} | {key} | {HEAD_TITLES[name]} "
                        f"| {head['flops'] / 1e9:.1f} | {_cell(head)} "
                        f"| {_cell(case['pipeline_given_rois'][key])} | {shown} | {pipeline} |"
                    )
    return lines


def _deformable_lines(deformable: dict[str, Any]) -> list[str]:
    """Markdown rows of the Deformable ConvNets variants: medians and the ratio over plain."""
    variants, over = deformable["variants"], deformable["over_plain"]["wall"]
    counts = list(variants["plain"]["head"])
    header = " | ".join(f"given {n} RoIs | head {n} RoIs" for n in counts)
    lines = [
        "",
        f"| Deformable R-FCN | {header} |",
        "|---|" + "---:|" * (2 * len(counts)),
    ]
    for name, cases in variants.items():
        cells = []
        for n in counts:
            for case in ("pipeline_given_rois", "head"):
                ratio = "" if name == "plain" else f" x{over[name][case][n]:.2f}"
                cells.append(_cell(cases[case][n]) + ratio)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _cell(case: dict[str, Any] | None) -> str:
    """``wall (cpu)`` medians in ms, or a dash for a case not measured."""
    if case is None:
        return "-"
    return f"{case['time']['median_ms']:.0f} ({case['time']['cpu_median_ms']:.0f})"


def _pooling(settings: dict[str, Any]) -> str:
    """``pool``, or ``align`` with its samples per bin side (results saved before either
    setting existed were ``pool``)."""
    mode, ratio = settings.get("ps_roi_mode", "pool"), settings.get("ps_roi_sampling_ratio")
    return f"align ({ratio}x{ratio} samples a bin)" if mode == "align" and ratio else mode


def format_table(result: dict[str, Any]) -> str:
    """A Markdown summary: medians in ms as ``wall (process CPU)``, ratios, the targets."""
    settings, machine = result["settings"], result["machine"]
    if "inference" not in result:  # the heads alone
        header = (
            f"heads side by side, {settings['size']} px shorter side, {settings['device']} "
            f"({machine['device_name']}, {machine['torch_threads']} threads); median ms of "
            f"{settings['repeats']} runs as wall (process CPU)"
        )
        return "\n".join([header, *_heads_lines(result["heads"])])
    inference, ratios = result["inference"], result["ratios"]
    lines = [
        f"{settings['backbone']}, {settings['size']} px shorter side, PS-RoI "
        f"{_pooling(settings)}, {settings['device']} "
        f"({machine['device_name']}, {machine['torch_threads']} threads); median ms of "
        f"{settings['repeats']} runs as wall (process CPU)",
        "",
        f"backbone alone (floor): {_cell(inference['backbone'])}",
        "",
        "| RoIs | R-FCN pipeline | C4 pipeline | R-FCN given RoIs | C4 given RoIs "
        "| R-FCN head | C4 head | C4/R-FCN head |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in inference["head"]["rfcn"]:
        row = [
            inference["pipeline"]["rfcn"].get(n),
            inference["pipeline"]["c4"].get(n),
            inference["pipeline_given_rois"]["rfcn"].get(n),
            inference["pipeline_given_rois"]["c4"].get(n),
            inference["head"]["rfcn"][n],
            inference["head"]["c4"].get(n),
        ]
        speedup = ratios["wall"]["rfcn_speedup_over_c4"]["head"].get(n)
        shown = "-" if speedup is None else f"{speedup:.2f}"
        lines.append(f"| {n} | " + " | ".join(_cell(c) for c in row) + f" | {shown} |")
    lines += ["", "| training step, OHEM | " + " | ".join(result["training"]["rfcn"]) + " |"]
    lines.append("|---|" + "---:|" * len(result["training"]["rfcn"]))
    for name in ("rfcn", "c4"):
        if result["training"][name]:
            cells = " | ".join(_cell(c) for c in result["training"][name].values())
            lines.append(f"| {name} | {cells} |")
    if result["fast_path"] is not None:
        lines += ["", "| R-FCN fast path (pipeline) | ms | speed-up |", "|---|---:|---:|"]
        for name, case in result["fast_path"]["variants"].items():
            lines.append(f"| {name} | {_cell(case)} | {case['speedup']:.2f} |")
        batched = result["fast_path"]["batched"]
        lines.append(
            f"| batch of {batched['images']}, per image | {batched['per_image_ms']:.0f} "
            f"| {batched['speedup_per_image']:.2f} |"
        )
    if "deformable" in result:
        lines += _deformable_lines(result["deformable"])
    if "heads" in result:
        lines += _heads_lines(result["heads"])
    lines.append("")
    for check in result["targets"]:
        if check["value"] is None:
            continue  # the speed-up over C4, when C4 was not timed
        verdict = "met" if check["met"] else "NOT met"
        verdict_cpu = "met" if check["met_cpu"] else "NOT met"
        lines.append(
            f"- {check['name']} {check['target']}: wall {check['value']:.2f} ({verdict}), "
            f"CPU time {check['value_cpu']:.2f} ({verdict_cpu})"
        )
    return "\n".join(lines)
