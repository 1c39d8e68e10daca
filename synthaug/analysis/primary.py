"""The primary analysis a sweep declared (results.Declaration), tested as one family.

    primary = analyse_primary(declaration, done, columns, base, values, load, confidence)
    primary.contrasts   # a row a declared contrast: the seed-paired t and the two-way (seed x image) t, Holm'd
    primary.trends      # a row a trend: the slope over seeds, Holm'd with the contrasts
    primary.exchange    # a row a (synthetic, real) pair: one synthetic image is worth `rate` real images (Fieller)

A declared text names configurations in --baseline form; a column it leaves out stands for every
value of it, and a configuration the first text names pairs with the one the second names that agrees
with it on every configuration column the second leaves out (a baseline "" is the sweep's baseline). The family is every expanded contrast and
every trend: its size m is Holm's m for each test. The seed-paired t's interval covers seed-to-seed
variation on this test set; the two-way cluster-robust t's, computed on each test image's
correctness (predictions.csv), covers seeds and the sampling of test images too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from synthaug.analysis.configurations import LABEL, format_value, matching, parse_baseline
from synthaug.analysis.results import Declaration, InputError
from synthaug.core.tracking import PRIMARY
from synthaug.stats import compare as stats
from synthaug.stats.inference import (DECLARED_EFFECTS, exchange_rate, power_table, seed_trend, two_way_cluster_t,
                                      two_way_trend)
from synthaug.stats.predictions import correct_by_seed, correct_grid, differences

ALPHA = 0.05                        # the verdict's level, after Holm
POWER = 0.8                         # the power the seeds needed are for
CONTRAST_COLUMNS = ("declared", LABEL, "baseline", "n_pairs", "mean_diff", "ci_low", "ci_high", "t_pvalue",
                    "t_holm", "two_way_mean_diff", "two_way_ci_low", "two_way_ci_high", "two_way_pvalue",
                    "two_way_holm", "n_images", "verdict")
TREND_COLUMNS = ("declared", "trend", "configurations", "x", "n_seeds", "slope", "ci_low", "ci_high", "t_pvalue",
                 "t_holm", "two_way_slope", "two_way_ci_low", "two_way_ci_high", "two_way_pvalue", "two_way_holm",
                 "n_images", "verdict")
EXCHANGE_COLUMNS = ("declared", "synthetic", "real", "baseline", "n_seeds", "synthetic_diff", "real_diff", "rate",
                    "ci_low", "ci_high", "bounded", "gap_low", "gap_high", "note")
Load = Callable[[str], "pd.DataFrame | None"]


@dataclass(frozen=True, eq=False)
class Primary:
    """The primary family's tables (empty when nothing was declared) and what could not be tested."""

    declared: bool
    contrasts: pd.DataFrame
    trends: pd.DataFrame
    exchange: pd.DataFrame
    family_size: int
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Contrast:
    declared: str           # the declaration's text, "treatment vs baseline"
    treatment: str          # configuration labels
    baseline: str


def analyse_primary(declaration: Declaration | None, done: pd.DataFrame, columns: Sequence[str], base: str,
                    values: Mapping[str, pd.Series], load: Load | None, confidence: float) -> Primary:
    """Expand the declaration over the sweep's finished configurations and test it."""
    if declaration is None:
        return Primary(False, _empty(CONTRAST_COLUMNS), _empty(TREND_COLUMNS), _empty(EXCHANGE_COLUMNS), 0)
    notes: list[str] = []
    contrasts = [c for t, b in declaration.primary for c in expand(done, columns, base, t, b, "primary", notes)]
    trends = trend_groups(declaration, done, columns, base, notes)
    runs = done.set_index([LABEL, "seed"])["run_id"]
    rows = [contrast_row(c, values, runs, load, confidence) for c in contrasts]
    notes += [f"primary {r['declared']}: {r['configuration']} vs {r['baseline']} has {r['n_pairs']} paired seed(s); "
              "not tested, and not counted in the family" for r in rows if r["n_pairs"] < 2]
    trend_rows = [trend_row(declaration.trend, group, done, values, runs, load, confidence) for group in trends]
    table, trend_table = _holm_family(pd.DataFrame(rows, columns=CONTRAST_COLUMNS),
                                      pd.DataFrame(trend_rows, columns=TREND_COLUMNS))
    pairs = [c for s, r in declaration.exchange for c in expand(done, columns, base, s, r, "exchange", notes)]
    exchange = pd.DataFrame([exchange_row(c, base, values, confidence) for c in pairs], columns=EXCHANGE_COLUMNS)
    return Primary(True, table, trend_table, exchange, len(table) + len(trend_table), notes)


def expand(done: pd.DataFrame, columns: Sequence[str], base: str, first: str, second: str, kind: str,
           notes: list[str]) -> list[Contrast]:
    """The concrete (first, second) configuration pairs a declared pair names; second "" = the sweep's baseline.
    What names nothing finished, or pairs ambiguously, is noted and left out."""
    declared = f"{first} vs {second or 'the baseline'}"
    try:
        firsts = matching(done, parse_baseline(first, f"tag {PRIMARY} {kind}"), f"tag {PRIMARY} {kind}")
        spec = parse_baseline(second, f"tag {PRIMARY} {kind}") if second else {}
        seconds = matching(done, spec, f"tag {PRIMARY} {kind}") if second else [base]
    except InputError as err:
        notes.append(f"{kind} {declared}: not tested: {err}")
        return []
    if not firsts or not seconds:
        notes.append(f"{kind} {declared}: not tested: no finished configuration has "
                     f"{first if not firsts else second}")
        return []
    config = done.drop_duplicates(LABEL).set_index(LABEL)[list(columns)]
    found = []
    agree = [c for c in columns if c not in spec] if second else []
    for label in firsts:
        partners = [s for s in seconds if s != label and
                    all(_same(config.at[s, c], config.at[label, c]) for c in agree)]
        if len(partners) == 1:
            found.append(Contrast(declared, label, partners[0]))
        else:
            notes.append(f"{kind} {declared}: {label} pairs with {len(partners)} configurations "
                         f"({'; '.join(partners) or 'none'}); left out")
    return found


def _same(a, b) -> bool:
    return (pd.isna(a) and pd.isna(b)) or a == b


def contrast_row(c: Contrast, values: Mapping[str, pd.Series], runs: pd.Series, load: Load | None,
                 confidence: float) -> dict:
    """The seed-paired t over the seeds both have, and the two-way t over those seeds and the test images."""
    t, b = values[c.treatment], values[c.baseline]
    common = t.index.intersection(b.index).sort_values()
    row = dict.fromkeys(CONTRAST_COLUMNS, math.nan)
    row.update(declared=c.declared, configuration=c.treatment, baseline=c.baseline, n_pairs=len(common),
               n_images=0, verdict="")
    if len(common) >= 2:
        paired = stats.paired_comparison(t[common], b[common], confidence)
        row.update(mean_diff=paired.mean_diff, ci_low=paired.ci_low, ci_high=paired.ci_high,
                   t_pvalue=paired.t_pvalue)
    if load is not None:
        d = differences(correct_by_seed(load, runs[c.treatment].to_dict(), runs[c.baseline].to_dict()))
        if d.shape[0] >= 2 and d.shape[1] >= 2:
            two_way = two_way_cluster_t(d, confidence)
            row.update(two_way_mean_diff=two_way.mean_diff, two_way_ci_low=two_way.ci_low,
                       two_way_ci_high=two_way.ci_high, two_way_pvalue=two_way.pvalue, n_images=int(d.shape[1]))
    return row


def trend_groups(declaration: Declaration, done: pd.DataFrame, columns: Sequence[str], base: str,
                 notes: list[str]) -> list[list[str]]:
    """The configurations each trend runs over: those trend_within names, one group a combination of the other
    varying columns; the baseline joins a group that has no configuration at its value of the trend column."""
    field_name = declaration.trend
    if not field_name:
        return []
    where = f"tag {PRIMARY} trend"
    if field_name not in done or not pd.api.types.is_numeric_dtype(done[field_name]):
        notes.append(f"trend over {field_name!r}: not tested: not a numeric column of these runs")
        return []
    try:
        spec = parse_baseline(declaration.trend_within, where) if declaration.trend_within else {}
        within = matching(done, spec, where)
    except InputError as err:
        notes.append(f"trend over {field_name}: not tested: {err}")
        return []
    config = done.drop_duplicates(LABEL).set_index(LABEL)
    others = [c for c in columns if c != field_name and c not in spec]
    groups: dict[tuple, list[str]] = {}
    for label in within:
        groups.setdefault(tuple(format_value(config.at[label, c]) for c in others), []).append(label)
    base_x = config.at[base, field_name]
    found = []
    for labels in groups.values():
        if pd.notna(base_x) and base not in labels and base_x not in set(config.loc[labels, field_name]):
            labels = [base, *labels]
        if config.loc[labels, field_name].nunique() < 2:
            notes.append(f"trend over {field_name} in {'; '.join(labels)}: not tested: fewer than 2 values")
            continue
        found.append(sorted(labels, key=lambda label: config.at[label, field_name]))
    return found


def trend_row(field_name: str, labels: list[str], done: pd.DataFrame, values: Mapping[str, pd.Series],
              runs: pd.Series, load: Load | None, confidence: float) -> dict:
    """The slope of the metric on `field_name`: a seed at a time, tested over the seeds every configuration has;
    and from each test image's correctness, tested over seeds and test images (inference.two_way_trend)."""
    x = done.drop_duplicates(LABEL).set_index(LABEL).loc[labels, field_name].astype(float).to_numpy()
    seeds = sorted(set.intersection(*(set(values[label].index) for label in labels)))
    row = dict.fromkeys(TREND_COLUMNS, math.nan)
    row.update(declared=field_name, trend=field_name, configurations="; ".join(labels),
               x=" ".join(format_value(v) for v in x), n_seeds=len(seeds), n_images=0)
    if len(seeds) >= 2:
        grid = np.array([[values[label][s] for label in labels] for s in seeds])
        trend = seed_trend(grid, x, confidence)
        row.update(slope=trend.slope, ci_low=trend.ci_low, ci_high=trend.ci_high, t_pvalue=trend.pvalue)
    if load is not None:
        correct = correct_grid(load, [runs[label].to_dict() for label in labels])
        if correct.shape[0] >= 2 and correct.shape[2] >= 2:
            trend = two_way_trend(correct, x, confidence)
            row.update(two_way_slope=trend.slope, two_way_ci_low=trend.ci_low, two_way_ci_high=trend.ci_high,
                       two_way_pvalue=trend.pvalue, n_images=int(correct.shape[2]))
    return row


def _holm_family(contrasts: pd.DataFrame, trends: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Holm over the family (contrasts and trends) for each test: the tests over seeds (seed-paired t, seed
    trend) together, and the tests over seeds and test images (two-way t, two-way trend) together; then each
    contrast's verdict at ALPHA."""
    n = len(contrasts)
    seeds = stats.holm(np.r_[contrasts["t_pvalue"].to_numpy(float), trends["t_pvalue"].to_numpy(float)])
    images = stats.holm(np.r_[contrasts["two_way_pvalue"].to_numpy(float), trends["two_way_pvalue"].to_numpy(float)])
    contrasts = contrasts.assign(t_holm=seeds[:n], two_way_holm=images[:n])
    contrasts["verdict"] = [verdict(r.mean_diff, r.t_holm, r.two_way_holm) for r in contrasts.itertuples()]
    trends = trends.assign(t_holm=seeds[n:], two_way_holm=images[n:])
    trends["verdict"] = [verdict(r.slope, r.t_holm, r.two_way_holm, words=("rises", "falls"))
                         for r in trends.itertuples()]
    return contrasts, trends


def verdict(diff: float, seeds_p: float, images_p: float, alpha: float = ALPHA,
            words: tuple[str, str] = ("higher", "lower")) -> str:
    """What a contrast (or trend) shows at `alpha` after Holm: over seeds and test images, over seeds only, or
    nothing."""
    direction = words[0] if diff > 0 else words[1]
    if images_p < alpha:
        return f"{direction}: over seeds and test images"
    if seeds_p < alpha:
        return f"{direction}: over seeds on this test set only"
    return "no difference shown"


def exchange_row(c: Contrast, base: str, values: Mapping[str, pd.Series], confidence: float) -> dict:
    """(synthetic - baseline) / (real - baseline) over the seeds all three have, with Fieller's interval."""
    s, r, b = values[c.treatment], values[c.baseline], values[base]
    seeds = s.index.intersection(r.index).intersection(b.index).sort_values()
    row = dict.fromkeys(EXCHANGE_COLUMNS, math.nan)
    row.update(declared=c.declared, synthetic=c.treatment, real=c.baseline, baseline=base, n_seeds=len(seeds),
               bounded=False, note="")
    if len(seeds) < 2:
        return {**row, "note": f"{len(seeds)} seed(s) in common: no rate"}
    synthetic, real = (s[seeds] - b[seeds]).to_numpy(), (r[seeds] - b[seeds]).to_numpy()
    rate = exchange_rate(synthetic, real, confidence)
    return {**row, "synthetic_diff": synthetic.mean(), "real_diff": real.mean(), "rate": rate.rate,
            "ci_low": rate.ci_low, "ci_high": rate.ci_high, "bounded": bool(rate.bounded), "gap_low": rate.gap_low,
            "gap_high": rate.gap_high, "note": "" if rate.bounded else str(rate.note)}


def power_at_effects(paired: Sequence[np.ndarray], n_seeds: int, family_size: int, alpha: float = ALPHA) -> pd.DataFrame:
    """Power at the declared effects (inference.DECLARED_EFFECTS) with n_seeds, at Holm's smallest level over the
    family (`alpha` column), from the sweep's own paired sd: the seed-paired differences of `paired`, each
    centred on its own mean, pooled. Empty without 2 degrees of freedom or without spread."""
    spread = [d - d.mean() for d in paired if len(d) >= 2]
    df = sum(len(d) - 1 for d in spread)
    sd = math.sqrt(sum(float((d ** 2).sum()) for d in spread) / df) if df >= 2 else math.nan
    if not (n_seeds >= 2 and sd > 0):
        return pd.DataFrame()
    table = pd.DataFrame(power_table(sd, n_seeds, max(1, family_size), DECLARED_EFFECTS, alpha, POWER))
    return table.assign(paired_sd=sd, n_seeds=n_seeds, family_size=max(1, family_size))


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=list(columns))
