"""The pool store and the DDPM server: generated once, nested, identical for every reader, never made
under two numerics (device type and precision)."""

import dataclasses
import functools
import time

import numpy as np
import pytest
import ray
import torch

from synthaug.config import ConfigError, preset
from synthaug.core.devices import made_on
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.generation.prepare import prepare_generator
from synthaug.generation.server import CALIBRATION_SEED, SHARD_QUANTUM, DDPMServer, get_server, make_server_actor
from synthaug.pools.store import UNCONDITIONAL, PoolKey, PoolStore, class_slice, prefix

TEN = tuple(f"c{i}" for i in range(10))      # the shapes' ten classes, as the server sees them: by index


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def tiny_generator(name, cache):
    """A tiny generator (and labeller, when unconditional) trained on shapes; cached in `cache`."""
    spec = preset("tiny").generator(name)
    return spec, prepare_generator(spec, "shapes", cache, device="cpu", progress=False)


@pytest.fixture(scope="module")
def conditional(cache):
    return tiny_generator("ddpm-cond", cache)


@pytest.fixture(scope="module")
def unconditional(cache):
    return tiny_generator("ddpm-uncond", cache)


def test_store_appends_atomically_and_reads_contiguous_prefixes(tmp_path):
    store = PoolStore(tmp_path)
    key = PoolKey("w", SamplerConfig(), 2, "", seed=0, numerics="cpu/float32")
    images = np.arange(5 * 32 * 32 * 3, dtype=np.uint32).astype(np.uint8).reshape(5, 32, 32, 3)
    append = functools.partial(store.append, key, made_on="here")
    append(0, images[:3], np.full(3, 2), np.ones(3))
    append(3, images[3:], np.full(2, 2), np.ones(2))
    assert store.length(key.pool_id) == 5
    assert np.array_equal(store.read(key.pool_id).images, images)
    assert np.array_equal(store.read(key.pool_id, stop=4).images, images[:4])
    assert not list(store.folder(key.pool_id).glob("*.tmp"))
    append(10, images[:1], np.full(1, 2), np.ones(1))      # a gap: not part of the prefix
    assert store.length(key.pool_id) == 5
    append(1, images[1:4], np.full(3, 2), np.ones(3))      # overlaps [0, 3) and [3, 5)
    append(4, images[4:5], np.full(1, 2), np.ones(1))
    assert store.length(key.pool_id) == 5 and np.array_equal(store.read(key.pool_id).images, images)
    append(0, images[:2], np.full(2, 2), np.ones(2))       # a shorter shard at 0 changes nothing
    append(5, np.repeat(images[:1], 5, 0), np.full(5, 2), np.ones(5))    # [5, 10) closes the gap
    assert store.length(key.pool_id) == 11
    assert np.array_equal(store.read(key.pool_id, stop=5).images, images)


def test_pool_identity_covers_weights_sampler_class_labeller_seed_and_numerics():
    base = PoolKey("w", SamplerConfig(), 1, "", 0, "cpu/float32")
    variants = [dataclasses.replace(base, **change) for change in (
        {"weights_digest": "v"}, {"sampler": SamplerConfig(steps=7)}, {"class_index": 2}, {"labeller_digest": "l"},
        {"seed": 1}, {"numerics": "cpu/bf16"}, {"numerics": "cuda/bf16"}, {"numerics": "cuda/tf32"})]
    assert len({base.pool_id, *(v.pool_id for v in variants)}) == 9
    assert PoolKey("w", SamplerConfig(), 1, "", 0, "cpu/float32").pool_id == base.pool_id


def test_a_pool_made_in_one_precision_is_never_read_or_extended_in_another(conditional, tmp_path):
    """A float32 server and a bf16 one (autocast forced on the CPU, as a GPU's server samples) over one
    store: each makes and extends a pool of its own, and neither reads the other's images."""
    spec, gen = conditional
    single = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False)
    half = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False, autocast=True)
    assert (single.numerics, half.numerics) == ("cpu/float32", "cpu/bf16")
    assert single.key(3, 0).pool_id != half.key(3, 0).pool_id
    made_single = single.take(3, 5, seed=0)
    assert single.counters()["generated"] == SHARD_QUANTUM
    made_half = half.take(3, 20, seed=0)                                # more than the float32 pool holds
    assert half.counters()["generated"] == 2 * SHARD_QUANTUM            # its own pool, from image 0
    assert not np.array_equal(made_half.images[:5], made_single.images)    # bf16 rounds the chain otherwise
    store = PoolStore(tmp_path)
    assert store.length(single.key(3, 0).pool_id) == SHARD_QUANTUM       # the float32 pool is as it was
    single.take(3, 20, seed=0)
    assert store.length(half.key(3, 0).pool_id) == 2 * SHARD_QUANTUM == store.length(single.key(3, 0).pool_id)
    for server in (single, half):
        manifest = store.manifest(server.key(3, 0).pool_id)
        assert manifest["numerics"] == server.numerics and manifest["pool_id"] == server.key(3, 0).pool_id
        assert set(manifest["made_on"].values()) == {made_on("cpu")}
    again = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False, autocast=True)
    assert np.array_equal(again.take(3, 20, seed=0).images, made_half.images) and again.counters()["generated"] == 0


def test_a_pool_extended_on_another_machine_says_so_in_one_line_and_records_each_shard(tmp_path, capsys):
    """Same numerics, another GPU model (or torch build): one warning line when the pool first meets it,
    and pool.json says which shard came from where."""
    store, key = PoolStore(tmp_path), PoolKey("w", SamplerConfig(), 0, "", 0, "cuda/bf16")
    h100 = "NVIDIA H100 80GB HBM3, torch 2.5.1+cu124, CUDA 12.4, cuDNN 90100"
    h200 = "NVIDIA H200, torch 2.5.1+cu124, CUDA 12.4, cuDNN 90100"
    images = np.zeros((16, 32, 32, 3), np.uint8)
    shard = functools.partial(store.append, key, images=images, labels=np.zeros(16), confidence=np.ones(16))
    shard(0, made_on=h100)
    shard(16, made_on=h100)
    assert capsys.readouterr().out == ""
    shard(32, made_on=h200)
    shard(48, made_on=h200)
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"warning: pool {key.pool_id} was made on [{h100}] and is extended on [{h200}] "
                           f"(images 32..47): statistically equivalent images")
    assert store.manifest(key.pool_id)["made_on"] == {"000000000-000000016": h100, "000000016-000000032": h100,
                                                      "000000032-000000048": h200, "000000048-000000064": h200}
    assert store.length(key.pool_id) == 64


def test_server_generates_a_pool_once_and_serves_nested_prefixes(conditional, tmp_path):
    spec, gen = conditional
    torch.set_num_threads(2)
    first = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False)
    assert torch.get_num_threads() == 2         # made in-process (E5's): the caller keeps its threads
    small = first.take(3, 2, seed=0)
    large = first.take(3, 5, seed=0)
    assert np.array_equal(small.images, large.images[:2]) and np.all(large.labels == 3)
    assert first.counters()["generated"] == SHARD_QUANTUM          # what was asked, rounded up, not a whole shard
    # A second server (a later sweep) over the same store reads, it does not generate.
    second = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False)
    again = second.take(3, 5, seed=0)
    assert second.counters() == {"generated": 0, "served": 5}
    assert np.array_equal(again.images, large.images)
    assert np.array_equal(again.indices, large.indices)
    other_seed = second.take(3, 5, seed=1)
    assert not np.array_equal(other_seed.images, large.images)


def test_unconditional_class_pools_are_views_of_one_labelled_stream(unconditional, tmp_path):
    spec, gen = unconditional
    server = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False)
    key = server.key(0, 0)
    assert key == server.key(5, 0)                       # one stream for every class
    stream = PoolStore(tmp_path).read(key.pool_id)
    assert len(stream.labels) == 0
    server._extend(key, stream, spec.shard_size)         # one whole shard of labelled samples
    stream = PoolStore(tmp_path).read(key.pool_id)
    assert len(stream.labels) == spec.shard_size
    for c in np.unique(stream.labels)[:3]:
        expected = class_slice(stream, int(c), 1)
        got = server.take(int(c), 1, seed=0)
        assert np.array_equal(got.images, expected.images) and got.indices[0] == expected.indices[0]


def test_a_confidence_filter_serves_the_confident_samples_of_the_same_stream_under_its_own_identity(
        unconditional, tmp_path):
    spec, gen = unconditional
    plain = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False)
    key = plain.key(0, 0)
    plain._extend(key, plain.pool(UNCONDITIONAL, 0), spec.shard_size)
    stream = plain.pool(UNCONDITIONAL, 0)
    threshold = float(np.median(stream.confidence))         # about half the samples pass
    strict = DDPMServer(gen, dataclasses.replace(spec, min_confidence=threshold), str(tmp_path), classes=TEN,
                        device="cpu", progress=False)
    assert strict.key(0, 0) == key                          # the same stored stream: nothing regenerated
    confident = stream.confidence >= threshold
    c = int(np.bincount(stream.labels[confident]).argmax())
    got = strict.take(c, 2, seed=0)
    assert got.pool_id == f"{key.pool_id}@confidence>={threshold:g}" != plain.take(c, 2, seed=0).pool_id
    assert (got.confidence >= threshold).all() and (got.labels == c).all()
    assert list(got.indices) == list(np.flatnonzero((stream.labels == c) & confident)[:2])
    first = strict.take(UNCONDITIONAL, 3, seed=0)
    assert list(first.indices) == list(np.flatnonzero(confident)[:3])
    assert strict.counters()["generated"] == 0
    assert strict.counters()["acceptance"] == pytest.approx(confident.mean())
    assert "acceptance" not in plain.counters()


def test_a_generator_that_produces_nan_is_reported_and_never_stored_as_black_images(conditional, tmp_path):
    import torch

    from synthaug.generation.server import GeneratorOutputError

    spec, gen = conditional
    server = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False)
    with torch.no_grad():
        next(server.generator.unet.parameters()).fill_(float("nan"))          # broken weights
    with pytest.raises(GeneratorOutputError) as err:
        server.take(2, 5, seed=0)
    pool_id = server.key(2, 0).pool_id
    assert f"pool {pool_id} (generator {spec.name}, images 0..15): 16 of 16 images have NaN or infinite values" \
        in str(err.value)
    assert PoolStore(tmp_path).length(pool_id) == 0 and server.counters()["generated"] == 0


def test_a_top_fraction_filter_keeps_each_classes_most_confident_share_calibrated_once(unconditional, tmp_path):
    spec, gen = unconditional
    top = dataclasses.replace(spec, top_fraction=0.5, calibration_samples=96)
    server = DDPMServer(gen, top, str(tmp_path), classes=TEN, device="cpu", progress=False)
    calibration = server.pool(UNCONDITIONAL, CALIBRATION_SEED)
    assert len(calibration.labels) == 0                     # nothing made before a filter is needed
    kept_by = server.sample_filter
    calibration = server.pool(UNCONDITIONAL, CALIBRATION_SEED)
    assert len(calibration.labels) >= 96 and kept_by.name.startswith("top0.5-per-class~")
    first = prefix(calibration, 96)
    for c in np.unique(first.labels):                       # each class: its most confident half (rounded up)
        mine = first.confidence[first.labels == c]
        assert (mine >= kept_by.thresholds[c]).sum() == -(-len(mine) // 2)
    c = int(np.bincount(first.labels).argmax())
    got = server.take(c, 3, seed=0)
    assert got.pool_id == f"{server.key(c, 0).pool_id}@{kept_by.name}" and (got.labels == c).all()
    assert (got.confidence >= kept_by.thresholds[c]).all()
    stream = server.pool(UNCONDITIONAL, 0)
    expected = np.flatnonzero((stream.labels == c) & (stream.confidence >= kept_by.thresholds[c]))[:3]
    assert list(got.indices) == list(expected)
    again = DDPMServer(gen, top, str(tmp_path), classes=TEN, device="cpu", progress=False)
    assert again.sample_filter == kept_by and again.take(c, 3, seed=0).indices.tolist() == got.indices.tolist()
    assert again.counters()["generated"] == 0               # the calibration and the pool are read, not remade
    assert 0 < server.counters()["acceptance"] < 1
    with pytest.raises(ConfigError, match="generator.top_fraction: 0 when generator.min_confidence is set"):
        dataclasses.replace(top, min_confidence=0.5).validate()


def test_the_stream_is_the_unconditional_pool_in_order_and_nests_with_class_pools(unconditional, conditional,
                                                                                   tmp_path):
    spec, gen = unconditional
    server = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False)
    stream = server.take(UNCONDITIONAL, 30, seed=0)
    assert stream.indices.tolist() == list(range(30))
    assert server.counters() == {"generated": 32, "served": 30}
    longer = server.take(UNCONDITIONAL, 40, seed=0)                 # 8 more, in a second shard of 16
    assert server.counters()["generated"] == 48
    assert np.array_equal(longer.images[:30], stream.images) and np.array_equal(longer.labels[:30], stream.labels)
    c = int(stream.labels[0])                           # the stream's class-c samples open class c's pool
    mine = stream.labels == c
    from_class = server.take(c, int(mine.sum()), seed=0)
    assert np.array_equal(from_class.images, stream.images[mine])
    assert server.counters()["generated"] == 48                     # nothing generated twice
    # A server that cuts the stream into other shards (one of 64) reads the same images.
    other = tmp_path / "other"
    one_shard = DDPMServer(gen, spec, str(other), classes=TEN, device="cpu", progress=False)
    assert np.array_equal(one_shard.take(UNCONDITIONAL, 64, seed=0).images[:40], longer.images)
    spec, gen = conditional
    with pytest.raises(ConfigError, match="augment_mode"):
        DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False).take(UNCONDITIONAL, 3, 0)


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, namespace="synthaug")
    yield
    ray.shutdown()


def test_trials_asking_for_the_same_pool_get_identical_images(conditional, tmp_path, local_ray):
    spec, gen = conditional
    server = make_server_actor(gen, spec, str(tmp_path), classes=TEN)

    @ray.remote(num_cpus=1)
    def trial(c, n, seed):
        return ray.get(get_server("", spec.name).take.remote(c, n, seed)).images

    a, b = ray.get([trial.remote(4, 3, 7), trial.remote(4, 3, 7)])
    assert np.array_equal(a, b)
    counters = ray.get(server.counters.remote())
    assert counters["served"] == 6 and counters["generated"] > 0
    assert ray.get(server.ensure.remote(4, 3, 7)) == 0
    assert ray.get(server.__ray_call__.remote(lambda _: torch.get_num_threads())) == 1     # an actor: one thread


def test_a_server_shared_by_a_studys_sweeps_outlives_the_later_sweeps_handle(conditional, tmp_path, local_ray):
    """sweeps/study.py: the first sweep creates a server, a later one finds it by name (get_if_exists). The later
    handle is borrowed: it must not replace the first in SharedServers, or Ray ends the server as the later sweep
    starts and its trials cannot find it (the smoke study's E3 failed so: 'Failed to look up actor')."""
    import gc

    from synthaug.sweep.runner import SharedServers

    spec, gen = conditional
    shared = SharedServers("study-x")
    shared.keep({spec.name: make_server_actor(gen, spec, str(tmp_path), classes=TEN, sweep=shared.scope)})
    later = {spec.name: make_server_actor(gen, spec, str(tmp_path), classes=TEN, sweep=shared.scope)}
    shared.keep(later)
    del later
    gc.collect()
    time.sleep(2)
    assert ray.get(get_server(shared.scope, spec.name).take.remote(4, 2, 0)).images.shape == (2, 32, 32, 3)


def test_warm_up_replicas_do_not_change_a_pool_byte(tmp_path, shapes_tar, monkeypatch, capsys):
    """Two warm-up replicas a generator (CPU actors here, one a GPU on a cluster) against one."""
    import shutil

    from synthaug.config import PRESETS
    from synthaug.pools.store import PoolStore
    from synthaug.sweep.runner import Experiment, main

    monkeypatch.setitem(PRESETS, "tiny_warmers", dataclasses.replace(PRESETS["tiny"], name="tiny_warmers",
                                                                     warmup_replicas=2))
    experiment = Experiment(name="tiny_warm", grid={"replace_pct": [20]}, fixed={"generator": "ddpm-cond"})

    def sweep(preset_name, cache):
        return main(experiment, ["--preset", preset_name, "--seeds", "1", "--data", str(shapes_tar),
                                 "--cache", str(cache), "--storage", str(tmp_path / f"ray-{preset_name}"),
                                 "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])

    assert sweep("tiny_warmers", tmp_path / "two") == 0
    printed = capsys.readouterr()
    assert "warming ddpm-cond pools on 2 replicas" in printed.out + printed.err
    shutil.copytree(tmp_path / "two" / "generators", tmp_path / "one" / "generators")   # the same weights
    assert sweep("tiny", tmp_path / "one") == 0

    def pools(cache):
        store = PoolStore(cache / "pools")
        ids = sorted(p.name for p in (cache / "pools").iterdir() if p.is_dir())
        return {i: store.read(i) for i in ids}
    two, one = pools(tmp_path / "two"), pools(tmp_path / "one")
    assert len(two) == 3 and sorted(two) == sorted(one)          # 3 classes, 1 seed, split over 2 replicas
    for pool_id, pool in two.items():
        assert pool.images.tobytes() == one[pool_id].images.tobytes()
        assert np.array_equal(pool.labels, one[pool_id].labels)
