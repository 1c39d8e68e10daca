"""What a significance analysis shows: the text table, report.md, its figures and files.

    print(format_table(result))             # result: synthaug.significance.analyse(...)
    write_outputs(result, folder)           # report.md, one CSV a table, PNG figures

Everything here renders a Result; the numbers come from synthaug.significance (and from
synthaug.stats through it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthaug import stats
from synthaug.report import format_p, markdown_table
from synthaug.significance import (
    ADJUSTMENTS,
    ALPHA,
    CONFIDENCE,
    LABEL,
    Result,
    seeds_text,
)


@dataclass(frozen=True)
class Units:
    """How the metric is shown: accuracies as % and differences as percentage points (the CSVs keep
    the fraction MLflow logs); a header names the unit with `value_header` and `diff_header`."""

    scale: float
    value: str
    diff: str

    @classmethod
    def of(cls, metric: str) -> "Units":
        return cls(100.0, "%", " pp") if "acc" in metric else cls(1.0, "", "")

    @property
    def value_header(self) -> str:
        return f" ({self.value})" if self.value else ""

    @property
    def diff_header(self) -> str:
        return f" ({self.diff.strip()})" if self.diff else ""


def format_table(result: Result) -> str:
    """The main table as aligned text."""
    headers, rows = main_rows(result)
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [headers, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main_rows(result: Result) -> tuple[list[str], list[list[str]]]:
    """Per configuration: n, mean [CI], difference from the baseline [CI], t-test p, Holm p."""
    units = Units.of(result.metric)
    pct = f" {int(CONFIDENCE * 100)}%"
    headers = [LABEL, "n", f"{result.metric}{units.value_header}{pct} CI",
               f"diff vs baseline{units.diff_header}{pct} CI", "test", "p (t)", "p (Holm)"]
    comparisons = result.comparisons.set_index(LABEL)
    rows = []
    for s in result.summary.itertuples():
        name = s.configuration + (" [baseline]" if s.baseline else "")
        first = [name, str(s.n), _interval(s.mean, s.ci_low, s.ci_high, units, units.value)]
        if s.configuration not in comparisons.index:
            rows.append(first + ["-", "-", "-", "-"])
            continue
        c = comparisons.loc[s.configuration]
        test = f"paired n={c.n_pairs}" if c.test == "paired" else "Welch"
        rows.append(first + [_interval(c.mean_diff, c.ci_low, c.ci_high, units, units.diff, signed=True), test,
                             format_p(c.t_pvalue), format_p(c.t_holm)])
    return headers, rows


def _interval(mean: float, lo: float, hi: float, units: Units, suffix: str, signed: bool = False,
              bounds: bool = True) -> str:
    """'71.20% [70.10, 72.30]', or with NO_INTERVAL where the interval is not estimable; `bounds` False:
    the value alone."""
    if not np.isfinite(mean):
        return "-"
    text = ("{:+.2f}" if signed else "{:.2f}").format(mean * units.scale) + suffix
    return text + (" " + _bounds(lo, hi, units, signed) if bounds else "")


NO_INTERVAL = "[no CI]"     # fewer than 2 values, or no spread: see HOW_TO_READ


def _bounds(lo: float, hi: float, units: Units, signed: bool = False) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return NO_INTERVAL
    number = "{:+.2f}" if signed else "{:.2f}"
    return "[" + ", ".join(number.format(x * units.scale) for x in (lo, hi)) + "]"


def markdown_report(result: Result, figures: Sequence[str] = ()) -> str:
    """report.md: header, main table, test details, per-class, McNemar, warnings, how to read it."""
    units = Units.of(result.metric)
    headers, rows = main_rows(result)
    parts = [
        f"# Significance: {result.experiment} / {result.sweep}", "",
        f"- experiment: `{result.experiment}`", f"- sweep: `{result.sweep}`", f"- metric: `{result.metric}`",
        f"- baseline: `{result.baseline}`", f"- configurations: {len(result.summary)}",
        f"- seeds: {len(result.seeds)} ({seeds_text(result.seeds)})", "",
        "## Configurations against the baseline", "", markdown_table(headers, rows), "",
        "## Each configuration", "", _configurations(result, units), "",
        "## Tests in detail", "", _details(result, units), "",
        f"## Per-class differences with BH q < {ALPHA}", "", _significant_classes(result, units), "",
        "## McNemar's test (a test a paired seed, combined across seeds)", "", _mcnemar_table(result), "",
        "## Warnings", "", "\n".join(f"- {w}" for w in result.warnings) or "none", "",
    ]
    if figures:
        parts += ["## Figures", "", *[f"![{Path(f).stem}]({f})" for f in figures], ""]
    parts += ["## How to read this", "", HOW_TO_READ.format(confidence=int(CONFIDENCE * 100), alpha=ALPHA), ""]
    return "\n".join(parts)


HOW_TO_READ = (
    "Each configuration ran once per seed; a seed fixes the real images, the initial weights and the data "
    "order, so a configuration and the baseline with the same seed differ only in the configuration. "
    "'diff' is the mean over seeds of (configuration - baseline) with its {confidence}% t interval; an "
    "interval that excludes 0 and a small p (t) mean the difference is unlikely to be seed noise. With "
    "several configurations some p-values are small by chance: trust p (Holm) (family-wise) or the BH q "
    "(false discovery rate) below {alpha}. The Wilcoxon and sign-flip permutation p-values check the t-test "
    "without assuming normal differences; with n pairs the smallest sign-flip p is 2/2^n (0.0625 at 5 seeds), "
    "so the permutation test cannot reach 0.05 with fewer than 6 seeds. "
    "Accuracies are shown in % and differences in percentage points (pp); the CSVs hold fractions (0-1), as "
    "MLflow logs them. An accuracy's interval is Student's t on the angular scale (arcsine square root), which "
    "stays within [0, 100]%; every interval covers seed-to-seed variation only (every seed is tested on the same "
    "images). '" + NO_INTERVAL + "' marks an interval that is not estimable: fewer than 2 seeds, or values without "
    "spread (seeds that happened to agree show no variation; that is not certainty). "
    "'P(improve)' is the share of seeds where the configuration beat the baseline; 'seeds for 80% power' is "
    "how many seeds would detect the observed standardised effect (dz) 80% of the time, not given from fewer "
    "than 3 paired seeds or differences without spread (the sd they give is too rough to plan with). McNemar's test "
    "counts test images the configuration gets right and the baseline wrong (gains) and the reverse (losses), "
    "once a seed; every seed is tested on the same images, so the seeds' p-values are combined by twice "
    "their mean, which stays valid under any dependence (pooling the seeds' images as independent samples "
    "would not). Per-class rows come from fewer images and are corrected across every class and "
    "configuration of the sweep.")


def _configurations(result: Result, units: Units) -> str:
    rows = [[r.configuration, r.n, _interval(r.mean, math.nan, math.nan, units, units.value, bounds=False),
             _number(r.sd * units.scale), _bounds(r.ci_low, r.ci_high, units),
             _bounds(r.bca_low, r.bca_high, units), r.seeds]
            for r in result.summary.itertuples()]
    pct = f"{int(CONFIDENCE * 100)}%"
    t_name = "t (angular scale)" if units.value else "t"
    return markdown_table([LABEL, "n", f"mean{units.value_header}", f"sd{units.diff_header}",
                           f"{t_name} {pct} CI{units.value_header}", f"BCa bootstrap {pct} CI{units.value_header}",
                           "seeds"], rows)


def _details(result: Result, units: Units) -> str:
    """The test details: a column for each statistic of stats.PairedResult with a header, each followed by
    its adjustments across configurations (significance.ADJUSTMENTS)."""
    c = result.comparisons
    if c.empty:
        return "none"
    headers = [LABEL, "test", "pairs"]
    cells = [lambda r: r.configuration, lambda r: r.test, lambda r: r.n_pairs]
    for f in dataclasses.fields(stats.PairedResult):
        if "header" in f.metadata:
            headers.append(f.metadata["header"])             # a diff cell carries its unit: +0.42 pp
            cells.append(_cell(f.name, f.metadata["shown_as"], units))
            for column, of, _, header in ADJUSTMENTS:
                if of == f.name and header:
                    headers.append(header)
                    cells.append(_cell(column, "p", units))
    return markdown_table(headers, [[cell(r) for cell in cells] for r in c.itertuples()])


def _cell(name: str, shown_as: str, units: Units):
    """How column `name` of a comparisons row is shown."""
    if shown_as == "interval":
        return lambda r: _interval(r.mean_diff, r.ci_low, r.ci_high, units, units.diff, signed=True)
    if shown_as == "p":
        return lambda r: format_p(getattr(r, name))
    if name == "seeds_for_power":
        return lambda r: _number(r.seeds_for_power) if not math.isnan(r.seeds_for_power) else \
            f"not estimable with {r.n_pairs} paired seed(s)" + (" (no spread)" if r.n_pairs >= stats.MIN_FOR_POWER
                                                               else f" (n < {stats.MIN_FOR_POWER})")
    return lambda r: _number(getattr(r, name))


def _significant_classes(result: Result, units: Units) -> str:
    table = result.per_class[result.per_class["q_bh"] < ALPHA]
    if table.empty:
        return "none"
    rows = [[r[LABEL], r["class"],
             _interval(r["baseline_mean"], math.nan, math.nan, units, units.value, bounds=False),
             _interval(r["mean_diff"], r["ci_low"], r["ci_high"], units, units.diff, signed=True),
             format_p(r["t_pvalue"]), format_p(r["q_bh"])] for r in table.to_dict("records")]
    return markdown_table([LABEL, "class", f"baseline{units.value_header}", f"diff{units.diff_header}", "p (t)",
                           "BH q"], rows)


def _mcnemar_table(result: Result) -> str:
    m = result.mcnemar
    if m.empty:
        return "none (no per-sample predictions to pair)"
    rows = [[r.configuration, r.seeds, r.samples, r.gains, r.losses, r.seed_pvalues,
             format_p(r.pvalue) + (" (exact)" if r.exact else ""), format_p(r.p_holm)] for r in m.itertuples()]
    return markdown_table([LABEL, "seeds", "samples", "gains", "losses", "p a seed", "p (2 x mean)", "p (Holm)"],
                          rows)


def _number(x: float) -> str:
    if not np.isfinite(x):
        return "inf" if x == math.inf else "-"
    return f"{x:g}" if float(x).is_integer() else f"{x:.2f}"


# ---------------------------------------------------------------------------- figures and files


def plot_means(result: Result) -> Figure:
    """Mean metric per configuration with its interval and seeds; the baseline's interval as a band."""
    units = Units.of(result.metric)
    s = result.summary
    fig = Figure(figsize=(2 + 1.2 * len(s), 4))
    ax = fig.subplots()
    base = s[s["baseline"]].iloc[0]
    values = result.values
    if np.isfinite(base.ci_low):
        ax.axhspan(base.ci_low * units.scale, base.ci_high * units.scale, color="tab:gray", alpha=0.2,
                   label=f"baseline {int(CONFIDENCE * 100)}% CI")
    ax.axhline(base["mean"] * units.scale, color="tab:gray", lw=1, label="baseline mean")
    _intervals_and_seeds(ax, s, "mean", lambda label: values.loc[values[LABEL] == label, "value"], units,
                         "tab:blue", f"mean, {int(CONFIDENCE * 100)}% t interval")
    _labels(ax, s[LABEL], f"{result.metric}" + (" (%)" if units.value else ""))
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{result.experiment}: {result.metric} per configuration")
    return fig


def plot_differences(result: Result) -> Figure:
    """Difference from the baseline per configuration: mean and interval, and each seed's pair."""
    units = Units.of(result.metric)
    c = result.comparisons
    fig = Figure(figsize=(2 + 1.2 * max(1, len(c)), 4))
    ax = fig.subplots()
    ax.axhline(0, color="tab:gray", lw=1)
    _intervals_and_seeds(ax, c, "mean_diff", lambda label: result.pairs.loc[result.pairs[LABEL] == label, "diff"],
                         units, "tab:red", f"mean difference, {int(CONFIDENCE * 100)}% CI")
    _labels(ax, c[LABEL], f"{result.metric} - baseline" + (" (pp)" if units.diff else ""))
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"paired differences from {result.baseline}")
    return fig


def _intervals_and_seeds(ax, rows: pd.DataFrame, centre: str, seeds_of, units: Units, color: str, label: str) -> None:
    """A configuration a column: its `centre` with the ci_low..ci_high interval, and each seed's value beside it."""
    ax.errorbar(np.arange(len(rows)), rows[centre] * units.scale,
                yerr=error_bars(rows[centre], rows["ci_low"], rows["ci_high"], units), fmt="o", color=color, capsize=4,
                label=label)
    for i, name in enumerate(rows[LABEL]):
        v = seeds_of(name) * units.scale
        ax.scatter(i + np.linspace(-0.15, 0.15, len(v)) + 0.25, v, s=11, color="black", alpha=0.55,
                   label="one seed" if i == 0 else None)


def plot_per_class(result: Result) -> Figure:
    """Mean per-class difference from the baseline (configurations x classes); * marks BH q < ALPHA."""
    units = Units.of(result.metric)
    p = result.per_class
    rows = list(dict.fromkeys(p[LABEL]))
    grid = p.pivot(index=LABEL, columns="class", values="mean_diff").reindex(index=rows, columns=result.classes)
    q = p.pivot(index=LABEL, columns="class", values="q_bh").reindex(index=rows, columns=result.classes)
    values = grid.to_numpy(float) * units.scale
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    fig = Figure(figsize=(2.5 + 0.7 * len(result.classes), 1.2 + 0.45 * len(rows)))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="RdBu", vmin=-bound or -1, vmax=bound or 1, aspect="auto")
    ax.set_xticks(range(len(result.classes)), result.classes, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:+.1f}" + ("*" if q.iat[i, j] < ALPHA else ""), ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 0.6 * bound else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="difference" + (" (pp)" if units.diff else ""))
    ax.set_title(f"per-class difference from {result.baseline} (* BH q < {ALPHA})")
    return fig


def write_outputs(result: Result, folder: str | Path) -> list[Path]:
    """CSV tables, PNG figures and report.md in `folder`; the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("summary", "comparisons", "per_class", "mcnemar", "pairs", "values"):
        getattr(result, name).to_csv(folder / f"{name}.csv", index=False)
        written.append(folder / f"{name}.csv")
    figures = {"means.png": plot_means, "differences.png": plot_differences}
    if not result.per_class.empty:
        figures["per_class.png"] = plot_per_class
    for name, plot in figures.items():
        if name != "differences.png" or not result.comparisons.empty:
            plot(result).savefig(folder / name, dpi=120, bbox_inches="tight")
            written.append(folder / name)
    pictures = [p.name for p in written if p.suffix == ".png"]
    (folder / "report.md").write_text(markdown_report(result, pictures))
    return [*written, folder / "report.md"]


def error_bars(mean: pd.Series, lo: pd.Series, hi: pd.Series, units: Units) -> np.ndarray:
    """matplotlib yerr (2, n) for intervals [lo, hi] around mean, in display units; nan -> no bar."""
    err = np.vstack([mean - lo, hi - mean]).astype(float) * units.scale
    return np.nan_to_num(err, nan=0.0)


def _labels(ax, labels: Sequence[str], ylabel: str) -> None:
    tilted = len(labels) > 4 or max(map(len, labels), default=0) > 14
    ax.set_xticks(range(len(labels)), list(labels), rotation=30 if tilted else 0, ha="right" if tilted else "center")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
