"""The statistics of a sweep's primary analysis: the distribution-level test, the trend, the exchange rate, power.

    two_way_cluster_t(d)              d[..., seed, image] = treatment correct - baseline correct: the mean
                                      difference with an interval over seeds AND test images
    seed_trend(values, x)             a metric's slope over a numeric field (replace_pct 0..12), tested over seeds
    two_way_trend(correct, x)         the same slope from per-image correctness, over seeds and test images
    exchange_rate(synthetic, real)    what one synthetic image is worth in real images, Fieller's interval
    power_table(paired_sd, ...)       power at declared effects at the primary family's adjusted alpha

Pure numpy and scipy. Every function takes arrays with any leading axes (thousands of simulated sweeps at once,
tests/test_error_rates.py) and returns a frozen dataclass whose numbers are floats for one sweep and arrays of
the leading shape otherwise. Inputs must be finite (ValueError otherwise), as in synthaug.stats.compare; a quantity that
is undefined (fewer than 2 seeds or images, no spread) is nan, never a warning.

What the intervals cover. A seed-paired test (stats.paired_t_test) and seed_trend treat the test set as fixed:
their intervals cover seed-to-seed variation only, a claim about these 10,000 test images. two_way_cluster_t and
two_way_trend add the test images as a second random factor (Cameron, Gelbach and Miller 2011, "Robust inference
with multiway clustering"): a claim about the distribution the test images are drawn from (CIFAR-10), which stays
valid when a configuration changes which images are hard (image x configuration interaction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from synthaug.stats.compare import _has_spread, _check_confidence, paired_t_power, seeds_for_power

__all__ = ["TwoWayResult", "TrendResult", "ExchangeResult", "PowerRow", "two_way_cluster_t", "seed_trend",
           "two_way_trend", "exchange_rate", "power_table", "power_table_lines", "COVERS_SEEDS",
           "COVERS_SEEDS_AND_IMAGES", "DECLARED_EFFECTS"]

COVERS_SEEDS = "seeds"                                  # the test images held fixed
COVERS_SEEDS_AND_IMAGES = "seeds and test images"       # the test images drawn from their distribution
DECLARED_EFFECTS = (0.003, 0.005, 0.010)                # accuracy differences (fractions) the power is given at


@dataclass(frozen=True)
class TTested:
    """What every t-tested estimate here carries: its interval and two-sided test on `df` degrees of freedom,
    the standard error they come from, and the seeds behind it."""

    ci_low: float | np.ndarray
    ci_high: float | np.ndarray
    t_stat: float | np.ndarray
    pvalue: float | np.ndarray
    df: float
    se: float | np.ndarray
    n_seeds: int


@dataclass(frozen=True)
class TwoWayResult(TTested):
    """Mean of d over seeds and test images with its two-way cluster-robust t: `se` from the variance
    V = V_seed + V_image - V_seed_x_image (max(V_seed, V_image) where that is not positive), t on n_seeds - 1
    df. `se_seeds` = sqrt(V_seed), the seed-paired t's standard error of the same mean (the test set fixed)."""

    mean_diff: float | np.ndarray = np.nan
    se_seeds: float | np.ndarray = np.nan
    n_images: int = 0
    covers: str = COVERS_SEEDS_AND_IMAGES


@dataclass(frozen=True)
class TrendResult(TTested):
    """A least-squares slope of a metric on a numeric field, per unit of that field (accuracy a replace_pct
    point: a fraction a point), its interval and two-sided t-test on n_seeds - 1 df. n_images is 0 where
    the slope comes from a per-seed metric (seed_trend: the interval covers seeds), the test set's size where
    it comes from per-image correctness (two_way_trend: it covers seeds and test images)."""

    slope: float | np.ndarray = np.nan
    n_levels: int = 0
    n_images: int = 0
    covers: str = COVERS_SEEDS


BOUNDED = "bounded"
ALL_BUT_GAP = "unbounded both ways: every rate outside a gap; the real arm's gain is not distinguishable from 0"
ANY_RATE = "unbounded: any rate; neither arm's gain is distinguishable from 0"
FEW_SEEDS = "not estimable: fewer than 2 seeds or no spread"


@dataclass(frozen=True)
class ExchangeResult:
    """rate = mean synthetic gain / mean real gain (each against the same baseline, seed by seed): with the same
    number of images added by both arms, what one synthetic image is worth in real images. Fieller's interval
    from the seeds' variances and covariance on n_seeds - 1 df: `bounded` where the real gain differs from 0 at
    the interval's level; else ci_low = -inf, ci_high = inf and `note` says which unbounded set it is: every rate
    outside (gap_low, gap_high), or any rate (gap_* nan)."""

    rate: float | np.ndarray
    ci_low: float | np.ndarray
    ci_high: float | np.ndarray
    bounded: bool | np.ndarray
    note: str | np.ndarray
    gap_low: float | np.ndarray
    gap_high: float | np.ndarray
    synthetic_gain: float | np.ndarray
    real_gain: float | np.ndarray
    df: float
    n_seeds: int


@dataclass(frozen=True)
class PowerRow:
    """Power of the two-sided paired t with n_seeds seeds at a true mean difference `effect` (a fraction), at
    the adjusted `alpha` (alpha / family size: Holm's first step over the primary family); the seeds it needs
    for the planned power (inf: more than 10,000)."""

    effect: float
    dz: float
    alpha: float
    power: float
    seeds_needed: float


# --------------------------------------------------------------------------- helpers


def _finite(x, name: str, min_ndim: int) -> np.ndarray:
    """x as an array of at least min_ndim axes: integers and booleans as they are (0/1 correctness need no
    copy), anything else as floats, which must be finite."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biu":
        arr = arr.astype(float, copy=False)
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} needs at least {min_ndim} axes, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; drop those entries first")
    return arr


def _plain(x):
    """A 0-d array as a float (bool), anything else as it is."""
    x = np.asarray(x)
    if x.ndim:
        return x
    return bool(x) if x.dtype == bool else (str(x) if x.dtype.kind == "U" else float(x))


def _t_test(estimate: np.ndarray, se: np.ndarray, df: float, confidence: float):
    """(ci_low, ci_high, t, p) of estimate / se on df degrees of freedom, nan where se has no spread."""
    with np.errstate(all="ignore"):
        ok = _has_spread(se, estimate) & np.isfinite(se) & (df > 0)
        t = np.where(ok, estimate / se, np.nan)
        p = 2.0 * _st.t.sf(np.abs(t), df) if df > 0 else np.full(np.shape(t), np.nan)
        half = _st.t.ppf(0.5 + confidence / 2.0, df) * se if df > 0 else np.nan
        lo = np.where(ok, estimate - half, np.nan)
        hi = np.where(ok, estimate + half, np.nan)
    return lo, hi, t, p


def _trend_weights(x, n_levels: int) -> np.ndarray:
    """w with slope = sum_k w_k y_k (ordinary least squares of y on x)."""
    xs = _finite(x, "x", 1)
    if xs.shape != (n_levels,):
        raise ValueError(f"x must hold one value a level ({n_levels}), got shape {xs.shape}")
    centred = xs - xs.mean()
    if not _has_spread(np.sqrt((centred ** 2).sum()), xs.mean()):
        raise ValueError("x needs at least 2 distinct values for a slope")
    return centred / (centred ** 2).sum()


# --------------------------------------------------------------------------- the two-way test


def two_way_cluster_t(d, confidence: float = 0.95) -> TwoWayResult:
    """The mean of d[..., seed, image] (treatment correct - baseline correct: -1, 0 or 1; or any per-seed,
    per-image contribution) and its Cameron-Gelbach-Miller two-way cluster-robust t over seeds and images.

    With e = d - mean over the S x I cells (N = S I): V_seed = S/(S-1) sum_s (sum_i e)^2 / N^2 (the seed means'
    variance / S), V_image likewise over images, V_cell = N/(N-1) sum e^2 / N^2; V = V_seed + V_image - V_cell,
    or max(V_seed, V_image) where V is not positive. t = mean / sqrt(V) on S - 1 df (the seeds are the fewer
    clusters). Below 2 seeds or 2 images, or without spread, the statistics are nan.
    """
    _check_confidence(confidence)
    arr = _finite(d, "d", 2)
    n_seeds, n_images = arr.shape[-2:]
    mean = arr.mean(axis=(-2, -1))
    if n_seeds < 2 or n_images < 2:
        nan = _plain(np.full(mean.shape, np.nan))
        return TwoWayResult(nan, nan, nan, nan, float("nan"), nan, n_seeds, mean_diff=_plain(mean), se_seeds=nan,
                            n_images=n_images)
    v_seed = arr.mean(axis=-1).var(axis=-1, ddof=1) / n_seeds
    v_image = arr.mean(axis=-2).var(axis=-1, ddof=1) / n_images
    v_cell = arr.var(axis=(-2, -1), ddof=1) / (n_seeds * n_images)
    v = v_seed + v_image - v_cell
    v = np.where(v > 0, v, np.maximum(v_seed, v_image))
    se = np.sqrt(v)
    df = float(n_seeds - 1)
    lo, hi, t, p = _t_test(mean, se, df, confidence)
    return TwoWayResult(_plain(lo), _plain(hi), _plain(t), _plain(p), df, _plain(se), n_seeds, mean_diff=_plain(mean),
                        se_seeds=_plain(np.sqrt(v_seed)), n_images=n_images)


# --------------------------------------------------------------------------- trends


def seed_trend(values, x, confidence: float = 0.95) -> TrendResult:
    """The slope of values[..., seed, k] (a metric of each seed at the k-th value x[k] of a numeric field) per
    unit of x: each seed's least-squares slope, then a one-sample t over the seeds (n_seeds - 1 df). A paired
    design's seed effects drop out of each seed's slope; the interval covers seeds (the test set fixed)."""
    _check_confidence(confidence)
    arr = _finite(values, "values", 2)
    n_seeds, n_levels = arr.shape[-2:]
    slopes = arr @ _trend_weights(x, n_levels)                 # (..., seed)
    slope = slopes.mean(axis=-1)
    if n_seeds < 2:
        nan = _plain(np.full(slope.shape, np.nan))
        return TrendResult(nan, nan, nan, nan, float("nan"), nan, n_seeds, slope=_plain(slope), n_levels=n_levels)
    se = slopes.std(axis=-1, ddof=1) / np.sqrt(n_seeds)
    df = float(n_seeds - 1)
    lo, hi, t, p = _t_test(slope, se, df, confidence)
    return TrendResult(_plain(lo), _plain(hi), _plain(t), _plain(p), df, _plain(se), n_seeds, slope=_plain(slope),
                       n_levels=n_levels)


def two_way_trend(correct, x, confidence: float = 0.95) -> TrendResult:
    """The slope of accuracy per unit of x from correct[..., seed, k, image] (1 where the run of that seed at
    x[k] classified the image correctly): the seed's slope is the mean over images of the per-image slopes
    sum_k w_k correct[s, k, i] (w: least-squares weights of x), so its two-way cluster-robust t
    (two_way_cluster_t over seeds and images) tests the trend at the distribution level."""
    arr = _finite(correct, "correct", 3)
    weights = _trend_weights(x, arr.shape[-2])
    contributions = sum(w * arr[..., k, :] for k, w in enumerate(weights))      # (..., seed, image)
    r = two_way_cluster_t(contributions, confidence)
    return TrendResult(r.ci_low, r.ci_high, r.t_stat, r.pvalue, r.df, r.se, r.n_seeds, slope=r.mean_diff,
                       n_levels=arr.shape[-2], n_images=r.n_images, covers=COVERS_SEEDS_AND_IMAGES)


# --------------------------------------------------------------------------- synthetic vs real


def exchange_rate(synthetic_diff, real_diff, confidence: float = 0.95) -> ExchangeResult:
    """What one synthetic image is worth in real images: mean(synthetic_diff) / mean(real_diff), where each is a
    seed's paired difference against the same baseline (element s of both from seed s) and both arms add the
    same number of images. Fieller's interval: the rates r with (a - r b)^2 <= t^2 (v_aa - 2 r v_ab + r^2 v_bb)
    (a, b the means, v their variances and covariance over the seeds / n, t on n_seeds - 1 df), exact for
    normal seed differences. It is a bounded interval only where the real gain b differs from 0 at this level
    (b^2 > t^2 v_bb); otherwise it is every rate outside (gap_low, gap_high), or every rate (see `note`).
    """
    _check_confidence(confidence)
    syn = _finite(synthetic_diff, "synthetic_diff", 1)
    real = _finite(real_diff, "real_diff", 1)
    if syn.shape != real.shape:
        raise ValueError(f"synthetic_diff and real_diff shapes differ: {syn.shape} vs {real.shape}")
    n = syn.shape[-1]
    a, b = syn.mean(axis=-1), real.mean(axis=-1)
    with np.errstate(all="ignore"):
        rate = a / b
    if n < 2:
        nan = _plain(np.full(a.shape, np.nan))
        return ExchangeResult(_plain(rate), nan, nan, _plain(np.zeros(a.shape, bool)),
                              _plain(np.full(a.shape, FEW_SEEDS)), nan, nan, _plain(a), _plain(b), float("nan"), n)
    v_aa = syn.var(axis=-1, ddof=1) / n
    v_bb = real.var(axis=-1, ddof=1) / n
    v_ab = ((syn - a[..., None]) * (real - b[..., None])).sum(axis=-1) / (n - 1) / n
    t2 = _st.t.ppf(0.5 + confidence / 2.0, n - 1) ** 2
    quad_a, half_b, quad_c = b * b - t2 * v_bb, a * b - t2 * v_ab, a * a - t2 * v_aa
    with np.errstate(all="ignore"):
        root = np.sqrt(np.maximum(half_b * half_b - quad_a * quad_c, 0.0))
        near, far = (half_b - root) / quad_a, (half_b + root) / quad_a
    spread = _has_spread(np.sqrt(v_aa), a) | _has_spread(np.sqrt(v_bb), b)
    bounded = (quad_a > 0) & spread
    gap = (quad_a < 0) & (half_b * half_b - quad_a * quad_c > 0) & spread
    inf = np.full(a.shape, np.inf)
    lo = np.where(bounded, near, np.where(spread, -inf, np.nan))
    hi = np.where(bounded, far, np.where(spread, inf, np.nan))
    note = np.where(bounded, BOUNDED, np.where(gap, ALL_BUT_GAP, np.where(spread, ANY_RATE, FEW_SEEDS)))
    return ExchangeResult(_plain(rate), _plain(lo), _plain(hi), _plain(bounded), _plain(note),
                          _plain(np.where(gap, far, np.nan)), _plain(np.where(gap, near, np.nan)), _plain(a),
                          _plain(b), float(n - 1), n)


# --------------------------------------------------------------------------- power


def power_table(paired_sd: float, n_seeds: int, family_size: int, effects=DECLARED_EFFECTS, alpha: float = 0.05,
                power: float = 0.8) -> tuple[PowerRow, ...]:
    """A row an effect (a true mean paired difference, a fraction): the two-sided paired t's power with n_seeds
    seeds at alpha / family_size (Holm's first step over the primary family: the power of its smallest p), when
    the seeds' paired differences have sd `paired_sd` (a pilot's, or planned); and the seeds that give `power`.
    Power at declared effects, never at an observed one."""
    if not (np.isfinite(paired_sd) and paired_sd > 0):
        raise ValueError(f"paired_sd must be a number > 0, got {paired_sd}")
    if int(n_seeds) != n_seeds or n_seeds < 2:
        raise ValueError(f"n_seeds must be an integer >= 2, got {n_seeds}")
    if int(family_size) != family_size or family_size < 1:
        raise ValueError(f"family_size must be an integer >= 1, got {family_size}")
    level = alpha / family_size
    rows = []
    for effect in effects:
        dz = float(effect) / paired_sd
        rows.append(PowerRow(float(effect), dz, level, float(paired_t_power(dz, int(n_seeds), level)),
                             seeds_for_power(dz, power, level)))
    return tuple(rows)


def power_table_lines(rows, n_seeds: int, power: float = 0.8) -> list[str]:
    """The rows as a small text table: effect in percentage points, power with n_seeds seeds, seeds needed."""
    header = ("effect", f"power ({n_seeds} seeds)", f"seeds for {power:.0%}")
    cells = [(f"+{r.effect * 100:.1f} pp", f"{r.power:.2f}",
              f"{r.seeds_needed:.0f}" if np.isfinite(r.seeds_needed) else "> 10,000") for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (header, *cells)]
