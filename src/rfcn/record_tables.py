"""Markdown tables generated from result records (:mod:`rfcn.records`), so no measured figure
is typed by hand.

A page asks for a table with a marker on a line of its own; the documentation build (the
MkDocs hook ``docs/hooks.py``) and ``rfcn records --update README.md`` replace it:

    <!-- table: demo [NAME ...] -->      the demo records named (all when none), a row each
    <!-- table: ablation NAME [NAME ...] -->  the mean ± sd table of the ablate record NAME, or
                                         of several records' runs pooled by seed
    <!-- table: benchmark NAME -->       the timing table of the benchmark record NAME
    <!-- table: summary [NAME ...] -->   the README's short table of what this version measures;
                                         A+B names ablate records pooled by seed
    <!-- table: list [NAME ...] -->      the records with their kind, machine, seeds and command

In a file that is not built (the README) the generated table stands between the marker and
``<!-- end table -->``, and ``rfcn records --check README.md`` fails when it is stale.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rfcn.benchmark.report import format_table
from rfcn.errors import UserError
from rfcn.evaluation.seed_stats import (
    METRICS,
    difference_text,
    fraction_text,
    mean_sd_text,
    seeds_text,
    summarize,
)

Records = Mapping[str, Mapping[str, Any]]
MARKER = re.compile(r"^<!-- table: (?P<kind>[a-z_]+)(?P<names>(?: [\w.+-]+)*) -->$", re.M)
END = "<!-- end table -->"


def machine_label(record: Mapping[str, Any]) -> str:
    """``Intel(R) Xeon(R) Processor, 2 threads`` or the GPU's name."""
    machine = record["machine"]
    if str(machine.get("device", "cpu")).startswith("cuda"):
        return str(machine["device_name"])
    threads = machine["torch_threads"]
    return f"{machine['cpu_model']}, {threads} thread{'' if threads == 1 else 's'}"


def _source(name: str, record: Mapping[str, Any], link: str) -> str:
    """The record's link with its version and date: where a reader checks a figure."""
    return f"[{name}]({link}{name}.json) (v{record['version']}, {record['date'][:10]})"


def _demo_precision(values: Mapping[str, Any]) -> str:
    return "float32" if values.get("train_autocast", "none") == "none" else values["train_autocast"]


def demo_table(records: Records, link: str) -> str:
    """One row per ``demo`` record: accuracy, time and the machine it ran on."""
    lines = [
        "| record | machine | training | VOC07 mAP@0.5 | COCO AP | train s | total s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, record in records.items():
        if record["kind"] != "demo":
            continue
        values = record["values"]
        lines.append(
            f"| {_source(name, record, link)} | {machine_label(record)} "
            f"| {_demo_precision(values)} | {values['voc07_mAP50']:.3f} "
            f"| {fraction_text(values.get('coco_AP'))} | {values['train_seconds']:.0f} "
            f"| {values['total_seconds']:.0f} |"
        )
    return "\n".join(lines)


def ablation_table(records: Records, link: str, marker: str) -> str:
    """The mean ± sd over seeds per variant (percent) of one ablate record, or of several
    records' runs pooled (:func:`pooled_ablation_values`), ``*`` on a difference from the
    reference variant that holds (two-sd test, :mod:`rfcn.evaluation.seed_stats`)."""
    values = _ablate_values(records, marker)
    holds = {
        (entry["variant"], entry["metric"]) for entry in values["differences"] if entry["holds"]
    }
    titles = " | ".join(METRICS.values())
    lines = [
        f"| variant | seeds | {titles} | train s |",
        "|---|---:|" + "---:|" * (len(METRICS) + 1),
    ]
    for row in values["variants"]:
        cells = " | ".join(
            mean_sd_text(row["spread"][key]) + (" *" if (row["variant"], key) in holds else "")
            for key in METRICS
        )
        seconds = "n/a" if row["train_seconds"] is None else f"{row['train_seconds']:.0f}"
        lines.append(f"| {row['variant']} | {seeds_text(row)} | {cells} | {seconds} |")
    lines += ["", *_paired_difference_rows(values, titles)]
    seeds = sorted({seed for record in records.values() for seed in record["seeds"]})
    sources = [
        f"{machine_label(record)}, torch {record['machine']['torch']}. "
        f"Command: `{record['command']}`. Source: {_source(name, record, link)}."
        for name, record in records.items()
    ]
    if len(records) > 1:
        sources = [
            f"Seeds {_numbers(record['seeds'])}: {source}"
            for record, source in zip(records.values(), sources, strict=True)
        ]
    test = (
        f"Percent, mean ± sample sd over seeds {_numbers(seeds)}; * differs from "
        f"{values['reference']} beyond twice the sd of the difference (the second table pairs "
        "the runs by seed)."
    )
    if any(row.get("diverged") for row in values["variants"]):
        test += " A run whose training diverged has no scores and is left out of its row."
    lines += ["", " ".join([test, *sources])]
    return "\n".join(lines)


def _ablate_values(records: Records, marker: str) -> Mapping[str, Any]:
    """The values of one ablate record, or of several pooled by seed
    (:func:`pooled_ablation_values`)."""
    if len(records) == 1:
        (record,) = records.values()
        return record["values"]
    return pooled_ablation_values(records, marker)


def _numbers(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers))


def pooled_ablation_values(records: Records, marker: str) -> dict[str, Any]:
    """The ablate values of several ablate records' runs pooled by variant and seed.

    The records must have run the same config and ``--set`` settings apart from
    ``train.seed``, so that each adds other seeds of the same rows (``--set train.seed=3``);
    a row keeps the runs of every record, and only the rows that every record ran are kept.
    The first record's reference variant is the reference.

    Raises:
        UserError: the records ran other settings, lack the reference or repeat a seed.
    """
    (first_name, first), *others = records.items()
    first_values = first["values"]
    variants = [
        variant
        for variant in first_values["runs"]
        if all(variant in record["values"]["runs"] for _, record in others)
    ]
    for name, record in others:
        if _ablate_setting(record["values"], variants) != _ablate_setting(first_values, variants):
            raise UserError(
                marker,
                f"{name}.json ran other settings than {first_name}.json "
                "(config, --set or a row's overrides besides train.seed), so its seeds do not pool",
            )
    reference = first_values["reference"]
    if reference not in variants:
        raise UserError(marker, f"not every record ran the reference variant {reference}")
    pooled: dict[str, list[Mapping[str, Any]]] = {}
    for variant in variants:
        runs = [run for record in records.values() for run in record["values"]["runs"][variant]]
        seeds = [run["seed"] for run in runs]
        if len(set(seeds)) != len(seeds):
            raise UserError(marker, f"the records repeat a seed of {variant}: {_numbers(seeds)}")
        if len({(run.get("iterations"), run.get("images_per_batch")) for run in runs}) != 1:
            raise UserError(marker, f"the records trained {variant} on other budgets")
        pooled[variant] = sorted(runs, key=lambda run: run["seed"])
    return summarize(pooled, reference)


def _ablate_setting(values: Mapping[str, Any], variants: list[str]) -> tuple[Any, ...]:
    """What an ablate record ran, bar its seeds: config, --set settings and rows' overrides."""
    settings = [item for item in values["user_overrides"] if not item.startswith("train.seed=")]
    return (values["config"], settings, [values["overrides"][variant] for variant in variants])


def _paired_differences(values: Mapping[str, Any]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """variant -> metric -> its difference from the reference, paired by seed."""
    paired: dict[str, dict[str, Mapping[str, Any]]] = {}
    for entry in values["differences"]:
        paired.setdefault(entry["variant"], {})[entry["metric"]] = entry["paired"]
    return paired


def _paired_difference_rows(values: Mapping[str, Any], titles: str) -> list[str]:
    """Each variant's difference from the reference, paired by seed (percent points)."""
    paired = _paired_differences(values)
    lines = [
        f"| paired by seed, minus {values['reference']} | {titles} |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for variant, entries in paired.items():
        cells = " | ".join(_marked(difference_text(entries.get(key))) for key in METRICS)
        lines.append(f"| {variant} | {cells} |")
    return lines


def _marked(text: str) -> str:
    """``+1.2 ± 0.4*`` as ``+1.2 ± 0.4 *``, the mean table's mark."""
    text = text.strip()
    return text[:-1] + " *" if text.endswith("*") else text


def benchmark_table(name: str, record: Mapping[str, Any], link: str) -> str:
    """A benchmark record's timing table, as ``rfcn benchmark`` prints it, with its source."""
    return (
        format_table(record["values"])
        + f"\n\nCommand: `{record['command']}`. Source: {_source(name, record, link)}."
    )


def _benchmark_summary_rows(values: Mapping[str, Any], machine: str, source: str) -> list[str]:
    """R-FCN's speed-up over its C4 counterpart (whole pipeline), and the light head's time over
    R-FCN's head (process CPU time, the steadier reading), by RoI count."""
    rows = []
    if "ratios" in values:
        settings = values["settings"]
        speedups = values["ratios"]["wall"]["rfcn_speedup_over_c4"]["pipeline"]
        rows += [
            f"| `rfcn benchmark`: R-FCN over C4, {settings['backbone']}, {settings['size']} px, "
            f"{count} RoIs | {speedup:.2f}x faster | {machine} | {source} |"
            for count, speedup in speedups.items()
        ]
    for backbone, by_classes in values.get("heads", {}).get("over_rfcn", {}).items():
        for classes, detectors in by_classes.items():
            rows += [
                f"| `rfcn benchmark`: light head's head CPU time over R-FCN's, {backbone}, "
                f"C = {classes}, {count} RoIs | {ratio['head_cpu']:.2f}x | {machine} | {source} |"
                for count, ratio in detectors.get("light_head", {}).items()
            ]
    return rows


def _ablation_summary_rows(values: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(what, seeds, value) for an ablate record's reference and for the other variant with the
    highest mean mAP@0.5, with its difference from the reference paired by seed."""
    key = "voc07_mAP50"
    rows = {row["variant"]: row for row in values["variants"]}
    reference = rows[values["reference"]]
    summary = [
        (reference["variant"], seeds_text(reference), mean_sd_text(reference["spread"][key]))
    ]
    others = [
        row
        for name, row in rows.items()
        if name != reference["variant"] and row["spread"][key]["mean"] is not None
    ]
    if not others:
        return summary
    best = max(others, key=lambda row: row["spread"][key]["mean"])
    paired = _paired_differences(values)[best["variant"]][key]
    summary.append(
        (
            f"{best['variant']} (the best of {len(others)} other rows)",
            seeds_text(best),
            f"{mean_sd_text(best['spread'][key])}; paired by seed, "
            f"{_marked(difference_text(paired))} against {reference['variant']}",
        )
    )
    return summary


def summary_table(groups: list[Records], link: str, marker: str) -> str:
    """The README's short table: each demo record, each ablate record's reference and best
    other variant (of one record, or of several records' runs pooled by seed: a group of more
    than one), and each benchmark record's R-FCN speed-up over its Faster R-CNN C4 counterpart
    and the light head's time over R-FCN's head."""
    lines = ["| measured | value | machine | record |", "|---|---|---|---|"]
    for group in groups:
        machine = "; ".join(dict.fromkeys(machine_label(record) for record in group.values()))
        source = ", ".join(_source(name, record, link) for name, record in group.items())
        # a group of several records is of ablate records (_summary_groups)
        record = next(iter(group.values()))
        values = record["values"]
        if record["kind"] == "demo":
            lines.append(
                f"| `rfcn demo` ({_demo_precision(values)}): VOC07 mAP@0.5, time in all "
                f"| {values['voc07_mAP50']:.3f} in {values['total_seconds']:.0f} s "
                f"| {machine} | {source} |"
            )
        elif record["kind"] == "ablate":
            lines += _ablation_summary_lines(_ablate_values(group, marker), machine, source)
        elif record["kind"] == "benchmark":
            lines += _benchmark_summary_rows(values, machine, source)
    return "\n".join(lines)


def _ablation_summary_lines(values: Mapping[str, Any], machine: str, source: str) -> list[str]:
    """The summary's lines of :func:`_ablation_summary_rows`."""
    return [
        f"| `rfcn ablate` {measured}, {seeds} seeds: mAP@0.5 | {value} | {machine} | {source} |"
        for measured, seeds, value in _ablation_summary_rows(values)
    ]


def _summary_groups(records: Records, names: list[str], marker: str) -> list[Records]:
    """The summary's entries: each record (every one when ``names`` is empty), or the ablate
    records an ``A+B`` name pools."""
    groups = [_selected(records, name.split("+"), marker) for name in names]
    for group in groups:
        kinds = {record["kind"] for record in group.values()}
        if len(group) > 1 and kinds != {"ablate"}:
            raise UserError(marker, f"{'+'.join(group)} pools ablate records only")
    return groups or [{name: record} for name, record in records.items()]


def list_table(records: Records, link: str) -> str:
    """Every record: what it measured, with which version, where and by which command."""
    lines = ["| record | kind | machine | seeds | command |", "|---|---|---|---|---|"]
    lines += [
        f"| {_source(name, record, link)} | {record['kind']} | {machine_label(record)} "
        f"| {_numbers(record['seeds']) or '-'} | `{record['command']}` |"
        for name, record in records.items()
    ]
    return "\n".join(lines)


def _selected(records: Records, names: list[str], marker: str) -> Records:
    """The records a marker names, in its order; every record when it names none."""
    missing = [name for name in names if name not in records]
    if missing:
        raise UserError(marker, f"no record {', '.join(f'{name}.json' for name in missing)}")
    return {name: records[name] for name in names} if names else records


def render(kind: str, names: list[str], records: Records, link: str) -> str:
    """The table a marker asks for; ``link`` prefixes the record files' links."""
    marker = f"table: {' '.join([kind, *names])}"
    if kind == "demo":
        return demo_table(_selected(records, names, marker), link)
    if kind == "summary":
        return summary_table(_summary_groups(records, names, marker), link, marker)
    if kind == "list":
        return list_table(_selected(records, names, marker), link)
    record_kind = {"ablation": "ablate", "benchmark": "benchmark"}.get(kind)
    if record_kind is None:
        raise UserError(marker, "unknown table (demo, summary, list, ablation, benchmark)")
    if kind == "benchmark" and len(names) != 1:
        raise UserError(marker, "a benchmark table names one record")
    if not names:
        raise UserError(marker, "an ablation table names one record or more")
    selected = _selected(records, names, marker)
    for name, record in selected.items():
        if record["kind"] != record_kind:
            raise UserError(marker, f"{name}.json is a {record['kind']} record, not {record_kind}")
    if kind == "benchmark":
        return benchmark_table(names[0], selected[names[0]], link)
    return ablation_table(selected, link, marker)


def fill_markers(text: str, records: Records, link: str) -> str:
    """``text`` with each marker followed by its generated table and ``<!-- end table -->``;
    a table generated earlier (up to the next end line) is replaced."""
    matches = list(MARKER.finditer(text))
    pieces: list[str] = []
    position = 0
    for index, match in enumerate(matches):
        pieces.append(text[position : match.end()])
        next_marker = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        end = text.find(END, match.end(), next_marker)
        position = match.end() if end < 0 else end + len(END)
        names = match["names"].split()
        pieces.append(f"\n{render(match['kind'], names, records, link)}\n{END}")
    pieces.append(text[position:])
    return "".join(pieces)
