"""The training split's held-out validation images, and the seeded class orders trials draw real images from.

A data source's validation images are `validation_per_class` of each class's training images, chosen in a
fixed order (VALIDATION_SEED, whatever the trial's seed), so they are the same for every seed and every
trial of that source. A trial evaluates them after every epoch (val_acc, val_loss) and never trains on
them; the test split is evaluated once, after the last epoch. Every real image a trial may take (its
long-tailed subset, the images after it that a "withheld" arm adds, what a generator with train_on
"trial" learns from) comes from `training_orders`: the seed's order of each class's images outside the
validation split, so none of them is a validation image.
"""

from __future__ import annotations

import numpy as np

from synthaug.data.sources import class_permutations

# The order the validation images are taken in: fixed, so they do not depend on the trial's seed. A trial
# whose seed happens to equal it is no problem: its orders run over the images outside the validation split.
VALIDATION_SEED = 2**31 - 1


def validation_index(labels: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """The validation images' indices into the training split, sorted: the first per_class of each class in
    VALIDATION_SEED's order (all of a class's images when it has fewer; none when per_class is 0)."""
    if not per_class:
        return np.zeros(0, np.int64)
    orders = class_permutations(labels, num_classes, VALIDATION_SEED)
    return np.sort(np.concatenate([order[:per_class] for order in orders])).astype(np.int64)


def training_counts(labels: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """Per class, the training images outside the validation split (what a trial may take at most)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    return counts - np.minimum(counts, per_class)


def training_orders(labels: np.ndarray, num_classes: int, seed: int, validation_per_class: int) -> list[np.ndarray]:
    """Per class, the indices of its training images outside the validation split, in the seed's order
    (class_permutations over those images: a prefix is the trial's real subset, a longer one contains it)."""
    labels = np.asarray(labels)
    kept = np.ones(len(labels), bool)
    kept[validation_index(labels, num_classes, validation_per_class)] = False
    outside = np.flatnonzero(kept)
    return [outside[order] for order in class_permutations(labels[outside], num_classes, seed)]
