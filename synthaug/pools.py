"""The content-addressed store of synthetic images.

A pool is an endless, deterministic stream of samples from one generator: its identity
(PoolKey.pool_id) is a digest of the generator's weights, the sampler and its settings, the
class it is conditioned on (or "unconditional" with the pseudo-labeller's digest) and the
pool seed. Sample k is drawn from its own seed (diffusion.sampling.image_seed(pool_id, k)),
so it does not depend on the batch it was generated in, and a trial that needs n images
of a class takes the first n of them: pools are nested by construction.

On disk a pool is a folder of shards `<start:09d>-<stop:09d>.npz` (images, labels, confidences),
each written to a temporary file and renamed into place, so a crash never leaves half a
shard and two writers of the same shard write the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from synthaug.config import digest
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.files import atomic_file, atomic_write

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

    def length(self, pool_id: str) -> int:
        """How many leading samples of the pool are on disk (contiguous shards only)."""
        chain = self._chain(pool_id)
        return chain[-1][1] if chain else 0

    def read(self, pool_id: str, stop: int | None = None) -> PoolSlice:
        """Samples [0, stop) (all that are on disk when stop is None)."""
        parts = []
        for start, shard_stop in self._chain(pool_id):
            if stop is not None and start >= stop:
                break
            with np.load(self._shard_path(pool_id, start, shard_stop)) as shard:
                parts.append({k: shard[k] for k in ("images", "labels", "confidence")})
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
        with atomic_file(path) as f:
            np.savez(f, images=images.astype(np.uint8), labels=labels.astype(np.int64),
                     confidence=confidence.astype(np.float32))

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


def filtered_id(pool_id: str, min_confidence: float) -> str:
    """What a pool is once filtered by confidence: the filter is part of its identity."""
    return f"{pool_id}@confidence>={min_confidence:g}" if min_confidence > 0 else pool_id


def accepted(pool: PoolSlice, min_confidence: float) -> np.ndarray:
    """Which samples a confidence filter keeps."""
    return pool.confidence >= min_confidence


def class_slice(pool: PoolSlice, class_index: int, n: int, min_confidence: float = 0.0) -> PoolSlice | None:
    """The first n samples of the pool labelled class_index (with at least min_confidence), or None
    when there are fewer."""
    where = np.flatnonzero((pool.labels == class_index) & accepted(pool, min_confidence))
    if len(where) < n:
        return None
    return _pick(pool, where[:n], min_confidence)


def prefix(pool: PoolSlice, n: int, min_confidence: float = 0.0) -> PoolSlice:
    """The first n samples of the pool (with at least min_confidence), whatever their labels."""
    return _pick(pool, np.flatnonzero(accepted(pool, min_confidence))[:n], min_confidence)


def _pick(pool: PoolSlice, where: np.ndarray, min_confidence: float) -> PoolSlice:
    return PoolSlice(filtered_id(pool.pool_id, min_confidence), pool.indices[where], pool.images[where],
                     pool.labels[where], pool.confidence[where])


def _empty(pool_id: str) -> PoolSlice:
    return PoolSlice(pool_id, np.zeros(0, np.int64), np.zeros((0, 32, 32, 3), np.uint8),
                     np.zeros(0, np.int64), np.zeros(0, np.float32))
