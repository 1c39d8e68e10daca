"""Which configurations of a sweep differ from the baseline, seed by seed, the declared primary analysis first.

    trials = load_trials(uri, "replace_pct")
    result = analyse(trials, predictions=functools.partial(load_predictions, uri))
    print(format_table(result))             # synthaug.analysis.significance_report renders it:
    write_outputs(result, folder)           # report.md, one CSV a table, PNG figures
    log_analysis(trials, result, folder)    # an MLflow run with tag synthaug.role=analysis

Only FINISHED runs are analysed, one a configuration and seed: two FINISHED runs of the same
configuration and seed in one sweep are refused (InputError), not chosen between. A configuration is
one combination of the sweep's varying params (Trials.config_columns); the baseline is the
configuration without synthetic images unless one is named (synthaug.analysis.configurations).

Two families, each with Holm's adjustment within it. The primary family is what the sweep declared
before it ran (Trials.declaration, synthaug.primary): its contrasts, each by the seed-paired t and by
the two-way (seed x test image) cluster-robust t from predictions.csv, and its trends; then the
declared exchange rates (Fieller). Every other comparison with the baseline is secondary: the
seed-paired t (or, with fewer than two seeds in common, Welch's, with a warning) and the sign-flip
permutation test. Per-class differences (recall, with precision and F1 beside it where the trials
logged them) get Benjamini-Hochberg across every class x configuration, also secondary. Power is
given at declared effects (inference.DECLARED_EFFECTS) from the sweep's own paired sd, never at an observed
effect. Which test images a configuration gains and loses against the baseline, a seed at a time, is
a descriptive churn table, not a test. Intervals of accuracies are t intervals on the angular scale
(stats.proportion_interval), within [0, 1]; no interval is given without spread. The CSVs hold the
metric in its own unit (the `unit` column says so); the report shows accuracies in % and differences
in percentage points. Every number comes from synthaug.stats.compare and synthaug.stats.inference.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from synthaug.analysis.configurations import LABEL, choose_baseline, configurations, labelled, seed_values
from synthaug.analysis.primary import Primary, analyse_primary, power_at_effects
from synthaug.analysis.results import FINISHED, Declaration, InputError, Trials
from synthaug.core.tracking import ROLE, SWEEP, analysis_experiment, log_folder_run, metric_safe
from synthaug.stats import compare as stats
from synthaug.stats.predictions import Predictions, cached, churn, correct_by_seed

CONFIDENCE = 0.95       # every interval
ALPHA = 0.05            # what "significant" means in the report (after adjustment)
MIN_SEEDS = 3           # below this a configuration is flagged: its sd, and so its intervals, are rough
PER_CLASS_BESIDE = {"test_acc": ("test_precision", "test_f1")}   # a metric's per-class companions, where logged

# A comparison row: how it was tested and what it compares, every statistic of stats.PairedResult (its n
# is n_pairs here), and Welch's degrees of freedom when unpaired; then its family and the adjustments within it.
COMPARISON_COLUMNS = ("test", "n_pairs", "n", "n_baseline", "baseline_mean", "mean",
                      *(f.name for f in dataclasses.fields(stats.PairedResult) if f.name != "n"), "welch_df")
# (column, the p-value it adjusts within the comparison's family, its header in the report's test details)
ADJUSTMENTS = (("t_holm", "t_pvalue", "p (t, Holm)"),
               ("permutation_holm", "permutation_pvalue", "p (sign-flip, Holm)"))


@dataclass(frozen=True, eq=False)
class Result:
    """The analysis of one sweep; the tables are plain DataFrames keyed by `configuration`."""

    experiment: str
    sweep: str
    metric: str
    baseline: str                       # the baseline configuration's label
    config_columns: tuple[str, ...]
    classes: tuple[str, ...]
    seeds: tuple[int, ...]              # seeds with a finished run
    declaration: Declaration | None     # what the sweep declared as its primary analysis, if anything
    primary: Primary                    # the primary family's contrasts, trends and exchange rates
    power: pd.DataFrame                 # a row a declared effect: power with these seeds, seeds for 80%
    summary: pd.DataFrame               # a row a configuration: n, mean, sd, t and BCa intervals
    comparisons: pd.DataFrame           # a row a configuration other than the baseline, its family and Holm p
    per_class: pd.DataFrame             # a row a configuration x class, BH q across all of them
    churn: pd.DataFrame                 # a row a configuration x paired seed: test images gained and lost
    pairs: pd.DataFrame                 # a row a configuration x paired seed: baseline, value, diff
    values: pd.DataFrame                # a row a finished run used: configuration, seed, run_id, value
    warnings: list[str]


# ---------------------------------------------------------------------------- the analysis


def analyse(trials: Trials, baseline: Mapping[str, str] | None = None, predictions: Predictions | None = None,
            confidence: float = CONFIDENCE, seed: int = 0) -> Result:
    """The primary family, the secondary comparisons, per-class differences, power and churn."""
    runs = labelled(trials.frame, trials.config_columns)
    notes = left_out(runs)
    done = one_per_seed(runs[runs["status"] == FINISHED], trials.sweep)
    configs = configurations(done, trials.config_columns)
    if configs.empty:
        raise InputError(f"--sweep: sweep {trials.sweep!r} has no FINISHED trial runs yet")
    base = choose_baseline(configs, done, baseline)
    values = seed_values(done, trials.metric)
    others = [label for label in configs[LABEL] if label != base]
    notes += seed_warnings(values, base, others)
    if not others:
        notes.append(f"only one configuration ({base}); there is nothing to compare it with")
    if trials.declaration is None:
        notes.append("no primary analysis was declared; every comparison is secondary")
    unreadable: list[str] = []
    load = cached(predictions, unreadable) if predictions is not None else None
    primary = analyse_primary(trials.declaration, done, trials.config_columns, base, values, load, confidence)
    unit = unit_of(is_proportion(trials.metric))
    comparisons = compare_all(values, base, others, primary, confidence, seed).assign(unit=unit)
    notes += primary.notes + reach_warnings(comparisons)
    pairs = paired_values(values, base, others)
    return Result(
        experiment=trials.experiment, sweep=trials.sweep, metric=trials.metric, baseline=base,
        config_columns=trials.config_columns, classes=trials.classes,
        seeds=tuple(int(s) for s in sorted(done["seed"].unique())), declaration=trials.declaration,
        primary=primary, power=power(primary, values, pairs, comparisons),
        summary=summarise(configs, values, base, confidence, seed, bounded=is_proportion(trials.metric)),
        comparisons=comparisons,
        per_class=per_class(done, trials.metric, trials.classes, base, others, confidence, seed),
        churn=churn_all(done, base, others, load),
        pairs=pairs.assign(unit=unit),
        values=done[[LABEL, "seed", "run_id", trials.metric]].rename(columns={trials.metric: "value"}).assign(
            unit=unit),
        warnings=list(dict.fromkeys(notes + unreadable)))       # each warning once


def left_out(frame: pd.DataFrame) -> list[str]:
    """A warning naming the runs (of a labelled frame) that did not finish and are left out, if any."""
    unfinished = frame[frame["status"] != FINISHED]
    if unfinished.empty:
        return []
    counts = ", ".join(f"{n} {status}" for status, n in unfinished["status"].value_counts().sort_index().items())
    which = "; ".join(f"{r.configuration} seed {_seed(r.seed)} {r.status} (run {r.run_id[:8]})"
                      for r in unfinished.itertuples())
    return [f"{len(unfinished)} of {len(frame)} trial runs left out as not FINISHED ({counts}): {which}"]


def one_per_seed(done: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """The finished runs, ordered by configuration and seed; two of one configuration and seed are refused."""
    twice = done[done.duplicated([LABEL, "seed"], keep=False)].sort_values([LABEL, "seed", "start_time"])
    if len(twice):
        first = twice.iloc[0]
        ids = twice.loc[(twice[LABEL] == first[LABEL]) & (twice["seed"] == first["seed"]), "run_id"]
        more = twice[[LABEL, "seed"]].drop_duplicates().shape[0] - 1
        raise InputError(f"--sweep: sweep {sweep!r} has {len(ids)} FINISHED runs of {first[LABEL]} seed "
                         f"{_seed(first['seed'])} (runs {', '.join(ids)})" + (f", and {more} more such seed(s)"
                                                                              if more else "") +
                         "; delete all but one (mlflow runs delete --run-id ID), or pick another sweep with --sweep")
    return done.sort_values([LABEL, "seed"], ignore_index=True)


def seed_warnings(values: Mapping[str, pd.Series], base: str, others: Sequence[str]) -> list[str]:
    """Too few seeds, seeds missing against the baseline, unpaired comparisons: each kind of warning
    once, naming every configuration it concerns."""
    few = [f"{label} ({len(values[label])})" for label in [base, *others] if len(values[label]) < MIN_SEEDS]
    notes = [f"fewer than {MIN_SEEDS} finished seeds for {len(few)} configuration(s): {'; '.join(few)}; their "
             "intervals are rough or not estimable"] if few else []
    base_seeds = set(values[base].index)
    unpaired = []
    for label in others:
        seeds = set(values[label].index)
        if missing := sorted(base_seeds - seeds):
            notes.append(f"{label}: no finished run for seed(s) {seeds_text(missing)} that the baseline has")
        if extra := sorted(seeds - base_seeds):
            notes.append(f"{label}: seed(s) {seeds_text(extra)} have no finished baseline run to pair with")
        if len(seeds & base_seeds) < 2:
            unpaired.append(label)
    if unpaired:
        notes.append(f"fewer than 2 seeds in common with the baseline for {'; '.join(unpaired)}: compared unpaired "
                     "(Welch's t-test), which ignores the seed pairing")
    return notes


def is_proportion(metric: str) -> bool:
    """An accuracy (test_acc, test_acc.<class>, train_acc): a value in [0, 1]."""
    return metric.split(".", 1)[0].endswith("acc")


def summarise(configs: pd.DataFrame, values: Mapping[str, pd.Series], base: str, confidence: float,
              seed: int, bounded: bool = False) -> pd.DataFrame:
    """A row a configuration: n, mean, sd, t interval, BCa bootstrap interval, its seeds, in the metric's
    own unit (`unit`). `bounded`: the metric is a proportion, and its t interval is taken on the angular
    scale (stats.proportion_interval), which keeps it within [0, 1]; the BCa interval of a mean is
    within the values' range already. `ci_note` says why an interval is missing (n < 2, no spread)."""
    interval = stats.proportion_interval if bounded else stats.describe
    rows = []
    for config in configs.to_dict("records"):
        v = values[config[LABEL]]
        d = interval(v, confidence)
        lo, hi = stats.bootstrap_bca_ci(v, confidence=confidence, seed=seed)
        rows.append({**config, "baseline": config[LABEL] == base, "n": d.n, "mean": d.mean, "sd": d.std,
                     "ci_low": d.ci_low, "ci_high": d.ci_high, "bca_low": lo, "bca_high": hi,
                     "ci_note": stats.interval_note(d.n, d.std, d.mean),
                     "ci_method": interval_method(bounded, confidence), "unit": unit_of(bounded),
                     "seeds": seeds_text(v.index)})
    return pd.DataFrame(rows)


def interval_method(bounded: bool, confidence: float = CONFIDENCE) -> str:
    """What the summary's t interval is and what it covers, as its CSV says."""
    scale = " on the angular scale, within [0, 1]" if bounded else ""
    return f"{confidence:.0%} Student t{scale}; covers seed-to-seed variation"


def unit_of(bounded: bool) -> str:
    """The unit of a table's values: accuracies are fractions (0-1) here, as in MLflow; reports show %."""
    return "fraction (0-1)" if bounded else "the metric's own"


def reach_warnings(comparisons: pd.DataFrame, alpha: float = ALPHA) -> list[str]:
    """What the exact sign-flip test can say with the seeds there are: with n pairs it cannot give p below
    2/2^n, and Holm over the m secondary comparisons multiplies the smallest by m."""
    secondary = comparisons[comparisons["family"] == "secondary"]
    paired = secondary[secondary["test"] == "paired"]
    if paired.empty:
        return []
    n, m = int(paired["n_pairs"].min()), len(secondary)
    floor = stats.smallest_exact_pvalue(n)
    needed = next(k for k in range(1, 64) if m * stats.smallest_exact_pvalue(k) <= alpha)
    line = (f"with {n} paired seeds the sign-flip test cannot give p below 2/2^{n} = {floor:.4g}, and after Holm "
            f"over {m} secondary comparison(s) not below {min(1.0, m * floor):.4g}")
    if m * floor > alpha:
        return [f"{line}: it cannot reach {alpha:g}; {needed} seeds can"]
    return [f"{line} ({needed} seeds are the fewest that reach {alpha:g})"]


def compare(treatment: pd.Series, baseline: pd.Series, confidence: float = CONFIDENCE, seed: int = 0) -> dict:
    """treatment - baseline: paired over the common seeds when there are 2 or more, else Welch."""
    common = treatment.index.intersection(baseline.index).sort_values()
    row = dict.fromkeys(COMPARISON_COLUMNS, math.nan)
    row.update(n_pairs=len(common), n=len(treatment), n_baseline=len(baseline),
               baseline_mean=_mean(baseline), mean=_mean(treatment))
    if len(common) >= 2:
        paired = dataclasses.asdict(stats.paired_comparison(treatment[common], baseline[common], confidence, seed))
        paired.pop("n")
        return {**row, **paired, "test": "paired"}
    welch = stats.welch_comparison(treatment, baseline, confidence)
    return {**row, "test": "welch", "mean_diff": welch.mean_diff, "ci_low": welch.ci_low, "ci_high": welch.ci_high,
            "t_stat": welch.t_stat, "t_pvalue": welch.pvalue, "welch_df": welch.df}


def compare_all(values: Mapping[str, pd.Series], base: str, others: Sequence[str], primary: Primary,
                confidence: float, seed: int) -> pd.DataFrame:
    """A row a configuration vs the baseline, in its family: "primary" when it is a declared contrast with the
    baseline (its Holm p is the primary family's), else "secondary" (Holm within the secondary comparisons)."""
    rows = [{LABEL: label, **compare(values[label], values[base], confidence, seed)} for label in others]
    table = pd.DataFrame(rows, columns=[LABEL, *COMPARISON_COLUMNS])
    declared = primary.contrasts[primary.contrasts["baseline"] == base].drop_duplicates(LABEL).set_index(LABEL)
    table["family"] = np.where(table[LABEL].isin(declared.index), "primary", "secondary")
    secondary = table["family"] == "secondary"
    for column, of, _ in ADJUSTMENTS:
        table[column] = math.nan
        if secondary.any():
            table.loc[secondary, column] = stats.holm(table.loc[secondary, of].to_numpy(float))
    table.loc[~secondary, "t_holm"] = table.loc[~secondary, LABEL].map(declared["t_holm"]).astype(float)
    return table


def paired_values(values: Mapping[str, pd.Series], base: str, others: Sequence[str]) -> pd.DataFrame:
    """A row a configuration x seed that both it and the baseline have."""
    rows = [{LABEL: label, "seed": int(s), "baseline": values[base][s], "value": values[label][s],
             "diff": values[label][s] - values[base][s]}
            for label in others for s in values[label].index.intersection(values[base].index).sort_values()]
    return pd.DataFrame(rows, columns=[LABEL, "seed", "baseline", "value", "diff"])


def per_class(done: pd.DataFrame, metric: str, classes: Sequence[str], base: str, others: Sequence[str],
              confidence: float, seed: int) -> pd.DataFrame:
    """Per-class differences from the baseline; q = BH across every configuration x class (secondary). Beside
    them, where the runs logged them (PER_CLASS_BESIDE), each companion's mean over seeds for the configuration
    and the baseline and its mean paired difference: `<name>_mean`, `<name>_baseline`, `<name>_diff`."""
    beside = [name for name in PER_CLASS_BESIDE.get(metric, ()) if any(c.startswith(name + ".") for c in done)]
    rows = []
    for cls in classes:
        values = seed_values(done, f"{metric}.{cls}")
        companions = {name: seed_values(done, f"{name}.{cls}") for name in beside if f"{name}.{cls}" in done}
        for label in others:
            if len(values[label]) and len(values[base]):
                row = {LABEL: label, "class": cls, **compare(values[label], values[base], confidence, seed)}
                for name, v in companions.items():
                    row |= _described(name, v[label], v[base])
                rows.append(row)
    keep = [LABEL, "class", "test", "n_pairs", "baseline_mean", "mean", "mean_diff", "ci_low", "ci_high", "t_pvalue",
            *(f"{name}_{part}" for name in beside for part in ("baseline", "mean", "diff"))]
    table = pd.DataFrame(rows, columns=keep)
    table["q_bh"] = stats.benjamini_hochberg(table["t_pvalue"]) if rows else []
    table["unit"] = unit_of(is_proportion(metric))
    order = {label: i for i, label in enumerate(others)}
    return table.sort_values([LABEL, "class"], key=lambda s: s.map(order) if s.name == LABEL else s.map(
        {c: i for i, c in enumerate(classes)}), ignore_index=True)


def _described(name: str, values: pd.Series, baseline: pd.Series) -> dict:
    common = values.index.intersection(baseline.index)
    return {f"{name}_baseline": _mean(baseline), f"{name}_mean": _mean(values),
            f"{name}_diff": _mean(values[common] - baseline[common])}


def churn_all(done: pd.DataFrame, base: str, others: Sequence[str], load) -> pd.DataFrame:
    """A row a configuration x paired seed: the test images it gets right and the baseline wrong (gains), and
    the reverse (losses). Descriptive: which images change, not whether the configuration helps."""
    columns = [LABEL, "seed", "images", "gains", "losses", "net"]
    if load is None or not others:
        return pd.DataFrame(columns=columns)
    runs = done.set_index([LABEL, "seed"])["run_id"]
    tables = [churn(correct_by_seed(load, runs[label].to_dict(), runs[base].to_dict())).assign(**{LABEL: label})
              for label in others]
    return pd.concat(tables, ignore_index=True)[columns]


def power(primary: Primary, values: Mapping[str, pd.Series], pairs: pd.DataFrame,
          comparisons: pd.DataFrame) -> pd.DataFrame:
    """Power at the declared effects from the sweep's own seed-paired differences (the primary contrasts', else
    every comparison's) at Holm's first-step level over the primary family (with nothing declared, the
    secondary one)."""
    diffs = [_paired_diff(values[r.configuration], values[r.baseline]) for r in primary.contrasts.itertuples()]
    if not diffs:
        diffs = [group["diff"].to_numpy(float) for _, group in pairs.groupby(LABEL)]
    family = primary.family_size if primary.declared else int((comparisons["family"] == "secondary").sum())
    n_seeds = max((len(d) for d in diffs), default=0)
    return power_at_effects(diffs, n_seeds, family, ALPHA)


def _paired_diff(treatment: pd.Series, baseline: pd.Series) -> np.ndarray:
    common = treatment.index.intersection(baseline.index)
    return (treatment[common] - baseline[common]).to_numpy(float)


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def _seed(seed) -> str:
    return "?" if pd.isna(seed) else str(int(seed))


def seeds_text(seeds) -> str:
    return " ".join(str(int(s)) for s in seeds)


def analysis_metrics(result: Result) -> dict[str, float]:
    """The main numbers as MLflow metrics: mean.<config>, diff.<config> with its interval, p_holm.<config> (Holm
    within the comparison's family), the primary contrasts' Holm p of each test and the exchange rates; no
    unadjusted p."""
    metrics = {f"mean.{metric_key(r.configuration)}": r.mean for r in result.summary.itertuples()}
    for r in result.comparisons.itertuples():
        key = metric_key(r.configuration)
        metrics |= {f"diff.{key}": r.mean_diff, f"diff_ci_low.{key}": r.ci_low, f"diff_ci_high.{key}": r.ci_high,
                    f"p_holm.{key}": r.t_holm}
    for r in result.primary.contrasts.itertuples():
        key = metric_key(f"{r.configuration} vs {r.baseline}")
        metrics |= {f"primary.p_holm.{key}": r.t_holm, f"primary.two_way_p_holm.{key}": r.two_way_holm}
    for r in result.primary.exchange.itertuples():
        key = metric_key(f"{r.synthetic} vs {r.real}")
        metrics |= {f"exchange.rate.{key}": r.rate, f"exchange.ci_low.{key}": r.ci_low,
                    f"exchange.ci_high.{key}": r.ci_high}
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def metric_key(label: str) -> str:
    """A label as an MLflow-safe key: 'replace_pct=2, augment_count=0' -> 'replace_pct_2 augment_count_0'."""
    return metric_safe(label.replace(", ", " ").replace("=", "_"))


def analysis_params(trials: Trials, result: Result) -> dict:
    """What an analysis run of a sweep records as params (significance and figures alike)."""
    return {"metric": result.metric, "baseline": result.baseline, "seeds": list(result.seeds),
            "sweep_run_id": trials.sweep_run_id or "", "configurations": len(result.summary),
            "primary_declared": result.declaration is not None, "primary_family_size": result.primary.family_size}


def log_analysis(trials: Trials, result: Result, folder: str | Path) -> str:
    """An 'analysis' run in `<experiment>-analysis` (tracking.analysis_experiment) with the main numbers and
    `folder` as artifacts."""
    experiment_id = analysis_experiment(trials.tracking_uri, trials.experiment)
    return log_folder_run(trials.tracking_uri, experiment_id, f"analysis {trials.sweep}",
                          {ROLE: "analysis", SWEEP: trials.sweep}, analysis_params(trials, result),
                          analysis_metrics(result), folder)
