"""How accuracy grows with the number K of synthetic samples added: a saturating fit, with seed-bootstrap
intervals, and where more samples stop helping.

    curves = sample_curves(trials)           # a Trials of sweeps/sample_count.py (synthaug.results)
    write_outputs(curves, folder)            # report.md, curves.csv, points.csv, sample_count.png

For each class set and each metric (overall accuracy and the targeted class's), the mean over seeds
at each K gets a t interval, and the model

    acc(K) = a + b * (1 - exp(-K / tau))

is fitted by least squares to the means: b is the gain more samples approach, and
K90 = tau * ln 10 the K by which 90% of it is reached; past K90 more samples add under a tenth of
the gain ("where more samples stop helping"). The intervals of b, K90 and the fitted curve are
percentiles of the same fit on seed-bootstrap resamples (a resampled seed keeps all its K: the
paired design). A gain whose interval includes 0 is reported as no gain, without a K90.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthaug import stats
from synthaug.results import FINISHED, InputError, Trials

CONFIDENCE = 0.95
UNIT = "fraction (0-1); gain and its interval in fraction points, K90 in samples a class"   # the CSVs' unit
BOOTSTRAPS = 400
SATURATION = 0.9            # K90: the K by which this share of the fitted gain is reached


@dataclass(frozen=True)
class SampleCurve:
    """One class set, one metric: the points, the fit and their intervals."""

    class_set: str
    metric: str
    points: pd.DataFrame        # K, n, mean, ci_low, ci_high (t on the angular scale), ci_note, unit
    a: float
    gain: float
    gain_low: float
    gain_high: float
    k90: float                  # nan when there is no gain
    k90_low: float
    k90_high: float
    band: pd.DataFrame          # K, fitted, low, high on a grid from 0 to the largest K
    seeds: int

    @property
    def helps(self) -> bool:
        return bool(np.isfinite(self.gain_low) and self.gain_low > 0)

    def verdict(self) -> str:
        few = (f" (only {self.seeds} seeds: their bootstrap has {math.comb(2 * self.seeds - 1, self.seeds)} distinct "
               f"resamples, so read these intervals as rough)" if self.seeds < 5 else "")
        return self._verdict() + few

    def _verdict(self) -> str:
        pct = lambda x: f"{x * 100:+.2f} pp"  # noqa: E731
        gain = f"{pct(self.gain)} [{pct(self.gain_low)}, {pct(self.gain_high)}]"
        if not self.helps:
            return f"no gain detected: the fitted gain {gain} has an interval that includes 0"
        k90 = f"K = {self.k90:.0f} [{self.k90_low:.0f}, {self.k90_high:.0f}]"
        if self.k90 > self.points["K"].max():
            return (f"still rising at the largest K tried ({self.points['K'].max()}): a gain of {gain} would take "
                    f"{k90} to reach {SATURATION:.0%} of, beyond the data; try larger K")
        return (f"approaches a gain of {gain}; {SATURATION:.0%} of it by {k90}; past that, more samples add "
                f"under {1 - SATURATION:.0%} of the gain")


def _model(k: np.ndarray, a: float, b: float, tau: float) -> np.ndarray:
    return a + b * (1.0 - np.exp(-k / tau))


def _by_asymptote(k: np.ndarray, a: float, c: float, tau: float) -> np.ndarray:
    return _model(k, a, c - a, tau)


def _fit(ks: np.ndarray, means: np.ndarray) -> tuple[float, float, float]:
    """(a, b, tau) by least squares, with the start a and the asymptote a + b accuracies in [0, 1] and tau
    between a tenth of the smallest K tried and three times the largest (a scale the data can speak to);
    nan when it does not fit."""
    from scipy.optimize import curve_fit

    top, low = float(ks.max()), float(ks[ks > 0].min())
    start = (float(np.clip(means[0], 0, 1)), float(np.clip(means[-1], 0, 1)), float(np.clip(top / 4, low, top)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (a, c, tau), _ = curve_fit(_by_asymptote, ks, means, p0=start,
                                       bounds=([0, 0, low / 10], [1, 1, top * 3]), maxfev=20_000)
    except (RuntimeError, ValueError):
        return math.nan, math.nan, math.nan
    return float(a), float(c - a), float(tau)


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
    a, b, tau = _fit(ks, values.mean(0))
    grid = np.linspace(0, ks.max(), 200)
    rng = np.random.default_rng(seed)
    boot_b, boot_k90, boot_curves = [], [], []
    for _ in range(BOOTSTRAPS):
        resampled = values[rng.integers(0, len(values), len(values))].mean(0)
        ba, bb, btau = _fit(ks, resampled)
        if np.isfinite(bb):
            boot_b.append(bb)
            boot_k90.append(btau * math.log(1 / (1 - SATURATION)))
            boot_curves.append(_model(grid, ba, bb, btau))
    tail = (1 - CONFIDENCE) / 2 * 100
    gain_low, gain_high = (np.percentile(boot_b, [tail, 100 - tail]) if boot_b else (math.nan, math.nan))
    k90 = tau * math.log(1 / (1 - SATURATION)) if np.isfinite(tau) else math.nan
    k90_low, k90_high = (np.percentile(boot_k90, [tail, 100 - tail]) if boot_k90 else (math.nan, math.nan))
    curves = np.array(boot_curves) if boot_curves else np.full((1, len(grid)), math.nan)
    band = pd.DataFrame({"K": grid, "fitted": _model(grid, a, b, tau), "low": np.percentile(curves, tail, axis=0),
                         "high": np.percentile(curves, 100 - tail, axis=0)})
    curve = SampleCurve(class_set, metric, points, a, b, float(gain_low), float(gain_high), k90, float(k90_low),
                        float(k90_high), band, len(values))
    if not curve.helps:
        curve = SampleCurve(class_set, metric, points, a, b, curve.gain_low, curve.gain_high, math.nan, math.nan,
                            math.nan, band, len(values))
    return curve


def sample_curves(trials: Trials) -> list[SampleCurve]:
    """A curve for each class set of the sweep: overall accuracy and each targeted class's accuracy."""
    frame = trials.frame[trials.frame["status"] == FINISHED]
    for column in ("augment_classes", "augment_count"):
        if column not in frame:
            raise InputError(f"--experiment: {trials.experiment!r} has no {column} param; it is not a sample-count "
                             f"sweep (sweeps/sample_count.py)")
    curves = []
    # K = 0 adds no samples: one baseline every class set shares (sweeps/sample_count.py runs it once)
    baseline = frame[frame["augment_count"] == 0]
    for class_set, rows in frame[frame["augment_count"] > 0].groupby("augment_classes"):
        rows = pd.concat([baseline, rows])
        targeted = [c for c in str(class_set).split(",") if c]
        for metric in [trials.metric, *(f"{trials.metric}.{c}" for c in targeted)]:
            if metric not in rows:
                continue
            table = rows.pivot_table(index="seed", columns="augment_count", values=metric, aggfunc="last")
            curves.append(fit_curve("+".join(targeted) or "none", metric, table))
    if not curves:
        raise InputError(f"--sweep {trials.sweep}: no finished trials with targeted classes to fit")
    return curves


def curves_table(curves: list[SampleCurve]) -> pd.DataFrame:
    return pd.DataFrame([{"class_set": c.class_set, "metric": c.metric, "seeds": c.seeds, "a": c.a, "gain": c.gain,
                          "gain_low": c.gain_low, "gain_high": c.gain_high, "k90": c.k90, "k90_low": c.k90_low,
                          "k90_high": c.k90_high, "unit": UNIT, "verdict": c.verdict()} for c in curves])


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
        ax.set_title(f"+K {c.class_set}: {c.metric}", fontsize=9)
        ax.set_xlabel("K (synthetic samples a class)")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def markdown_report(curves: list[SampleCurve], experiment: str, sweep: str) -> str:
    lines = [f"# Sample count: {experiment} / {sweep}", "",
             f"Model acc(K) = a + b (1 - exp(-K / tau)) fitted to the means over seeds; intervals are "
             f"{CONFIDENCE:.0%} percentiles of {BOOTSTRAPS} seed-bootstrap refits; K90 = tau ln 10. A point's "
             f"interval is Student's t on the angular scale across seeds (within [0, 100]%; none where the seeds "
             f"agree).", ""]
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
