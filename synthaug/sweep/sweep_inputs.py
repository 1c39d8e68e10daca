"""What a sweep's flags and declared values become, each checked: the preset with the resource flags
and --checkpoint folders or files applied, class names resolved, counts and generators the data can serve.

Used by synthaug.sweep.sweep_plan's plan_sweep; every problem is one line (UsageError for a flag, ConfigError
for a value) before anything starts.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from synthaug.config import ConfigError, Preset, TrialConfig
from synthaug.data.sources import Dataset
from synthaug.sweep.cli import WAIT_FOR_GPUS_S


class UsageError(ValueError):
    """Bad command-line input; one line, exit code 2."""


def with_resources(chosen: Preset, args: argparse.Namespace) -> Preset:
    """The preset with --gpus, --gpus-per-trial and --cpus-per-trial applied (each checked). Without --address
    (a local Ray, which gains no GPUs by waiting) and outside a dry run, GPUs asked for that this machine lacks
    are one line now, before any data is decoded or Ray starts; --wait-for-gpus given there, a note."""
    changes = {}
    for flag, field_name, cast, low in (("gpus", "gpus", int, 0), ("gpus_per_trial", "gpus_per_trial", float, 0),
                                        ("cpus_per_trial", "cpus_per_trial", float, 0.01)):
        value = getattr(args, flag, None)      # the generator job takes --gpus only
        if value is None:
            continue
        try:
            number = cast(value)
        except ValueError:
            number = None
        if number is None or number < low:
            kind = "an integer >= 0" if cast is int else f"a number >= {low:g}"
            raise UsageError(f"--{flag.replace('_', '-')}: {kind}, got {value!r}")
        changes[field_name] = number
    try:
        if float(args.wait_for_gpus) < 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--wait-for-gpus: seconds >= 0, got {args.wait_for_gpus!r}") from None
    chosen = dataclasses.replace(chosen, **changes)
    if getattr(args, "dry_run", False) or args.address:     # a plan, or a cluster's autoscaler brings the GPUs
        return chosen
    if args.wait_for_gpus != WAIT_FOR_GPUS_S:
        print(f"note: --wait-for-gpus {args.wait_for_gpus} does nothing without --address: a local Ray gains no GPUs "
              f"by waiting", flush=True)
    have = local_gpus() if chosen.gpus else 0
    if chosen.gpus and have < chosen.gpus:
        asked = "--gpus" if args.gpus is not None else f"the {chosen.name} preset"
        raise UsageError(f"--gpus: {asked} asks for {chosen.gpus} GPU(s) and this machine has {have} (a local Ray, no "
                         f"--address); pass --gpus 0 to run on its CPUs instead, or --address for a cluster's GPUs")
    return chosen


def local_gpus() -> int:
    """The GPUs this machine's CUDA shows (CUDA_VISIBLE_DEVICES applied; 0 without a driver), asked through NVML
    where torch can: no CUDA context is made."""
    import torch

    return torch.cuda.device_count()


def with_checkpoints(chosen: Preset, flags: Sequence[str], dataset: Dataset) -> Preset:
    """The preset with each --checkpoint NAME=FOLDER generator served from FOLDER (a diffusers UNet2DModel), or
    NAME=FILE.pt from an improved-diffusion file (the study's released models) in place of what it would train
    or load; each checked for the generator's role (unconditional, or conditional on the data's or ImageNet's
    classes)."""
    from synthaug.config import IMAGENET_DIT, RELEASED_SUFFIX
    from synthaug.diffusion.ddpm import checkpoint_problem
    from synthaug.generation.generators import generator_kind

    specs = {g.name: g for g in chosen.generators}
    for flag in flags:
        name, _, given = flag.partition("=")
        spec = specs.get(name)
        released = given.endswith(RELEASED_SUFFIX)
        if not given or spec is None or not (released or generator_kind(spec).takes_checkpoint):
            own = ", ".join(n for n, g in specs.items() if generator_kind(g).takes_checkpoint)
            raise UsageError(f"--checkpoint: NAME=FOLDER with NAME one of {own}, or NAME=FILE{RELEASED_SUFFIX} (an "
                             f"improved-diffusion file) with NAME one of {', '.join(specs)}; got {flag!r}")
        given = str(Path(given).resolve())
        if released:   # a stand-in that learnt from train_data (the smoke E2a's) becomes the ImageNet model
            spec = dataclasses.replace(spec, checkpoint=given, pretrained="", **(
                {"train_data": "", "label_map": IMAGENET_DIT.label_map, "released": IMAGENET_DIT.released}
                if spec.train_data else {}))
            problem = generator_kind(spec).problem(spec, dataset.classes, ())
        else:
            problem = checkpoint_problem(given, spec.conditional, dataset.num_classes)
            spec = dataclasses.replace(spec, checkpoint=given)
        if problem:
            raise UsageError(f"--checkpoint {name}: {problem}")
        specs[name] = spec
    return dataclasses.replace(chosen, generators=tuple(specs.values()))


def check_counts(configs: Sequence[TrialConfig], dataset: Dataset) -> None:
    """Counts the data can give: validation images a class that leave every class training images, n_max no
    larger than the largest class outside the validation split, test images a class no larger than its largest,
    and the withheld real images an augment_source withheld trial adds no more than each class has outside its
    subset and the validation split."""
    import numpy as np

    from synthaug.data.mixing import withheld_problem
    from synthaug.data.splits import training_counts

    held = max(c.validation_per_class for c in configs)
    smallest = int(np.bincount(dataset.train_y, minlength=dataset.num_classes).min())
    if held and held >= smallest:
        raise ConfigError(f"validation_per_class: at most {max(smallest - 1, 0)} (it must leave training images in "
                          f"the smallest class of {dataset.name}; 0 = none), got {held}")
    for name, counts in (("real_per_class", training_counts(dataset.train_y, dataset.num_classes, held)),
                         ("test_per_class", np.bincount(dataset.test_y, minlength=dataset.num_classes))):
        largest = int(counts.max()) if len(counts) else 0
        asked = max(getattr(c, name) for c in configs)
        if asked > largest:
            outside = " outside the validation split" if name == "real_per_class" and held else ""
            raise ConfigError(f"{name}: at most {largest} (the largest class of {dataset.name}{outside}; 0 = all), "
                              f"got {asked}")
    for cfg in configs:
        problem = withheld_problem(cfg, dataset)
        if problem:
            raise ConfigError(problem)


def check_generators(chosen: Preset, used: Sequence[str], configs: Sequence[TrialConfig],
                      dataset: Dataset) -> list[str]:
    """Why a generator the sweep uses cannot serve every class it is asked for, on this machine: one line each
    ("generator NAME: ..."); empty when all can."""
    from synthaug.data.mixing import synthetic_requests
    from synthaug.generation.generators import generator_kind

    problems = []
    for name in used:
        spec = chosen.generator(name)
        served = sorted({c for cfg in configs if cfg.generator == name for c in synthetic_requests(cfg, dataset)})
        problem = generator_kind(spec).problem(spec, dataset.classes, [dataset.classes[c] for c in served
                                                                       if c >= 0])
        if problem:
            problems.append(f"generator {name}: {problem}")
    return problems


def class_aliases(flag: str | None, dataset: Dataset) -> dict[str, str]:
    """The class names a sweep may use for the data's own: --class-map NAME=DATA_CLASS,..., and on the
    built-in shapes the explicit CIFAR-10 alias (synthaug.data.sources.SHAPES_AS_CIFAR10)."""
    from synthaug.data.sources import SHAPES_AS_CIFAR10

    aliases = dict(SHAPES_AS_CIFAR10) if dataset.name == "shapes" else {}
    for item in (flag or "").split(","):
        if not item.strip():
            continue
        name, sep, target = (part.strip() for part in item.partition("="))
        if not sep or not name or target not in dataset.classes:
            raise UsageError(f"--class-map: NAME=CLASS pairs with CLASS one of {', '.join(dataset.classes)}; "
                             f"got {item.strip()!r}")
        aliases[name] = target
    return aliases


def resolve_value(key: str, value: Any, dataset: Dataset, aliases: Mapping[str, str]) -> Any:
    """A fixed, arm or grid value as the trial sees it: augment_classes names classes (the data's own
    names, or names --class-map or the shapes alias maps to them); an index is refused, since a folder
    with other names or another order would silently target another class."""
    if key != "augment_classes":
        return value
    names = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"augment_classes: class names like truck or ship, not indices; got {item!r}")
        if item not in dataset.classes:
            if item not in aliases:
                raise ConfigError(f"augment_classes: {item!r} is not a class of {dataset.name} "
                                  f"({', '.join(dataset.classes)}); name one of them, or map it with "
                                  f"--class-map {item}=<class>")
            item = aliases[item]
        names.append(item)
    return names
