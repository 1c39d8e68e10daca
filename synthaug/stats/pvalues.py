"""p-values across tests: corrections over a family (Holm, Benjamini-Hochberg) and the smallest p an
exact paired test of n pairs can give. Pure numpy; synthaug.stats.compare re-exports every name, so callers
import from there.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

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


def smallest_exact_pvalue(n: int) -> float:
    """The smallest two-sided p an exact sign-flip (or exact Wilcoxon signed-rank) test of n pairs can
    give: 2 / 2**n (all n differences on one side); nan below 1 pair."""
    return 2.0 / 2.0 ** n if n >= 1 else _NAN
