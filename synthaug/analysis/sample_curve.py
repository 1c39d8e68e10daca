"""How accuracy grows with the number K of synthetic samples added: where more samples stop helping, or
where they start to hurt, with seed-bootstrap intervals that cover at a few seeds.

    curves = sample_curves(trials)           # a Trials of sweeps/sample_count.py (synthaug.analysis.results)
    write_outputs(curves, folder)            # report.md, curves.csv, points.csv, sample_count.png

For each class set and each metric (overall accuracy and the targeted class's), the mean over seeds at each
K gets a t interval, and two models are fitted by least squares to the means (synthaug.stats.curve_fit):

    saturating  acc(K) = a + b (1 - exp(-K / tau))
    peaked      acc(K) = a + b (1 - exp(-K / tau)) - c K

The rule: with 5 or more values of K, the peaked model is reported when its c's interval lies above 0 and its peak K* = tau ln(b / (c tau))
lies inside the K tried; then the curve "peaks at K = ..." with a gain (its height above K = 0) and both
intervals. Otherwise the saturating one: b is the gain more samples approach and K90 = tau ln 10 the K by which
90% of it is reached ("saturates: 90% of the gain by K = ..."). Intervals come from seed-bootstrap refits (a
resampled seed keeps all its K: the paired design), their percentiles widened by sqrt(n/(n-1)) t_{n-1}/z so
they cover at 8 seeds (curve_fit.widened_interval). A gain whose interval includes 0 is no gain, without a K90.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthaug.analysis.configurations import labelled
from synthaug.analysis.results import FINISHED, InputError, Trials
from synthaug.analysis.significance import one_per_seed
from synthaug.stats import compare as stats
from synthaug.stats.curve_fit import (SATURATION, Fit, bootstrap_means, fit_peaked, fit_saturating, widened_interval,
                                      widening)

CONFIDENCE = 0.95
UNIT = ("fraction (0-1); gain and its interval in fraction points, c in fraction points a sample, K90 and the peak "
        "in samples a class")   # the CSVs' unit
BOOTSTRAPS = 400
SATURATING, PEAKED = "saturating", "peaked"
PEAKED_MIN_KS = 5                   # values of K the peaked model (a, b, tau, c) needs before it is considered
GRID_POINTS = 200           # the fitted band's K values, from 0 to the largest K


RANGE_SLACK = 0.005         # how far (a fraction) a fitted accuracy may stray outside [0, 1] before the fit is refused


@dataclass(frozen=True)
class SampleCurve:
    """One class set, one metric: the points, the chosen model's fit and their intervals."""

    class_set: str
    metric: str
    points: pd.DataFrame        # K, n, mean, ci_low, ci_high (t on the angular scale), ci_note, unit
    model: str                  # SATURATING or PEAKED (the rule in the module's docstring)
    a: float
    gain: float                 # saturating: b; peaked: the fitted height of the peak above K = 0
    gain_low: float
    gain_high: float
    k90: float                  # saturating with a gain; else nan
    k90_low: float
    k90_high: float
    c: float                    # the peaked model's fall a sample (fitted whichever model is reported)
    c_low: float
    c_high: float
    peak: float                 # peaked: the K of the fitted maximum; else nan
    peak_low: float
    peak_high: float
    band: pd.DataFrame          # K, fitted, low, high on a grid from 0 to the largest K
    seeds: int

    @property
    def fitted_range(self) -> tuple[float, float]:
        """The lowest and highest value the chosen model's curve takes from K = 0 to the largest K."""
        return float(self.band["fitted"].min()), float(self.band["fitted"].max())

    @property
    def leaves_range(self) -> bool:
        """Whether that curve leaves what an accuracy can be (0 to 100%, half a point of slack): a fit whose
        curve does so (a steep rise between two K, overshot) does not describe the points."""
        low, high = self.fitted_range
        return low < -RANGE_SLACK or high > 1 + RANGE_SLACK

    @property
    def helps(self) -> bool:
        return bool(not self.leaves_range and np.isfinite(self.gain_low) and self.gain_low > 0)

    def verdict(self) -> str:
        few = (f" (only {self.seeds} seeds: their bootstrap has {math.comb(2 * self.seeds - 1, self.seeds)} distinct "
               f"resamples, so read these intervals as rough)" if self.seeds < 5 else "")
        return self._verdict() + few

    def _verdict(self) -> str:
        pct = lambda x: f"{x * 100:+.2f} pp"  # noqa: E731
        if self.leaves_range:
            low, high = self.fitted_range
            return (f"not described by the {self.model} model: its fitted curve runs from {low:.1%} to {high:.1%} "
                    f"between K = 0 and {self.points['K'].max()}, outside what an accuracy can be; read the points, "
                    f"not the fit")
        gain = f"{pct(self.gain)} [{pct(self.gain_low)}, {pct(self.gain_high)}]"
        if self.model == PEAKED:
            return (f"peaks at K = {self.peak:.0f} [{self.peak_low:.0f}, {self.peak_high:.0f}] with a gain of {gain}; "
                    f"past it more samples lower accuracy (c = {self.c * 1000 * 100:.3f} pp a 1,000 samples "
                    f"[{self.c_low * 1000 * 100:.3f}, {self.c_high * 1000 * 100:.3f}])")
        if np.isfinite(self.gain_high) and self.gain_high < 0:
            return f"more samples lower it: the fitted change {gain} has an interval below 0"
        if not self.helps:
            return f"no gain detected: the fitted gain {gain} has an interval that includes 0"
        k90 = f"K = {self.k90:.0f} [{self.k90_low:.0f}, {self.k90_high:.0f}]"
        if self.k90 > self.points["K"].max():
            return (f"still rising at the largest K tried ({self.points['K'].max()}): a gain of {gain} would take "
                    f"{k90} to reach {SATURATION:.0%} of, beyond the data; try larger K")
        return (f"saturates: {SATURATION:.0%} of the gain by {k90}, approaching a gain of {gain}; past that, more "
                f"samples add under {1 - SATURATION:.0%} of the gain")


def fit_curve(class_set: str, metric: str, table: pd.DataFrame, seed: int = 0) -> SampleCurve:
    """table: one row a seed, one column a K (the metric's value); seeds with a missing K are dropped."""
    table = table.dropna().sort_index(axis=1)
    ks = table.columns.to_numpy(float)
    if len(table) < 2 or len(ks) < 3:
        raise InputError(f"sample count: {class_set} {metric} needs at least 2 seeds with every K and 3 values "
                         f"of K; has {len(table)} seeds and {len(ks)} values")
    values = table.to_numpy(float)
    if values.min() < 0 or values.max() > 1:
        raise InputError(f"--metric: the sample-count fit takes an accuracy (a fraction, 0-1); {metric} has values "
                         f"{values.min():g}..{values.max():g}")
    rows = []
    for k, column in zip(ks, values.T):
        d = stats.proportion_interval(column, CONFIDENCE)      # within [0, 1]; nan without spread
        rows.append({"K": int(k), "n": d.n, "mean": d.mean, "ci_low": d.ci_low, "ci_high": d.ci_high,
                     "ci_note": stats.interval_note(d.n, d.std, d.mean), "unit": UNIT})
    points = pd.DataFrame(rows)
    n = len(values)
    means, draws = values.mean(0), bootstrap_means(values, BOOTSTRAPS, np.random.default_rng(seed))
    grid = np.linspace(0, ks.max(), GRID_POINTS)
    interval = lambda estimate, drawn, log=False: tuple(  # noqa: E731
        float(x) for x in widened_interval(estimate, drawn, n, CONFIDENCE, log))
    peaked, peaked_draws = fit_peaked(ks, means), fit_peaked(ks, draws)
    c_low, c_high = interval(peaked.c, peaked_draws.c)
    peak = float(peaked.peak())
    # the peaked model has 4 parameters: it is considered only with at least one K to spare (5 or more)
    if len(ks) >= PEAKED_MIN_KS and c_low > 0 and 0 < peak < ks.max():
        fit, drawn = peaked, peaked_draws
        curves = drawn.at(grid)
        gain = float(peaked.at(np.array([peak]))[0] - peaked.a)
        gain_low, gain_high = interval(gain, curves.max(-1) - drawn.a)
        peak_low, peak_high = np.clip(interval(peak, drawn.peak_within(ks.max())), 0, ks.max())
        k90 = k90_low = k90_high = math.nan
        model = PEAKED
    else:
        fit, drawn = fit_saturating(ks, means), fit_saturating(ks, draws)
        gain = float(fit.b)
        gain_low, gain_high = interval(gain, drawn.b)
        k90, (k90_low, k90_high) = float(fit.k90), interval(fit.k90, drawn.k90, log=True)
        if not gain_low > 0:
            k90 = k90_low = k90_high = math.nan
        peak = peak_low = peak_high = math.nan
        model = SATURATING
    band = _band(grid, fit, drawn.at(grid), n)
    return SampleCurve(class_set, metric, points, model, float(fit.a), gain, gain_low, gain_high, k90, k90_low,
                       k90_high, float(peaked.c), c_low, c_high, peak, float(peak_low), float(peak_high), band, n)


def _band(grid: np.ndarray, fit: Fit, drawn_curves: np.ndarray, seeds: int) -> pd.DataFrame:
    fitted = fit.at(grid)
    low, high = widened_interval(fitted, drawn_curves.T, seeds, CONFIDENCE)
    return pd.DataFrame({"K": grid, "fitted": fitted, "low": low, "high": high})


def sample_curves(trials: Trials) -> list[SampleCurve]:
    """A curve for each arm and class set of the sweep (the synthetic images and each control arm: oversampled,
    withheld real, ...): overall accuracy and each targeted class's accuracy. Two finished runs of one
    configuration and seed are refused (significance.one_per_seed), not silently one of them kept."""
    frame = trials.frame[trials.frame["status"] == FINISHED]
    for column in ("augment_classes", "augment_count"):
        if column not in frame:
            raise InputError(f"--experiment: {trials.experiment!r} has no {column} param; it is not a sample-count "
                             f"sweep (sweeps/sample_count.py)")
    one_per_seed(labelled(frame, trials.config_columns), trials.sweep)
    curves = []
    # K = 0 adds no samples: one baseline every arm and class set shares (sweeps/sample_count.py runs it once)
    baseline = frame[frame["augment_count"] == 0]
    arms = ["arm"] if "arm" in frame else []
    for key, rows in frame[frame["augment_count"] > 0].groupby([*arms, "augment_classes"]):
        arm, class_set = key if arms else ("", key[0])
        rows = pd.concat([baseline, rows])
        targeted = [c for c in str(class_set).split(",") if c]
        name = " ".join(filter(None, [arm, "+".join(targeted) or "none"]))
        for metric in [trials.metric, *(f"{trials.metric}.{c}" for c in targeted)]:
            if metric not in rows:
                continue
            table = rows.pivot_table(index="seed", columns="augment_count", values=metric)
            curves.append(fit_curve(name, metric, table))
    if not curves:
        raise InputError(f"--sweep {trials.sweep}: no finished trials with targeted classes to fit")
    return curves


def curves_table(curves: list[SampleCurve]) -> pd.DataFrame:
    return pd.DataFrame([{"class_set": c.class_set, "metric": c.metric, "seeds": c.seeds, "model": c.model, "a": c.a,
                          "gain": c.gain, "gain_low": c.gain_low, "gain_high": c.gain_high, "k90": c.k90,
                          "k90_low": c.k90_low, "k90_high": c.k90_high, "peak": c.peak, "peak_low": c.peak_low,
                          "peak_high": c.peak_high, "c": c.c, "c_low": c.c_low, "c_high": c.c_high, "unit": UNIT,
                          "verdict": c.verdict()} for c in curves])


def plot_curves(curves: list[SampleCurve]) -> Figure:
    fig = Figure(figsize=(5 * len(curves), 3.8))
    for i, c in enumerate(curves):
        ax = fig.add_subplot(1, len(curves), i + 1)
        ax.fill_between(c.band["K"], c.band["low"] * 100, c.band["high"] * 100, alpha=0.25, label="fit, 95% band")
        ax.plot(c.band["K"], c.band["fitted"] * 100, label="fit")
        p = c.points
        below, above = (p["mean"] - p["ci_low"]) * 100, (p["ci_high"] - p["mean"]) * 100
        ax.errorbar(p["K"], p["mean"] * 100, yerr=np.nan_to_num([below, above]),      # no bar without an interval
                    fmt="o", capsize=3, label=f"mean of {c.seeds} seeds, 95% CI")
        if np.isfinite(c.k90):
            ax.axvline(c.k90, linestyle="--", color="grey", label=f"K90 = {c.k90:.0f}")
        if np.isfinite(c.peak):
            ax.axvspan(c.peak_low, c.peak_high, color="grey", alpha=0.15)
            ax.axvline(c.peak, linestyle="--", color="grey", label=f"peak K = {c.peak:.0f}")
        ax.set_title(f"+K {c.class_set}: {c.metric}", fontsize=9)
        ax.set_xlabel("K (synthetic samples a class)")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def markdown_report(curves: list[SampleCurve], experiment: str, sweep: str) -> str:
    lines = [f"# Sample count: {experiment} / {sweep}", "",
             "Two models fitted to the means over seeds: saturating, acc(K) = a + b (1 - exp(-K / tau)), and "
             "peaked, the same - c K. The peaked one is reported when c's interval lies above 0 and its peak "
             "K* = tau ln(b / (c tau)) lies inside the K tried; else the saturating one, with K90 = tau ln 10 (90% "
             f"of the gain b). Intervals ({CONFIDENCE:.0%}): percentiles of {BOOTSTRAPS} seed-bootstrap refits (a "
             "resampled seed keeps all its K), each side's distance from the estimate widened by "
             "sqrt(n/(n-1)) t_(n-1)/z (" + ", ".join(sorted({f"x{widening(c.seeds, CONFIDENCE):.2f} at {c.seeds} seeds"
                                                           for c in curves})) +
             ") so that they cover at a few seeds; on the log scale for K90. They cover seed-to-seed variation "
             "(every seed is tested on the same images). A point's interval is Student's t on the angular scale "
             "across seeds (within [0, 100]%; none where the seeds agree).", ""]
    for c in curves:
        lines += [f"## +K {c.class_set}: {c.metric}", "", f"{c.verdict()}.", "",
                  f"| K | seeds | mean (%) | {CONFIDENCE:.0%} CI (%) |", "|---|---|---|---|"]
        lines += [f"| {r.K} | {r.n} | {r.mean * 100:.2f} | " + (f"[{r.ci_low * 100:.2f}, {r.ci_high * 100:.2f}]"
                                                                if np.isfinite(r.ci_low) else "[no CI]") + " |"
                  for r in c.points.itertuples()]
        lines.append("")
    return "\n".join(lines + ["![curves](sample_count.png)", ""])


def write_outputs(curves: list[SampleCurve], folder: str | Path, experiment: str, sweep: str) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    curves_table(curves).to_csv(folder / "curves.csv", index=False)
    pd.concat([c.points.assign(class_set=c.class_set, metric=c.metric) for c in curves]).to_csv(
        folder / "points.csv", index=False)
    plot_curves(curves).savefig(folder / "sample_count.png", dpi=110, bbox_inches="tight")
    (folder / "report.md").write_text(markdown_report(curves, experiment, sweep))
    return [folder / n for n in ("curves.csv", "points.csv", "sample_count.png", "report.md")]
