"""Which configurations of a sweep differ from the baseline, seed by seed.

    trials = load_trials(uri, "replace_pct")
    result = analyse(trials, predictions=functools.partial(load_predictions, uri))
    print(format_table(result))             # synthaug.significance_report renders it:
    write_outputs(result, folder)           # report.md, one CSV a table, PNG figures
    log_analysis(trials, result, folder)    # an MLflow run with tag synthaug.role=analysis

Only FINISHED runs are analysed; a configuration is one combination of the sweep's varying
params (Trials.config_columns). The baseline is the configuration that uses no synthetic
images (replace_pct == 0 and no augmentation) unless one is named (parse_baseline). Each
configuration is compared with the baseline pair by pair over the seeds both have (the
paired design: a seed fixes the real subset, the weights and the data order), or, with
fewer than two seeds in common, by Welch's unpaired test, with a warning. Across
configurations the t-test p-values get Holm (family-wise) and Benjamini-Hochberg (false
discovery rate) adjustments and the permutation p-values Holm's. Per-class accuracy
differences get BH across every class x configuration of the sweep. McNemar's test runs once a
paired seed and the seeds' p-values are combined by twice their mean, valid although every seed
is tested on the same images (pooling the seeds' images as independent samples is not). The
report says the smallest p the exact tests could reach with the seeds there are. Intervals of
accuracies are t intervals on the angular scale (stats.proportion_interval), within [0, 1]; no
interval is given without spread (two seeds that agree), and no seeds-for-power figure from fewer
than 3 pairs. The CSVs hold the metric in its own unit (accuracy: a fraction, as MLflow logs it;
the `unit` column says so); the report shows accuracies in % and differences in percentage
points. Every number comes from synthaug.stats.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from synthaug import stats
from synthaug.report import format_p
from synthaug.results import FINISHED, InputError, Trials
from synthaug.tracking import ROLE, SWEEP, analysis_experiment, log_folder_run, metric_safe

CONFIDENCE = 0.95       # every interval
ALPHA = 0.05            # what "significant" means in the report (after adjustment)
MIN_SEEDS = stats.MIN_FOR_POWER     # below this a configuration is flagged: rough intervals, no seeds-for-power
LABEL = "configuration"

Predictions = Callable[[str], pd.DataFrame]     # run_id -> predictions.csv as a frame

# A comparison row: how it was tested and what it compares, every statistic of stats.PairedResult (its n
# is n_pairs here), and Welch's degrees of freedom when unpaired; then the adjustments across configurations.
COMPARISON_COLUMNS = ("test", "n_pairs", "n", "n_baseline", "baseline_mean", "mean",
                      *(f.name for f in dataclasses.fields(stats.PairedResult) if f.name != "n"), "welch_df")
# (column, the p-value it adjusts, how, its header in the report's test details or "" where it is not shown)
ADJUSTMENTS = (("t_holm", "t_pvalue", stats.holm, ""),
               ("t_bh", "t_pvalue", stats.benjamini_hochberg, "BH q"),
               ("permutation_holm", "permutation_pvalue", stats.holm, "p (perm., Holm)"))


@dataclass(frozen=True, eq=False)
class Result:
    """The analysis of one sweep; the tables are plain DataFrames keyed by `configuration`."""

    experiment: str
    sweep: str
    metric: str
    baseline: str                       # the baseline configuration's label
    config_columns: tuple[str, ...]
    classes: tuple[str, ...]
    seeds: tuple[int, ...]              # seeds with at least one finished run
    summary: pd.DataFrame               # a row a configuration: n, mean, sd, t and BCa intervals
    comparisons: pd.DataFrame           # a row a configuration other than the baseline
    per_class: pd.DataFrame             # a row a configuration x class, BH q across all of them
    mcnemar: pd.DataFrame               # a row a configuration: per-sample gains and losses
    pairs: pd.DataFrame                 # a row a configuration x paired seed: baseline, value, diff
    values: pd.DataFrame                # a row a finished run used: configuration, seed, run_id, value
    warnings: list[str]


# ---------------------------------------------------------------------------- the analysis


def analyse(trials: Trials, baseline: Mapping[str, str] | None = None, predictions: Predictions | None = None,
            confidence: float = CONFIDENCE, seed: int = 0) -> Result:
    """Summaries, comparisons with the baseline, per-class differences and McNemar tests."""
    runs = labelled(trials.frame, trials.config_columns)
    notes = left_out(runs)
    done, duplicates = newest_per_seed(runs[runs["status"] == FINISHED])
    notes += duplicates
    configs = configurations(done, trials.config_columns)
    if configs.empty:
        raise InputError(f"--sweep: sweep {trials.sweep!r} has no FINISHED trial runs yet")
    base = choose_baseline(configs, done, baseline)
    values = seed_values(done, trials.metric)
    others = [label for label in configs[LABEL] if label != base]
    notes += seed_warnings(values, base, others)
    if not others:
        notes.append(f"only one configuration ({base}); there is nothing to compare it with")
    mcnemar, unreadable = mcnemar_all(done, base, others, predictions)
    unit = unit_of(is_proportion(trials.metric))
    comparisons = compare_all(values, base, others, confidence, seed).assign(unit=unit)
    notes += reach_warnings(comparisons)
    return Result(
        experiment=trials.experiment, sweep=trials.sweep, metric=trials.metric, baseline=base,
        config_columns=trials.config_columns, classes=trials.classes,
        seeds=tuple(int(s) for s in sorted(done["seed"].unique())),
        summary=summarise(configs, values, base, confidence, seed, bounded=is_proportion(trials.metric)),
        comparisons=comparisons,
        per_class=per_class(done, trials.metric, trials.classes, base, others, confidence, seed),
        mcnemar=mcnemar,
        pairs=paired_values(values, base, others).assign(unit=unit),
        values=done[[LABEL, "seed", "run_id", trials.metric]].rename(columns={trials.metric: "value"}).assign(
            unit=unit),
        warnings=list(dict.fromkeys(notes + unreadable)))       # each warning once


def parse_baseline(text: str) -> dict[str, str]:
    """'replace_pct=0' or 'augment_classes=truck,ship,augment_count=500' -> {key: value}.

    A comma-separated item without '=' continues the previous value (list-valued params).
    """
    spec: dict[str, str] = {}
    key = None
    for item in text.split(","):
        name, equals, value = item.partition("=")
        if equals and name.strip():
            key = name.strip()
            if key in spec:
                raise InputError(f"--baseline: {key!r} given twice in {text!r}")
            spec[key] = value.strip()
        elif key is not None and not equals:
            spec[key] += "," + item.strip()
        else:
            raise InputError(f"--baseline: expected key=value[,key=value], got {text!r}")
    return spec


def left_out(frame: pd.DataFrame) -> list[str]:
    """A warning naming the runs (of a labelled frame) that did not finish and are left out, if any."""
    unfinished = frame[frame["status"] != FINISHED]
    if unfinished.empty:
        return []
    counts = ", ".join(f"{n} {status}" for status, n in unfinished["status"].value_counts().sort_index().items())
    which = "; ".join(f"{r.configuration} seed {_seed(r.seed)} {r.status} (run {r.run_id[:8]})"
                      for r in unfinished.itertuples())
    return [f"{len(unfinished)} of {len(frame)} trial runs left out as not FINISHED ({counts}): {which}"]


def labelled(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The frame with a `configuration` column: 'replace_pct=2, augment_count=500'."""
    labels = [config_label(dict(zip(columns, row))) for row in frame[list(columns)].itertuples(index=False)]
    return frame.assign(**{LABEL: labels})


def config_label(values: Mapping[str, object]) -> str:
    """'key=value' pairs joined by ', ' (floats without a trailing .0, lists as a+b); 'all runs' when empty."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items()) or "all runs"


def format_value(value: object) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value.replace(",", "+") or "none"       # list params are logged as "a,b"
    return str(value)


def newest_per_seed(done: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One finished run a configuration and seed (the newest), with a warning for each duplicate."""
    ordered = done.sort_values("start_time")
    keep = ordered.drop_duplicates([LABEL, "seed"], keep="last")
    notes = [f"{label} seed {seed}: {len(group)} FINISHED runs; using the newest (run {group['run_id'].iloc[-1][:8]})"
             for (label, seed), group in ordered.groupby([LABEL, "seed"], sort=True) if len(group) > 1]
    return keep.sort_values([LABEL, "seed"], ignore_index=True), notes


def configurations(done: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row a configuration: its label and config column values, in the columns' order."""
    configs = done[[LABEL, *columns]].drop_duplicates(LABEL)
    return configs.sort_values(list(columns) or LABEL, ignore_index=True)


def choose_baseline(configs: pd.DataFrame, done: pd.DataFrame, spec: Mapping[str, str] | None) -> str:
    """The baseline's label: the one configuration matching `spec`, else the one without synthetic data."""
    if spec:
        return _named_baseline(configs, spec)
    if len(configs) == 1:
        return configs[LABEL].iloc[0]
    plain = sorted(set(done.loc[uses_no_synthetic(done), LABEL]))
    allowed = ", ".join(c for c in configs.columns if c != LABEL) or "none (one configuration)"
    if len(plain) == 1:
        return plain[0]
    if not plain:
        raise InputError("--baseline: no configuration without synthetic images (replace_pct=0, augment_count=0); "
                         f"name one as key=value with key one of: {allowed}")
    raise InputError(f"--baseline: {len(plain)} configurations use no synthetic images ({'; '.join(plain)}); "
                     f"name one as key=value with key one of: {allowed}")


def uses_no_synthetic(frame: pd.DataFrame) -> pd.Series:
    """Runs that trained on real images only (as TrialConfig.uses_synthetic, inverted)."""
    if "replace_pct" not in frame and "augment_count" not in frame:
        return pd.Series(False, index=frame.index)
    replace = frame["replace_pct"].fillna(0) == 0 if "replace_pct" in frame else True
    augment = frame["augment_count"].fillna(0) == 0 if "augment_count" in frame else True
    if "augment_classes" in frame:
        augment = augment | frame["augment_classes"].fillna("").astype(str).eq("")
    return pd.Series(replace & augment, index=frame.index)


def _named_baseline(configs: pd.DataFrame, spec: Mapping[str, str]) -> str:
    columns = [c for c in configs.columns if c != LABEL]
    mask = pd.Series(True, index=configs.index)
    for key, text in spec.items():
        if key not in columns:
            raise InputError(f"--baseline: unknown column {key!r}; one of: {', '.join(columns) or 'none'}")
        mask &= _matches(configs[key], key, text)
    found = configs.loc[mask, LABEL].tolist()
    if len(found) == 1:
        return found[0]
    given = ",".join(f"{k}={v}" for k, v in spec.items())
    if not found:
        choices = "; ".join(f"{c} in {', '.join(format_value(v) for v in configs[c].unique())}" for c in columns)
        raise InputError(f"--baseline: no finished configuration has {given}; {choices}")
    raise InputError(f"--baseline: {given} matches {len(found)} configurations; add key=value for one of: "
                     f"{', '.join(c for c in columns if c not in spec)}")


def _matches(column: pd.Series, key: str, text: str) -> pd.Series:
    """column == text, with text read as the column's type."""
    if pd.api.types.is_bool_dtype(column):
        if text not in ("True", "False"):
            raise InputError(f"--baseline: {key} takes True or False, got {text!r}")
        return column == (text == "True")
    if pd.api.types.is_numeric_dtype(column):
        try:
            return np.isclose(column.astype(float), float(text), rtol=1e-12, atol=0)
        except ValueError:
            raise InputError(f"--baseline: {key} takes a number, got {text!r}") from None
    return column.fillna("").astype(str) == ("" if text == "none" else text)


def seed_values(done: pd.DataFrame, column: str) -> dict[str, pd.Series]:
    """configuration -> its finished values of `column`, indexed by seed (missing values dropped)."""
    return {label: group.set_index("seed")[column].dropna().astype(float).sort_index()
            for label, group in done.groupby(LABEL, sort=False)}


def seed_warnings(values: Mapping[str, pd.Series], base: str, others: Sequence[str]) -> list[str]:
    """Too few seeds, seeds missing against the baseline, unpaired comparisons: each kind of warning
    once, naming every configuration it concerns."""
    few = [f"{label} ({len(values[label])})" for label in [base, *others] if len(values[label]) < MIN_SEEDS]
    notes = [f"fewer than {MIN_SEEDS} finished seeds for {len(few)} configuration(s): {'; '.join(few)}; their "
             "intervals are rough or not estimable and no seeds-for-power figure is given"] if few else []
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
    """What the exact tests can say with the seeds there are: with n pairs the sign-flip and exact
    Wilcoxon tests cannot give p below 2/2^n, and Holm over m configurations multiplies the smallest by m."""
    paired = comparisons[comparisons["test"] == "paired"]
    if paired.empty:
        return []
    n, m = int(paired["n_pairs"].min()), len(comparisons)
    floor = stats.smallest_exact_pvalue(n)
    needed = next(k for k in range(1, 64) if m * stats.smallest_exact_pvalue(k) <= alpha)
    line = (f"with {n} paired seeds the sign-flip and exact Wilcoxon tests cannot give p below 2/2^{n} = "
            f"{floor:.4g}, and after Holm over {m} configuration(s) not below {min(1.0, m * floor):.4g}")
    if m * floor > alpha:
        return [f"{line}: they cannot reach {alpha:g}; {needed} seeds can"]
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


def compare_all(values: Mapping[str, pd.Series], base: str, others: Sequence[str], confidence: float,
                seed: int) -> pd.DataFrame:
    """A row a configuration vs the baseline, with Holm and BH across configurations."""
    rows = [{LABEL: label, **compare(values[label], values[base], confidence, seed)} for label in others]
    table = pd.DataFrame(rows, columns=[LABEL, *COMPARISON_COLUMNS])
    return table.assign(**{column: adjust(table[of]) if rows else [] for column, of, adjust, _ in ADJUSTMENTS})


def paired_values(values: Mapping[str, pd.Series], base: str, others: Sequence[str]) -> pd.DataFrame:
    """A row a configuration x seed that both it and the baseline have."""
    rows = [{LABEL: label, "seed": int(s), "baseline": values[base][s], "value": values[label][s],
             "diff": values[label][s] - values[base][s]}
            for label in others for s in values[label].index.intersection(values[base].index).sort_values()]
    return pd.DataFrame(rows, columns=[LABEL, "seed", "baseline", "value", "diff"])


def per_class(done: pd.DataFrame, metric: str, classes: Sequence[str], base: str, others: Sequence[str],
              confidence: float, seed: int) -> pd.DataFrame:
    """Per-class differences from the baseline; q = BH across every configuration x class."""
    rows = []
    for cls in classes:
        values = seed_values(done, f"{metric}.{cls}")
        for label in others:
            if len(values[label]) and len(values[base]):
                rows.append({LABEL: label, "class": cls, **compare(values[label], values[base], confidence, seed)})
    keep = [LABEL, "class", "test", "n_pairs", "baseline_mean", "mean", "mean_diff", "ci_low", "ci_high",
            "t_pvalue", "wilcoxon_pvalue"]
    table = pd.DataFrame(rows, columns=[LABEL, "class", *COMPARISON_COLUMNS])[keep]
    table["q_bh"] = stats.benjamini_hochberg(table["t_pvalue"]) if rows else []
    table["unit"] = unit_of(is_proportion(metric))
    order = {label: i for i, label in enumerate(others)}
    return table.sort_values([LABEL, "class"], key=lambda s: s.map(order) if s.name == LABEL else s.map(
        {c: i for i, c in enumerate(classes)}), ignore_index=True)


def mcnemar_all(done: pd.DataFrame, base: str, others: Sequence[str],
                predictions: Predictions | None) -> tuple[pd.DataFrame, list[str]]:
    """McNemar's test a configuration: one test a paired seed (the two runs of that seed on the same test
    images), combined across seeds by twice the mean p (valid whatever their dependence: every seed is
    tested on the same images); and a warning for each run whose predictions could not be read."""
    columns = [LABEL, "seeds", "samples", "gains", "losses", "seed_pvalues", "pvalue", "exact"]
    notes: list[str] = []
    if predictions is None or not others:
        return pd.DataFrame(columns=[*columns, "p_holm"]), notes
    runs = done.set_index([LABEL, "seed"])["run_id"]
    load = _cached(predictions, notes)
    rows = []
    for label in others:
        seeds = sorted(set(runs[label].index) & set(runs[base].index))
        pairs = [p for s in seeds if (p := _paired_correct(load(runs[label][s]), load(runs[base][s]))) is not None]
        if not pairs:
            continue
        tests = [stats.mcnemar(treatment, baseline) for treatment, baseline in pairs]
        rows.append({LABEL: label, "seeds": len(pairs), "samples": sum(len(t) for t, _ in pairs),
                     "gains": sum(r.b for r in tests), "losses": sum(r.c for r in tests),
                     "seed_pvalues": " ".join(format_p(r.pvalue) for r in tests),
                     "pvalue": stats.twice_mean_pvalue([r.pvalue for r in tests]),
                     "exact": all(r.exact for r in tests)})
    table = pd.DataFrame(rows, columns=columns)
    return table.assign(p_holm=stats.holm(table["pvalue"]) if rows else []), notes


def _paired_correct(treatment: pd.DataFrame | None, baseline: pd.DataFrame | None):
    """(treatment correct, baseline correct) over the test samples both runs predicted."""
    if treatment is None or baseline is None:
        return None
    both = treatment.merge(baseline, on="test_index", suffixes=("_t", "_b"))
    return ((both["prediction_t"] == both["label_t"]).to_numpy(),
            (both["prediction_b"] == both["label_b"]).to_numpy())


def _cached(predictions: Predictions, notes: list[str]) -> Callable[[str], pd.DataFrame | None]:
    """predictions, each run loaded once; a run without readable predictions is noted and gives None."""
    memo: dict[str, pd.DataFrame | None] = {}

    def load(run_id: str) -> pd.DataFrame | None:
        if run_id not in memo:
            try:
                frame = predictions(run_id)
                memo[run_id] = frame[["test_index", "label", "prediction"]]
            except (MlflowException, OSError, LookupError, ValueError) as err:
                notes.append(f"run {run_id[:8]}: no readable predictions.csv ({type(err).__name__}); "
                             "left out of McNemar's test")
                memo[run_id] = None
        return memo[run_id]
    return load


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def _seed(seed) -> str:
    return "?" if pd.isna(seed) else str(int(seed))


def seeds_text(seeds) -> str:
    return " ".join(str(int(s)) for s in seeds)


def analysis_metrics(result: Result) -> dict[str, float]:
    """The main numbers as MLflow metrics: mean.<config>, diff.<config>, p.<config>, ..."""
    metrics = {f"mean.{metric_key(r.configuration)}": r.mean for r in result.summary.itertuples()}
    for r in result.comparisons.itertuples():
        key = metric_key(r.configuration)
        metrics |= {f"diff.{key}": r.mean_diff, f"diff_ci_low.{key}": r.ci_low, f"diff_ci_high.{key}": r.ci_high,
                    f"p.{key}": r.t_pvalue, f"p_holm.{key}": r.t_holm}
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def metric_key(label: str) -> str:
    """A label as an MLflow-safe key: 'replace_pct=2, augment_count=0' -> 'replace_pct_2 augment_count_0'."""
    return metric_safe(label.replace(", ", " ").replace("=", "_"))


def analysis_params(trials: Trials, result: Result) -> dict:
    """What an analysis run of a sweep records as params (significance and figures alike)."""
    return {"metric": result.metric, "baseline": result.baseline, "seeds": list(result.seeds),
            "sweep_run_id": trials.sweep_run_id or "", "configurations": len(result.summary)}


def log_analysis(trials: Trials, result: Result, folder: str | Path) -> str:
    """An 'analysis' run in `<experiment>-analysis` (tracking.analysis_experiment) with the main numbers and
    `folder` as artifacts."""
    experiment_id = analysis_experiment(trials.tracking_uri, trials.experiment)
    return log_folder_run(trials.tracking_uri, experiment_id, f"analysis {trials.sweep}",
                          {ROLE: "analysis", SWEEP: trials.sweep}, analysis_params(trials, result),
                          analysis_metrics(result), folder)
