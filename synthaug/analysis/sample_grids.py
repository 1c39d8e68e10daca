"""Sample grids: a picture of what each generator made, read from the pool store.

    grids = sample_grids(cache_dir, num_classes, sweep_generators(trials))
    plot_sample_grids(grids, classes).savefig("samples.png")

One grid a generator (rows = classes, PER_CLASS_IMAGES each), from its smallest pool seed, found
by the pool.json in each pool folder; the generator's name comes from
cache/generators/<name>-<key>/weights.sha256 or the sweep's synthaug.generator.<name>.weights
tags. Unconditional pools are shown by the labels stored in their shards. Used by the figures
of a sweep (synthaug.analysis.figures) and by the fidelity report.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from synthaug.analysis.results import Trials

GENERATOR_TAG = re.compile(r"^synthaug\.generator\.(.+)\.weights$")
PER_CLASS_IMAGES = 8        # images a class in a sample grid


@dataclass(frozen=True, eq=False)
class SampleGrid:
    """Images of one generator to show: up to PER_CLASS_IMAGES a class."""

    name: str
    conditional: bool
    images: np.ndarray      # uint8 (n, 32, 32, 3)
    labels: np.ndarray      # int64 (n,): the class conditioned on, or the labeller's label
    seed: int               # the pool seed they come from
    caption: str = ""       # the panel's second title line; default: what kind of generator, which pool seed

    @property
    def subtitle(self) -> str:
        kind = "conditional" if self.conditional else "unconditional, pseudo-labelled"
        return self.caption or f"{kind}, pool seed {self.seed}"


def generator_names(cache_dir: Path) -> dict[str, str]:
    """weights digest -> generator name, from cache/generators/<name>-<key>/weights.sha256."""
    names = {}
    for path in sorted((cache_dir / "generators").glob("*/weights.sha256")):
        name = path.parent.name.rsplit("-", 1)[0]
        names[path.read_text().strip()] = name
    return names


def sweep_generators(trials: Trials) -> dict[str, str]:
    """weights digest -> generator name, from the sweep run's synthaug.generator.<name>.weights tags."""
    if not trials.sweep_run_id:
        return {}
    try:
        tags = MlflowClient(trials.tracking_uri).get_run(trials.sweep_run_id).data.tags
    except MlflowException:
        return {}
    return {digest: m.group(1) for key, digest in tags.items() if (m := GENERATOR_TAG.match(key))}


def pool_keys(pools_dir: Path) -> pd.DataFrame:
    """A row a pool on disk: pool_id, weights_digest, sampler (as text), class_index, labeller_digest, seed,
    numerics ("" for a pool written before pool ids named them)."""
    rows = []
    for path in sorted(pools_dir.glob("*/pool.json")):
        try:
            key = json.loads(path.read_text())
            rows.append({"pool_id": key["pool_id"], "weights_digest": key["weights_digest"],
                         "sampler": json.dumps(key["sampler"], sort_keys=True),
                         "class_index": int(key["class_index"]), "labeller_digest": key["labeller_digest"],
                         "seed": int(key["seed"]), "numerics": str(key.get("numerics", ""))})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return pd.DataFrame(rows, columns=["pool_id", "weights_digest", "sampler", "class_index", "labeller_digest",
                                       "seed", "numerics"])


def sample_grids(cache_dir: str | Path, num_classes: int, preferred: dict[str, str] | None = None,
                 per_class: int = PER_CLASS_IMAGES) -> list[SampleGrid]:
    """One grid a generator found in the pool store (the `preferred` digests only, when any of them has
    pools), each from its smallest pool seed; conditional generators before unconditional ones."""
    from synthaug.pools.store import PoolStore  # here, not at the top: it pulls in torch and diffusers (seconds)

    cache_dir = Path(cache_dir)
    keys = pool_keys(cache_dir / "pools")
    if keys.empty:
        return []
    if preferred and keys["weights_digest"].isin(list(preferred)).any():
        keys = keys[keys["weights_digest"].isin(list(preferred))]
    names = {**generator_names(cache_dir), **(preferred or {})}
    store = PoolStore(cache_dir / "pools")
    grids = []
    groups = keys.groupby(["weights_digest", "sampler", "labeller_digest", "numerics"], sort=True)
    for (weights, sampler, _, numbers), group in groups:
        group = group[group["seed"] == group["seed"].min()]
        name = names.get(weights, f"generator {weights[:8]}")
        if groups.ngroups > len({*keys["weights_digest"]}):
            name += f" ({_sampler_text(sampler)}{', ' + numbers if numbers else ''})"
        grid = _grid(store, group, num_classes, per_class, name)
        if grid is not None and len(grid.images):
            grids.append(grid)
    return sorted(grids, key=lambda g: (not g.conditional, g.name))


def _grid(store, group: pd.DataFrame, num_classes: int, per_class: int, name: str) -> SampleGrid | None:
    seed = int(group["seed"].iloc[0])
    unconditional = group[group["class_index"] < 0]          # pools.UNCONDITIONAL
    if len(unconditional):
        pool = store.read(unconditional["pool_id"].iloc[0])
        keep = np.concatenate([np.flatnonzero(pool.labels == c)[:per_class] for c in range(num_classes)])
        keep = np.sort(keep).astype(np.int64)
        return SampleGrid(name, False, pool.images[keep], pool.labels[keep], seed)
    images, labels = [], []
    for row in group.sort_values("class_index").itertuples(index=False):
        if 0 <= row.class_index < num_classes:
            pool = store.read(row.pool_id, per_class)
            images.append(pool.images)
            labels.append(np.full(len(pool.images), row.class_index, np.int64))
    if not images:
        return None
    return SampleGrid(name, True, np.concatenate(images), np.concatenate(labels), seed)


def _sampler_text(sampler: str) -> str:
    s = json.loads(sampler)
    return f"{s.get('name')} {s.get('steps')} steps"


def plot_sample_grids(grids: Sequence[SampleGrid], classes: Sequence[str], per_class: int = PER_CLASS_IMAGES) -> Figure:
    """One panel a generator, side by side: a row a class, up to per_class images each."""
    fig = Figure(figsize=(0.4 + (per_class * 0.45 + 0.9) * len(grids), 0.8 + 0.45 * len(classes)))
    axes = np.atleast_1d(fig.subplots(1, len(grids), squeeze=False)).ravel()
    for ax, grid in zip(axes, grids):
        ax.imshow(class_rows(grid.images, grid.labels, len(classes), per_class), interpolation="nearest")
        ax.set_yticks([16 + 32 * i for i in range(len(classes))], list(classes), fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"{grid.name}\n({grid.subtitle})", fontsize=8)
    fig.tight_layout()
    return fig


def class_rows(images: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """A (32 * num_classes, 32 * per_class, 3) uint8 picture: row c holds the first images labelled c,
    white where there are fewer (a class the labeller never chose stays a white row)."""
    canvas = np.full((32 * num_classes, 32 * per_class, 3), 255, np.uint8)
    for c in range(num_classes):
        for j, image in enumerate(images[labels == c][:per_class]):
            canvas[32 * c:32 * (c + 1), 32 * j:32 * (j + 1)] = image
    return canvas
