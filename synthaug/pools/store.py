"""The content-addressed store of synthetic images.

A pool is an endless, seeded stream of samples from one generator: its identity
(PoolKey.pool_id) is a digest of the generator's weights, the sampler and its settings, the
class it is conditioned on (or "unconditional" with the pseudo-labeller's digest), the
pool seed, and the numerics the samples are computed in (the device type and precision,
devices.numerics: "cpu/float32", "cuda/bf16"). Sample k is drawn from its own seed
(diffusion.sampling.image_seed(pool_id, k)), so which image it is does not depend on the batch it
was generated in, and a trial that needs n images of a class takes the first n of them: pools
are nested by construction.

Devices and precisions. bf16 on a GPU and float32 on the CPU carry the same seeds through other
roundings: images that are statistically equivalent, not the same bytes (devices.py, "What is
bitwise where"). The numerics are part of the identity, so a pool is never made partly under
one and partly under another: a sweep on the CPU and one on GPUs make (and reuse) pools of
their own, and a pool made on GPUs is reused by every later GPU sweep, whatever its GPU model.
The GPU model and software (devices.made_on: "NVIDIA H200, torch ..., CUDA ..., cuDNN ...")
change bytes, not the recipe, and a cluster may mix GPU models: they are recorded, not part
of the identity. pool.json records what made each shard (made_on, shard -> machine), and
extending a pool on a machine none of its shards was made on prints one warning line naming
both, so a pool that mixes GPU models says so, and which images came from where. Reading a
pool made elsewhere needs nothing: its bytes are what they are.

On disk a pool is a folder of shards `<start:09d>-<stop:09d>.npz` (images, labels, confidences
and their checksum), each written to a temporary file and renamed into place, so a crash never
leaves half a shard, beside pool.json (the key, its pool_id, made_on and the digest of the labeller
prepared with the generator); one writer a pool at a time (PoolStore.lock). A shard damaged later
is caught by its checksum on read, moved aside and generated again: the same bytes on the CPU
machine that made it, statistically equivalent ones on a GPU.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from synthaug.config import digest
from synthaug.core.files import DamagedFile, atomic_write, load_checked_arrays, save_checked_arrays
from synthaug.diffusion.sampling import SamplerConfig

UNCONDITIONAL = -1
CALIBRATION_SEED = -1       # the pool seed of the samples a top-fraction filter is calibrated on (trials use >= 0)


@dataclass(frozen=True)
class PoolKey:
    """What makes a pool's images what they are."""

    weights_digest: str
    sampler: SamplerConfig
    class_index: int            # UNCONDITIONAL for an unconditional generator
    labeller_digest: str        # "" for a conditional generator
    seed: int
    numerics: str               # the device type and precision of the samples: devices.numerics()

    @property
    def pool_id(self) -> str:
        return digest({"weights": self.weights_digest, "sampler": asdict(self.sampler),
                       "class": self.class_index if self.class_index >= 0 else "unconditional",
                       "labeller": self.labeller_digest, "seed": self.seed, "numerics": self.numerics})[:24]


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

    def shards(self, pool_id: str) -> list[Path]:
        """The shard files behind length(pool_id), in order (what an export of the pool carries)."""
        return [self._shard_path(pool_id, start, stop) for start, stop in self._chain(pool_id)]

    def read(self, pool_id: str, stop: int | None = None) -> PoolSlice:
        """Samples [0, stop) (all that are on disk when stop is None). A shard that fails its checksum
        (truncated, altered) is moved aside and the pool ends before it: its samples are generated again
        from their own seeds (the same bytes on the CPU machine that made them; on a GPU, statistically
        equivalent ones)."""
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

    def manifest(self, pool_id: str) -> dict:
        """The pool's pool.json: its key, pool_id and made_on (shard name -> machine); {} when there is
        none or it is unreadable (append writes it again)."""
        try:
            manifest = json.loads((self.folder(pool_id) / "pool.json").read_text())
        except (OSError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) else {}

    def append(self, key: PoolKey, start: int, images: np.ndarray, labels: np.ndarray,
               confidence: np.ndarray, made_on: str, generator_labeller: str = "") -> None:
        """Write samples [start, start + len(images)) as one shard, atomically, and record in pool.json
        that `made_on` (devices.made_on) made it; one warning line when none of the pool's shards was
        made there before. `generator_labeller`: the digest of the labeller prepared with the generator (a
        conditional one's judge, not part of the key), recorded so that an export carries it. The caller
        holds the pool's lock (one writer a pool)."""
        folder = self.folder(key.pool_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = self._shard_path(key.pool_id, start, start + len(images))
        manifest = {"pool_id": key.pool_id, **asdict(key)}
        if generator_labeller:
            manifest["generator_labeller"] = generator_labeller
        made = dict(self.manifest(key.pool_id).get("made_on") or {})
        if made and made_on not in made.values():
            before = "; ".join(sorted(set(made.values())))
            print(f"warning: pool {key.pool_id} was made on [{before}] and is extended on [{made_on}] "
                  f"(images {start}..{start + len(images) - 1}): statistically equivalent images, not the bytes "
                  f"the first would make; {folder / 'pool.json'} records each shard's", flush=True)
        save_checked_arrays(path, {"images": images.astype(np.uint8), "labels": labels.astype(np.int64),
                                   "confidence": confidence.astype(np.float32)})
        made[path.stem] = made_on
        atomic_write(folder / "pool.json", json.dumps({**manifest, "made_on": made}, indent=1).encode())

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
        reach. Shards may overlap (two writers cut a stream differently): image k is drawn from the same
        seed in either (the same bytes when one machine made both), so any chain of them reads the same
        samples."""
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
