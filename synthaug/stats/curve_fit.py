"""Accuracy against the number K of samples added, fitted: two models, seed-bootstrap draws and intervals
that cover at a few seeds. Pure numpy, vectorised over many curves at once (a curve's bootstrap draws, or a
simulation's sweeps), so a coverage check over thousands of sweeps takes seconds.

    saturating  acc(K) = a + b (1 - exp(-K / tau))             b: the gain more samples approach
    peaked      acc(K) = a + b (1 - exp(-K / tau)) - c K       c > 0: the curve rises, peaks, then falls

Both are linear in (a, b[, c]) once tau is fixed, so each is fitted by least squares profiled over a
log-spaced grid of tau (TAU_POINTS values from a tenth of the smallest K > 0 to three times the largest: a
scale the data can speak to), the best grid point refined by a parabola through its neighbours' residuals.
The peaked model nests the saturating one (c = 0); its peak is at K* = tau ln(b / (c tau)) when b > c tau > 0.

Intervals (widened_interval): the seed bootstrap (a resampled seed keeps all its K: the paired design) gives
draws of a statistic; its plain percentile interval under-covers at 8 seeds (the bootstrap's spread is the
plug-in sd, sqrt((n-1)/n) of the unbiased one, and a normal quantile where a t_{n-1} belongs: about 0.87-0.89
for a nominal 0.95). So each side's distance from the estimate is widened by sqrt(n/(n-1)) t_{n-1}/z, on the log
scale for a scale parameter (K90, the peak's K). tests/test_sample_curve.py measures the coverage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

TAU_POINTS = 120
SATURATION = 0.9            # K90: the K by which this share of the fitted gain is reached
K90_PER_TAU = math.log(1 / (1 - SATURATION))


@dataclass(frozen=True)
class Fit:
    """Least-squares fits of many curves (arrays of the curves' shape): c is 0 for the saturating model."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    tau: np.ndarray

    def at(self, k: np.ndarray) -> np.ndarray:
        """The fitted curves at each K: shape (*curves, len(k))."""
        k = np.asarray(k, float)
        tau = self.tau[..., None]
        return self.a[..., None] + self.b[..., None] * (1 - np.exp(-k / tau)) - self.c[..., None] * k

    @property
    def k90(self) -> np.ndarray:
        return self.tau * K90_PER_TAU

    def peak(self) -> np.ndarray:
        """K* = tau ln(b / (c tau)), the fitted maximum; nan where the curve has none (c <= 0 or b <= c tau)."""
        with np.errstate(all="ignore"):
            ratio = self.b / (self.c * self.tau)
            return np.where((self.c > 0) & (ratio > 1), self.tau * np.log(ratio), np.nan)

    def peak_within(self, top: float) -> np.ndarray:
        """The K of the fitted maximum on [0, top]: the peak where there is one inside, else the better end."""
        peak = self.peak()
        ends = np.where(self.at(np.array([top]))[..., 0] >= self.a, top, 0.0)
        return np.where(np.isfinite(peak), np.clip(peak, 0, top), ends)


def tau_grid(ks: np.ndarray) -> np.ndarray:
    ks = np.asarray(ks, float)
    return np.geomspace(ks[ks > 0].min() / 10, ks.max() * 3, TAU_POINTS)


def fit_saturating(ks: np.ndarray, means: np.ndarray) -> Fit:
    """means: (..., len(ks)), one curve a row."""
    return _profile(ks, means, peaked=False)


def fit_peaked(ks: np.ndarray, means: np.ndarray) -> Fit:
    return _profile(ks, means, peaked=True)


def _design(ks: np.ndarray, tau: np.ndarray, peaked: bool) -> np.ndarray:
    """(len(tau), len(ks), 2 or 3): columns 1, 1 - exp(-K / tau)[, -K]."""
    g = 1 - np.exp(-ks[None, :] / tau[:, None])
    columns = [np.ones_like(g), g] + ([np.broadcast_to(-ks, g.shape)] if peaked else [])
    return np.stack(columns, axis=-1)


def _profile(ks: np.ndarray, means: np.ndarray, peaked: bool, chunk: int = 20_000) -> Fit:
    ks = np.asarray(ks, float)
    means = np.asarray(means, float)
    shape, flat = means.shape[:-1], means.reshape(-1, len(ks))
    grid = tau_grid(ks)
    # every design holds the constant column: centring the curves and the other columns leaves the residuals
    # as they are, and one matrix product a chunk gives every curve's explained sum of squares at every tau
    design = _design(ks, grid, peaked)[..., 1:]
    bases = np.linalg.qr(design - design.mean(axis=1, keepdims=True))[0]     # (T, K, p - 1), orthonormal
    stacked = bases.transpose(1, 0, 2).reshape(len(ks), -1)                # (K, T (p - 1))
    centred = flat - flat.mean(-1, keepdims=True)
    best = np.empty(len(flat), int)
    around = np.empty((len(flat), 3))                                       # residuals at best - 1, best, best + 1
    total = (centred ** 2).sum(-1)
    for i in range(0, len(flat), chunk):
        part = centred[i:i + chunk]
        rss = total[i:i + chunk, None] - ((part @ stacked) ** 2).reshape(len(part), len(grid), -1).sum(-1)
        best[i:i + chunk] = at = rss.argmin(-1)
        rows = np.arange(len(part))[:, None]
        around[i:i + chunk] = rss[rows, np.clip(at[:, None] + [-1, 0, 1], 0, len(grid) - 1)]
    left, mid, right = around.T
    curvature = left - 2 * mid + right
    inner = (best > 0) & (best < len(grid) - 1) & (curvature > 0)           # a parabola through the neighbours
    with np.errstate(all="ignore"):
        offset = np.where(inner, 0.5 * (left - right) / curvature, 0.0)
    tau = np.exp(np.log(grid)[best] + np.clip(offset, -0.5, 0.5) * np.log(grid[1] / grid[0]))
    coef = np.empty((len(flat), design.shape[-1] + 1))
    for i in range(0, len(flat), chunk):                                   # each curve at its own tau
        x = _design(ks, tau[i:i + chunk], peaked)
        gram = np.einsum("nkp,nkq->npq", x, x)
        coef[i:i + chunk] = np.linalg.solve(gram, np.einsum("nkp,nk->np", x, flat[i:i + chunk])[..., None])[..., 0]
    c = coef[:, 2] if peaked else np.zeros(len(flat))
    return Fit(coef[:, 0].reshape(shape), coef[:, 1].reshape(shape), c.reshape(shape), tau.reshape(shape))


def bootstrap_means(values: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """values: (..., seeds, len(ks)) -> (..., draws, len(ks)): the mean over a resample of whole seeds (each
    keeps all its K), `draws` times a curve."""
    values = np.asarray(values, float)
    seeds = values.shape[-2]
    counts = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=(*values.shape[:-2], draws))
    return np.einsum("...bn,...nk->...bk", counts / seeds, values)


def widening(seeds: int, confidence: float) -> float:
    """sqrt(n/(n-1)) t_{n-1} / z: how much wider than the bootstrap's percentiles a t interval over n seeds is."""
    tail = 1 - (1 - confidence) / 2
    return math.sqrt(seeds / (seeds - 1)) * float(st.t.ppf(tail, seeds - 1) / st.norm.ppf(tail))


def widened_interval(estimate: np.ndarray, draws: np.ndarray, seeds: int, confidence: float,
                     log: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): the percentile interval of `draws` (last axis; nan draws left out) with each side's
    distance from `estimate` widened by widening(seeds); on the log scale when `log` (a positive scale
    parameter). nan where no draw is finite."""
    estimate, draws = np.asarray(estimate, float), np.asarray(draws, float)
    tail = (1 - confidence) / 2 * 100
    if log:
        with np.errstate(all="ignore"):
            estimate, draws = np.log(estimate), np.log(draws)
    usable = np.isfinite(draws).any(-1)
    safe = np.where(usable[..., None], draws, 0.0)
    with np.errstate(all="ignore"):
        low, high = np.nanpercentile(safe, [tail, 100 - tail], axis=-1)
    factor = widening(seeds, confidence)
    low, high = estimate - factor * (estimate - low), estimate + factor * (high - estimate)
    low, high = np.where(usable, low, np.nan), np.where(usable, high, np.nan)
    return (np.exp(low), np.exp(high)) if log else (low, high)
