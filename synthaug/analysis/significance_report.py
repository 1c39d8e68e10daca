"""What a significance analysis shows: the text table, report.md, its figures and files.

    print(format_table(result))             # result: synthaug.analysis.significance.analyse(...)
    write_outputs(result, folder)           # report.md, one CSV a table, PNG figures

Both lead with the primary analysis (synthaug.analysis.primary_report renders its tables), then the power at
declared effects, then the secondary comparisons. A table shows p-values only after Holm's adjustment
within their family (per-class: BH's q); the CSVs keep the unadjusted ones as `*_pvalue_unadjusted`.
Everything here renders a Result; the numbers come from synthaug.analysis.significance.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthaug.analysis.primary_report import (NO_INTERVAL, NOT_DECLARED, Table, Units, bounds_text, contrast_rows,
                                              exchange_lines, interval, power_line, power_rows, trend_rows)
from synthaug.analysis.significance import ADJUSTMENTS, ALPHA, CONFIDENCE, LABEL, PER_CLASS_BESIDE, Result, seeds_text
from synthaug.core.report import format_p, markdown_table
from synthaug.stats import compare as stats

PCT = int(CONFIDENCE * 100)


def format_table(result: Result) -> str:
    """The printed form: the primary contrasts, trends and exchange rates, the power at declared effects, then
    every configuration against the baseline; each as aligned text."""
    parts = ["PRIMARY ANALYSIS (declared before the sweep ran)"]
    if result.declaration is None:
        parts.append(NOT_DECLARED)
    else:
        parts += [f"family of {result.primary.family_size}; Holm within it for each test"]
        if len(result.primary.contrasts):
            parts.append(_aligned(*contrast_rows(result.primary, Units.of(result.metric), PCT)))
        if len(result.primary.trends):
            parts.append(_aligned(*trend_rows(result.primary, Units.of(result.metric), PCT)))
        parts += exchange_lines(result.primary, PCT)
    headers, rows = power_rows(result.power)
    parts += ["", "POWER AT DECLARED EFFECTS", power_line(result.power)] + ([_aligned(headers, rows)] if rows else [])
    parts += ["", "SECONDARY: EVERY CONFIGURATION AGAINST THE BASELINE", _aligned(*main_rows(result))]
    return "\n".join(parts)


def _aligned(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [headers, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main_rows(result: Result) -> Table:
    """Per configuration: n, mean [CI], difference from the baseline [CI], its family and Holm p within it."""
    units = Units.of(result.metric)
    headers = [LABEL, "n", f"{result.metric}{units.value_header} {PCT}% CI",
               f"diff vs baseline{units.diff_header} {PCT}% CI", "test", "family", "p (t, Holm in family)"]
    comparisons = result.comparisons.set_index(LABEL)
    rows = []
    for s in result.summary.itertuples():
        name = s.configuration + (" [baseline]" if s.baseline else "")
        first = [name, str(s.n), interval(s.mean, s.ci_low, s.ci_high, units, units.value)]
        if s.configuration not in comparisons.index:
            rows.append(first + ["-", "-", "-", "-"])
            continue
        c = comparisons.loc[s.configuration]
        test = f"paired n={c.n_pairs}" if c.test == "paired" else "Welch"
        rows.append(first + [interval(c.mean_diff, c.ci_low, c.ci_high, units, units.diff, signed=True), test,
                             c.family, format_p(c.t_holm)])
    return headers, rows


def markdown_report(result: Result, figures: Sequence[str] = ()) -> str:
    """report.md: header, the primary analysis, power, the secondary comparisons, per class, churn, warnings."""
    units = Units.of(result.metric)
    parts = [
        f"# Significance: {result.experiment} / {result.sweep}", "",
        f"- experiment: `{result.experiment}`", f"- sweep: `{result.sweep}`", f"- metric: `{result.metric}`",
        f"- baseline: `{result.baseline}`", f"- configurations: {len(result.summary)}",
        f"- seeds: {len(result.seeds)} ({seeds_text(result.seeds)})", "",
        "## Primary analysis", "", _primary(result, units), "",
        "## Power at declared effects", "", power_line(result.power), "", _markdown(*power_rows(result.power)), "",
        "## Secondary: every configuration against the baseline", "", markdown_table(*main_rows(result)), "",
        "## Each configuration", "", _configurations(result, units), "",
        "## Secondary tests in detail", "", _details(result, units), "",
        "## Per class (secondary)", "", _per_class(result, units), "",
        "## Churn: test images gained and lost, a seed at a time (descriptive, not a test)", "", _churn(result), "",
        "## Warnings", "", "\n".join(f"- {w}" for w in result.warnings) or "none", "",
    ]
    if figures:
        parts += ["## Figures", "", *[f"![{Path(f).stem}]({f})" for f in figures], ""]
    parts += ["## How to read this", "", HOW_TO_READ.format(confidence=PCT, alpha=ALPHA), ""]
    return "\n".join(parts)


def _primary(result: Result, units: Units) -> str:
    if result.declaration is None:
        return NOT_DECLARED + "."
    p = result.primary
    d = result.declaration
    contrasts = "; ".join(f"{t} vs {b or 'the baseline'}" for t, b in d.primary)
    declared = [f"- contrasts: {contrasts or 'none'}",
                f"- trend: {d.trend or 'none'}" + (f" within {d.trend_within}" if d.trend_within else ""),
                f"- exchange: {'; '.join(f'{s} vs {r}' for s, r in d.exchange) or 'none'}",
                f"- family: {len(p.contrasts)} contrast(s) and {len(p.trends)} trend(s); Holm over "
                f"{p.family_size} for each test"]
    parts = ["Declared before the sweep ran (tag `synthaug.primary`):", "", *declared, ""]
    parts += ["### Contrasts", "", _markdown(*contrast_rows(p, units, PCT)) if len(p.contrasts) else "none", ""]
    if len(p.trends) or d.trend:
        parts += ["### Trend", "", _markdown(*trend_rows(p, units, PCT)) if len(p.trends) else "none tested", ""]
    parts += ["### Exchange rate: synthetic against real images", "",
              "\n".join(f"- {line}" for line in exchange_lines(p, PCT)) or "none declared", ""]
    if p.notes:
        parts += ["Not tested as declared:", "", *[f"- {n}" for n in p.notes], ""]
    return "\n".join(parts).rstrip()


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return markdown_table(headers, rows) if rows else "none"


HOW_TO_READ = (
    "Each configuration ran once per seed; a seed fixes the real images, the initial weights and the data "
    "order, so a configuration and the baseline with the same seed differ only in the configuration. "
    "The primary analysis is what the sweep declared before it ran: its contrasts and trend are one family, "
    "and each test's p is adjusted by Holm over that family; a verdict says 'higher' or 'lower' where the "
    "adjusted p is below {alpha}. Each contrast is tested twice: by the seed-paired t-test, whose {confidence}% "
    "interval covers seed-to-seed variation on this one test set, and by the two-way (seed x test image) "
    "cluster-robust t-test on every test image's correctness (predictions.csv), whose interval covers seeds "
    "and the sampling of test images, and so speaks for the image distribution and not this test set alone. "
    "The trend is the slope across the declared column's values, a seed at a time, tested over seeds. An "
    "exchange rate is (synthetic - baseline) / (real - baseline) at the same count, with Fieller's interval "
    "over seeds; it has no bounded interval where the real images' gain is not distinguishable from 0. "
    "Power is at declared effects (0.3, 0.5, 1 pp) from the sweep's own paired sd, at Holm's smallest level "
    "over the family, never at the observed effect. Every other comparison with the baseline is secondary: "
    "the seed-paired t and the sign-flip permutation test, each with Holm over the secondary comparisons; "
    "with n pairs the smallest sign-flip p is 2/2^n. Per-class rows come from fewer images and carry BH's q "
    "across every class and configuration; precision and F1 stand beside recall where the trials logged "
    "them. No table shows an unadjusted p; the CSVs keep them as *_pvalue_unadjusted. "
    "Accuracies are shown in % and differences in percentage points (pp); the CSVs hold fractions (0-1), as "
    "MLflow logs them. An accuracy's interval is Student's t on the angular scale (arcsine square root), which "
    "stays within [0, 100]%. '" + NO_INTERVAL + "' marks an interval that is not estimable: fewer than 2 seeds, "
    "or values without spread (seeds that happened to agree show no variation; that is not certainty). "
    "'P(improve)' is the share of seeds where the configuration beat the baseline. The churn table counts test "
    "images the configuration gets right and the baseline wrong (gains) and the reverse (losses) a seed at a "
    "time: networks trained apart differ image by image whatever their accuracy, so churn is no test of "
    "whether a configuration helps.")


def _configurations(result: Result, units: Units) -> str:
    rows = [[r.configuration, r.n, interval(r.mean, math.nan, math.nan, units, units.value, bounds=False),
             _number(r.sd * units.scale), bounds_text(r.ci_low, r.ci_high, units),
             bounds_text(r.bca_low, r.bca_high, units), r.seeds]
            for r in result.summary.itertuples()]
    t_name = "t (angular scale)" if units.value else "t"
    return markdown_table([LABEL, "n", f"mean{units.value_header}", f"sd{units.diff_header}",
                           f"{t_name} {PCT}% CI{units.value_header}", f"BCa bootstrap {PCT}% CI{units.value_header}",
                           "seeds"], rows)


def _details(result: Result, units: Units) -> str:
    """The secondary comparisons in detail: a column for each statistic of stats.PairedResult with a header; a
    p-value only as its adjustment within the family (significance.ADJUSTMENTS)."""
    c = result.comparisons[result.comparisons["family"] == "secondary"]
    if c.empty:
        return "none"
    headers = [LABEL, "test", "pairs"]
    cells = [lambda r: r.configuration, lambda r: r.test, lambda r: r.n_pairs]
    for f in dataclasses.fields(stats.PairedResult):
        if "header" not in f.metadata:
            continue
        if f.metadata["shown_as"] == "p":
            for column, of, header in ADJUSTMENTS:
                if of == f.name:
                    headers.append(header)
                    cells.append(_cell(column, "p", units))
            continue
        headers.append(f.metadata["header"])             # a diff cell carries its unit: +0.42 pp
        cells.append(_cell(f.name, f.metadata["shown_as"], units))
    return markdown_table(headers, [[cell(r) for cell in cells] for r in c.itertuples()])


def _cell(name: str, shown_as: str, units: Units):
    """How column `name` of a comparisons row is shown."""
    if shown_as == "interval":
        return lambda r: interval(r.mean_diff, r.ci_low, r.ci_high, units, units.diff, signed=True)
    if shown_as == "p":
        return lambda r: format_p(getattr(r, name))
    return lambda r: _number(getattr(r, name))


def _per_class(result: Result, units: Units) -> str:
    """Every configuration x class: recall's mean and paired difference [CI] with BH q; precision and F1 (mean
    and difference from the baseline) where the runs logged them."""
    table = result.per_class
    if table.empty:
        return "none"
    beside = [name for name in PER_CLASS_BESIDE.get(result.metric, ()) if f"{name}_diff" in table]
    headers = [LABEL, "class", f"recall{units.value_header}", f"recall diff{units.diff_header} {PCT}% CI", "BH q"]
    for name in beside:
        short = name.split("_", 1)[-1]
        headers += [f"{short}{units.value_header}", f"{short} diff{units.diff_header}"]
    rows = []
    for r in table.to_dict("records"):
        row = [r[LABEL], r["class"], interval(r["mean"], math.nan, math.nan, units, units.value, bounds=False),
               interval(r["mean_diff"], r["ci_low"], r["ci_high"], units, units.diff, signed=True),
               format_p(r["q_bh"])]
        for name in beside:
            row += [interval(r[f"{name}_mean"], math.nan, math.nan, units, units.value, bounds=False),
                    interval(r[f"{name}_diff"], math.nan, math.nan, units, units.diff, signed=True, bounds=False)]
        rows.append(row)
    return markdown_table(headers, rows)


def _churn(result: Result) -> str:
    c = result.churn
    if c.empty:
        return "none (no per-image predictions to pair)"
    return markdown_table([LABEL, "seed", "test images", "gains", "losses", "net"],
                          [[r.configuration, r.seed, r.images, r.gains, r.losses, f"{r.net:+d}"]
                           for r in c.itertuples()])


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
    tables = {"primary_contrasts": result.primary.contrasts, "primary_trends": result.primary.trends,
              "exchange": result.primary.exchange, "power": result.power,
              **{name: getattr(result, name) for name in ("summary", "comparisons", "per_class", "churn", "pairs",
                                                          "values")}}
    for name, table in tables.items():
        unadjusted(table).to_csv(folder / f"{name}.csv", index=False)
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


def unadjusted(table: pd.DataFrame) -> pd.DataFrame:
    """The table as its CSV holds it: a raw p-value column is named `<test>_pvalue_unadjusted`."""
    return table.rename(columns={c: f"{c}_unadjusted" for c in table.columns if c.endswith("_pvalue")})


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
