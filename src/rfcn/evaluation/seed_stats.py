"""Scores over seeds: mean ± standard deviation per variant, and which differences hold.

A variant trained with n seeds gives n values of a metric; their spread is the sample
standard deviation (n - 1 in the denominator). Two variants A and B differ by
``d = mean_A - mean_B``; the standard deviation of that difference of two independent means is
``sd_d = sqrt(sd_A² / n_A + sd_B² / n_B)``. A difference *holds* (exceeds two standard
deviations) when ``|d| > 2 sd_d``; with fewer than two seeds on either side nothing is claimed.
With 3 seeds each this is a loose test (Welch's t > 2 on about 4 degrees of freedom, p ~ 0.1
two-sided): a difference that passes it is worth a closer look; one that fails it is not
established, whatever the single runs said.

Paired by seed: in ``rfcn ablate`` a seed fixes the data order and, wherever two variants build the
same layers, their initial weights, so a seed's runs share much of their luck (a weak seed is weak
in every variant). The per-seed differences ``d_s = A_s - B_s`` over the seeds both ran then have a
mean with standard deviation ``sd(d) / sqrt(n)``, which drops the luck the two runs share; the
paired difference holds when ``|mean d| > 2 sd(d) / sqrt(n)``; nothing is claimed with fewer
than two common seeds. It is the sharper test where the pairing is real, and a looser one in
probability (with 3 seeds, t > 2 on 2 degrees of freedom, p ~ 0.18 two-sided): a small
difference that holds only paired is consistent from seed to seed, not established.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

TEST_DESCRIPTION = (
    "a difference d = mean_A - mean_B holds (*) when |d| > 2 sqrt(sd_A²/n_A + sd_B²/n_B), "
    "the sd of a difference of two means over independent seeds (sample sd, n - 1); "
    "paired by seed: |mean d_s| > 2 sd(d_s)/sqrt(n) over the n seeds both ran, d_s = A_s - B_s"
)

# metric key in a run's metrics -> column title; fractions shown as percentages
METRICS = {
    "voc07_mAP50": "mAP@0.5",
    "coco_AP": "COCO AP",
    "coco_APs": "AP small",
    "recall50": "recall@0.5",
    "recall50_small": "small rec",
}


@dataclass(frozen=True)
class Spread:
    """``values`` of one metric over seeds; ``sd`` is None below two values."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return math.fsum(self.values) / self.n if self.values else None

    @property
    def sd(self) -> float | None:
        if self.n < 2:
            return None
        mean = math.fsum(self.values) / self.n
        return math.sqrt(math.fsum((v - mean) ** 2 for v in self.values) / (self.n - 1))


def spread(values: Sequence[float | None]) -> Spread:
    """The spread of the values that exist (a metric a run could not compute is None)."""
    return Spread(tuple(float(v) for v in values if v is not None))


@dataclass(frozen=True)
class Difference:
    """``mean_A - mean_B``, its standard deviation and whether it exceeds two of them
    (None: too few seeds to say)."""

    difference: float
    sd: float | None
    holds: bool | None

    @classmethod
    def tested(cls, difference: float, sd: float | None) -> Difference:
        """The difference, held when it exceeds twice ``sd`` (no claim without an sd)."""
        return cls(difference, sd, None if sd is None else abs(difference) > 2 * sd)


def compare(a: Spread, b: Spread) -> Difference | None:
    """A against B by the two-sd test of the module docstring; None if either has no value."""
    if a.mean is None or b.mean is None:
        return None
    sd = None if a.sd is None or b.sd is None else math.sqrt(a.sd**2 / a.n + b.sd**2 / b.n)
    return Difference.tested(a.mean - b.mean, sd)


def compare_paired(
    a: Mapping[int, float | None], b: Mapping[int, float | None]
) -> Difference | None:
    """A against B seed by seed (``{seed: value}``), by the paired test of the module docstring;
    None without a seed where both have a value."""
    pairs = [(a[seed], b[seed]) for seed in sorted(set(a) & set(b))]
    differences = spread([x - y for x, y in pairs if x is not None and y is not None])
    if differences.mean is None:
        return None
    sd = None if differences.sd is None else differences.sd / math.sqrt(differences.n)
    return Difference.tested(differences.mean, sd)


def summarize(runs: Mapping[str, Sequence[Mapping[str, Any]]], reference: str) -> dict[str, Any]:
    """The ``ablation.json`` summary of ``{variant: [metrics of each seed's run]}``.

    Returns ``{"reference", "test", "variants": [{"variant", "seeds", "diverged", "spread":
    {metric: {"mean", "sd", "n"}}, "train_seconds"}], "differences": [{"variant", "metric",
    "difference", "sd", "holds", "paired": {"difference", "sd", "holds"} or None}]}``: every
    variant's spread, and every other variant against ``reference``, as independent means and
    paired by seed. A run whose training diverged (``diverged_at`` in its metrics) has no
    scores: its seed is listed in ``"diverged"`` and left out of the means and differences.
    """
    if reference not in runs:
        raise ValueError(f"reference variant {reference!r} has no runs")
    spreads = {
        variant: {key: spread([run.get(key) for run in seeds]) for key in METRICS}
        for variant, seeds in runs.items()
    }
    variants = []
    for variant, seeds in runs.items():
        fresh = [
            run["train_seconds"] for run in seeds if not run.get("resumed") and not diverged(run)
        ]
        variants.append(
            {
                "variant": variant,
                "seeds": [run["seed"] for run in seeds],
                "diverged": [run["seed"] for run in seeds if diverged(run)],
                "spread": {
                    key: {"mean": s.mean, "sd": s.sd, "n": s.n}
                    for key, s in spreads[variant].items()
                },
                "train_seconds": spread(fresh).mean,
            }
        )
    differences = []
    for variant in runs:
        if variant == reference:
            continue
        for key in METRICS:
            found = compare(spreads[variant][key], spreads[reference][key])
            if found is None:
                continue
            paired = compare_paired(
                {run["seed"]: run.get(key) for run in runs[variant]},
                {run["seed"]: run.get(key) for run in runs[reference]},
            )
            differences.append(
                {
                    "variant": variant,
                    "metric": key,
                    **asdict(found),
                    "paired": None if paired is None else asdict(paired),
                }
            )
    return {
        "reference": reference,
        "test": TEST_DESCRIPTION,
        "variants": variants,
        "differences": differences,
    }


def diverged(run: Mapping[str, Any]) -> bool:
    """Whether a run's training diverged (:func:`rfcn.engine.experiments.diverged_metrics`)."""
    return "diverged_at" in run


def seeds_text(row: Mapping[str, Any]) -> str:
    """A summary row's seed count, ``3 (1 diverged)`` when some diverged (summaries written
    before diverged runs were kept have no ``"diverged"``)."""
    count = len(row.get("diverged", []))
    return f"{len(row['seeds'])}" + (f" ({count} diverged)" if count else "")


def run_seconds_text(run: Mapping[str, Any]) -> str:
    """A run's training seconds, or the iteration its training diverged at."""
    if diverged(run):
        return f"diverged at {run['diverged_at']}"
    return f"{run['train_seconds']:.0f}"


def difference_text(entry: Mapping[str, Any] | None) -> str:
    """``+1.2 ± 0.4*`` in percent points (``*``: holds), the bare difference without an sd."""
    if entry is None:
        return "n/a"
    text = f"{100 * entry['difference']:+.1f}"
    if entry["sd"] is None:
        return text
    return text + f" ± {100 * entry['sd']:.1f}" + ("*" if entry["holds"] else " ")


def fraction_text(value: float | None) -> str:
    """A fraction with three decimals (``0.918``), ``n/a`` for None."""
    return "n/a" if value is None else f"{value:.3f}"


def percent_text(value: float | None) -> str:
    """A fraction as a percentage with one decimal, ``n/a`` for None."""
    return "n/a" if value is None else f"{100 * value:.1f}"


def mean_sd_text(entry: Mapping[str, Any]) -> str:
    """A spread ``{"mean", "sd"}`` of fractions as ``90.5 ± 0.4`` percent (the mean alone
    without an sd)."""
    if entry["mean"] is None:
        return "n/a"
    if entry["sd"] is None:
        return percent_text(entry["mean"])
    return f"{percent_text(entry['mean'])} ± {percent_text(entry['sd'])}"


def format_summary(
    summary: Mapping[str, Any], runs: Mapping[str, Sequence[Mapping[str, Any]]]
) -> str:
    """Four plain-text tables: mean ± sd per variant, the differences from the reference as
    independent means and paired by seed (``*`` where the test holds), and every run."""
    width = max([len("variant"), *(len(v["variant"]) for v in summary["variants"])])
    seeds_width = max([len("seeds"), *(len(seeds_text(v)) for v in summary["variants"])])
    cell = 13
    head = f"{'variant':<{width}} {'seeds':>{seeds_width}} " + " ".join(
        f"{t:>{cell}}" for t in METRICS.values()
    )
    lines = ["mean ± sd over seeds (percent)", head + f" {'train s':>8}"]
    for row in summary["variants"]:
        cells = " ".join(f"{mean_sd_text(row['spread'][key]):>{cell}}" for key in METRICS)
        seconds = "n/a" if row["train_seconds"] is None else f"{row['train_seconds']:.0f}"
        lines.append(
            f"{row['variant']:<{width}} {seeds_text(row):>{seeds_width}} {cells} {seconds:>8}"
        )
    by_variant: dict[str, dict[str, Mapping[str, Any]]] = {}
    for entry in summary["differences"]:
        by_variant.setdefault(entry["variant"], {})[entry["metric"]] = entry
    for paired in (False, True):
        title = ", paired by seed" if paired else ""
        lines += [
            "",
            f"difference from {summary['reference']}{title} ± its sd (percent points; * holds)",
        ]
        lines.append(f"{'variant':<{width}} " + " ".join(f"{t:>{cell}}" for t in METRICS.values()))
        for variant, entries in by_variant.items():
            found = [entries.get(key) for key in METRICS]
            texts = [difference_text(e["paired"] if paired and e else e) for e in found]
            lines.append(f"{variant:<{width}} " + " ".join(f"{t:>{cell}}" for t in texts))
    lines += [f"test: {summary['test']}", "", "every run (percent)"]
    lines.append(
        f"{'variant':<{width}} {'seed':>5} "
        + " ".join(f"{t:>{cell}}" for t in METRICS.values())
        + f" {'train s':>8}"
    )
    for variant, seeds in runs.items():
        for run in seeds:
            cells = " ".join(f"{percent_text(run.get(key)):>{cell}}" for key in METRICS)
            lines.append(f"{variant:<{width}} {run['seed']:>5} {cells} {run_seconds_text(run):>8}")
    return "\n".join(lines)
