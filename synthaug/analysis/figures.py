"""The study's figures from a sweep's finished trial runs, with intervals across seeds.

    trials = load_trials(uri, "long_tail")
    result = analyse(trials)                          # synthaug.analysis.significance: baseline, per-class q
    written, notes = write_figures(trials, result, folder, cache_dir=".synthaug")
    log_figures(trials, result, folder)               # an MLflow run, synthaug.analysis=figures

What is drawn (the study's figure numbers in brackets), each PNG with the CSV behind it:

- composition.png [1, 4, 8]: per configuration, real and synthetic (replaced, augmented)
  images a class, stacked, from the manifest.json of one run a configuration (the counts
  do not depend on the seed, except how an unconditional stream's samples fall into classes);
- per_class_accuracy.png [2, 3, 5, 7, 9]: per class, one bar a configuration, mean over
  seeds with its 95% interval (t on the angular scale, within [0, 100]%; none from seeds
  without spread); * marks a class whose paired difference from the baseline has BH
  q < 0.05, taken from synthaug.analysis.significance's per-class table. Its CSV is in percent
  (acc_pct, sd_pp, ci95_low_pct, ci95_high_pct, ci_note, ci_covers);
- confusion_<config>.png and confusion_diff_<config>.png [6, 10]: the row-normalised
  confusion matrix averaged over seeds, and the mean over paired seeds of (configuration
  - baseline), from confusion_matrix.csv artifacts;
- accuracy_vs_<axis>.png [Table 4]: the metric against each numeric grid axis: mean line,
  95% t band and one point a seed, a line for each combination of the other axes;
- samples.png [11]: one grid a generator (rows = classes, 8 images each), side by side,
  read from the pool store under the cache folder (pool.json in each pool folder; the
  generator's name from cache/generators/<name>-<key>/weights.sha256 or the sweep's
  synthaug.generator.<name>.weights tags). Unconditional pools are shown by the labels
  stored in their shards.

Only the runs synthaug.analysis.significance analysed (FINISHED, one a configuration and seed:
a sweep with two is refused) are read, so the figures and the significance report describe the same runs.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from synthaug.analysis.configurations import LABEL, format_value
from synthaug.analysis.results import Trials
from synthaug.analysis.sample_grids import plot_sample_grids, sample_grids, sweep_generators
from synthaug.analysis.significance import ALPHA, CONFIDENCE, Result, analysis_params
from synthaug.analysis.significance_report import Units, error_bars
from synthaug.core import report
from synthaug.core.tracking import ANALYSIS, ROLE, SWEEP, analysis_experiment, log_folder_run
from synthaug.stats import compare as stats

DPI = 120


# ---------------------------------------------------------------------------- reading artifacts


def analysed_runs(result: Result) -> pd.DataFrame:
    """configuration, seed, run_id of every run the significance analysis used, by configuration then seed."""
    order = {label: i for i, label in enumerate(result.summary[LABEL])}
    runs = result.values[[LABEL, "seed", "run_id"]]
    return runs.sort_values([LABEL, "seed"], key=lambda s: s.map(order) if s.name == LABEL else s,
                            ignore_index=True)


def read_artifact(uri: str, run_id: str, path: str) -> str | None:
    """The text of a run's artifact, or None when it is missing or unreadable."""
    try:
        with tempfile.TemporaryDirectory() as folder:
            return Path(MlflowClient(uri).download_artifacts(run_id, path, folder)).read_text()
    except (MlflowException, OSError):
        return None


def composition(uri: str, runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """A row a configuration x class (manifest order): real, replaced, augmented, synthetic;
    read from the first readable manifest.json of each configuration."""
    rows, notes = [], []
    for label, group in runs.groupby(LABEL, sort=False):
        manifest = next((m for m in (_json(read_artifact(uri, r, "manifest.json")) for r in group["run_id"])
                         if m and _has_counts(m)), None)
        if manifest is None:
            notes.append(f"{label}: no run has a manifest.json with class counts; left out of composition")
            continue
        for row in sorted(manifest["classes"], key=lambda r: r["index"]):
            rows.append({LABEL: label, "class": row["class"], "index": int(row["index"]), "real": int(row["real"]),
                         "replaced": int(row["replaced"]), "augmented": int(row["augmented"]),
                         "synthetic": int(row["synthetic"])})
    columns = [LABEL, "class", "index", "real", "replaced", "augmented", "synthetic"]
    return pd.DataFrame(rows, columns=columns), notes


def read_confusion(text: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """confusion_matrix.csv (report.write_confusion's layout) -> counts (true x predicted), classes."""
    frame = pd.read_csv(io.StringIO(text), index_col=0)
    return frame.to_numpy(float), tuple(str(c) for c in frame.columns)


def row_normalise(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (a row without images stays 0)."""
    totals = matrix.sum(1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)


def confusions(uri: str, runs: pd.DataFrame) -> tuple[dict[str, dict[int, np.ndarray]], tuple[str, ...], list[str]]:
    """configuration -> seed -> row-normalised confusion matrix; the classes; notes on missing files."""
    found: dict[str, dict[int, np.ndarray]] = {}
    classes: tuple[str, ...] = ()
    notes = []
    for r in runs.itertuples(index=False):
        text = read_artifact(uri, r.run_id, "confusion_matrix.csv")
        if text is None:
            notes.append(f"{getattr(r, LABEL)} seed {r.seed}: no confusion_matrix.csv (run {r.run_id[:8]})")
            continue
        matrix, names = read_confusion(text)
        classes = classes or names
        found.setdefault(getattr(r, LABEL), {})[int(r.seed)] = row_normalise(matrix)
    return found, classes, notes


def mean_confusion(by_seed: dict[int, np.ndarray]) -> np.ndarray:
    """The mean over seeds of row-normalised matrices."""
    return np.mean([by_seed[s] for s in sorted(by_seed)], axis=0)


def paired_confusion_difference(treatment: dict[int, np.ndarray], baseline: dict[int, np.ndarray]) -> np.ndarray | None:
    """The mean over the seeds both have of (treatment - baseline); None without a common seed."""
    common = sorted(set(treatment) & set(baseline))
    if not common:
        return None
    return np.mean([treatment[s] - baseline[s] for s in common], axis=0)


# ---------------------------------------------------------------------------- tables behind figures


def per_class_accuracy(trials: Trials, result: Result, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """A row a configuration x class, in percent: n seeds, mean accuracy, its sd across seeds (percentage
    points) and its interval (stats.proportion_interval: t on the angular scale, within [0, 100]%; ci_note says
    why one is missing), and the BH q of its paired difference from the baseline (synthaug.analysis.significance.per_class;
    none for the baseline). Columns say their unit and what the interval covers (PER_CLASS_COLUMNS)."""
    runs = analysed_runs(result).merge(trials.frame, on="run_id", suffixes=("", "_frame"))
    q = result.per_class.set_index([LABEL, "class"])["q_bh"] if len(result.per_class) else pd.Series(dtype=float)
    low, high = interval_columns(confidence)
    rows = []
    for label in result.summary[LABEL]:
        group = runs[runs[LABEL] == label]
        for cls in result.classes:
            values = group[f"{result.metric}.{cls}"].dropna().astype(float)
            if values.empty:
                continue
            d = stats.proportion_interval(values.to_numpy(), confidence)
            q_value = float(q.get((label, cls), np.nan))
            rows.append({LABEL: label, "class": cls, "baseline": label == result.baseline, "n_seeds": d.n,
                         "acc_pct": 100 * d.mean, "sd_pp": 100 * d.std, low: 100 * d.ci_low, high: 100 * d.ci_high,
                         "ci_note": stats.interval_note(d.n, d.std, d.mean), "ci_covers": CI_COVERS,
                         "q_bh": q_value, "significant": bool(q_value < ALPHA)})
    return pd.DataFrame(rows, columns=[LABEL, "class", "baseline", "n_seeds", "acc_pct", "sd_pp", low, high,
                                       "ci_note", "ci_covers", "q_bh", "significant"])


CI_COVERS = "seed-to-seed variation (Student t on the angular scale; the same test images every seed)"


def interval_columns(confidence: float = CONFIDENCE) -> tuple[str, str]:
    """The per-class table's interval columns: ('ci95_low_pct', 'ci95_high_pct') at 95%."""
    level = f"{confidence * 100:g}".replace(".", "_")
    return f"ci{level}_low_pct", f"ci{level}_high_pct"


def numeric_axes(result: Result) -> list[str]:
    """Config columns with numbers (not booleans) and at least two values: the x axes of accuracy plots."""
    s = result.summary
    return [c for c in result.config_columns if pd.api.types.is_numeric_dtype(s[c])
            and not pd.api.types.is_bool_dtype(s[c]) and s[c].nunique() > 1]


def accuracy_axis(result: Result, axis: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary rows with `axis` and a `line` column naming the other axes' values; one row a seed)."""
    others = [c for c in result.config_columns if c != axis]
    summary = result.summary.copy()
    summary["line"] = [", ".join(f"{c}={format_value(v)}" for c, v in zip(others, row)) or "all"
                       for row in summary[others].itertuples(index=False)] if others else "all"
    summary = summary.sort_values(["line", axis], ignore_index=True)
    points = result.values.merge(summary[[LABEL, axis, "line"]], on=LABEL)
    keep = ["line", axis, LABEL, "n", "mean", "sd", "ci_low", "ci_high", "ci_note", "ci_method", "unit"]
    return summary[keep], points[["line", axis, LABEL, "seed", "run_id", "value"]]


# ---------------------------------------------------------------------------- pools for sample grids


# ---------------------------------------------------------------------------- figures


def plot_composition(frame: pd.DataFrame) -> Figure:
    """A panel a configuration: per class real, replaced and augmented images, stacked."""
    labels = list(dict.fromkeys(frame[LABEL]))
    columns = min(3, len(labels))
    rows = -(-len(labels) // columns)
    classes = list(dict.fromkeys(frame.sort_values("index")["class"]))
    fig = Figure(figsize=(1.2 + 0.42 * len(classes) * columns, 0.6 + 3.0 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns, sharey=True, squeeze=False)).ravel()
    parts = (("real", "tab:blue"), ("replaced", "tab:orange"), ("augmented", "tab:red"))
    for ax, label in zip(axes, labels):
        part = frame[frame[LABEL] == label].set_index("class").reindex(classes).fillna(0)
        bottom = np.zeros(len(classes))
        for column, colour in parts:
            name = "synthetic (replacing real)" if column == "replaced" else (
                "synthetic (added)" if column == "augmented" else "real")
            ax.bar(range(len(classes)), part[column], bottom=bottom, color=colour, label=name, width=0.8)
            bottom += part[column].to_numpy(float)
        ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
        ax.set_title(label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    axes[0].set_ylabel("training images")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle("training set composition per configuration")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _clip_to_accuracy_range(ax, units) -> None:
    """Accuracies live in [0, 100]%, and so do their intervals: the axis's margins stay within it."""
    if units.value:
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0.0), min(high, 100.0 * 1.02))


PERCENT = Units(1.0, "%", " pp")     # a table already in percent


def plot_per_class(table: pd.DataFrame, classes: Sequence[str], metric: str, baseline: str) -> Figure:
    """Per class, a bar a configuration (per_class_accuracy's table, in %): mean over seeds, 95% interval;
    * where BH q < ALPHA."""
    units = PERCENT
    labels = list(dict.fromkeys(table[LABEL]))
    width = 0.8 / max(1, len(labels))
    fig = Figure(figsize=(2 + 0.25 * len(classes) * max(3, len(labels)), 4.2))
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab10"]
    for i, label in enumerate(labels):
        part = table[table[LABEL] == label].set_index("class").reindex(classes)
        x = np.arange(len(classes)) - 0.4 + width * (i + 0.5)
        low, high = interval_columns()
        mean = part["acc_pct"].to_numpy(float)
        err = error_bars(part["acc_pct"], part[low], part[high], PERCENT)
        ax.bar(x, mean, width=width, color=colours(i % 10), label=label + (" [baseline]" if label == baseline else ""),
               yerr=err, capsize=2, error_kw={"lw": 0.8})
        for xi, top, star in zip(x, mean + err[1], part["significant"].eq(True)):
            if star:
                ax.text(xi, top, "*", ha="center", va="bottom", fontsize=11, fontweight="bold")
    ax.set_xticks(range(len(classes)), list(classes), rotation=30, ha="right")
    ax.set_ylabel(f"{metric} per class" + (" (%)" if units.value else ""))
    _clip_to_accuracy_range(ax, units)
    ax.grid(axis="y", alpha=0.3)
    # below the axes: inside, it hides the bars of the rare classes it covers
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False,
              ncol=max(1, min(4, len(labels))))
    ax.set_title(f"per-class {metric}: mean over seeds, {int(CONFIDENCE * 100)}% interval (t, angular scale); "
                 f"* paired difference from the baseline with BH q < {ALPHA}", fontsize=9)
    return fig


def plot_accuracy_axis(summary: pd.DataFrame, points: pd.DataFrame, axis: str, metric: str) -> Figure:
    """The metric against a numeric grid axis: mean line, 95% t band, one point a seed; a line a group."""
    units = Units.of(metric)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab10"]
    span = float(summary[axis].max() - summary[axis].min()) or 1.0
    for i, (line, part) in enumerate(summary.groupby("line", sort=True)):
        colour = colours(i % 10)
        x = part[axis].to_numpy(float)
        ax.plot(x, part["mean"] * units.scale, "-o", color=colour, label=f"{line}: mean" if line != "all" else "mean")
        lo, hi = part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float)
        ax.fill_between(x, lo * units.scale, hi * units.scale, color=colour, alpha=0.2,
                        label=f"{int(CONFIDENCE * 100)}% t interval" if i == 0 else None)
        seeds = points[points["line"] == line]
        jitter = (seeds["seed"].rank(method="dense").to_numpy(float) - 1) * 0.006 * span
        ax.scatter(seeds[axis].to_numpy(float) + jitter, seeds["value"] * units.scale, s=12, color=colour,
                   alpha=0.6, edgecolors="black", linewidths=0.3, label="one seed" if i == 0 else None)
    ax.set_xlabel(axis)
    ax.set_ylabel(metric + (" (%)" if units.value else ""))
    _clip_to_accuracy_range(ax, units)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{metric} against {axis}")
    return fig


# ---------------------------------------------------------------------------- writing and logging


def slug(label: str) -> str:
    """A label as a file name part: 'replace_pct=2, augment_count=0' -> 'replace_pct_2-augment_count_0'."""
    text = label.replace(", ", "-").replace("=", "_")
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


def write_figures(trials: Trials, result: Result, folder: str | Path, cache_dir: str | Path | None = None,
                  ) -> tuple[list[Path], list[str]]:
    """Every figure whose data exists, as PNG with its CSV, in `folder`; (paths written, notes on what was skipped)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    runs = analysed_runs(result)
    written: list[Path] = []
    notes: list[str] = []
    notes += _write_composition(trials.tracking_uri, runs, folder, written)
    _write_per_class(trials, result, folder, written)
    notes += _write_confusions(trials.tracking_uri, result, runs, folder, written)
    notes += _write_accuracy_axes(result, folder, written)
    if cache_dir is not None:
        notes += _write_samples(trials, result, Path(cache_dir), folder, written)
    return written, notes


def _write_composition(uri: str, runs: pd.DataFrame, folder: Path, written: list[Path]) -> list[str]:
    frame, notes = composition(uri, runs)
    if frame.empty:
        return notes + ["composition figure skipped: no manifest.json with class counts"]
    written += [_csv(frame, folder / "composition.csv"), _png(plot_composition(frame), folder / "composition.png")]
    return notes


def _write_per_class(trials: Trials, result: Result, folder: Path, written: list[Path]) -> None:
    table = per_class_accuracy(trials, result)
    if table.empty:
        return
    written += [_csv(table, folder / "per_class_accuracy.csv"),
                _png(plot_per_class(table, result.classes, result.metric, result.baseline),
                     folder / "per_class_accuracy.png")]


def _write_confusions(uri: str, result: Result, runs: pd.DataFrame, folder: Path, written: list[Path]) -> list[str]:
    found, classes, notes = confusions(uri, runs)
    if not found:
        return notes + ["confusion figures skipped: no confusion_matrix.csv artifacts"]
    for label in result.summary[LABEL]:
        if label not in found:
            continue
        name = "baseline" if label == result.baseline else slug(label)
        mean = mean_confusion(found[label])
        seeds = len(found[label])
        written.append(_csv(pd.DataFrame(mean, index=classes, columns=classes), folder / f"confusion_{name}.csv"))
        written.append(_png(report.plot_confusion(mean, classes, f"{label}: row-normalised, mean of {seeds} seed(s)"),
                            folder / f"confusion_{name}.png"))
        if label == result.baseline or result.baseline not in found:
            continue
        diff = paired_confusion_difference(found[label], found[result.baseline])
        if diff is None:
            notes.append(f"{label}: no seed in common with the baseline; no confusion difference")
            continue
        common = len(set(found[label]) & set(found[result.baseline]))
        written.append(_csv(pd.DataFrame(diff, index=classes, columns=classes), folder / f"confusion_diff_{name}.csv"))
        written.append(_png(report.plot_confusion(diff, classes, f"{label} - baseline: mean over {common} paired "
                                                  f"seed(s)", diverging=True), folder / f"confusion_diff_{name}.png"))
    return notes


def _write_accuracy_axes(result: Result, folder: Path, written: list[Path]) -> list[str]:
    axes = numeric_axes(result)
    if not axes:
        return ["accuracy-against-axis figure skipped: the sweep has no numeric grid axis with two or more values"]
    for axis in axes:
        summary, points = accuracy_axis(result, axis)
        name = slug(axis)
        written += [_csv(summary, folder / f"accuracy_vs_{name}.csv"),
                    _csv(points, folder / f"accuracy_vs_{name}_seeds.csv"),
                    _png(plot_accuracy_axis(summary, points, axis, result.metric), folder / f"accuracy_vs_{name}.png")]
    return []


def _write_samples(trials: Trials, result: Result, cache_dir: Path, folder: Path, written: list[Path]) -> list[str]:
    grids = sample_grids(cache_dir, len(result.classes), sweep_generators(trials))
    if not grids:
        return [f"sample grid skipped: no synthetic pools under {cache_dir / 'pools'}"]
    classes = result.classes            # by class index: load_trials orders them as the manifest does
    rows = [{"generator": g.name, "conditional": g.conditional, "pool_seed": g.seed, "class": classes[c],
             "images": int((g.labels == c).sum())} for g in grids for c in range(len(classes))]
    written += [_csv(pd.DataFrame(rows), folder / "samples.csv"),
                _png(plot_sample_grids(grids, classes), folder / "samples.png")]
    return []


def _png(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def log_figures(trials: Trials, result: Result, folder: str | Path) -> str:
    """An 'analysis' run (synthaug.analysis=figures) in `<experiment>-analysis` with `folder` as artifacts."""
    experiment_id = analysis_experiment(trials.tracking_uri, trials.experiment)
    return log_folder_run(trials.tracking_uri, experiment_id, f"figures {trials.sweep}",
                          {ROLE: "analysis", SWEEP: trials.sweep, ANALYSIS: "figures"},
                          analysis_params(trials, result), {}, folder)


def _json(text: str | None) -> dict | None:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _has_counts(manifest: dict) -> bool:
    rows = manifest.get("classes")
    return bool(rows) and all(isinstance(r, dict) and {"class", "index", "real", "replaced", "augmented",
                                                       "synthetic"} <= set(r) for r in rows)


