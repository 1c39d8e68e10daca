"""Which trained generator serves a trial: what each generator learned from.

A generator's `train_on` says what real images it (and its pseudo-labeller) learn from:

- "all": the whole training split, as in the study, the validation images (synthaug.data.splits)
  included: one generator a data source whatever a sweep holds out, so its cached weights stay
  valid. One instance serves the whole sweep, named as the generator is. It has seen the
  validation images, so a train_on "all" arm's val_acc may read high: it is the named upper
  bound, not a candidate a choice by val_acc is made among.
- "trial": exactly the real images the trial's classifier may use (its seed's long-tailed
  subset, before replacement: synthaug.data.mixing.real_index, outside the validation split), the
  honest long-tail setting in which the generator never sees a tail-class image the classifier
  does not, nor a validation image. One instance a distinct subset, named
  `<generator>:seed<s>-lt<imbalance>-n<n_max>` (and `-v<validation_per_class>` when one is held
  out), each trained once and cached under its own key (the subset's digest is its data's
  digest), each with its own server.

Independently, `seed_per_trial` gives each trial seed a generator (and labeller) trained from that
seed (`<generator>:train-seed<s>`), so the spread across seeds includes the generator's own
variance; with train_on "trial" the subset's instance is trained from the trial's seed as well.

The instance's name is what a trial asks the server for; its weights digest (and so its pools)
differ from every other instance's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable, Mapping

import numpy as np

from synthaug.config import GeneratorSpec, Preset, TrialConfig, digest
from synthaug.data.sources import Dataset

def subset_tag(cfg: TrialConfig) -> str:
    """The real subset a trial may use, in a name: what decides it (seed, long-tail ratio, n_max, the validation
    images held out)."""
    held = f"-v{cfg.validation_per_class}" if cfg.validation_per_class else ""
    return f"seed{cfg.seed}-lt{cfg.imbalance:g}-n{cfg.real_per_class}{held}"


def base_name(instance: str) -> str:
    """The preset generator an instance is of."""
    return instance.split(":", 1)[0]


def per_trial_generators(preset: Preset) -> dict[str, str]:
    """Generators with one instance a trial seed: name -> "subset" (train_on trial: one a real subset)
    or "seed" (seed_per_trial: the whole split, trained from the trial's seed)."""
    return {g.name: "subset" if g.train_on == "trial" else "seed" for g in preset.generators
            if g.train_on == "trial" or g.seed_per_trial}


def instance_name(cfg: TrialConfig, per_trial: Mapping[str, str]) -> str:
    """The generator instance (and server) that serves cfg."""
    mode = per_trial.get(cfg.generator)
    if mode is None:
        return cfg.generator
    return f"{cfg.generator}:{subset_tag(cfg) if mode == 'subset' else f'train-seed{cfg.seed}'}"


def instances(preset: Preset, configs: Iterable[TrialConfig]) -> dict[str, tuple[GeneratorSpec, TrialConfig | None]]:
    """instance name -> (its spec, renamed, its training seed the trial's when seed_per_trial; the trial
    whose real subset it learns from, None for the whole split), for every generator the configurations
    take synthetic images from, in a stable order."""
    per_trial = per_trial_generators(preset)
    found: dict[str, tuple[GeneratorSpec, TrialConfig | None]] = {}
    for cfg in configs:
        if not cfg.uses_synthetic:
            continue
        name = instance_name(cfg, per_trial)
        if name not in found:
            spec = dataclasses.replace(preset.generator(cfg.generator), name=name)
            if spec.seed_per_trial:
                spec = dataclasses.replace(spec, train_seed=cfg.seed)
            found[name] = (spec, cfg if per_trial.get(cfg.generator) == "subset" else None)
    return dict(sorted(found.items()))


def training_index(cfg: TrialConfig | None, dataset: Dataset) -> np.ndarray | None:
    """The training images an instance learns from: None for the whole split, else the trial's subset."""
    if cfg is None:
        return None
    from synthaug.data.mixing import real_index

    return real_index(cfg, dataset)


def restricted(dataset: Dataset, index: np.ndarray | None) -> Dataset:
    """The data set with its training split cut to `index` (test split kept); its digest names the cut,
    so every cache key built on it (generator, labeller) is the subset's own."""
    if index is None:
        return dataset
    index = np.asarray(index, np.int64)
    cut = hashlib.sha256(index.tobytes()).hexdigest()
    return Dataset(f"{dataset.name}[{len(index)} of {len(dataset.train_y)}]", dataset.classes,
                   dataset.train_x[index], dataset.train_y[index], dataset.test_x, dataset.test_y,
                   digest=digest({"data": dataset.digest, "train_index": cut}))
