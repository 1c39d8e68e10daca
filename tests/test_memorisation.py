"""Nearest-training-image distances (synthaug.analysis.memorisation): a generator that hands back copies of training
images is caught (every sample at distance 0, every one flagged), real unseen images are flagged at about the
reference percentile, and the chunked float32 search agrees with a brute-force float64 one."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from synthaug.analysis.memorisation import REFERENCE, memorisation, nearest_training
from synthaug.data.shapes import make_shapes


def test_copies_of_training_images_are_at_distance_0_and_all_flagged_while_real_test_images_are_not():
    train_x, _, test_x, _ = make_shapes(seed=3, train_per_class=60, test_per_class=40)
    rng = np.random.default_rng(0)
    copied = rng.choice(len(train_x), 150, replace=False)
    found = memorisation({"copier": train_x[copied], "noise": rng.integers(0, 256, (50, 32, 32, 3), np.uint8)},
                         test_x, train_x)
    rows = found.table.set_index("source")
    assert list(rows.index) == [REFERENCE, "copier", "noise"] and rows.loc[REFERENCE, "n"] == len(test_x)
    assert found.threshold > 0 and rows.loc["copier", "min"] == rows.loc["copier", "median"] == 0
    assert rows.loc["copier", "flagged"] == 150 and rows.loc["copier", "flagged_share"] == 1
    assert rows.loc[REFERENCE, "flagged_share"] <= 0.011 and rows.loc["noise", "flagged"] == 0
    pairs = found.pairs[0]
    assert pairs.generator == "copier" and (pairs.distances == 0).all() and (pairs.samples == pairs.training).all()


def test_the_chunked_search_finds_the_brute_force_nearest_image():
    train_x, _, test_x, _ = make_shapes(seed=4, train_per_class=30, test_per_class=10)
    distance, index = nearest_training(test_x, train_x, query_chunk=7, training_chunk=50)   # many chunks to merge
    flat = lambda x: x.reshape(len(x), -1).astype(np.float64) / 255  # noqa: E731
    brute = cdist(flat(test_x), flat(train_x)) / np.sqrt(32 * 32 * 3)
    assert np.allclose(distance, brute.min(1), atol=1e-12)
    assert np.allclose(brute[np.arange(len(test_x)), index], brute.min(1), atol=1e-12)
