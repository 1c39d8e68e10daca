"""The DDPM server: a Ray actor that owns one generator and serves pools to many trials.

Trials ask for "the first n images of class c in the pool of seed s" (or, from an
unconditional generator, "the first n samples of the stream of seed s", whatever their
labels: class UNCONDITIONAL); the server reads
them from the pool store, generating (and writing) only the samples that are not on disk
yet. It counts what it generated and what it served, so a sweep can show that a pool is
generated once: a second sweep over the same pools generates nothing.

The sweep creates one server a generator (and GPU) on the driver, before Tuner.fit(), as
an actor named for the sweep and the generator; trials look it up by name (server_name) and
never create one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from synthaug.config import ConfigError, GeneratorSpec
from synthaug.core.devices import default_device, made_on, numerics
from synthaug.core.gates import hold_warmup
from synthaug.diffusion.sampling import NonFiniteSamples, image_seed
from synthaug.generation.generators import PreparedGenerator, generator_kind
from synthaug.models.labeller import load_labeller
from synthaug.pools.store import (CALIBRATION_SEED, KEEP_ALL, UNCONDITIONAL, PoolKey, PoolSlice, PoolStore,
                                  SampleFilter, class_slice, confidence_filter, prefix, top_fraction_filter)

NAMESPACE = "synthaug"
MAX_STREAM_FACTOR = 20      # an unconditional pool gives up on a class after 20x its fair share
SHARD_QUANTUM = 16          # a shard holds what was missing, rounded up to this (at most shard_size)


class ShortPoolError(RuntimeError):
    """The labeller gives a class too few of an unconditional generator's samples to fill a request."""


class GeneratorOutputError(RuntimeError):
    """The generator produced NaN or infinite values; nothing of that shard is written or served."""


def server_name(sweep: str, generator: str, replica: int = 0) -> str:
    """A server's actor name: a sweep's own (two sweeps on one cluster never share or kill each other's)."""
    return f"ddpm-server/{sweep}/{generator}/{replica}"


class DDPMServer:
    """One generator, its pseudo-labeller, and the pools it has made."""

    def __init__(self, prepared: PreparedGenerator, spec: GeneratorSpec, store_root: str,
                 classes: Sequence[str], device: str | None = None, progress: bool = True,
                 autocast: bool | None = None, one_thread: bool = False):
        """autocast: bf16 for sampling and labelling (None: on CUDA only, synthaug.core.devices); it and the
        device decide the pools' numerics, part of their identity. one_thread: on the CPU, its process takes
        one torch thread (a server actor's process: trials own the cores); else the process is left as it is
        (a server made in-process, as E5's, must not take the caller's other threads away)."""
        self.prepared = prepared
        self.spec = spec
        self.store = PoolStore(store_root)
        self.classes = tuple(classes)           # the data set's, by index (a pretrained generator's label map)
        self.num_classes = len(self.classes)
        self.device = device or default_device()
        self.progress = progress
        self.autocast = autocast
        self.numerics = numerics(self.device, autocast)     # in every pool id this server makes or reads
        self.made_on = made_on(self.device)                 # recorded beside each shard it writes
        if self.device == "cpu" and one_thread:
            torch.set_num_threads(1)            # trials own the cores; the server only tops pools up
        self.generator = generator_kind(spec).load(prepared.directory, spec, self.device)
        self.schedule = self.generator.schedule
        self.sampler = spec.sampler.resolved(self.schedule["num_train_timesteps"])
        self.labeller = None if prepared.conditional else load_labeller(prepared.labeller_path, self.device)
        self._pools: dict[str, PoolSlice] = {}
        self._filter: SampleFilter | None = None
        self.generated = 0
        self.served = 0

    def key(self, class_index: int, seed: int) -> PoolKey:
        if self.prepared.conditional:
            return PoolKey(self.prepared.weights_digest, self.sampler, class_index, "", seed, self.numerics)
        return PoolKey(self.prepared.weights_digest, self.sampler, UNCONDITIONAL,
                       self.prepared.labeller_digest, seed, self.numerics)

    def ensure(self, class_index: int, n: int, seed: int) -> int:
        """Make sure the first n images of the class's pool exist; returns how many were generated."""
        hold_warmup()                   # a test's pause point (synthaug.core.gates); nothing in normal use
        before = self.generated
        self._class_prefix(class_index, n, seed)
        return self.generated - before

    def take(self, class_index: int, n: int, seed: int) -> PoolSlice:
        """The first n images of the class's pool for this seed (class UNCONDITIONAL: of the stream)."""
        result = self._class_prefix(class_index, n, seed)
        self.served += n
        return result

    def pool(self, class_index: int, seed: int) -> PoolSlice:
        """All of the pool behind class_index (UNCONDITIONAL: the stream) that is made so far."""
        return self._pool(self.key(class_index, seed))

    def counters(self) -> dict[str, float]:
        """Images generated and served; for an unconditional generator with a filter, the share of its
        samples (in every trial pool this server holds) the filter accepts."""
        counts: dict[str, float] = {"generated": self.generated, "served": self.served}
        pools = [p for pid, p in self._pools.items() if pid != self._calibration_id()]
        if not self.prepared.conditional and (self.spec.min_confidence or self.spec.top_fraction) and pools:
            kept = np.concatenate([self.sample_filter.keep(p) for p in pools])
            counts["acceptance"] = float(kept.mean()) if len(kept) else 0.0
        return counts

    @property
    def sample_filter(self) -> SampleFilter:
        """Which samples trials may take: every one of a conditional generator's; of an unconditional
        one's, those above min_confidence, or the top_fraction of each class (calibrated once)."""
        if self._filter is None:
            if self.prepared.conditional:
                self._filter = KEEP_ALL
            elif self.spec.top_fraction:
                self._filter = top_fraction_filter(self.spec.top_fraction, self._calibration(), self.num_classes)
            else:
                self._filter = confidence_filter(self.spec.min_confidence, self.num_classes)
        return self._filter

    def _calibration_id(self) -> str:
        return self.key(UNCONDITIONAL, CALIBRATION_SEED).pool_id

    def _calibration(self) -> PoolSlice:
        """The first calibration_samples samples of the calibration stream, under their labels."""
        key = self.key(UNCONDITIONAL, CALIBRATION_SEED)
        pool = self._pool(key)
        while len(pool.labels) < self.spec.calibration_samples:
            pool = self._extend(key, pool, self.spec.calibration_samples - len(pool.labels))
        return prefix(pool, self.spec.calibration_samples)

    def _class_prefix(self, class_index: int, n: int, seed: int) -> PoolSlice:
        if class_index == UNCONDITIONAL:
            return self._stream_prefix(n, seed)
        if not 0 <= class_index < self.num_classes:
            raise ConfigError(f"class_index: 0..{self.num_classes - 1}, got {class_index}")
        key = self.key(class_index, seed)
        pool = self._pool(key)
        limit = max(n, 1) * self.num_classes * MAX_STREAM_FACTOR
        kept_by = self.sample_filter
        while True:
            found = class_slice(pool, class_index, n, kept_by)
            if found is not None:
                return found
            have = int(((pool.labels == class_index) & kept_by.keep(pool)).sum())
            if len(pool.labels) >= limit:
                kept = f" (kept by its filter {kept_by.name})" if kept_by.name else ""
                raise ShortPoolError(f"pool {key.pool_id}: the labeller gave class {self.classes[class_index]}{kept} to "
                                   f"{have} of {len(pool.labels)} samples of "
                                   f"{self.spec.name}, {n} needed; a better-trained generator (a larger preset) "
                                   f"or a class-conditional one can make them")
            # conditioned on the class, every sample counts; through the labeller, about 1 in num_classes
            missing = n - have
            pool = self._extend(key, pool, missing if self.prepared.conditional else missing * self.num_classes)

    def _stream_prefix(self, n: int, seed: int) -> PoolSlice:
        """The first n samples of the unconditional stream, under their pseudo-labels."""
        if self.prepared.conditional:
            raise ConfigError(f"augment_mode: stream needs an unconditional generator; "
                              f"{self.spec.name} is class-conditional")
        key = self.key(UNCONDITIONAL, seed)
        pool = self._pool(key)
        kept_by = self.sample_filter
        limit = max(n, 1) * MAX_STREAM_FACTOR
        while int(kept_by.keep(pool).sum()) < n:
            if len(pool.labels) >= limit:
                raise ShortPoolError(f"pool {key.pool_id}: its filter {kept_by.name} keeps {int(kept_by.keep(pool).sum())} "
                                     f"of {len(pool.labels)} samples of {self.spec.name}, {n} needed; loosen "
                                     f"generator.min_confidence or generator.top_fraction")
            pool = self._extend(key, pool, n - int(kept_by.keep(pool).sum()))
        return prefix(pool, n, kept_by)

    def _pool(self, key: PoolKey) -> PoolSlice:
        if key.pool_id not in self._pools:
            self._pools[key.pool_id] = self.store.read(key.pool_id)
        return self._pools[key.pool_id]

    def _extend(self, key: PoolKey, pool: PoolSlice, missing: int) -> PoolSlice:
        """Generate the pool's next shard (about `missing` samples, at most shard_size), write it,
        and return the longer pool. Sample k's seed is the pool's and k's, so where shards
        begin and end does not change any image. One writer a pool at a time (a file lock in the
        pool's folder), across replicas and sweeps sharing the cache: a shard is generated once."""
        start = len(pool.labels)
        with self.store.lock(key.pool_id):
            if self.store.length(key.pool_id) > start:      # another replica or sweep wrote it meanwhile
                pool = self.store.read(key.pool_id)
            else:
                pool = self._generate(key, pool, start, missing)
        self._pools[key.pool_id] = pool
        return pool

    def _generate(self, key: PoolKey, pool: PoolSlice, start: int, missing: int) -> PoolSlice:
        size = -(-max(missing, 1) // SHARD_QUANTUM) * SHARD_QUANTUM
        stop = start + min(size, self.spec.shard_size)
        seeds = [image_seed(key.pool_id, k) for k in range(start, stop)]
        labels = None if key.class_index == UNCONDITIONAL else [key.class_index] * len(seeds)
        try:
            images = self.generator.sample(self.sampler, seeds, None if labels is None else key.class_index,
                                           self.classes, key.pool_id, start, self.spec.sample_batch_size,
                                           self.progress, self.autocast)
        except NonFiniteSamples as err:
            raise GeneratorOutputError(
                f"pool {key.pool_id} (generator {self.spec.name}, images {start}..{stop - 1}): {err}; nothing "
                f"was written; check the generator's weights (its training loss, a checkpoint)") from None
        if labels is None:
            labels, confidence = self._label(images)
        else:
            labels, confidence = np.asarray(labels, np.int64), np.ones(len(seeds), np.float32)
        self.store.append(key, start, images, labels, confidence, self.made_on, self.prepared.labeller_digest)
        self.generated += len(seeds)
        return PoolSlice(key.pool_id, np.arange(stop, dtype=np.int64), np.concatenate([pool.images, images]),
                         np.concatenate([pool.labels, labels]), np.concatenate([pool.confidence, confidence]))

    def _label(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from synthaug.models.classifier import predict
        probs = predict(self.labeller, images, self.device, autocast=self.autocast)
        return probs.argmax(1).astype(np.int64), probs.max(1).astype(np.float32)


def make_server_actor(prepared: PreparedGenerator, spec: GeneratorSpec, store_root: str,
                      classes: Sequence[str], replica: int = 0, num_gpus: float = 0.0, num_cpus: float = 0.0,
                      sweep: str = ""):
    """Create (or find, when it is already alive) the server actor named for `sweep` ("": none, a test or a
    benchmark). Call on the driver: the driver owns it, so it ends with the driver's sweep and no other.
    The actor has a process of its own for its whole life, in which default_device() picks the device of
    its share (num_gpus 0: the CPU, synthaug.core.devices)."""
    import ray

    actor_cls = ray.remote(DDPMServer)
    return actor_cls.options(name=server_name(sweep, spec.name, replica), namespace=NAMESPACE, get_if_exists=True,
                             num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=-1, max_task_retries=-1,
                             lifetime=None).remote(prepared, spec, store_root, tuple(classes),
                                                   None,      # the device the actor sees
                                                   False,     # no bar a shard: the warm-up's lines count pools
                                                   one_thread=True)


def get_server(sweep: str, generator: str, replica: int = 0):
    """The named server a trial of `sweep` uses (created by the sweep on the driver)."""
    import ray

    return ray.get_actor(server_name(sweep, generator, replica), namespace=NAMESPACE)

