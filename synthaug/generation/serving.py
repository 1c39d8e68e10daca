"""A sweep's generators, served: prepared, one shared server each, every pool warmed before trials.

Every generator is prepared (trained once and cached, or loaded) before any server holds a GPU
share: on a one-GPU node a second preparation asking for the whole GPU would otherwise wait
forever behind the first server. Each generator instance (synthaug.data.instances: one, or one a
trial's real subset) then gets one named server (replica 0; a generator's small GPU share,
split among its instances) that trials read from for the whole sweep.

Warm-up generates every pool prefix the trials will ask for before they start. With several
GPUs it uses all of them: the generators are warmed one after the other, each by one extra
replica a whole GPU the serving shares leave free (synthaug.generation.placement; at most
MAX_WARMUP_REPLICAS) that is killed when its pools are on disk; a pool is always made by the
same replica (replica_for), and because image k of a pool comes from its own seed, which images
are on disk does not depend on how many replicas made them (nor, on the CPU, their bytes; on GPUs of
other models they are statistically equivalent, synthaug/pools/store.py). Every server and replica must be placed within
PLACEMENT_TIMEOUT_S (a GPU held by something else, a node gone): else the sweep stops in one line.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

from synthaug.config import GeneratorSpec, TrialConfig
from synthaug.data.instances import base_name, instance_name, instances, per_trial_generators, training_index
from synthaug.data.sources import Dataset
from synthaug.generation.placement import PlacementError, cluster_gpus, whole_gpus_beside_servers

MAX_WARMUP_REPLICAS = 8         # warm-up servers a generator, one a GPU
PLACEMENT_TIMEOUT_S = 300.0     # for a server or replica to be placed and loaded; a GPU loads a UNet in seconds
WAIT_LINE_EVERY_S = 20.0        # a line while a server or replica waits to be placed, at most this often


def warmup_replicas(preset_setting: int, free_gpus: int) -> int:
    """How many warm-up replicas a generator gets: the preset's setting, else one a whole GPU the
    serving replicas leave free (`free_gpus`; at most MAX_WARMUP_REPLICAS), else 1 (replica 0 warms alone)."""
    if preset_setting:
        return preset_setting
    return max(1, min(MAX_WARMUP_REPLICAS, free_gpus))


def wait_until_placed(actors: dict[str, Any], remedy: str, timeout_s: float = PLACEMENT_TIMEOUT_S) -> None:
    """Wait until every actor (its description -> its handle) is placed and constructed; raise PlacementError
    naming the first that is not within timeout_s, and `remedy`."""
    import time

    import ray

    described = {actor.__ray_ready__.remote(): what for what, actor in actors.items()}
    start, waiting = time.monotonic(), list(described)
    while waiting:
        left = timeout_s - (time.monotonic() - start)
        if left <= 0:
            raise PlacementError(f"{described[waiting[0]]} was not placed within {timeout_s:g} s (what it asks for is "
                                 f"held by something else, or its node is gone); {remedy}")
        _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=min(left, WAIT_LINE_EVERY_S))
        if waiting and time.monotonic() - start < timeout_s:
            more = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
            print(f"waiting {time.monotonic() - start:.0f} s of at most {timeout_s:g} s for {described[waiting[0]]}"
                  f"{more} to be placed and loaded", flush=True)


def start_servers(plan, dataset: Dataset, parent, use_gpus: bool, session: str = "", scope: str = "",
                  ahead: Mapping[str, tuple[GeneratorSpec, TrialConfig | None]] | None = None
                  ) -> tuple[dict[str, Any], dict[str, int]]:
    """Prepare each generator the grid uses, start its named server, generate every pool up front.
    `session`: the sweep command's (synthaug.sweep.interrupt), tagged on the training runs it (re)opens. `scope`: the
    servers' names' (default the sweep's own); a server of that name already alive is used as it is. `ahead`: the
    instances later sweeps of the same preset, data and cache will use (a study's), prepared in the same batch
    (each trained once; a later sweep finds it cached) so that no core idles while a sweep's last generator
    trains alone. Returns the serving actors and the images each generator's warm-up replicas (gone by now,
    beside the serving ones) generated."""
    import ray

    from synthaug.core.devices import device_task
    from synthaug.generation.generator_training import GENERATORS_EXPERIMENT
    from synthaug.generation.generators import generator_kind
    from synthaug.generation.prepare import prepare_generator
    from synthaug.generation.server import make_server_actor

    gpus = ray.cluster_resources().get("GPU", 0) if use_gpus else 0
    # One CPU thread: on a shared 2-core machine two torch threads ran a small UNet 3-10x slower.
    prepare = device_task(prepare_generator, num_gpus=1 if gpus else 0, num_cpus=1)
    found = instances(plan.preset, plan.configs)
    specs = [spec for spec, _ in found.values()]
    print(f"preparing generators {', '.join(found)} (trained once, then cached under {plan.cache_dir}; "
          f"training runs in the MLflow experiment '{GENERATORS_EXPERIMENT}')")
    sources = {spec.name: generator_kind(spec).source(spec) for spec, _ in found.values()}
    for name, source in sources.items():
        if source:
            print(f"  {name}: {source}")
    later = generators_ahead(found, ahead or {}, dataset)
    if later:
        print(f"preparing with them the generators later sweeps use: {', '.join(later)}")
    shipped = ray.put(dataset)      # loaded once on the driver; workers need no --data of their own
    tasks = [prepare.remote(spec, plan.base.data, str(plan.cache_dir), dataset=shipped,
                            tracking_uri=plan.tracking_uri, policy=plan.preset.checkpointing,
                            evaluation_per_class=plan.preset.evaluation_per_class,
                            train_index=training_index(cfg, dataset), session=session)
             for spec, cfg in [*found.values(), *later.values()]]
    prepared_all = ray.get(tasks)[:len(found)]
    # a generator's serving share of a GPU, split among its instances (one a trial seed: synthaug.data.instances)
    shares = Counter(base_name(name) for name in found)
    servers, prepared_by_name = {}, {}
    for spec, prepared in zip(specs, prepared_all):
        name = spec.name
        if not prepared.conditional:
            parent.log_metrics({f"labeller_test_acc.{name}": prepared.labeller_test_acc})
        parent.set_tags({f"synthaug.generator.{name}.weights": prepared.weights_digest,
                         f"synthaug.generator.{name}.kind": spec.kind,
                         **({f"synthaug.generator.{name}.source": sources[name]} if sources[name] else {}),
                         **({f"synthaug.generator.{name}.run_id": prepared.run_id} if prepared.run_id else {})})
        share = plan.preset.server_gpus / shares[base_name(name)]
        servers[name] = make_server_actor(prepared, spec, str(plan.cache_dir / "pools"), dataset.classes,
                                          num_gpus=share if gpus else 0, sweep=scope or plan.name)
        prepared_by_name[name] = prepared
    wait_until_placed({f"the {name} server": server for name, server in servers.items()},
                      "lower preset.server_gpus, or free GPUs")
    needed = pool_requests(plan, dataset)
    free_gpus = whole_gpus_beside_servers(cluster_gpus(), len(plan.generators), plan.preset.server_gpus) if gpus else 0
    replicas = warmup_replicas(plan.preset.warmup_replicas, free_gpus)
    if replicas == 1:
        warmed = _warm(needed, lambda name, c, seed: servers[name], f"warming pools of {', '.join(servers)}")
    else:
        warmed = {}
        for spec in specs:
            warmers = [make_server_actor(prepared_by_name[spec.name], spec, str(plan.cache_dir / "pools"),
                                         dataset.classes, replica=r + 1, num_gpus=1 if gpus else 0,
                                         num_cpus=0 if gpus else 1, sweep=plan.name)
                       for r in range(replicas)]
            wait_until_placed({f"warm-up replica {r + 1} of {spec.name} ({'a whole GPU' if gpus else 'a CPU'})": actor
                               for r, actor in enumerate(warmers)},
                              "set preset.warmup_replicas=1 (the serving replica warms alone), or free GPUs")
            mine = {k: n for k, n in needed.items() if k[0] == spec.name}
            route = lambda name, c, seed: warmers[replica_for(c, seed, replicas, prepared_by_name[name].conditional)]  # noqa: E731
            warmed.update(_warm(mine, route, f"warming {spec.name} pools on {replicas} replicas"))
            for actor in warmers:
                ray.kill(actor, no_restart=True)
    total = sum(warmed.values())
    print(f"pools ready: {len(needed)} (generator, class, seed) prefixes, {total} images generated now")
    parent.log_metrics({"pool_images_generated": total})      # logged before trials: a kill keeps it
    # the serving replicas count what they warmed themselves; only the warm-up replicas' images are extra
    return servers, ({} if replicas == 1 else warmed)


def generators_ahead(found: Mapping[str, tuple[GeneratorSpec, TrialConfig | None]],
                     ahead: Mapping[str, tuple[GeneratorSpec, TrialConfig | None]], dataset: Dataset
                     ) -> dict[str, tuple[GeneratorSpec, TrialConfig | None]]:
    """The instances of `ahead` that train a generator neither `found` nor an earlier one of them trains (one a
    generator cache key: ddpm-uncond and its filtered variants share weights). One the cache holds is kept: its
    preparation only checks it, or scores it where the MLflow store has not yet (a new store)."""
    from synthaug.data.instances import restricted
    from synthaug.generation.generator_training import generator_key
    from synthaug.generation.generators import generator_kind

    def key(spec: GeneratorSpec, cfg: TrialConfig | None) -> str:
        return generator_key(spec, restricted(dataset, training_index(cfg, dataset)))

    taken = {key(spec, cfg) for spec, cfg in found.values() if generator_kind(spec).trains}
    later = {}
    for name, (spec, cfg) in ahead.items():
        if name not in found and generator_kind(spec).trains and key(spec, cfg) not in taken:
            taken.add(key(spec, cfg))
            later[name] = (spec, cfg)
    return later


def pool_requests(plan, dataset: Dataset) -> dict[tuple[str, int, int], int]:
    """(generator instance, class, seed) -> the longest prefix of that pool any trial of the plan takes."""
    from synthaug.data.mixing import synthetic_requests

    per_trial = per_trial_generators(plan.preset)
    needed: dict[tuple[str, int, int], int] = {}
    for cfg in plan.configs:
        if cfg.uses_synthetic:
            for c, n in synthetic_requests(cfg, dataset).items():
                key = (instance_name(cfg, per_trial), c, cfg.seed)
                needed[key] = max(needed.get(key, 0), n)
    return needed


def replica_for(class_index: int, seed: int, replicas: int, conditional: bool) -> int:
    """The replica that makes a pool: an unconditional generator's class pools are views of one
    stream a seed, so they go by seed; a conditional generator's pools by class and seed."""
    return (class_index * 1_000_003 + seed) % replicas if conditional else seed % replicas


def _warm(needed: dict[tuple[str, int, int], int], route, description: str) -> dict[str, int]:
    """Every request at once: each server works through its own queue, the servers side by side.
    Returns the images generated a generator."""
    import ray

    from synthaug.core.progress import Progress

    pending = {route(name, c, seed).ensure.remote(c, n, seed): name for (name, c, seed), n in sorted(needed.items())}
    generated: dict[str, int] = {}
    shown = Progress(description, len(pending), "pools")
    shown.update(0)
    waiting = list(pending)
    while waiting:
        done, waiting = ray.wait(waiting)
        for ref in done:
            generated[pending[ref]] = generated.get(pending[ref], 0) + ray.get(ref)
        shown.update(len(pending) - len(waiting), f"{sum(generated.values())} images generated so far")
    return generated
