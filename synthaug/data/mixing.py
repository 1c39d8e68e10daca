"""Real + synthetic -> a trial's training set and its manifest.

For class c the trial's real target n_c follows the long-tail profile (balanced when
imbalance is 1), over the class's training images outside the validation split (synthaug.data.splits: a
trial never trains on a validation image). Replacement keeps round(n_c * (1 - p/100)) real images, a seeded prefix of
the class's shuffled images, so the images removed at 2% are also removed at 4%, and fills
the class back to n_c from the class's synthetic pool. Augmentation adds augment_count more
synthetic images to each class of augment_classes, or, in augment_mode "stream", adds the
first len(augment_classes) x augment_count samples of the unconditional stream to whichever
classes the pseudo-labeller gives them (the same total, untargeted). Synthetic images are
always a prefix of a pool, so a larger request contains a smaller one.

The control arms realise the same K = augment_count a class without a generator
(augment_source): "oversample" adds K copies drawn from the class's own kept real images,
each used floor(K/n) or ceil(K/n) times; "withheld" adds the K real images that follow the
trial's long-tailed subset in the class's seeded order (outside real_index); "reweight" adds
nothing and weights the loss so that class c's total weight is n_c + K_c (class_weights).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from synthaug.config import ConfigError, TrialConfig
from synthaug.data.sources import Dataset, long_tail_counts
from synthaug.data.splits import training_counts, training_orders, validation_index
from synthaug.pools.store import UNCONDITIONAL, PoolSlice

# (class_index, n) -> the first n of the class's pool; class_index UNCONDITIONAL: the first n
# samples of the unconditional stream, whatever their labels
TakeSynthetic = Callable[[int, int], PoolSlice]


@dataclass(frozen=True)
class ClassPlan:
    """How one class of the training set is made."""

    real_target: int        # n_c before replacement
    real: int               # real images kept
    replaced: int           # synthetic images standing in for removed real ones
    augmented: int          # synthetic images of this class's pool added on top (not the stream's)
    added_real: int = 0     # real images added on top (augment_source oversample or withheld)
    reweighted: int = 0     # K_c the loss weights count as if added (augment_source reweight)

    @property
    def synthetic(self) -> int:
        return self.replaced + self.augmented

    @property
    def images(self) -> int:
        """The class's images in the training set (the stream's not counted)."""
        return self.real + self.synthetic + self.added_real


@dataclass(frozen=True)
class TrainingSet:
    x: np.ndarray               # uint8 (N, 32, 32, 3)
    y: np.ndarray               # int64 (N,)
    synthetic: np.ndarray       # bool (N,): which images came from a generator
    manifest: dict
    reference_images: int       # the real images before augmentation (the long-tail targets' sum): budget "steps"
    class_weights: np.ndarray | None = None     # float64 (C,) loss weights (augment_source reweight), else None


def plan(cfg: TrialConfig, dataset: Dataset) -> list[ClassPlan]:
    """Per class: real target, real kept, replaced and augmented counts (real_per_class 0: n_max is the
    largest class's training images outside the validation split)."""
    available = training_counts(dataset.train_y, dataset.num_classes, cfg.validation_per_class)
    n_max = cfg.real_per_class or int(available.max())
    targets = long_tail_counts(n_max, cfg.imbalance, dataset.num_classes)
    plans = []
    for c, name in enumerate(dataset.classes):
        target = min(targets[c], int(available[c]))
        real = int(round(target * (1 - cfg.replace_pct / 100)))
        targeted = name in cfg.augment_classes and cfg.augment_mode == "per_class"
        k = cfg.augment_count if targeted else 0
        source = cfg.augment_source
        plans.append(ClassPlan(target, real, target - real, augmented=k if source == "synthetic" else 0,
                               added_real=k if source in ("oversample", "withheld") else 0,
                               reweighted=k if source == "reweight" else 0))
    return plans


def class_orders(cfg: TrialConfig, dataset: Dataset) -> list[np.ndarray]:
    """Each class's training images outside the validation split in the trial's seeded order
    (synthaug.data.splits.training_orders): the long-tailed subset is a prefix of it, the withheld images follow it."""
    return training_orders(dataset.train_y, dataset.num_classes, cfg.seed, cfg.validation_per_class)


def withheld_available(cfg: TrialConfig, dataset: Dataset) -> dict[str, int]:
    """Per augmented class: the real images outside the trial's long-tailed subset and the validation split
    (augment_source withheld)."""
    orders, plans = class_orders(cfg, dataset), plan(cfg, dataset)
    return {name: len(orders[c]) - plans[c].real_target for c, name in enumerate(dataset.classes)
            if name in cfg.augment_classes}


def withheld_problem(cfg: TrialConfig, dataset: Dataset) -> str | None:
    """One line when a class has fewer withheld real images than augment_count asks (augment_source withheld)."""
    if cfg.augment_source != "withheld" or not cfg.augment_count:
        return None
    for name, available in withheld_available(cfg, dataset).items():
        if available < cfg.augment_count:
            return (f"augment_count: at most {available} with augment_source withheld ({name} has {available} real "
                    f"images outside the trial's long-tailed subset and the validation split), got {cfg.augment_count}")
    return None


def real_index(cfg: TrialConfig, dataset: Dataset) -> np.ndarray:
    """The real training images the trial's classifier may use: each class's seeded prefix of its
    long-tail target, before replacement (replacement keeps a prefix of these), sorted."""
    orders = class_orders(cfg, dataset)
    return np.sort(np.concatenate([order[:p.real_target] for order, p in zip(orders, plan(cfg, dataset))]))


def compose(cfg: TrialConfig, dataset: Dataset, take: TakeSynthetic) -> TrainingSet:
    """Build the training set; `take` is asked only for what needs synthetic images."""
    plans = plan(cfg, dataset)
    problem = withheld_problem(cfg, dataset)
    if problem:
        raise ConfigError(problem)
    orders = class_orders(cfg, dataset)
    stream = _checked(take(UNCONDITIONAL, cfg.stream_count), cfg.stream_count, None) if cfg.stream_count else None
    xs, ys, flags, rows = [], [], [], []
    for c, (name, p) in enumerate(zip(dataset.classes, plans)):
        real_index = np.sort(orders[c][:p.real])
        parts = [dataset.train_x[real_index]]
        row = {"class": name, "index": c, "real_target": p.real_target, "real": p.real,
               "replaced": p.replaced, "augmented": p.augmented, "stream": 0, "synthetic": p.synthetic,
               "real_indices_sha256": _digest(real_index), "pool_id": None, "pool_indices_sha256": None,
               "augment_source": cfg.augment_source, "added_real": p.added_real, "added_indices_sha256": None,
               "reweighted": p.reweighted}
        if p.added_real:
            added = _added_real(cfg, c, p, orders[c], real_index)
            parts.append(dataset.train_x[added])
            row.update(added_indices_sha256=_digest(added))
        if p.synthetic:
            pool = _checked(take(c, p.synthetic), p.synthetic, c)
            parts.append(pool.images)
            row.update(pool_id=pool.pool_id, pool_indices_sha256=_digest(pool.indices),
                       pool_first_index=int(pool.indices[0]), pool_last_index=int(pool.indices[-1]),
                       labeller_confidence_mean=float(pool.confidence.mean()))
        if stream is not None:
            mine = stream.labels == c
            n = int(mine.sum())
            parts.append(stream.images[mine])
            row.update(stream=n, augmented=p.augmented + n, synthetic=p.synthetic + n)
        xs.extend(parts)
        ys.append(np.full(p.real + p.added_real + row["synthetic"], c, np.int64))
        flags.append(np.r_[np.zeros(p.real + p.added_real, bool), np.ones(row["synthetic"], bool)])
        rows.append(row)
    x, y = np.concatenate(xs), np.concatenate(ys)
    weights = class_weights(plans, np.bincount(y, minlength=dataset.num_classes))
    for row, weight in zip(rows, weights if weights is not None else ()):
        row["class_weight"] = float(weight)
    manifest = {
        "experiment": cfg.experiment, "arm": cfg.arm, "seed": cfg.seed, "replace_pct": cfg.replace_pct,
        "augment_classes": list(cfg.augment_classes), "augment_count": cfg.augment_count,
        "augment_mode": cfg.augment_mode, "augment_source": cfg.augment_source,
        "generator": cfg.generator if cfg.uses_synthetic else None,
        "data": {"name": dataset.name, "digest": dataset.digest},
        "validation": {"per_class": cfg.validation_per_class, "indices_sha256": _digest(
            validation_index(dataset.train_y, dataset.num_classes, cfg.validation_per_class))},
        "classes": rows,
        "stream": None if stream is None else {
            "pool_id": stream.pool_id, "count": int(len(stream.labels)),
            "indices_sha256": _digest(stream.indices),
            "labeller_confidence_mean": float(stream.confidence.mean())},
        "totals": {"images": int(len(y)), "real": int(sum(p.real for p in plans)),
                   "added_real": int(sum(p.added_real for p in plans)),
                   "synthetic": int(sum(r["synthetic"] for r in rows)),
                   "reference_images": int(sum(p.real_target for p in plans))},
        "training_set_sha256": hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest(),
    }
    return TrainingSet(x, y, np.concatenate(flags), manifest, int(sum(p.real_target for p in plans)), weights)


# a generator stream of its own for oversampling, apart from the class order's np.random.default_rng([seed, c])
OVERSAMPLE_STREAM = 1


def _added_real(cfg: TrialConfig, c: int, p: ClassPlan, order: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Training-set indices of the real images added to class c, sorted. oversample: K draws from the class's
    kept real images `kept`, each used floor(K/n) or ceil(K/n) times (which get the extra one a seeded choice
    without replacement); withheld: the K images after the long-tailed subset in the class's order."""
    k = p.added_real
    if cfg.augment_source == "withheld":
        return np.sort(order[p.real_target:p.real_target + k])
    if not len(kept):
        raise ConfigError(f"augment_source: oversample needs real images of class {c} to draw from; it keeps none")
    rng = np.random.default_rng([cfg.seed, c, OVERSAMPLE_STREAM])
    extra = rng.choice(kept, k % len(kept), replace=False)
    return np.sort(np.concatenate([np.tile(kept, k // len(kept)), extra]))


def class_weights(plans: list[ClassPlan], counts: np.ndarray) -> np.ndarray | None:
    """Loss weights a class (augment_source reweight; None when no class is reweighted): w_c = (n_c + K_c) / n_c,
    n_c the class's training images, so its total weight is n_c + K_c, the class prior augmentation would
    give; then all scaled so the mean weight over the training images is 1 (the learning rate means the same)."""
    if not any(p.reweighted for p in plans):
        return None
    counts = np.asarray(counts, np.float64)
    extra = np.array([p.reweighted for p in plans], np.float64)
    weights = np.where(counts > 0, (counts + extra) / np.maximum(counts, 1), 1.0)
    return weights * counts.sum() / (weights * counts).sum()


def _checked(pool: PoolSlice, n: int, class_index: int | None) -> PoolSlice:
    """The pool slice, after checking it holds the n images asked (all of the class when one is named)."""
    if len(pool.images) != n or (class_index is not None and np.any(pool.labels != class_index)):
        what = "the unconditional stream" if class_index is None else f"class {class_index}"
        raise RuntimeError(f"pool {pool.pool_id} returned {len(pool.images)} images for {what}, {n} asked")
    return pool


def select_test(dataset: Dataset, per_class: int) -> np.ndarray:
    """The same test images for every trial: the first per_class of each class (all when 0)."""
    if not per_class:
        return np.arange(len(dataset.test_y))
    keep = [np.flatnonzero(dataset.test_y == c)[:per_class] for c in range(dataset.num_classes)]
    return np.sort(np.concatenate(keep))


def synthetic_requests(cfg: TrialConfig, dataset: Dataset) -> dict[int, int]:
    """class_index (UNCONDITIONAL: the stream) -> how many pool images the trial will take
    (for warming pools up front)."""
    requests = {c: p.synthetic for c, p in enumerate(plan(cfg, dataset)) if p.synthetic}
    if cfg.stream_count:
        requests[UNCONDITIONAL] = cfg.stream_count
    return requests


def _digest(index: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(index, np.int64).tobytes()).hexdigest()[:16]
