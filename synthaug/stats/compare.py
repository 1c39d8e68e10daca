"""Statistics for comparing configurations across seeds.

Pure functions over plain arrays: intervals, paired and unpaired tests, effect sizes,
power at a given effect; multiple-comparison corrections (synthaug.stats.pvalues, re-exported here).
Only numpy and scipy are needed at run time. Every result is a frozen dataclass whose
fields are plain Python ``int``/``float`` (or ``bool``), so ``dataclasses.asdict`` rows
go straight into a pandas table.

Conventions
-----------
* Inputs are 1-D sequences of finite numbers; NaN or inf raises ``ValueError`` (drop
  failed trials, and their partners in a paired design, before calling).
* "Undefined" results (too few observations, zero variance) are ``nan``, never a
  warning. A sample without spread (every value equal, up to floating-point noise) has no
  interval: ``(nan, nan)``, not the zero-width ``(mean, mean)`` that would claim certainty
  (two seeds that happened to agree say nothing about seed-to-seed variation);
  :func:`interval_note` says why an interval is missing.
* Accuracies (proportions in [0, 1]) get :func:`proportion_interval`, a t interval on the
  angular (arcsine square-root) scale, whose bounds stay within [0, 1].
* Differences are always ``treatment - baseline`` (or ``a - b``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import stats as _st

# p-values across tests live in synthaug.stats.pvalues; stats is the one place callers import from
from synthaug.stats.pvalues import _NAN, ArrayLike, _as_1d
from synthaug.stats.pvalues import benjamini_hochberg, holm, smallest_exact_pvalue  # noqa: F401

__all__ = [
    "Summary",
    "PairedResult",
    "WelchResult",
    "describe",
    "proportion_interval",
    "interval_note",
    "bootstrap_bca_ci",
    "paired_t_test",
    "sign_flip_pvalue",
    "paired_comparison",
    "welch_comparison",
    "paired_t_power",
    "seeds_for_power",
    "holm",
    "benjamini_hochberg",
    "smallest_exact_pvalue",
]

#: Largest n for which :func:`sign_flip_pvalue` enumerates all 2**n sign assignments.
EXACT_PERMUTATION_MAX_N = 20
#: Monte Carlo draws used by :func:`sign_flip_pvalue` above ``EXACT_PERMUTATION_MAX_N``.
MONTE_CARLO_DRAWS = 100_000


# --------------------------------------------------------------------------- results


def statistic(header: str, shown_as: str = "number"):
    """A result field the significance report shows in its test details under `header`: as a p-value
    ("p"), a number ("number"), or, for mean_diff, the difference with its interval ("interval"). Every
    field of PairedResult is a column of the comparisons CSV (synthaug.analysis.significance.COMPARISON_COLUMNS),
    so a new statistic is one field here."""
    return field(metadata={"header": header, "shown_as": shown_as})


@dataclass(frozen=True)
class Summary:
    """Sample size, mean, sample standard deviation (ddof=1) and t-interval of the mean."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of treatment against baseline (differences = treatment - baseline).

    Fields: ``n`` pairs; ``mean_diff`` and its t-interval ``ci_low``/``ci_high``;
    ``t_stat``/``t_pvalue`` of the two-sided paired t-test; ``permutation_pvalue``
    (two-sided sign-flip test on |mean difference|); ``cohens_dz`` = mean / sd of the
    differences; ``prob_improve`` = share of pairs with a positive difference (ties count
    half). No power at the observed effect: power is planned at declared effects
    (:func:`paired_t_power`, :func:`seeds_for_power`).
    """

    n: int
    mean_diff: float = statistic("diff", "interval")   # with ci_low and ci_high
    ci_low: float
    ci_high: float
    t_stat: float
    t_pvalue: float = statistic("p (t)", "p")
    permutation_pvalue: float = statistic("p (permutation)", "p")
    cohens_dz: float = statistic("dz")
    prob_improve: float = statistic("P(improve)")


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test of mean(a) - mean(b) with its Welch-Satterthwaite CI."""

    n_a: int
    n_b: int
    mean_diff: float
    ci_low: float
    ci_high: float
    t_stat: float
    pvalue: float
    df: float


# --------------------------------------------------------------------------- helpers


# Differences whose sd is below this (relative to max(1, |mean|)) have zero spread: floating-point
# noise (0.96 - 1.00 vs 0.94 - 0.98) must not turn into t = 1e15 and p = 0.
ZERO_SPREAD = 1e-9


def _has_spread(sd, mean):
    """sd is more than floating-point noise around mean (arrays or scalars)."""
    return sd > ZERO_SPREAD * np.maximum(1.0, np.abs(mean))


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _t_interval(mean: float, se: float, df: float, confidence: float) -> tuple[float, float]:
    """mean +/- t_{(1+c)/2, df} * se; nan when undefined, and when se is no more than
    floating-point noise (no spread: not a zero-width interval)."""
    if not (np.isfinite(mean) and np.isfinite(se)) or not _has_spread(se, mean):
        return _NAN, _NAN
    if not (np.isfinite(df) and df > 0):
        return _NAN, _NAN
    half = float(_st.t.ppf(0.5 + confidence / 2.0, df)) * se
    return float(mean - half), float(mean + half)


# --------------------------------------------------------------------------- one sample


def describe(x: ArrayLike, confidence: float = 0.95) -> Summary:
    """Mean, sample sd and Student-t confidence interval of the mean.

    n == 0 gives nan everywhere; n == 1 gives the value with nan sd and interval; values
    without spread give sd 0 and a nan interval (:func:`interval_note`).
    """
    _check_confidence(confidence)
    arr = _as_1d(x)
    n = int(arr.size)
    if n == 0:
        return Summary(0, _NAN, _NAN, _NAN, _NAN)
    mean = float(arr.mean())
    if n < 2:
        return Summary(n, mean, _NAN, _NAN, _NAN)
    std = float(arr.std(ddof=1))
    lo, hi = _t_interval(mean, std / math.sqrt(n), n - 1, confidence)
    return Summary(n, mean, std, lo, hi)


def interval_note(n: int, std: float, mean: float) -> str:
    """Why a sample of n values with this sd has no interval, or "" when it has one."""
    if n < 2:
        return f"not estimable: n={n}"
    if not _has_spread(std, mean):
        return f"not estimable: all {n} values equal"
    return ""


def proportion_interval(x: ArrayLike, confidence: float = 0.95) -> Summary:
    """Mean and sd of proportions in [0, 1] (accuracies over seeds) and a confidence interval for
    their typical value that stays within [0, 1]: Student's t on the angular scale
    a = arcsin(sqrt(p)) (variance-stabilising for proportions, defined at 0 and 1), mapped back by
    sin(a)^2, the angular bounds kept to the scale's range [0, pi/2]. It covers seed-to-seed
    variation (the test images are the same for every seed). No interval (nan) below 2 values or
    without spread, as :func:`describe`.
    """
    _check_confidence(confidence)
    arr = _as_1d(x)
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"proportions must be in [0, 1], got {arr.min()}..{arr.max()}")
    plain = describe(arr, confidence)
    if not (plain.n >= 2 and _has_spread(plain.std, plain.mean)):
        return dataclasses.replace(plain, ci_low=_NAN, ci_high=_NAN)
    angles = np.arcsin(np.sqrt(arr))
    lo, hi = _t_interval(float(angles.mean()), float(angles.std(ddof=1)) / math.sqrt(arr.size), arr.size - 1,
                         confidence)
    lo, hi = (float(np.sin(min(max(a, 0.0), math.pi / 2)) ** 2) for a in (lo, hi))
    return dataclasses.replace(plain, ci_low=lo, ci_high=hi)


_BOOTSTRAP_SEED_KW = "rng" if "rng" in inspect.signature(_st.bootstrap).parameters else "random_state"


def bootstrap_bca_ci(
    x: ArrayLike,
    statistic: Callable[..., float] = np.mean,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bias-corrected and accelerated (BCa) bootstrap interval of ``statistic(x)``.

    Thin wrapper over ``scipy.stats.bootstrap(method='BCa')`` with a seeded
    ``np.random.default_rng(seed)``. ``statistic`` may accept an ``axis`` keyword
    (vectorised, fast) or not. Degenerate inputs, without warnings:

    * n < 3: ``(nan, nan)`` (too few points to resample meaningfully);
    * all values equal: ``(nan, nan)`` (no spread to resample);
    * any other case where scipy's interval is undefined: ``(nan, nan)``.
    """
    _check_confidence(confidence)
    arr = _as_1d(x)
    if arr.size < 3:
        return _NAN, _NAN
    if np.all(arr == arr[0]):
        return _NAN, _NAN
    kwargs = {_BOOTSTRAP_SEED_KW: np.random.default_rng(seed)}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = _st.bootstrap(
            (arr,),
            statistic,
            n_resamples=int(n_resamples),
            confidence_level=confidence,
            method="BCa",
            **kwargs,
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return _NAN, _NAN
    return lo, hi


# --------------------------------------------------------------------------- paired


def paired_t_test(
    treatment: ArrayLike | np.ndarray, baseline: ArrayLike | np.ndarray
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Two-sided paired t-test, vectorised over leading axes (pairs on the last axis).

    Returns ``(t_stat, pvalue)``; floats for 1-D input, arrays of the leading shape
    otherwise. Where the differences have zero variance or fewer than 2 pairs, both
    are nan. Same numbers as ``scipy.stats.ttest_rel(..., axis=-1)`` elsewhere.
    """
    t = np.asarray(treatment, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if t.shape != b.shape:
        raise ValueError(f"treatment and baseline shapes differ: {t.shape} vs {b.shape}")
    d = t - b
    n = d.shape[-1] if d.ndim else 1
    if n < 2:
        shape = d.shape[:-1]
        out = np.full(shape, np.nan)
        return (float(out), float(out)) if out.ndim == 0 else (out, out.copy())
    with np.errstate(all="ignore"):
        mean = d.mean(axis=-1)
        sd = d.std(axis=-1, ddof=1)
        tstat = mean / (sd / math.sqrt(n))
        tstat = np.where(_has_spread(sd, mean), tstat, np.nan)
        p = 2.0 * _st.t.sf(np.abs(tstat), n - 1)
    if np.ndim(tstat) == 0:
        return float(tstat), float(p)
    return tstat, p


def sign_flip_pvalue(diffs: ArrayLike, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value for H0: differences symmetric about 0.

    Statistic |mean(d)|. For n <= 20 every one of the 2**n sign assignments is
    enumerated and p = #{|mean| >= observed} / 2**n (the observed assignment is one
    of them). Above that, 100,000 seeded random sign assignments give
    p = (1 + #{|mean| >= observed}) / (1 + 100,000). Empty input gives nan.
    """
    d = _as_1d(diffs, "diffs")
    n = d.size
    if n == 0:
        return _NAN
    # Float tolerance so that assignments equal to the observed one in exact
    # arithmetic are counted despite rounding in the sums.
    tol = 1e-9 * max(float(np.abs(d).sum()), 1e-300)
    observed = abs(float(d.sum())) - tol
    if n <= EXACT_PERMUTATION_MAX_N:
        sums = np.zeros(1)
        for v in d:  # doubling: all 2**n signed sums, O(2**n) memory and time
            sums = np.concatenate((sums + v, sums - v))
        return float(np.count_nonzero(np.abs(sums) >= observed) / sums.size)
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, min(MONTE_CARLO_DRAWS, 4_000_000 // n))
    done = 0
    while done < MONTE_CARLO_DRAWS:
        k = min(chunk, MONTE_CARLO_DRAWS - done)
        signs = rng.integers(0, 2, size=(k, n), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed))
        done += k
    return float((hits + 1) / (MONTE_CARLO_DRAWS + 1))


def paired_comparison(
    treatment: ArrayLike,
    baseline: ArrayLike,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedResult:
    """Full paired comparison of ``treatment`` vs ``baseline`` over matched seeds.

    Element i of each array must come from the same seed. See :class:`PairedResult`
    for the fields. With zero-variance differences the t statistic, its p-value,
    ``cohens_dz`` and the interval are nan (the permutation test still answers).
    """
    _check_confidence(confidence)
    t = _as_1d(treatment, "treatment")
    b = _as_1d(baseline, "baseline")
    if t.shape != b.shape:
        raise ValueError(f"treatment and baseline lengths differ: {t.size} vs {b.size}")
    d = t - b
    n = int(d.size)
    summ = describe(d, confidence)
    if n >= 2:
        t_stat, t_p = paired_t_test(t, b)
    else:
        t_stat, t_p = _NAN, _NAN
    dz = summ.mean / summ.std if (n >= 2 and _has_spread(summ.std, summ.mean)) else _NAN
    prob = float((np.count_nonzero(d > 0) + 0.5 * np.count_nonzero(d == 0)) / n) if n else _NAN
    return PairedResult(
        n=n,
        mean_diff=summ.mean,
        ci_low=summ.ci_low,
        ci_high=summ.ci_high,
        t_stat=float(t_stat),
        t_pvalue=float(t_p),
        permutation_pvalue=sign_flip_pvalue(d, seed=seed),
        cohens_dz=float(dz),
        prob_improve=prob,
    )


# --------------------------------------------------------------------------- unpaired


def welch_comparison(a: ArrayLike, b: ArrayLike, confidence: float = 0.95) -> WelchResult:
    """Welch's two-sample t-test of mean(a) - mean(b), two-sided, unequal variances.

    Degrees of freedom by Welch-Satterthwaite; the interval uses the same df.
    Either sample smaller than 2 gives nan statistics; both variances zero gives
    nan t, p, df and interval.
    """
    _check_confidence(confidence)
    xa = _as_1d(a, "a")
    xb = _as_1d(b, "b")
    na, nb = int(xa.size), int(xb.size)
    diff = float(xa.mean() - xb.mean()) if (na and nb) else _NAN
    if na < 2 or nb < 2:
        return WelchResult(na, nb, diff, _NAN, _NAN, _NAN, _NAN, _NAN)
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    if se == 0.0:
        return WelchResult(na, nb, diff, _NAN, _NAN, _NAN, _NAN, _NAN)
    df = float((va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1)))
    tstat = diff / se
    p = float(2.0 * _st.t.sf(abs(tstat), df))
    lo, hi = _t_interval(diff, se, df, confidence)
    return WelchResult(na, nb, diff, lo, hi, float(tstat), p, df)


# --------------------------------------------------------------------------- power


def paired_t_power(dz: float, n: int | np.ndarray, alpha: float = 0.05) -> float | np.ndarray:
    """Power of the two-sided one-sample / paired t-test at standardised effect ``dz``.

    Exact, via the noncentral t: with df = n - 1, nc = dz * sqrt(n) and
    c = t_{1 - alpha/2, df}, power = P(T' > c) + P(T' < -c), the far tail taken as
    P(T'(-nc) > c) (the same number: scipy's ``nct.cdf(-c, df, nc)`` underflows to nan there,
    at 344 of 3,540 points of dz 0.01..20 x n 2..60, while its sf answers). Only a tail that is
    still nan falls back to its normal approximation (Phi(nc - c), Phi(-nc - c)), never the sum.
    ``n`` may be an array (returns an array). n < 2 or nan dz gives nan; |dz| = inf gives 1.
    """
    n_arr = np.asarray(n, dtype=float)
    dz = float(dz)
    with np.errstate(all="ignore"):
        if np.isnan(dz):
            out = np.full(n_arr.shape, np.nan)
        elif np.isinf(dz):
            out = np.where(n_arr >= 2, 1.0, np.nan)
        else:
            df = np.where(n_arr >= 2, n_arr - 1.0, np.nan)
            nc = abs(dz) * np.sqrt(n_arr)
            crit = _st.t.ppf(1.0 - alpha / 2.0, df)
            near = _st.nct.sf(crit, df, nc)
            far = _st.nct.sf(crit, df, -nc)
            near = np.where(np.isfinite(near), near, _st.norm.sf(crit - nc))
            far = np.where(np.isfinite(far), far, _st.norm.cdf(-crit - nc))
            out = near + far
            out = np.where(n_arr >= 2, np.clip(out, 0.0, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def seeds_for_power(
    dz: float, power: float = 0.8, alpha: float = 0.05, max_n: int = 10_000
) -> float:
    """Smallest n >= 2 whose paired t-test power at ``dz`` reaches ``power``.

    Returned as a float so that "never" fits: inf when dz == 0 or when even
    ``max_n`` pairs fall short; nan when dz is nan. Sign of dz is ignored.
    """
    dz = float(dz)
    if np.isnan(dz):
        return _NAN
    if dz == 0.0:
        return math.inf
    if np.isinf(dz):
        return 2.0
    lo = 2
    width = 32
    while lo <= max_n:
        hi = min(max_n, lo + width - 1)
        ns = np.arange(lo, hi + 1)
        ok = np.flatnonzero(paired_t_power(dz, ns, alpha) >= power)
        if ok.size:
            return float(ns[ok[0]])
        lo, width = hi + 1, width * 4
    return math.inf
