"""The content-addressed store of synthetic images.

A pool is an endless, deterministic stream of samples from one generator: its identity
(PoolKey.pool_id) is a digest of the generator's weights, the sampler and its settings, the
class it is conditioned on (or "unconditional" with the pseudo-labeller's digest) and the
pool seed. Sample k is drawn from its own seed (diffusion.sampling.image_seed(pool_id, k)),
so it does not depend on the batch it was generated in, and a trial that needs n images
of a class takes the first n of them: pools are nested by construction.

On disk a pool is a folder of shards `<start:09d>-<stop:09d>.npz` (images, labels, confidences
and their checksum), each written to a temporary file and renamed into place, so a crash never
leaves half a shard and two writers of the same shard write the same bytes; a shard damaged
later is caught by its checksum on read, moved aside and generated again.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from synthaug.config import digest
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.files import DamagedFile, atomic_write, load_checked_arrays, save_checked_arrays

UNCONDITIONAL = -1


@dataclass(frozen=True)
class PoolKey:
    """What makes a pool's images what they are."""

    weights_digest: str
    sampler: SamplerConfig
    class_index: int            # UNCONDITIONAL for an unconditional generator
    labeller_digest: str        # "" for a conditional generator
    seed: int

    @property
    def pool_id(self) -> str:
        return digest({"weights": self.weights_digest, "sampler": asdict(self.sampler),
                       "class": self.class_index if self.class_index >= 0 else "unconditional",
                       "labeller": self.labeller_digest, "seed": self.seed})[:24]


@dataclass(frozen=True)
class PoolSlice:
    """Samples [0, n) of a pool, or those of them labelled with one class."""

    pool_id: str
    indices: np.ndarray         # int64, positions in the pool's stream
    images: np.ndarray          # uint8 (n, 32, 32, 3)
    labels: np.ndarray          # int64 (n,)
    confidence: np.ndarray      # float32 (n,): the labeller's max probability (1 if conditional)


class PoolStore:
    """Reads and appends shards of pools under one root folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, pool_id: str) -> Path:
        return self.root / pool_id

    def lock(self, pool_id: str):
        """An inter-process lock on the pool (its folder's .lock): one writer at a time."""
        from filelock import FileLock

        folder = self.folder(pool_id)
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / ".lock"))

    def length(self, pool_id: str) -> int:
        """How many leading samples of the pool are on disk (contiguous shards only)."""
        chain = self._chain(pool_id)
        return chain[-1][1] if chain else 0

    def read(self, pool_id: str, stop: int | None = None) -> PoolSlice:
        """Samples [0, stop) (all that are on disk when stop is None). A shard that fails its checksum
        (truncated, altered) is moved aside and the pool ends before it: its samples are generated again,
        the same bytes, since sample k comes from its own seed."""
        parts = []
        for start, shard_stop in self._chain(pool_id):
            if stop is not None and start >= stop:
                break
            shard = self._read_shard(self._shard_path(pool_id, start, shard_stop))
            if shard is None:
                break
            parts.append(shard)
        if not parts:
            return _empty(pool_id)
        images = np.concatenate([p["images"] for p in parts])
        labels = np.concatenate([p["labels"] for p in parts]).astype(np.int64)
        confidence = np.concatenate([p["confidence"] for p in parts]).astype(np.float32)
        n = len(images) if stop is None else min(stop, len(images))
        return PoolSlice(pool_id, np.arange(n, dtype=np.int64), images[:n], labels[:n], confidence[:n])

    def append(self, key: PoolKey, start: int, images: np.ndarray, labels: np.ndarray,
               confidence: np.ndarray) -> None:
        """Write samples [start, start + len(images)) as one shard, atomically."""
        folder = self.folder(key.pool_id)
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "pool.json"
        if not meta.exists():
            atomic_write(meta, json.dumps({"pool_id": key.pool_id, **asdict(key)}, indent=1).encode())
        path = self._shard_path(key.pool_id, start, start + len(images))
        save_checked_arrays(path, {"images": images.astype(np.uint8), "labels": labels.astype(np.int64),
                                   "confidence": confidence.astype(np.float32)})

    @staticmethod
    def _read_shard(path: Path) -> dict | None:
        """A shard's arrays, checked against the checksum written with them; None (and the file moved
        aside as <name>.damaged) when it is unreadable or does not match."""
        try:
            return load_checked_arrays(path, ("images", "labels", "confidence"))[0]
        except DamagedFile as err:
            aside = path.with_name(f"{path.name}.damaged")
            os.replace(path, aside)
            print(f"warning: pool shard {path} is damaged ({str(err).splitlines()[0][:120]}); moved to {aside.name}; "
                  f"its samples will be generated again", flush=True)
            return None

    def _shard_path(self, pool_id: str, start: int, stop: int) -> Path:
        return self.folder(pool_id) / f"{start:09d}-{stop:09d}.npz"

    def _chain(self, pool_id: str) -> list[tuple[int, int]]:
        """Shards that cover [0, length) end to end, for the largest length the shards on disk
        reach. Shards may overlap (two writers cut a stream differently): image k is the same in
        either, so any chain of them reads the same samples."""
        folder = self.folder(pool_id)
        if not folder.is_dir():
            return []
        ranges = sorted({tuple(int(v) for v in path.stem.split("-")) for path in folder.glob("*.npz")})
        reached = {0: None}                     # end -> the shard that reached it first
        for start, stop in ranges:
            if start in reached and stop not in reached:
                reached[stop] = (start, stop)
        chain, end = [], max(reached)
        while end:
            chain.append(reached[end])
            end = reached[end][0]
        return chain[::-1]


@dataclass(frozen=True)
class SampleFilter:
    """Which samples of an unconditional pool a trial may take: those the labeller names class c with
    confidence >= thresholds[c]. Its name is part of what the filtered pool is (filtered_id)."""

    name: str = ""                          # "" keeps every sample
    thresholds: tuple[float, ...] = ()      # one a class; () keeps every sample

    def keep(self, pool: PoolSlice) -> np.ndarray:
        if not self.thresholds:
            return np.ones(len(pool.labels), bool)
        return pool.confidence >= np.asarray(self.thresholds, np.float32)[pool.labels]


KEEP_ALL = SampleFilter()


def confidence_filter(min_confidence: float, num_classes: int) -> SampleFilter:
    """Samples the labeller is at least min_confidence sure of, whatever their class (0: every sample)."""
    if not min_confidence:
        return KEEP_ALL
    return SampleFilter(f"confidence>={min_confidence:g}", (float(min_confidence),) * num_classes)


def top_fraction_filter(fraction: float, calibration: PoolSlice, num_classes: int) -> SampleFilter:
    """The labeller's most confident `fraction` of each class: a threshold a class, the confidence of its
    ceil(fraction x n_c)-th most confident calibration sample (a class with no calibration sample keeps
    all of its samples). Calibrated once on a fixed pool, so every prefix stays a prefix: pools nest."""
    thresholds = []
    for c in range(num_classes):
        mine = np.sort(calibration.confidence[calibration.labels == c])[::-1]
        thresholds.append(float(mine[max(1, math.ceil(fraction * len(mine))) - 1]) if len(mine) else 0.0)
    return SampleFilter(f"top{fraction:g}-per-class~{calibration.pool_id[:12]}-{len(calibration.labels)}",
                        tuple(thresholds))


def filtered_id(pool_id: str, sample_filter: SampleFilter) -> str:
    """What a pool is once filtered: the filter is part of its identity."""
    return f"{pool_id}@{sample_filter.name}" if sample_filter.name else pool_id


def class_slice(pool: PoolSlice, class_index: int, n: int, sample_filter: SampleFilter = KEEP_ALL) -> PoolSlice | None:
    """The first n samples of the pool labelled class_index (that the filter keeps), or None when there are fewer."""
    where = np.flatnonzero((pool.labels == class_index) & sample_filter.keep(pool))
    if len(where) < n:
        return None
    return _pick(pool, where[:n], sample_filter)


def prefix(pool: PoolSlice, n: int, sample_filter: SampleFilter = KEEP_ALL) -> PoolSlice:
    """The first n samples of the pool (that the filter keeps), whatever their labels."""
    return _pick(pool, np.flatnonzero(sample_filter.keep(pool))[:n], sample_filter)


def _pick(pool: PoolSlice, where: np.ndarray, sample_filter: SampleFilter) -> PoolSlice:
    return PoolSlice(filtered_id(pool.pool_id, sample_filter), pool.indices[where], pool.images[where],
                     pool.labels[where], pool.confidence[where])


def _empty(pool_id: str) -> PoolSlice:
    return PoolSlice(pool_id, np.zeros(0, np.int64), np.zeros((0, 32, 32, 3), np.uint8),
                     np.zeros(0, np.int64), np.zeros(0, np.float32))
