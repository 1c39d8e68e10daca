"""Which of the study's claims hold: one row a claim, each from the analysis the project already does.

    rows = evaluate(analysed, fidelity)     # analysed: study_inputs.analyse_sweeps; fidelity: Fidelity or None
    for row in rows: row.claim.key, row.estimate, row.ci_low, row.ci_high, row.p_adjusted, row.verdict

STUDY holds the study's own statements, written once, each with the figure or table it comes from. Every
number of ours comes from an existing analysis: a sweep's declared primary family (synthaug.primary: the
seed-paired t, Holm), its secondary comparisons and per-class table (synthaug.analysis.significance), its exchange
rates (Fieller), the fidelity run's per-image values (stats.welch_comparison). The few contrasts the sweeps
did not declare (synthetic vs reweight, E2a's gain against E2's) are seed-paired t's Holm'd together as the
report's own family. VERDICT_RULE says how a verdict is reached; verdict() is that rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as st

from synthaug.analysis.configurations import LABEL, matching, parse_baseline
from synthaug.analysis.primary import ALPHA, POWER
from synthaug.analysis.results import InputError
from synthaug.stats import compare as stats
from synthaug.stats.inference import DECLARED_EFFECTS
from synthaug.study.study_inputs import Analysed, Fidelity

REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "reproduced", "contradicted", "inconclusive", "not run"
RISES, FALLS, NO_CLEAR_INCREASE, MIXED = 1, -1, 0, 2          # what a claim says the effect does
MARGIN = DECLARED_EFFECTS[1]        # 0.5 pp: "no clear increase" holds when the interval stays below it
CONFIDENCE = 0.95
VERDICT_RULE = (
    f"A claim is **reproduced** when our primary test of it (adjusted p, the test's family named) is below "
    f"{ALPHA:g} with the study's sign, **contradicted** when it is below {ALPHA:g} with the other sign, and "
    f"**inconclusive** otherwise; an inconclusive row gives the smallest effect these seeds detect with "
    f"{POWER:.0%} power at the test's adjusted level (the paired t's power as in inference.power_table, from the row's own paired sd). "
    f"A \"no clear increase\" claim is contradicted by a significant increase and reproduced when the 95% "
    f"interval's upper end stays below +{MARGIN * 100:g} pp (the middle declared effect). A row without a p "
    f"(an exchange rate) decides by whether its 95% interval excludes 0. A \"mixed impact\" claim is reproduced "
    f"when at least one class gains and one loses (BH q < {ALPHA:g}), contradicted when every class moves the "
    f"same way significantly. An experiment the inputs do not hold is \"not run\".")


@dataclass(frozen=True)
class StudyClaim:
    key: str            # the row's name
    experiment: str     # the study's experiment id (study_inputs.EXPERIMENT_IDS, E5)
    claim: str          # what is tested, in words
    study: str          # the study's own figure or statement
    source: str         # where in the study
    direction: int      # RISES, FALLS, NO_CLEAR_INCREASE, MIXED
    value: float = math.nan     # the study's number, where it gives one (in the row's unit)
    unit: str = "pp"    # how the report shows ours: pp (a fraction x 100), "pp / pp", "rate", "luma", "classes"


STUDY = (
    StudyClaim("E2 truck", "E1+E2", "+K synthetic trucks raise truck accuracy on CIFAR-LT",
               "truck accuracy rises", "Figs. 2-3", RISES),
    StudyClaim("E2 ship", "E1+E2", "+K synthetic ships raise ship accuracy on CIFAR-LT",
               "ship accuracy rises", "Figs. 2-3", RISES),
    StudyClaim("E2 truck+ship", "E1+E2", "+K synthetic trucks and ships raise accuracy on CIFAR-LT",
               "accuracy rises", "Figs. 2-3", RISES),
    StudyClaim("E2 vs oversample", "E1+E2", "the gain is more than K more images: synthetic beats K oversampled "
               "real ones", "not tested by the study (a control)", "-", RISES),
    StudyClaim("E2 vs reweight", "E1+E2", "the gain is more than a shifted class prior: synthetic beats "
               "re-weighting the loss", "not tested by the study (a control)", "-", RISES),
    StudyClaim("E2 equal steps", "E1+E2", "the gain survives training for the baseline's optimizer steps",
               "not tested by the study (a control)", "-", RISES),
    StudyClaim("E2 exchange rate", "E1+E2", "a synthetic image is worth more than 0 real ones (withheld-real)",
               "not measured by the study", "-", RISES, unit="rate"),
    StudyClaim("E2a truck+ship", "E2a", "+K ImageNet-model trucks and ships raise accuracy on CIFAR-LT",
               "accuracy rises", "Figs. 2-3", RISES),
    StudyClaim("E2a vs E2", "E2a", "the ImageNet model's gain is no larger than the CIFAR-10 DDPM's",
               "both raise accuracy; no clear ranking (our reading)", "Figs. 2-3", NO_CLEAR_INCREASE),
    StudyClaim("E3 conditional vs unconditional", "E3", "at equal counts, conditional targeted samples against "
               "unconditional pseudo-labelled ones", "no clear increase", "Fig. 5", NO_CLEAR_INCREASE),
    StudyClaim("E4 2% replacement", "E4", "replacing 2% of each class with synthetic images raises accuracy",
               "+0.74 pp (77.37% against 76.63%)", "Table 4", RISES, 0.0074),
    StudyClaim("E4 trend", "E4", "accuracy falls as the replaced share grows",
               "falls from 2% to 12%", "Table 4", FALLS, unit="pp / pp"),
    StudyClaim("E4 per class", "E4", "replacement's impact differs by class", "mixed: some classes gain, "
               "others lose", "Figs. 7-9", MIXED, unit="classes"),
    StudyClaim("E5 darker backgrounds", "E5", "unconditional samples have darker backgrounds (border luminance) "
               "than class-conditional ones", "darker (over 9,000 samples)", "E5", FALLS, unit="luma"),
)


@dataclass(frozen=True)
class ClaimRow:
    claim: StudyClaim
    verdict: str = NOT_RUN
    estimate: float = math.nan      # in the claim's unit: a fraction (accuracies), a slope a point of p, a rate, luma
    ci_low: float = math.nan
    ci_high: float = math.nan
    covers: str = ""                # what the interval covers
    test: str = ""                  # the test and its family
    p_adjusted: float = math.nan
    n: int = 0                      # seeds (images for E5)
    detectable: float = math.nan    # the smallest effect these seeds detect (80% power), in the row's unit
    ours: str = ""                  # a word where the numbers need one (counts, absolute accuracy)
    source: str = ""                # which sweep or run

    @property
    def unit(self) -> str:
        return self.claim.unit


# ---------------------------------------------------------------------------- the rule


def verdict(direction: int, estimate: float, ci_low: float, ci_high: float, p_adjusted: float,
            alpha: float = ALPHA, margin: float = MARGIN) -> str:
    """VERDICT_RULE for one row (MIXED rows: mixed_verdict)."""
    if not np.isfinite(estimate):
        return INCONCLUSIVE
    if np.isfinite(p_adjusted):
        shown = p_adjusted < alpha
    else:
        shown = bool(np.isfinite(ci_low) and np.isfinite(ci_high) and (ci_low > 0 or ci_high < 0))
    if direction == NO_CLEAR_INCREASE:
        if shown and estimate > 0:
            return CONTRADICTED
        return REPRODUCED if np.isfinite(ci_high) and ci_high < margin else INCONCLUSIVE
    if not shown:
        return INCONCLUSIVE
    return REPRODUCED if np.sign(estimate) == direction else CONTRADICTED


def mixed_verdict(up: int, down: int, tested: int) -> str:
    """Mixed impact: some class up and some down; contradicted when every tested class moved one way."""
    if up and down:
        return REPRODUCED
    if tested and (up == tested or down == tested):
        return CONTRADICTED
    return INCONCLUSIVE


def detectable(ci_low: float, ci_high: float, n: int, family_size: int, confidence: float = CONFIDENCE) -> float:
    """The smallest true effect a paired t over n seeds detects with POWER at ALPHA / family_size (Holm's first
    step, as inference.power_table), from the sd its interval implies (sd = half-width / t * sqrt(n)); found by
    bisection on stats.paired_t_power; inf when none up to 1,000 sd."""
    if n < 2 or not (np.isfinite(ci_low) and np.isfinite(ci_high)) or ci_high <= ci_low:
        return math.nan
    sd = (ci_high - ci_low) / 2 / st.t.ppf(0.5 + confidence / 2, n - 1) * math.sqrt(n)
    level = ALPHA / max(1, family_size)
    low, high = 0.0, 1000.0                 # in sd (dz)
    if stats.paired_t_power(high, n, level) < POWER:
        return math.inf
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if stats.paired_t_power(middle, n, level) < POWER else (low, middle)
    return high * sd


def judged(row: ClaimRow, family_size: int) -> ClaimRow:
    """The row with its verdict, and the smallest detectable effect when it is inconclusive."""
    found = verdict(row.claim.direction, row.estimate, row.ci_low, row.ci_high, row.p_adjusted)
    small = detectable(row.ci_low, row.ci_high, row.n, family_size) if found == INCONCLUSIVE else math.nan
    return replace(row, verdict=found, detectable=small)


# ---------------------------------------------------------------------------- the claims


def evaluate(analysed: Mapping[str, Analysed], fidelity: Fidelity | None,
             not_run: Mapping[str, str] | None = None) -> list[ClaimRow]:
    """A row for every claim of STUDY, in its order; what the inputs lack is NOT_RUN, saying why where
    `not_run` (experiment id -> why) does."""
    extra: list[tuple[StudyClaim, np.ndarray, np.ndarray, str]] = []    # the report's own family
    found: dict[str, ClaimRow] = {}
    if "E1+E2" in analysed:
        found |= long_tail_rows(analysed["E1+E2"], extra)
    if "E2a" in analysed:
        found |= imagenet_rows(analysed["E2a"], analysed.get("E1+E2"), extra)
    if "E3" in analysed:
        found |= _only(primary_row(_claim("E3 conditional vs unconditional"), analysed["E3"],
                                   {"arm": "conditional"}, {"arm": "unconditional"}))
    if "E4" in analysed:
        found |= replace_rows(analysed["E4"])
    if fidelity is not None:
        found |= _only(background_row(fidelity))
    found |= report_family(extra)
    why = not_run or {}
    return [found.get(claim.key, ClaimRow(claim, ours=why.get(claim.experiment, f"no {claim.experiment} run given")))
            for claim in STUDY]


def _claim(key: str) -> StudyClaim:
    return next(c for c in STUDY if c.key == key)


def untested(claim: StudyClaim, source: str, why: str) -> ClaimRow:
    """A claim whose experiment ran without the configurations it needs: NOT_RUN, and why."""
    return ClaimRow(claim, verdict=NOT_RUN, ours=f"not tested: {why}", source=source)


def _only(row: ClaimRow | None) -> dict[str, ClaimRow]:
    return {row.claim.key: row} if row is not None else {}


def augmented_classes(a: Analysed) -> tuple[str, ...]:
    """The data's names of the classes the sweep's declared primary contrast augments (truck, ship)."""
    declaration = a.trials.declaration
    if declaration is None or not declaration.primary:
        return ()
    return tuple(parse_baseline(declaration.primary[0][0]).get("augment_classes", "").split(","))


def _undeclared(a: Analysed, experiment: str) -> dict[str, ClaimRow]:
    """Every claim of `experiment` untested: its sweep declared no primary contrast on two augmented classes."""
    why = "the sweep declared no primary contrast on two augmented classes (tag synthaug.primary)"
    return {c.key: untested(c, a.trials.sweep, why) for c in STUDY if c.experiment == experiment}


def label_of(a: Analysed, spec: Mapping[str, str]) -> str | None:
    """The one finished configuration whose params match `spec` (configurations.matching), or None."""
    runs = a.result.values.merge(a.trials.frame, on="run_id")
    try:
        labels = matching(runs, dict(spec), "study report")
    except InputError:              # a column this sweep lacks: the configuration is not there
        return None
    return labels[0] if len(labels) == 1 else None


def _values(a: Analysed, label: str) -> pd.Series:
    frame = a.result.values
    return frame[frame[LABEL] == label].set_index("seed")["value"].astype(float)


def primary_row(claim: StudyClaim, a: Analysed, treatment: Mapping[str, str],
                baseline: Mapping[str, str] | None) -> ClaimRow | None:
    """A declared primary contrast (synthaug.primary), by its seed-paired t, Holm over the primary family."""
    t = label_of(a, treatment)
    b = label_of(a, baseline) if baseline else a.result.baseline
    table = a.result.primary.contrasts
    hit = table[(table[LABEL] == t) & (table["baseline"] == b)] if t and b else table.iloc[0:0]
    if hit.empty:
        against = _name(baseline) if baseline else "the baseline"
        return untested(claim, a.trials.sweep, f"{_name(treatment)} vs {against} is not a finished declared contrast")
    r = hit.iloc[0]
    row = ClaimRow(claim, estimate=r.mean_diff, ci_low=r.ci_low, ci_high=r.ci_high, covers="seeds",
                   test=f"seed-paired t, Holm over the primary family (m={a.result.primary.family_size}); "
                        f"two-way (seed x image) Holm p {_p(r.two_way_holm)}",
                   p_adjusted=r.t_holm, n=int(r.n_pairs), source=a.trials.sweep)
    return judged(row, a.result.primary.family_size)


def class_row(claim: StudyClaim, a: Analysed, treatment: Mapping[str, str], cls: str) -> ClaimRow:
    """A class's accuracy against the baseline (significance.per_class: seed-paired t, BH q over classes x
    configurations, secondary)."""
    label = label_of(a, treatment)
    table = a.result.per_class
    hit = table[(table[LABEL] == label) & (table["class"] == cls)]
    if hit.empty:
        return untested(claim, a.trials.sweep, f"no finished {_name(treatment)} runs with test_acc.{cls}")
    r = hit.iloc[0]
    row = ClaimRow(claim, estimate=r.mean_diff, ci_low=r.ci_low, ci_high=r.ci_high, covers="seeds",
                   test=f"seed-paired t on test_acc.{cls}, BH q over {len(table)} class x configuration tests "
                        "(secondary)", p_adjusted=r.q_bh, n=int(r.n_pairs), source=a.trials.sweep)
    return judged(row, len(table))


def long_tail_rows(a: Analysed, extra: list) -> dict[str, ClaimRow]:
    names = augmented_classes(a)
    if len(names) != 2:
        return _undeclared(a, "E1+E2")
    truck, ship = names
    both = {"arm": "synthetic", "augment_classes": f"{truck},{ship}"}
    rows = [class_row(_claim("E2 truck"), a, {"arm": "synthetic", "augment_classes": truck}, truck),
            class_row(_claim("E2 ship"), a, {"arm": "synthetic", "augment_classes": ship}, ship),
            primary_row(_claim("E2 truck+ship"), a, both, None),
            primary_row(_claim("E2 vs oversample"), a, both, {**both, "arm": "oversample"}),
            secondary_row(_claim("E2 equal steps"), a, {**both, "arm": "equal-steps"}),
            exchange_row(_claim("E2 exchange rate"), a, both)]
    extra.append(_pair(_claim("E2 vs reweight"), a, both, {**both, "arm": "reweight"}))
    return {row.claim.key: row for row in rows}


def secondary_row(claim: StudyClaim, a: Analysed, treatment: Mapping[str, str]) -> ClaimRow:
    """A configuration against the baseline among the secondary comparisons (significance.compare_all)."""
    label = label_of(a, treatment)
    table = a.result.comparisons
    hit = table[table[LABEL] == label]
    if hit.empty:
        return untested(claim, a.trials.sweep, f"no finished {_name(treatment)}")
    r = hit.iloc[0]
    family = int((table["family"] == r.family).sum())
    row = ClaimRow(claim, estimate=r.mean_diff, ci_low=r.ci_low, ci_high=r.ci_high, covers="seeds",
                   test=f"seed-paired t against the baseline, Holm over the {r.family} comparisons (m={family})",
                   p_adjusted=r.t_holm, n=int(r.n_pairs), source=a.trials.sweep)
    return judged(row, family)


def exchange_row(claim: StudyClaim, a: Analysed, synthetic: Mapping[str, str]) -> ClaimRow:
    """The declared exchange rate (synthaug.analysis.primary.exchange_row: Fieller's interval over seeds)."""
    label = label_of(a, synthetic)
    table = a.result.primary.exchange
    hit = table[table["synthetic"] == label]
    if hit.empty:
        return untested(claim, a.trials.sweep, f"no declared exchange rate for {_name(synthetic)}")
    r = hit.iloc[0]
    row = ClaimRow(claim, estimate=r.rate, ci_low=r.ci_low, ci_high=r.ci_high,
                   covers="seeds (Fieller)", test=f"Fieller's interval of (synthetic - baseline) / (withheld-real - "
                   f"baseline){'' if r.bounded else '; ' + str(r.note)}", n=int(r.n_seeds), source=a.trials.sweep)
    return replace(row, verdict=verdict(claim.direction, row.estimate, row.ci_low, row.ci_high, math.nan))


def imagenet_rows(a: Analysed, cifar: Analysed | None, extra: list) -> dict[str, ClaimRow]:
    names = augmented_classes(a)
    if len(names) != 2:
        return _undeclared(a, "E2a")
    both = {"arm": "synthetic", "augment_classes": ",".join(names)}
    rows = {"E2a truck+ship": primary_row(_claim("E2a truck+ship"), a, both, None)}
    if cifar is not None:
        extra.append(_gain_pair(_claim("E2a vs E2"), a, cifar, both))
    return rows


def _pair(claim: StudyClaim, a: Analysed, treatment: Mapping[str, str],
          baseline: Mapping[str, str]) -> tuple[StudyClaim, np.ndarray, np.ndarray, str]:
    """Two configurations' values over the seeds both have (empty when either is missing)."""
    t, b = label_of(a, treatment), label_of(a, baseline)
    if t is None or b is None:
        return claim, np.array([]), np.array([]), a.trials.sweep
    x, y = _values(a, t), _values(a, b)
    common = x.index.intersection(y.index).sort_values()
    return claim, x[common].to_numpy(), y[common].to_numpy(), a.trials.sweep


def _gain_pair(claim: StudyClaim, a: Analysed, b: Analysed, spec: Mapping[str, str]):
    """Each sweep's gain over its own baseline, a seed at a time, over the seeds both sweeps have."""
    gains = []
    for one in (a, b):
        label = label_of(one, {**spec, "augment_classes": ",".join(augmented_classes(one))})
        if label is None:
            return claim, np.array([]), np.array([]), f"{a.trials.sweep} vs {b.trials.sweep}"
        gains.append(_values(one, label) - _values(one, one.result.baseline))
    common = gains[0].dropna().index.intersection(gains[1].dropna().index).sort_values()
    return claim, gains[0][common].to_numpy(), gains[1][common].to_numpy(), f"{a.trials.sweep} vs {b.trials.sweep}"


def report_family(extra: Sequence[tuple[StudyClaim, np.ndarray, np.ndarray, str]]) -> dict[str, ClaimRow]:
    """The contrasts no sweep declared: seed-paired t's (stats.paired_comparison), Holm over them together."""
    tested = [(c, x, y, s) for c, x, y, s in extra if len(x) >= 2]
    results = [stats.paired_comparison(x, y, CONFIDENCE) for _, x, y, _ in tested]
    holm = stats.holm(np.array([r.t_pvalue for r in results], float)) if results else []
    rows = {c.key: untested(c, s, f"fewer than 2 paired seeds ({len(x)})") for c, x, _, s in extra if len(x) < 2}
    for (claim, _, _, source), r, p in zip(tested, results, holm):
        rows[claim.key] = judged(ClaimRow(claim, estimate=r.mean_diff, ci_low=r.ci_low, ci_high=r.ci_high,
                                          covers="seeds", test=f"seed-paired t, Holm over the report's own "
                                          f"contrasts (m={len(tested)})", p_adjusted=p, n=r.n, source=source),
                                 len(tested))
    return rows


def replace_rows(a: Analysed) -> dict[str, ClaimRow]:
    rows = {}
    two = primary_row(_claim("E4 2% replacement"), a, {"replace_pct": "2"}, None)
    label = label_of(a, {"replace_pct": "2"})
    summary = a.result.summary.set_index(LABEL)
    if label in summary.index:
        s = summary.loc[label]
        interval = (f"95% CI {s.ci_low * 100:.2f}-{s.ci_high * 100:.2f}; " if np.isfinite([s.ci_low, s.ci_high]).all()
                    else "")
        two = replace(two, ours=f"{s['mean'] * 100:.2f}% at 2% ({interval}study 77.37%)")
    rows[two.claim.key] = two
    rows["E4 trend"] = trend_row(_claim("E4 trend"), a)
    rows["E4 per class"] = mixed_row(_claim("E4 per class"), a)
    return rows


def trend_row(claim: StudyClaim, a: Analysed) -> ClaimRow:
    """The declared trend (synthaug.analysis.primary.trend_row): the seed slope, Holm with the primary contrasts."""
    table = a.result.primary.trends
    if table.empty:
        return untested(claim, a.trials.sweep, "no declared trend with 2 or more values")
    r = table.iloc[0]
    row = ClaimRow(claim, estimate=r.slope, ci_low=r.ci_low, ci_high=r.ci_high, covers="seeds",
                   test=f"least-squares slope a seed at a time, t over seeds, Holm over the primary family "
                        f"(m={a.result.primary.family_size}); over {r.x}", p_adjusted=r.t_holm, n=int(r.n_seeds),
                   source=a.trials.sweep)
    return judged(row, a.result.primary.family_size)


def mixed_row(claim: StudyClaim, a: Analysed) -> ClaimRow:
    """How many class x configuration differences are up and down (significance.per_class, BH q)."""
    table = a.result.per_class.dropna(subset=["q_bh"])
    up = int(((table["q_bh"] < ALPHA) & (table["mean_diff"] > 0)).sum())
    down = int(((table["q_bh"] < ALPHA) & (table["mean_diff"] < 0)).sum())
    return ClaimRow(claim, verdict=mixed_verdict(up, down, len(table)), estimate=float(up - down),
                    test=f"seed-paired t a class x configuration, BH q over {len(table)} (secondary)",
                    ours=f"{up} up, {down} down of {len(table)} class x configuration differences (q < {ALPHA:g})",
                    n=len(a.result.seeds), source=a.trials.sweep)


def background_row(f: Fidelity) -> ClaimRow | None:
    """Border luminance of the unconditional generator's samples against the conditional one's (Welch's t over
    images, stats.welch_comparison); against the real test images when the run has no conditional one."""
    sources = sorted(s for s in f.values["source"].unique() if s != "real")     # ddpm-cond before ddpm-cond-subset
    uncond = next((s for s in sources if "uncond" in s), None)
    cond = next((s for s in sources if "uncond" not in s and "imagenet" not in s), None) or "real"
    claim = _claim("E5 darker backgrounds")
    if uncond is None:
        return untested(claim, f.run_id, "no unconditional generator")
    a = f.values.loc[f.values["source"] == uncond, "background"].to_numpy(float)
    b = f.values.loc[f.values["source"] == cond, "background"].to_numpy(float)
    w = stats.welch_comparison(a, b, CONFIDENCE)
    row = ClaimRow(claim, estimate=w.mean_diff, ci_low=w.ci_low, ci_high=w.ci_high,
                   covers="the samples drawn (images)", test=f"Welch's t, {uncond} - {cond} (one test)",
                   p_adjusted=w.pvalue, n=min(len(a), len(b)),
                   ours=f"{uncond} {a.mean():.1f} vs {cond} {b.mean():.1f} luma (0-255)", source=f.run_id)
    return judged(row, 1)


def cas_table(f: Fidelity | None) -> pd.DataFrame:
    """The fidelity run's CAS (train on synthetic, test on real), a row a generator after the real-data reference:
    its accuracy, its gap to the reference, and each class's accuracy (metrics cas.<generator>[.<class>],
    cas_gap.<generator>, cas_real_reference[.<class>]), as percentages."""
    metrics = {} if f is None else {k: v for k, v in f.metrics.items() if k.startswith("cas")}
    named = {k[len("cas."):]: v for k, v in metrics.items() if k.startswith("cas.")}
    generators = sorted(n for n in named if not any(n.startswith(m + ".") for m in named if m != n))
    sources = ([("real images (reference)", "cas_real_reference")] if "cas_real_reference" in metrics else []) + \
        [(g, f"cas.{g}") for g in generators]
    classes = sorted({k[len(key) + 1:] for _, key in sources for k in metrics if k.startswith(key + ".")})
    rows = []
    for name, key in sources:
        gap = metrics.get(f"cas_gap.{name}", math.nan)
        rows.append({"generator": name, "CAS": f"{metrics[key]:.1%}",
                     "gap to real": "-" if math.isnan(gap) else f"{gap * 100:+.1f} pp",
                     **{c: f"{metrics[f'{key}.{c}']:.0%}" if f"{key}.{c}" in metrics else "-" for c in classes}})
    return pd.DataFrame(rows, columns=["generator", "CAS", "gap to real", *classes])


def _name(spec: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (spec or {}).items())


def _p(p: float) -> str:
    from synthaug.core.report import format_p

    return format_p(p)

