"""Image metrics, pure: arrays in, numbers and tables out, tested on fixed inputs.

Image statistics (brightness as mean BT.601 luminance, background as the mean luminance of the
BORDER-pixel frame, HSV saturation) and their two-sample tests; distribution distances between
feature sets (FID; KID after Binkowski et al. 2018: cubic polynomial kernel, unbiased MMD^2
over random subsets; precision and recall after Kynkaanniemi et al. 2019: k-NN balls); and the
pseudo-labeller's diagnostics (confidence histogram, agreement with intended classes).
synthaug.analysis.fidelity (E5) and a generator's evaluation (synthaug.generation.generator_training) use them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as st
from scipy.spatial.distance import cdist

LUMA = np.array([0.299, 0.587, 0.114])     # ITU-R BT.601 luma weights
BORDER = 4                                  # pixels of the frame taken as background
KNN_K = 3                                   # Kynkaanniemi et al.'s k
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000    # Binkowski et al.'s protocol
CHUNK = 1024                                # rows of a distance matrix held at once


# ---------------------------------------------------------------------------- image statistics (pure)


def luminance(images: np.ndarray) -> np.ndarray:
    """Per-pixel luma, float64 (N, H, W) in 0..255, of uint8 (N, H, W, 3) RGB images."""
    return np.asarray(images, np.float64) @ LUMA


def brightness(images: np.ndarray) -> np.ndarray:
    """Mean luminance of each image, (N,)."""
    return _brightness(luminance(images))


def border_luminance(images: np.ndarray, width: int = BORDER) -> np.ndarray:
    """Mean luminance of each image's outer frame `width` pixels wide, (N,): a background proxy."""
    return _border(luminance(images), width)


def _brightness(lum: np.ndarray) -> np.ndarray:
    return lum.mean(axis=(1, 2))


def _border(lum: np.ndarray, width: int = BORDER) -> np.ndarray:
    height, breadth = lum.shape[1:]
    if not 0 < 2 * width < min(height, breadth):
        raise ValueError(f"width: 1..{(min(height, breadth) - 1) // 2} for {height}x{breadth} images, got {width}")
    frame = np.ones((height, breadth), bool)
    frame[width:-width, width:-width] = False
    return lum[:, frame].mean(axis=1)


def saturation(images: np.ndarray) -> np.ndarray:
    """Mean HSV saturation, (max - min) / max of the RGB channels (0 for black), of each image, (N,)."""
    x = np.asarray(images, np.float64)
    top, bottom = x.max(axis=3), x.min(axis=3)
    s = np.divide(top - bottom, top, out=np.zeros_like(top), where=top > 0)
    return s.mean(axis=(1, 2))


def image_statistics(images: np.ndarray) -> pd.DataFrame:
    """A row an image: brightness, background, saturation."""
    lum = luminance(images)         # once: both luminance statistics read it
    return pd.DataFrame({"brightness": _brightness(lum), "background": _border(lum),
                         "saturation": saturation(images)})


@dataclass(frozen=True)
class TwoSample:
    """a vs b: means, a - b, Welch's t-test and the Mann-Whitney U test (both two-sided)."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    mean_diff: float
    welch_t: float
    welch_p: float
    mwu_u: float
    mwu_p: float


def two_sample(a: Sequence[float], b: Sequence[float]) -> TwoSample:
    """Welch's t (nan below 2 a side or with no variance) and Mann-Whitney U (nan when a side is empty)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    mean_a = float(a.mean()) if len(a) else math.nan
    mean_b = float(b.mean()) if len(b) else math.nan
    t = p = u = pu = math.nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if len(a) >= 2 and len(b) >= 2:
            welch = st.ttest_ind(a, b, equal_var=False)
            t, p = float(welch.statistic), float(welch.pvalue)
        if len(a) and len(b):
            mwu = st.mannwhitneyu(a, b, alternative="two-sided")
            u, pu = float(mwu.statistic), float(mwu.pvalue)
    return TwoSample(len(a), len(b), mean_a, mean_b, mean_a - mean_b, t, p, u, pu)


# ---------------------------------------------------------------------------- distribution distances (pure)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), the trace term from the eigenvalues of the
    symmetric S1^1/2 S2 S1^1/2 (same spectrum as S1 S2), which stays real and stable when S is singular."""
    diff = np.asarray(mu1, float) - np.asarray(mu2, float)
    root = _psd_sqrt(np.asarray(sigma1, float))
    middle = root @ np.asarray(sigma2, float) @ root
    covmean_trace = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * covmean_trace)


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D); nan below 2 rows a set."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a . b / D + 1)^3, KID's kernel."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """The unbiased estimate of MMD^2 under the polynomial kernel (diagonals of K_aa, K_bb left out)."""
    m, n = len(a), len(b)
    kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def kid(a: np.ndarray, b: np.ndarray, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0) -> tuple[float, float]:
    """KID: mean and sd of mmd2_unbiased over random subsets (kid_subset_size rows of each set). When the
    subsets are both whole sets there is one subset, so one value: its sd is nan (not estimable), not the
    1e-15 of recomputing the same number on permuted rows."""
    size = kid_subset_size(len(a), len(b), subset_size)
    if size < 2:
        return math.nan, math.nan
    if kid_subset_count(len(a), len(b), subsets, subset_size) == 1:
        return mmd2_unbiased(a, b), math.nan
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def kid_subset_size(n_a: int, n_b: int, subset_size: int = KID_SUBSET_SIZE) -> int:
    """Rows of each set in one KID subset: min(subset_size, n_a, n_b)."""
    return min(subset_size, n_a, n_b)


def kid_subset_count(n_a: int, n_b: int, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE) -> int:
    """Distinct KID subsets drawn: 1 when a subset is both whole sets, else `subsets`."""
    return 1 if kid_subset_size(n_a, n_b, subset_size) == n_a == n_b else subsets


def knn_radii(x: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Each point's distance to its k-th nearest other point (column 0 of a sorted row is itself)."""
    radii = [np.partition(cdist(x[i:i + CHUNK], x), k, axis=1)[:, k] for i in range(0, len(x), CHUNK)]
    return np.concatenate(radii)


def coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """The share of points inside at least one ball (centre, radius)."""
    inside = [(cdist(points[i:i + CHUNK], centres) <= radii[None, :]).any(axis=1)
              for i in range(0, len(points), CHUNK)]
    return float(np.concatenate(inside).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = KNN_K) -> tuple[float, float]:
    """Kynkaanniemi et al.: precision = fake points inside the real k-NN manifold, recall = real points
    inside the fake one; nan when a set has k points or fewer."""
    if len(real) <= k or len(fake) <= k:
        return math.nan, math.nan
    return coverage(fake, real, knn_radii(real, k)), coverage(real, fake, knn_radii(fake, k))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


# ---------------------------------------------------------------------------- labeller diagnostics (pure)


def confidence_histogram(confidence: Sequence[float], bins: int = 10) -> pd.DataFrame:
    """Counts of max-probabilities in `bins` equal bins of [0, 1]: bin_low, bin_high, count, fraction."""
    confidence = np.asarray(confidence, float)
    counts, edges = np.histogram(confidence, bins=bins, range=(0.0, 1.0))
    edges = np.round(edges, 12)
    return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "count": counts,
                         "fraction": counts / max(1, len(confidence))})


def class_agreement(predicted: np.ndarray, intended: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Per class c: samples meant as c, how many the labeller labels c, and the fraction."""
    rows = []
    for c, name in enumerate(classes):
        mine = predicted[intended == c]
        rows.append({"class": name, "n": len(mine), "agree": int((mine == c).sum()),
                     "fraction": float((mine == c).mean()) if len(mine) else math.nan})
    return pd.DataFrame(rows, columns=["class", "n", "agree", "fraction"])
