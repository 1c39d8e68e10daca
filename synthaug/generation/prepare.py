"""A generator and its pseudo-labeller, ready for a server: loaded, or trained once and cached.

A generator given as a checkpoint (or a pretrained ImageNet pipeline) is loaded as it is; its
digest covers its weights (and, for a pretrained one, its label map and guidance). Otherwise
its DDPM is trained (synthaug.generation.generator_training: resumable, tracked in MLflow) on the real
training split and cached under a key covering the data source, the DDPM recipe and the
training seed, so `sweeps/train_generators.py` and every later sweep find it. A generator that
learns from one trial's real subset (train_on "trial", synthaug.data.instances) is given that
subset, whose digest keys its cache entries. Every
generator also gets a pseudo-labeller (an unconditional one needs it for its labels; a
conditional one is judged by it), cached the same way, and a generator trained here is
evaluated once (FID, KID, labeller agreement) into its MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthaug.config import GeneratorSpec
from synthaug.core.devices import default_device
from synthaug.data.instances import restricted
from synthaug.data.sources import Dataset, load_dataset
from synthaug.diffusion.training import Checkpointing
from synthaug.generation.generator_training import EVALUATION_PER_CLASS, Tracking, evaluate_generator, train_labeller
from synthaug.generation.generators import PreparedGenerator, generator_kind


def prepare_generator(spec: GeneratorSpec, data_source: str, cache_dir: str | Path,
                      device: str | None = None, progress: bool = True, dataset: Dataset | None = None,
                      tracking_uri: str | None = None, policy: Checkpointing = Checkpointing(),
                      evaluation_per_class: int = EVALUATION_PER_CLASS,
                      train_index: np.ndarray | None = None, session: str = "") -> PreparedGenerator:
    """Load or train the generator and labeller that `spec` names; cached under cache_dir.
    `dataset`: data_source already loaded (saves decoding and hashing it again). `train_index`: the
    training images it learns from (synthaug.data.instances; None: all of them). With a tracking
    URI, training is logged to the `generators` experiment and a generator trained here is
    evaluated (evaluation_per_class samples a class) when its run is not finished yet. `session`: the
    command's (synthaug.sweep.interrupt), tagged on the runs it opens."""
    device = device or default_device()
    cache_dir = Path(cache_dir)
    dataset = restricted(dataset or load_dataset(data_source, cache_dir), train_index)
    tracking = Tracking.at(tracking_uri, session) if tracking_uri else None
    kind = generator_kind(spec)
    directory, weights = kind.prepare(spec, dataset, cache_dir, device, tracking, policy, progress)
    evaluated = tracking is not None and kind.trains
    if spec.conditional and not evaluated:     # nothing to label, nothing to judge
        return PreparedGenerator(spec.name, str(directory), weights, True)
    path, labeller_digest, test_acc = prepare_labeller(spec, dataset, cache_dir, device, progress, tracking)
    run_id = ""
    if evaluated:
        evaluate_generator(spec, dataset, cache_dir, device, tracking, path, test_acc, evaluation_per_class)
        run_id = tracking.run_id(Path(directory).name)
    return PreparedGenerator(spec.name, str(directory), weights, spec.conditional, str(path), labeller_digest,
                             test_acc, run_id)


def prepare_labeller(spec: GeneratorSpec, dataset: Dataset, cache_dir: Path, device: str, progress: bool,
                     tracking: Tracking | None = None) -> tuple[Path, str, float]:
    """(path, weights digest, test accuracy) of spec's pseudo-labeller, trained once and cached."""
    return train_labeller(spec, dataset, cache_dir, device, tracking, progress)
