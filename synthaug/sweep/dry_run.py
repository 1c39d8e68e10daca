"""--dry-run: a sweep's trials, the work before them, the resources they ask for and a GPU-hour estimate.

Nothing is started, downloaded or written: the data source is outlined (synthaug.data.sources.data_outline),
not decoded. The estimate divides the work by one row of BENCHMARKS.md's throughput table
(synthaug.training.benchmarks; --gpu-model names the device), and says which row and where its figures
come from: measured by bench/gpu_suite.py, or assumed until a run measures them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from synthaug.data.sources import Dataset
from synthaug.sweep.declaration import describe
from synthaug.sweep.overrides import grid_value
from synthaug.training.benchmarks import Throughput, cpu_row
from synthaug.training.pricing import trial_cost


def print_dry_run(plan, dataset: Dataset, throughput: Throughput, measured: tuple[str, ...] = ()) -> None:
    """Print the plan of `plan` (a synthaug.sweep.sweep_plan.SweepPlan) over the outlined data set, its GPU-hours
    estimated from `throughput` (a whole device's work a second); `measured`: the devices with measured
    full-size rows, named when `throughput` is only assumed."""
    from synthaug.data.instances import instances
    from synthaug.data.mixing import plan as class_plan
    from synthaug.generation.generators import generator_kind
    from synthaug.generation.placement import free_after_servers, gpu_problem, trials_that_fit, whole_free
    from synthaug.generation.serving import pool_requests, warmup_replicas
    from synthaug.training.pricing import sharing_speedup, trials_per_gpu

    preset, configs = plan.preset, plan.configs
    cells = len(configs) // len(plan.seeds)
    epochs = sum(c.train.epochs for c in configs)
    print(f"sweep {plan.name} (dry run: nothing started, nothing written)")
    print(f"data {dataset.name}: {len(dataset.train_y)} train / {len(dataset.test_y)} test images, "
          f"{dataset.num_classes} classes; preset {preset.name}, recipe {plan.base.recipe}")
    print(f"{len(configs)} trials = {cells} configurations x {len(plan.seeds)} seeds; {epochs} trial-epochs\n")
    for problem in plan.unavailable:
        print(f"note: the sweep would stop before it starts: {problem}\n")

    axes = [*plan.grid] or ["configuration"]
    rows = []
    for cfg in configs[::len(plan.seeds)]:
        per_class = class_plan(cfg, dataset)
        size = sum(p.images for p in per_class) + cfg.stream_count
        synthetic = sum(p.synthetic for p in per_class) + cfg.stream_count
        label = [grid_value(getattr(cfg, k)) for k in plan.grid] or [plan.experiment.name]
        rows.append([*label, str(len(plan.seeds)), str(cfg.train.epochs), str(size), str(synthetic),
                     *([] if "generator" in plan.grid else [cfg.generator if cfg.uses_synthetic else "-"])])
    _table([*axes, "seeds", "epochs", "train images", "synthetic", *([] if "generator" in plan.grid else ["generator"])],
           rows)
    if plan.arms:
        print("\narms (crossed with the grid; an arm's own fields win over an axis it sets):")
        for arm, fields in plan.arms.items():
            once = sum(c.get("arm") == arm for c in plan.cells) == 1 and len(plan.cells) > len(plan.arms)
            print(f"  {arm}: " + (", ".join(f"{k}={grid_value(v)}" for k, v in fields.items()) or "the base")
                  + ("; run once" if once else ""))
    print("\n" + "\n".join(describe(plan.declared)))
    _print_power(plan)

    found = instances(preset, configs)
    needed = pool_requests(plan, dataset)
    gen_hours = pool_hours = 0.0
    labellers: set[tuple] = set()     # one labeller a recipe and training data, shared by generators
    print("\nbefore the trials (each cached: a later sweep or train_generators.py run skips it):")
    for name, (spec, subset) in found.items():
        kind = generator_kind(spec)
        mine = {k: n for k, n in needed.items() if k[0] == name}
        work = _generator_work(spec, subset, mine, dataset, throughput, labellers)
        pool_hours += work.pool_h
        gen_hours += work.train_h + work.label_h
        line = f"  {name}: {kind.name}" + (f" ({kind.source(spec)})" if kind.source(spec) else "")
        if kind.trains:
            line += (f", train {spec.ddpm.train_steps} steps at batch {spec.ddpm.batch_size} (~{work.train_h:.2f} GPU-h) "
                     + (f"+ labeller (~{work.label_h:.2f} GPU-h)" if work.label_h
                        else "+ the labeller above"))
        line += (f"; pools: {len(mine)} (class, seed) prefixes, about {work.images} images at {work.steps} steps "
                 + (f"(~{work.pool_h:.2f} GPU-h)" if work.unet else
                    "(no throughput assumed for this model: not in the estimate)"))
        print(line + ("" if spec.conditional else ", more if a confidence filter rejects samples"))

    if throughput.assumed:
        print(f"\nnote: {throughput.device}'s figures are assumed, not measured"
              + (f"; measured rows: {', '.join(measured)} (--gpu-model picks one)" if measured else ""))
    if throughput.size not in ("full", preset.name):     # a row of the preset's own models plans it
        print(f"\nnote: the figures below divide by a --size {throughput.size} run's throughputs (models smaller "
              f"than the study's): they check the arithmetic, they do not plan a sweep")
    gpus = preset.gpus or 0
    servers = len(plan.generators)
    free = free_after_servers([gpus], servers, preset.server_gpus) or []      # --gpus N as one node's
    replicas = warmup_replicas(preset.warmup_replicas, sum(whole_free(free))) if gpus else 1
    problem = gpu_problem(preset, servers, [gpus]) if gpus else None
    concurrent = trials_that_fit(free, preset.gpus_per_trial) if preset.gpus_per_trial > 0 else len(configs)
    per_gpu = trials_per_gpu(preset.gpus_per_trial) if gpus else 1
    speedup = sharing_speedup(per_gpu, throughput)
    costs = [_trial_cost(cfg, dataset, throughput, preset.trial_checkpoint_s, per_gpu / speedup, class_plan)
             for cfg in configs]
    trial_hours = sum(c.seconds for c in costs) / speedup / 3600      # GPU time: k trials share one GPU
    stems = sorted({c.train.stem for c in configs})
    print(f"\ntrials: {', '.join(f'{stem} stem {throughput.train_images(stem):,.0f}' for stem in stems)} training "
          f"images/s one trial alone, {throughput.eval_images:,.0f} test images/s; {per_gpu} trial(s) a GPU at "
          f"{preset.gpus_per_trial:g} GPU each, {speedup:.2f}x one alone (the row: {throughput.sharing_speedup:.2f}x "
          f"at {throughput.trials_per_gpu:g} a GPU)")
    _print_checkpoints(costs, preset.trial_checkpoint_s, throughput, per_gpu / speedup, concurrent if gpus else 0)
    print(f"resources: --gpus {gpus} ({'CPUs only' if not gpus else f'{gpus} GPU' + 's' * (gpus > 1)}); a trial {preset.gpus_per_trial:g} "
          f"GPU + {preset.cpus_per_trial:g} CPU; a generator's server {preset.server_gpus:g} GPU (split among its "
          f"instances); preparation 1 GPU a generator instance; warm-up {replicas} replica(s) a generator")
    if problem:
        print(f"  the sweep would stop here: {problem}")
    elif gpus:
        waves = math.ceil(len(configs) / concurrent)
        trials_wall = waves * max(c.seconds for c in costs) * per_gpu / speedup / 3600
        prep_wall = gen_hours / min(gpus, max(len(found), 1)) + pool_hours / replicas
        print(f"  {concurrent} trials at once, {waves} wave(s) of {len(configs)} trials, given enough CPUs "
              f"({preset.cpus_per_trial:g} a trial)")
        print(f"estimate ({throughput.describe()}): generators + labellers {gen_hours:.2f} GPU-h, pools {pool_hours:.2f} "
              f"GPU-h, trials {trial_hours:.2f} GPU-h; total {gen_hours + pool_hours + trial_hours:.2f} GPU-h; "
              f"wall about {prep_wall + trials_wall:.1f} h on {gpus} GPU{'s' * (gpus > 1)} ({prep_wall:.1f} h before the trials)")
        if gen_hours and gpus >= 2:
            workers = min(8, gpus)
            batch = max(spec.ddpm.batch_size for spec, _ in found.values())
            ddp = throughput.ddp_speedup(workers, batch)
            print(f"  the generators data-parallel (sweeps/train_generators.py --gpus-per-generator {workers}): at most "
                  f"{ddp:.2f}x one GPU (from DDPM steps/s at batch {batch} and 16 on one GPU; all-reduce not counted), "
                  f"about {gen_hours / ddp:.1f} h instead of {gen_hours:.1f} h")
    else:
        if not throughput.on_cpu:
            print(f"on GPUs ({throughput.describe()}) this is generators + labellers {gen_hours:.2f}, pools "
                  f"{pool_hours:.2f}, trials {trial_hours:.2f} GPU-h")
        cpu = throughput if throughput.on_cpu else cpu_row(preset.name)
        if cpu is None:
            print(f"estimate on CPUs: none, no CPU row of the {preset.name} preset's size in BENCHMARKS.md "
                  f"(bench/gpu_suite.py --size {preset.name} --device cpu measures one)")
        else:
            _print_cpu_estimate(plan, dataset, found, needed, cpu, class_plan)


@dataclass(frozen=True)
class PlanHours:
    """A plan's work in hours of one throughput row's device (sweeps/study.py adds plans up)."""

    # what a generator instance trains (its DDPM, its labeller; keyed as the cache keys them, so two instances
    # or experiments that share weights share a key) -> hours: a study adds the keys up once
    trainings: dict
    pools_h: float
    # the trials' device-hours: on a GPU row k sharing a GPU as the preset asks; on a CPU row the wall time of
    # this machine's CPUs, as many trials at once as they take
    trials_h: float


def plan_hours(plan, dataset: Dataset, row: Throughput) -> PlanHours:
    """plan's generators, pools and trials on `row`'s device, as print_dry_run estimates them."""
    from synthaug.data.instances import instances
    from synthaug.data.mixing import plan as class_plan
    from synthaug.generation.serving import pool_requests
    from synthaug.training.pricing import sharing_speedup, trials_per_gpu

    preset, needed = plan.preset, pool_requests(plan, dataset)
    found = instances(preset, plan.configs)
    works = {name: _generator_work(spec, subset, {k: n for k, n in needed.items() if k[0] == name}, dataset, row,
                                   set()) for name, (spec, subset) in found.items()}
    if row.on_cpu:
        at_once = max(1, min(len(plan.configs), int((os.cpu_count() or 1) // preset.cpus_per_trial)))
    else:
        at_once = trials_per_gpu(preset.gpus_per_trial) if preset.gpus else 1
    speedup = sharing_speedup(at_once, row)
    seconds = sum(_trial_cost(cfg, dataset, row, preset.trial_checkpoint_s, at_once / speedup, class_plan).seconds
                  for cfg in plan.configs)
    trials_h = seconds / speedup / 3600
    return PlanHours(_trainings(found, works, dataset), sum(w.pool_h for w in works.values()), trials_h)


def _trainings(found: dict, works: dict, dataset: Dataset) -> dict:
    """PlanHours.trainings of the instances `found` (name -> (spec, subset)) with their GeneratorWork."""
    from synthaug.data.instances import subset_tag
    from synthaug.generation.generator_training import generator_key, labeller_key

    keys: dict[str, float] = {}
    for name, (spec, subset) in found.items():
        where = f"@{subset_tag(subset)}" if subset is not None else ""
        if works[name].train_h or works[name].label_h:
            keys[f"generator {generator_key(spec, dataset)}{where}"] = works[name].train_h
            keys[f"labeller {labeller_key(spec, dataset)}{where}"] = works[name].label_h
    return keys


def fidelity_hours(preset, dataset: Dataset, row: Throughput, per_class: int) -> PlanHours:
    """E5 (synthaug.analysis.fidelity): the preset's generators it can use here, trained (as a sweep would), and
    per_class samples a class of each (pool seed 0); its feature scores are not counted."""
    from synthaug.analysis.fidelity import usable_generators

    specs, _ = usable_generators(preset.generators, dataset.classes)
    wanted = {(spec.name, c, 0): per_class for spec in specs for c in range(dataset.num_classes)}
    works = {spec.name: _generator_work(spec, None, {k: n for k, n in wanted.items() if k[0] == spec.name}, dataset,
                                        row, set()) for spec in specs}
    return PlanHours(_trainings({s.name: (s, None) for s in specs}, works, dataset),
                     sum(w.pool_h for w in works.values()), 0.0)


def _print_power(plan) -> None:
    """The seed-paired t's power at the declared effects for the primary family (its declared contrasts and trend,
    each counted once: a declaration that leaves a grid axis out may stand for more contrasts, so "at least"), at
    Holm's first step, from the preset's paired sd or a pilot's (--paired-sd)."""
    from synthaug.stats.inference import power_table, power_table_lines

    experiment, preset, seeds = plan.experiment, plan.preset, len(plan.seeds)
    declared = len(experiment.primary) + bool(experiment.trend)
    family = max(declared, 1)
    parts = [f"{len(experiment.primary)} contrast{'s' * (len(experiment.primary) != 1)}"] * bool(experiment.primary) \
        + [f"the {experiment.trend} trend"] * bool(experiment.trend)
    rows = power_table(preset.paired_sd, max(seeds, 2), family)
    head = (f"power of the primary family (at least {family} test{'s' * (family > 1)}: {' + '.join(parts)}; seed-paired "
            f"t at alpha {rows[0].alpha:.3g}, Holm's first step)" if declared else
            f"power of one contrast (no primary analysis declared; seed-paired t at alpha {rows[0].alpha:.3g})")
    print(f"\n{head}, paired sd {preset.paired_sd * 100:.2f} pp ({preset.paired_sd_source}):")
    for line in power_table_lines(rows, seeds) if seeds >= 2 else ["1 seed: no paired test (--seeds 2 or more)"]:
        print("  " + line)


@dataclass(frozen=True)
class GeneratorWork:
    """A generator instance's work before the trials, in hours of one device of a throughput row."""

    train_h: float          # its DDPM training (0: nothing to train)
    label_h: float          # its labeller's (0: none, or shared with an instance counted before)
    images: int             # pool images it makes
    steps: int              # sampler steps an image
    pool_h: float           # making them (0 when no throughput is measured for the model)
    unet: bool              # a CIFAR UNet, whose throughput the row has


def _generator_work(spec, subset, mine: dict, dataset: Dataset, row: Throughput, labellers: set) -> GeneratorWork:
    """What one generator instance costs on `row`'s device; `labellers` (updated) holds the labellers counted."""
    from synthaug.data.instances import subset_tag, training_index
    from synthaug.generation.generator_training import labeller_recipe
    from synthaug.generation.generators import generator_kind

    kind = generator_kind(spec)
    images = _pool_images(mine, spec.conditional, dataset.num_classes)
    steps = spec.sampler.resolved(kind.timesteps(spec)).steps
    unet = kind.sampling_measured(spec)         # the throughput measured is the CIFAR UNet's
    pool_h = images * steps / row.unet_image_evals / 3600 if unet else 0.0
    train_h = label_h = 0.0
    if kind.trains:
        train_h = spec.ddpm.train_steps / row.ddpm_steps / 3600
        labeller = (spec.labeller, spec.labeller_per_class, spec.train_seed, subset and subset_tag(subset))
        if labeller not in labellers:
            labels = dataset.train_y if subset is None else dataset.train_y[training_index(subset, dataset)]
            recipe, index = labeller_recipe(spec, labels, dataset.num_classes)
            label_h = recipe.epochs * len(index) / row.train_images(spec.labeller.stem) / 3600
        labellers.add(labeller)
    return GeneratorWork(train_h, label_h, images, steps, pool_h, unet)


def _print_cpu_estimate(plan, dataset: Dataset, found: dict, needed: dict, row: Throughput, class_plan) -> None:
    """The sweep's wall time on this machine's CPUs, from a CPU row: the generators trained side by side (a
    CPU each), the pools by one server, then the trials, as many at once as the CPUs take."""
    from synthaug.training.pricing import sharing_speedup

    cpus, preset = os.cpu_count() or 1, plan.preset
    labellers: set[tuple] = set()
    works = [_generator_work(spec, subset, {k: n for k, n in needed.items() if k[0] == name}, dataset, row, labellers)
             for name, (spec, subset) in found.items()]
    gen_h, pool_h = sum(w.train_h + w.label_h for w in works), sum(w.pool_h for w in works)
    at_once = max(1, min(len(plan.configs), int(cpus // preset.cpus_per_trial)))
    speedup = sharing_speedup(at_once, row)
    costs = [_trial_cost(cfg, dataset, row, preset.trial_checkpoint_s, at_once / speedup, class_plan)
             for cfg in plan.configs]
    trials_h = sum(c.seconds for c in costs) / speedup / 3600
    before = gen_h / min(cpus, max(len(works), 1)) + pool_h
    first = before + costs[0].seconds * at_once / speedup / 3600
    if row.size != preset.name:
        print(f"note: the CPU row was measured at --size {row.size}, not the {preset.name} preset's models: the CPU "
              f"estimate below checks the arithmetic, it does not plan this sweep")
    print(f"estimate on this machine's {cpus} CPUs ({row.describe()}): generators + labellers {_duration(gen_h)}, "
          f"pools {_duration(pool_h)}, trials {_duration(trials_h)} ({at_once} at once, {speedup:.2f}x one alone); "
          f"about {_duration(before + trials_h)} in all, the first trial's result after about {_duration(first)}")


def _duration(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 2 else f"{hours:.1f} h"


def _trial_cost(cfg, dataset: Dataset, throughput: Throughput, every_s: float, sharing: float, class_plan):
    """One trial's cost alone on one device (synthaug.training.pricing): its training set (under budget "steps", an epoch
    draws the reference images, the real ones before augmentation), its validation images every epoch, its test
    images once, and its recipe."""
    plans = class_plan(cfg, dataset)
    train = (sum(p.real_target for p in plans) if cfg.train.budget == "steps"
             else sum(p.images for p in plans) + cfg.stream_count)
    validation = cfg.validation_per_class * dataset.num_classes
    test = cfg.test_per_class * dataset.num_classes if cfg.test_per_class else len(dataset.test_y)
    return trial_cost(cfg.train, train, validation, test, dataset.num_classes, throughput, every_s, sharing)


def _print_checkpoints(costs, every_s: float, throughput: Throughput, sharing: float, concurrent: int) -> None:
    """The trials' checkpoint volume, and the write rate to --storage they need at most: `concurrent` trials,
    each writing a checkpoint every interval of its wall time (its epochs `sharing` times slower beside the
    trials sharing its GPU)."""
    total = sum(c.checkpoints * c.checkpoint_bytes for c in costs)
    largest = max(c.checkpoint_bytes for c in costs)
    rule = f"every {every_s:g} s and at the last epoch" if every_s > 0 else "every epoch"
    print(f"checkpoints: {largest / 2**20:.1f} MiB a trial, {rule} ({sum(c.checkpoints for c in costs)} in all, "
          f"{total / 2**30:.1f} GiB written to --storage; Tune keeps the newest two a trial); "
          f"{sum(c.checkpoint_s for c in costs) / 60:.1f} min of writing at {throughput.checkpoint_mib_s:,.0f} MiB/s")
    if concurrent:
        interval = min(c.train_s * sharing / c.checkpoints for c in costs)
        print(f"  --storage must take about {concurrent * largest / 2**20 / interval:,.0f} MiB/s with {concurrent} "
              f"trials at once (each writing one every {interval:,.0f} s at the most often)")


def _pool_images(mine: dict, conditional: bool, num_classes: int) -> int:
    """Images a generator instance makes for its pools: conditioned, what is asked; through the labeller,
    a seed's stream long enough for its most-asked class at a fair share (1 in num_classes)."""
    if conditional:
        return sum(mine.values())
    by_seed: dict[int, int] = {}
    for (_, c, seed), n in mine.items():
        by_seed[seed] = max(by_seed.get(seed, 0), n if c < 0 else n * num_classes)
    return sum(by_seed.values())


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
