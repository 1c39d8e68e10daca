"""p-values across tests, and McNemar's test on per-sample correctness.

Corrections over a family (Holm, Benjamini-Hochberg), a combination valid under any dependence
(twice the mean p), the smallest p an exact paired test of n pairs can give, and McNemar's test.
Pure numpy and scipy; synthaug.stats re-exports every name, so callers import from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st

ArrayLike = Sequence[float] | np.ndarray
_NAN = float("nan")


def _as_1d(x: ArrayLike, name: str = "x") -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; drop those entries first")
    return arr


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired correctness.

    ``b`` = samples A got right and B got wrong, ``c`` = A wrong and B right.
    ``statistic`` is ``min(b, c)`` for the exact binomial test and the continuity-
    corrected chi-square otherwise; ``exact`` says which was used.
    """

    b: int
    c: int
    statistic: float
    pvalue: float
    exact: bool


# --------------------------------------------------------------------------- corrections


def _prepare_pvalues(pvalues: ArrayLike) -> np.ndarray:
    p = np.array(pvalues, dtype=float)
    if p.ndim == 0:
        p = p.reshape(1)
    bad = ~np.isnan(p) & ((p < 0) | (p > 1))
    if np.any(bad):
        raise ValueError("p-values must lie in [0, 1] (or be nan)")
    return p


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control).

    ``pvalues`` is one family (1-D) or an array whose last axis holds independent
    families. NaNs are left out of their family (they do not count towards m) and come
    back as nan. Adjusted values are monotone in the raw ones and capped at 1.
    """
    p = _prepare_pvalues(pvalues)
    order = np.argsort(p, axis=-1, kind="stable")  # nans sort last
    ps = np.take_along_axis(p, order, axis=-1)
    m = np.sum(~np.isnan(p), axis=-1, keepdims=True)
    rank = np.arange(1, p.shape[-1] + 1)
    adj = np.minimum(1.0, (m - rank + 1) * ps)
    adj = np.maximum.accumulate(adj, axis=-1)  # nans are at the end, so they stay there
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return out


def benjamini_hochberg(pvalues: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate control).

    Same shape and nan conventions as :func:`holm`.
    """
    p = _prepare_pvalues(pvalues)
    order = np.argsort(p, axis=-1, kind="stable")
    ps = np.take_along_axis(p, order, axis=-1)
    isnan = np.isnan(ps)
    m = np.sum(~isnan, axis=-1, keepdims=True)
    rank = np.arange(1, p.shape[-1] + 1)
    adj = np.where(isnan, np.inf, np.minimum(1.0, ps * m / rank))
    adj = np.flip(np.minimum.accumulate(np.flip(adj, axis=-1), axis=-1), axis=-1)
    adj = np.where(isnan, np.nan, adj)
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return out


# --------------------------------------------------------------------------- McNemar


def mcnemar(
    correct_a: ArrayLike, correct_b: ArrayLike, exact: bool | None = None
) -> McNemarResult:
    """McNemar's test that two classifiers have the same error rate on the same samples.

    ``correct_a[i]``/``correct_b[i]``: whether A/B classified test sample i correctly.
    Only the discordant counts matter: b = A right & B wrong, c = A wrong & B right.
    ``exact=None`` picks the exact two-sided binomial test when b + c < 25 and the
    chi-square test with continuity correction, (|b - c| - 1)**2 / (b + c) on 1 df,
    otherwise. When b == c (including no discordant pairs) the chi-square version
    returns statistic 0 and p = 1 (no correction is applied to a zero difference).
    """
    a = np.asarray(correct_a)
    bb = np.asarray(correct_b)
    if a.shape != bb.shape or a.ndim != 1:
        raise ValueError("correct_a and correct_b must be 1-D and the same length")
    a = a.astype(bool)
    bb = bb.astype(bool)
    b = int(np.count_nonzero(a & ~bb))
    c = int(np.count_nonzero(~a & bb))
    if exact is None:
        exact = (b + c) < 25
    if exact:
        k = min(b, c)
        p = min(1.0, 2.0 * float(_st.binom.cdf(k, b + c, 0.5))) if (b + c) else 1.0
        return McNemarResult(b, c, float(k), p, True)
    if b == c:
        return McNemarResult(b, c, 0.0, 1.0, False)
    stat = (abs(b - c) - 1.0) ** 2 / (b + c)
    return McNemarResult(b, c, float(stat), float(_st.chi2.sf(stat, 1)), False)


def twice_mean_pvalue(pvalues: ArrayLike) -> float:
    """min(1, 2 x mean p): a valid p-value whatever the dependence between the tests (Ruschendorf 1982;
    Vovk and Wang 2020, "Combining p-values via averaging"). For per-seed tests on the same test images,
    whose outcomes are correlated through the images, where Fisher's or Stouffer's method would not be."""
    p = _as_1d(pvalues, "pvalues")
    if p.size == 0:
        return _NAN
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    return float(min(1.0, 2.0 * p.mean()))


def smallest_exact_pvalue(n: int) -> float:
    """The smallest two-sided p an exact sign-flip (or exact Wilcoxon signed-rank) test of n pairs can
    give: 2 / 2**n (all n differences on one side); nan below 1 pair."""
    return 2.0 / 2.0 ** n if n >= 1 else _NAN
