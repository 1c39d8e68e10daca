"""A sweep's plan: what a sweep script declares (Experiment), its flags, and the validated SweepPlan of
every trial's configuration, made before anything starts (no Ray, no GPU, no MLflow, nothing written)."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from synthaug.config import (PRESETS, Preset, ConfigError, TrialConfig, digest, from_flat, preset, recipe_conflict,
                             to_flat, with_recipe)
from synthaug.data.sources import Dataset, data_outline, resolve_source
from synthaug.sweep.cli import OneLineParser, add_gpu_flags, add_run_flags
from synthaug.sweep.declaration import declaration
from synthaug.sweep.sweep_inputs import (UsageError, check_counts, check_generators, class_aliases, resolve_value,
                                         with_checkpoints, with_resources)

GPU_MODEL = "H100"          # --gpu-model's default: the BENCHMARKS.md row a dry run divides by


# The arms every augmentation sweep shares: the baseline that adds nothing (run once), and the controls for
# "more images" beside a synthetic arm of K images a class: the same K as copies of the trial's own real images
# of the class, as loss weights giving the same class prior, or as real images the trial's subset withheld
# (synthaug.data.mixing). A sweep adds its synthetic arm(s) and their equal-steps twin (train.budget=steps).
NO_AUGMENTATION = {"none": {"augment_classes": [], "augment_count": 0}}
CONTROL_ARMS = {
    "oversample": {"augment_source": "oversample"},
    "reweight": {"augment_source": "reweight"},
    "withheld-real": {"augment_source": "withheld"},
}


@dataclass(frozen=True)
class Experiment:
    """What a sweep script declares: its grid and the TrialConfig fields it fixes."""

    name: str                                   # MLflow experiment and Tune run prefix
    grid: Mapping[str, Sequence[Any]]           # TrialConfig field -> values, crossed with each other and the arms
    # named variants that set several TrialConfig fields together (E3: none, conditional,
    # unconditional): one more axis, "arm", crossed with the grid; applied over fixed and over the grid axes
    # they set, so an arm that sets every axis (the baseline "none") is one configuration, run once
    arms: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)         # TrialConfig fields, every preset
    paper_fixed: Mapping[str, Any] = field(default_factory=dict)   # TrialConfig fields, paper preset only
    paper_grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)  # grid axes the paper preset replaces
    # cells with these values are one configuration, run once instead of once a value of the other axes and
    # arms (sample_count's K = 0 adds no samples, whatever the class set or arm): the arm whose own fields hold
    # these values (the baseline, "none"), or without one a cell of these values an arm (plan_cells)
    run_once: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    analysis: str = "analysis/significance.py"  # the script the sweep's closing "Analyse:" line names
    # The primary analysis, declared before the sweep runs (written to its parent run, tag synthaug.primary,
    # and read back by the analysis, which leads with it; every other comparison is secondary). Each
    # configuration is named in the form --baseline takes ("replace_pct=2", "arm=synthetic,augment_classes=truck"),
    # with the class names of the sweep's data resolved by the sweep.
    # primary: (treatment, baseline) pairs; baseline "" = the sweep's baseline (the configuration without
    # synthetic images)
    primary: tuple[tuple[str, str], ...] = ()
    trend: str = ""                             # a numeric TrialConfig field tested for a trend across its values
    trend_within: str = ""                      # the configurations the trend runs over ("arm=synthetic"); "" = all
    # (synthetic, real) pairs, each against the sweep's baseline: what one synthetic image is worth in real
    # images = (synthetic - baseline) / (real - baseline) at the same count
    exchange: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: every trial's configuration and where everything goes."""

    experiment: Experiment
    preset: Preset
    seeds: tuple[int, ...]
    # the configuration columns (arm first, then the grid's axes) and their values, class names resolved
    grid: Mapping[str, list]
    arms: Mapping[str, dict]                    # arm -> its TrialConfig fields, class names resolved
    # the configurations before the seed (plan_cells): arm and grid values, each once; a trial's Tune params' "cell"
    cells: tuple[dict, ...]
    base: TrialConfig
    configs: tuple[TrialConfig, ...]
    cache_dir: Path
    storage: str                                # a folder (absolute) or a file-system URI (s3://...)
    tracking_uri: str
    address: str | None
    name: str                                   # the Tune run and the MLflow parent run's name
    # the declared primary analysis, its class names the data's (synthaug.sweep.declaration): the parent run's tag
    declared: Mapping[str, Any] = field(default_factory=dict)
    unavailable: tuple[str, ...] = ()           # why a generator cannot serve here (planned with allow_unavailable)
    parent_tags: Mapping[str, str] = field(default_factory=dict)    # more tags on the parent run (the study's)

    @property
    def generators(self) -> tuple[str, ...]:
        return tuple(sorted({c.generator for c in self.configs if c.uses_synthetic}))


def parse_args(experiment: Experiment, argv: Sequence[str] | None) -> argparse.Namespace:
    return sweep_parser(f"sweeps/{experiment.name}.py", experiment.description).parse_args(argv)


def sweep_parser(prog: str, description: str, grids: bool = True) -> OneLineParser:
    """The flags of a sweep script (and, without --grid, of sweeps/study.py, which adds its own)."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--preset", default="smoke", help=f"one of {', '.join(PRESETS)} (default smoke)")
    parser.add_argument("--seeds", default=None, help="N (seeds 0..N-1) or a list like 0,3,7 (default: the preset's, "
                                                      "3; paper 8)")
    add_run_flags(parser)
    parser.add_argument("--storage", default="ray_results", help="Tune results folder (default ./ray_results)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=FOLDER|FILE.pt",
                        help="serve generator NAME from a local diffusers UNet2DModel folder (e.g. a copy of "
                             "google/ddpm-cifar10-32 for ddpm-uncond), or from an improved-diffusion .pt file (the "
                             "study's: cifar10_uncond_50M_500K.pt for ddpm-uncond, imagenet64_cond_270M_250K.pt for "
                             "imagenet), instead of training or downloading it; repeatable")
    add_gpu_flags(parser, "sweep")
    parser.add_argument("--gpus-per-trial", default=None, help="a trial's GPU share (default: the preset's)")
    parser.add_argument("--cpus-per-trial", default=None, help="a trial's CPUs (default: the preset's)")
    parser.add_argument("--class-map", default=None, metavar="NAME=CLASS,...",
                        help="the data's class for each class name the sweep targets, when its names differ "
                             "(e.g. truck=lorry); the built-in shapes map CIFAR-10's names by index")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any trial field (train.epochs=1), preset field (preset.gpus_per_trial=0.25) or "
                             "generator field (generators.ddpm-cond.train_on=trial); repeatable")
    if grids:
        parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                            help="replace or add a grid axis (replace_pct=0,2,4; arm=none,conditional; tuples as "
                                 "truck+ship); repeatable")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the trials, the resource plan and a GPU-hour estimate; start and write nothing")
    parser.add_argument("--gpu-model", default=GPU_MODEL, help="with --dry-run: the device of BENCHMARKS.md's "
                        f"throughput table the estimate divides by (default {GPU_MODEL})")
    parser.add_argument("--benchmarks", default=None, metavar="FILE",
                        help="with --dry-run: the file holding that table (default: the repository's BENCHMARKS.md)")
    parser.add_argument("--paired-sd", default=None, metavar="SD",
                        help="with --dry-run: a pilot's seed sd of a paired accuracy difference, a fraction (0.004 = "
                             "0.4 pp), for the power table (default: the preset's)")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming a matching sweep")
    return parser


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        if "," in text:
            seeds = tuple(int(s) for s in text.split(",") if s.strip())
        else:
            seeds = tuple(range(int(text)))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds: a count >= 1 or a list of distinct integers >= 0 like 0,3,7; got {text!r}")
    return seeds


def parse_paired_sd(text: str) -> float:
    try:
        sd = float(text)
    except ValueError:
        sd = float("nan")
    if not 0 < sd < 1:
        raise UsageError(f"--paired-sd: a fraction in (0, 1), like 0.004 for 0.4 pp; got {text!r}")
    return sd


def plan_sweep(experiment: Experiment, args: argparse.Namespace,
               allow_unavailable: bool = False) -> tuple[SweepPlan, Dataset]:
    """Resolve and validate everything; touches no Ray, no GPU, no MLflow, and writes nothing: the data
    source is only outlined (classes and labels, blank images; synthaug.data.sources.data_outline), so bad input
    leaves no cache behind. Returns the plan and that outline. `allow_unavailable` (a dry run): a generator
    that cannot serve on this machine (a pretrained model not downloaded) is kept in plan.unavailable, not
    raised, so the plan can still be counted."""
    from synthaug.core.storage import folder_problem
    from synthaug.core.tracking import resolve_tracking_uri
    from synthaug.sweep.overrides import apply_grids, apply_sets, check_experiment

    check_experiment(experiment)
    chosen = preset(args.preset)
    experiment = apply_grids(experiment, args.grid)
    experiment, chosen = apply_sets(experiment, chosen, args.set)
    seeds = parse_seeds(args.seeds or str(chosen.seeds))
    if args.paired_sd is not None:
        chosen = dataclasses.replace(chosen, paired_sd=parse_paired_sd(args.paired_sd),
                                     paired_sd_source="a pilot's (--paired-sd)")
    data = resolve_source(args.data or chosen.data)
    # absolute as written, symlinks not followed: a path that is each node's own folder stays one (the checks)
    cache_dir = Path(os.path.abspath(args.cache))
    problem = folder_problem(cache_dir)
    if problem:
        raise UsageError(f"--cache {problem}")
    dataset = data_outline(data, cache_dir)
    chosen = with_checkpoints(with_resources(chosen, args), args.checkpoint, dataset)
    aliases = class_aliases(args.class_map, dataset)
    fixed = {key: resolve_value(key, v, dataset, aliases) for key, v in
             {**experiment.fixed, **(experiment.paper_fixed if chosen.name == "paper" else {})}.items()}
    base = with_recipe(from_flat(TrialConfig, {**to_flat(TrialConfig(
        experiment=experiment.name, data=data, real_per_class=chosen.real_per_class,
        test_per_class=chosen.test_per_class, validation_per_class=chosen.validation_per_class, train=chosen.train,
        recipe=chosen.recipe)), **fixed}))
    chosen.validate()
    arms = {arm: {key: resolve_value(key, v, dataset, aliases) for key, v in fields.items()}
            for arm, fields in experiment.arms.items()}
    axes = {**experiment.grid, **(experiment.paper_grid if chosen.name == "paper" else {})}
    axes = {key: [resolve_value(key, v, dataset, aliases) for v in values] for key, values in axes.items()}
    grid = {**({"arm": list(arms)} if arms else {}), **axes}
    once = {k: resolve_value(k, v, dataset, aliases) for k, v in experiment.run_once.items()}
    cells = plan_cells(axes, arms, once, to_flat(base))
    notes: list[str] = []          # printed once the whole plan is valid
    declared = declaration(experiment, grid, cells, dataset, aliases, notes)
    explicit = {*fixed, *grid, *(key for fields in arms.values() for key in fields)}   # not the preset's train
    configs = []
    for cell, seed in itertools.product(cells, seeds):
        cfg = from_flat(TrialConfig, {**to_flat(base), **arms.get(cell.get("arm"), {}), **cell, "seed": seed})
        conflict = recipe_conflict(cfg, explicit)
        if conflict:
            raise ConfigError(conflict)
        cfg = with_recipe(cfg)
        cfg.validate(classes=dataset.classes, generators={g.name: g for g in chosen.generators})
        configs.append(cfg)
    used = sorted({c.generator for c in configs if c.uses_synthetic})   # a preset that gains one keeps its sweeps
    check_counts(configs, dataset)
    unavailable = check_generators(chosen, used, configs, dataset)
    if unavailable and not allow_unavailable:
        raise ConfigError(unavailable[0])
    name = f"{experiment.name}-{chosen.name}-" + digest({
        "base": to_flat(base), "grid": grid, **({"arms": arms} if arms else {}), "cells": cells, "seeds": seeds,
        "data": dataset.digest, "generators": [to_flat(chosen.generator(g)) for g in used]})[:8]
    plan = SweepPlan(experiment, chosen, seeds, grid, arms, cells, base, tuple(configs), cache_dir,
                     storage_location(args.storage), resolve_tracking_uri(args.mlflow_uri), args.address, name, declared,
                     tuple(unavailable))
    for note in notes:
        print(note, file=sys.stderr, flush=True)
    return plan, dataset


def plan_cells(axes: Mapping[str, list], arms: Mapping[str, dict], once: Mapping[str, Any],
               base: Mapping[str, Any]) -> tuple[dict, ...]:
    """The sweep's configurations before the seed, each once, in order: every arm crossed with the grid axes, an
    arm's own fields winning over an axis it sets (the baseline "none", which sets them all, is one configuration,
    not one a grid value). A cell with the values of `once` adds nothing whatever its other values (sample_count's
    K = 0): it becomes the arm whose own fields hold those values (the baseline), or without one its own arm's
    cell of those values, the other axes the `base`'s (flat TrialConfig) values. Each cell holds the arm (with
    arms) and every axis, which is what the trial's params and the analysis's configuration columns show."""
    columns = [*(["arm"] if arms else []), *axes]
    baseline = next((arm for arm, fields in arms.items()
                     if once and all(fields.get(k) == v for k, v in once.items())), None)

    def cell_of(arm: str | None, values: Mapping[str, Any]) -> dict:
        own = {k: v for k, v in arms.get(arm, {}).items() if k in axes}
        cell = {**({"arm": arm} if arms else {}), **values, **own}
        return {k: cell[k] for k in columns}

    cells: list[dict] = []
    for arm in arms or [None]:
        for values in itertools.product(*axes.values()):
            cell = cell_of(arm, dict(zip(axes, values)))
            if once and all(cell.get(k) == v for k, v in once.items()):
                cell = cell_of(baseline if baseline is not None else arm, {k: list(v) if isinstance(v, tuple) else v
                                     for k, v in {**{a: base[a] for a in axes}, **once}.items()})
            if cell not in cells:
                cells.append(cell)
    return tuple(cells)


def seed_major(cells: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[dict]:
    """Every trial's Tune params ({"cell": its configuration, "seed": s}), every configuration's seed before any
    configuration's next seed: Tune starts them in this order (one grid axis: runner.tune_param_space), so whenever a
    sweep stops its finished trials form whole seeds, as far as they can."""
    return [{"cell": dict(cell), "seed": seed} for seed in seeds for cell in cells]


def storage_location(flag: str) -> str:
    """--storage as Tune takes it: a URI (s3://, gs://, ...) as it is, a folder made absolute (and writable).
    A URI is only probed in the preflight: --dry-run stays offline."""
    from synthaug.core.storage import is_uri, storage_problem

    problem = storage_problem(flag)
    if problem:
        raise UsageError(f"--storage {problem}")
    return flag if is_uri(flag) else os.path.abspath(flag)
