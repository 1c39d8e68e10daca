"""Real + synthetic -> a trial's training set and its manifest.

For class c the trial's real target n_c follows the long-tail profile (balanced when
imbalance is 1). Replacement keeps round(n_c * (1 - p/100)) real images, a seeded prefix of
the class's shuffled images, so the images removed at 2% are also removed at 4%, and fills
the class back to n_c from the class's synthetic pool. Augmentation adds augment_count more
synthetic images to each class of augment_classes. Synthetic images are always a prefix of
the pool, so a larger request contains a smaller one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from synthaug.config import TrialConfig
from synthaug.data import Dataset, class_permutations, long_tail_counts
from synthaug.pools import PoolSlice

TakeSynthetic = Callable[[int, int], PoolSlice]   # (class_index, n) -> the first n of its pool


@dataclass(frozen=True)
class ClassPlan:
    """How one class of the training set is made."""

    real_target: int        # n_c before replacement
    real: int               # real images kept
    replaced: int           # synthetic images standing in for removed real ones
    augmented: int          # synthetic images added on top

    @property
    def synthetic(self) -> int:
        return self.replaced + self.augmented


@dataclass(frozen=True)
class TrainingSet:
    x: np.ndarray               # uint8 (N, 32, 32, 3)
    y: np.ndarray               # int64 (N,)
    synthetic: np.ndarray       # bool (N,): which images came from a generator
    manifest: dict


def plan(cfg: TrialConfig, dataset: Dataset) -> list[ClassPlan]:
    """Per class: real target, real kept, replaced and augmented counts."""
    available = np.bincount(dataset.train_y, minlength=dataset.num_classes)
    n_max = cfg.real_per_class or int(available.max())
    targets = long_tail_counts(n_max, cfg.imbalance, dataset.num_classes)
    plans = []
    for c, name in enumerate(dataset.classes):
        target = min(targets[c], int(available[c]))
        real = int(round(target * (1 - cfg.replace_pct / 100)))
        augmented = cfg.augment_count if name in cfg.augment_classes else 0
        plans.append(ClassPlan(target, real, target - real, augmented))
    return plans


def compose(cfg: TrialConfig, dataset: Dataset, take: TakeSynthetic) -> TrainingSet:
    """Build the training set; `take` is asked only for classes that need synthetic images."""
    plans = plan(cfg, dataset)
    orders = class_permutations(dataset.train_y, dataset.num_classes, cfg.seed)
    xs, ys, flags, rows = [], [], [], []
    for c, (name, p) in enumerate(zip(dataset.classes, plans)):
        real_index = np.sort(orders[c][:p.real])
        xs.append(dataset.train_x[real_index])
        row = {"class": name, "index": c, "real_target": p.real_target, "real": p.real,
               "replaced": p.replaced, "augmented": p.augmented, "synthetic": p.synthetic,
               "real_indices_sha256": _digest(real_index), "pool_id": None, "pool_indices_sha256": None}
        if p.synthetic:
            pool = take(c, p.synthetic)
            if len(pool.images) != p.synthetic or np.any(pool.labels != c):
                raise RuntimeError(f"pool {pool.pool_id} returned {len(pool.images)} images for class "
                                   f"{name}, {p.synthetic} asked")
            xs.append(pool.images)
            row.update(pool_id=pool.pool_id, pool_indices_sha256=_digest(pool.indices),
                       pool_first_index=int(pool.indices[0]), pool_last_index=int(pool.indices[-1]),
                       labeller_confidence_mean=float(pool.confidence.mean()))
        ys.append(np.full(p.real + p.synthetic, c, np.int64))
        flags.append(np.r_[np.zeros(p.real, bool), np.ones(p.synthetic, bool)])
        rows.append(row)
    x, y = np.concatenate(xs), np.concatenate(ys)
    manifest = {
        "experiment": cfg.experiment, "seed": cfg.seed, "replace_pct": cfg.replace_pct,
        "augment_classes": list(cfg.augment_classes), "augment_count": cfg.augment_count,
        "generator": cfg.generator if cfg.uses_synthetic else None,
        "data": {"name": dataset.name, "digest": dataset.digest},
        "classes": rows,
        "totals": {"images": int(len(y)), "real": int(sum(p.real for p in plans)),
                   "synthetic": int(sum(p.synthetic for p in plans))},
        "training_set_sha256": hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest(),
    }
    return TrainingSet(x, y, np.concatenate(flags), manifest)


def select_test(dataset: Dataset, per_class: int) -> np.ndarray:
    """The same test images for every trial: the first per_class of each class (all when 0)."""
    if not per_class:
        return np.arange(len(dataset.test_y))
    keep = [np.flatnonzero(dataset.test_y == c)[:per_class] for c in range(dataset.num_classes)]
    return np.sort(np.concatenate(keep))


def synthetic_requests(cfg: TrialConfig, dataset: Dataset) -> dict[int, int]:
    """class_index -> how many pool images the trial will take (for warming pools up front)."""
    return {c: p.synthetic for c, p in enumerate(plan(cfg, dataset)) if p.synthetic}


def _digest(index: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(index, np.int64).tobytes()).hexdigest()[:16]
