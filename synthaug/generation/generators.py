"""Generator kinds, chosen by name from one registry; each kind is one class.

    kind = generator_kind(spec)                 # KINDS[spec.kind]: "ddpm", "checkpoint", "pretrained-dit",
                                                # "improved-diffusion"
    kind.problem(spec, classes, served)         # what it cannot serve here, before Ray starts; None = fine
    kind.source(spec)                           # where its images come from, in words ("" when trained here)
    location, digest = kind.prepare(spec, dataset, cache_dir, device, tracking, policy, progress)
    model = kind.load(location, spec, device)   # a LoadedGenerator: .schedule and .sample(...)

The server, the preparation step, the generator job, the sweep's checks and the fidelity
analysis call this interface; none of them branches on a kind's fields. Adding a kind means
one class here (and the GeneratorSpec fields its settings need).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from synthaug.config import GeneratorSpec
from synthaug.data.sources import Dataset
from synthaug.diffusion.sampling import SamplerConfig


@dataclass(frozen=True)
class PreparedGenerator:
    """Where a ready generator lives and what identifies it."""

    name: str
    directory: str              # a folder load_generator reads (a pipeline folder or hub id when pretrained)
    weights_digest: str
    conditional: bool
    labeller_path: str = ""     # the pseudo-labeller (labels an unconditional generator's samples)
    labeller_digest: str = ""
    labeller_test_acc: float = float("nan")
    run_id: str = ""            # the MLflow run that trained it ("" when loaded, or not tracked)


class LoadedGenerator(ABC):
    """A generator in memory, ready to draw a pool's images."""

    schedule: dict          # the noise schedule's config (num_train_timesteps, beta_schedule, ...)

    @abstractmethod
    def sample(self, sampler: SamplerConfig, seeds: Sequence[int], class_index: int | None,
               classes: Sequence[str], pool_id: str, start: int, batch_size: int, progress: bool,
               autocast: bool | None = None) -> np.ndarray:
        """uint8 (len(seeds), 32, 32, 3): images [start, start + len(seeds)) of pool_id, conditioned on
        class_index (None: unconditional); autocast: bf16 (None: on CUDA only, synthaug.core.devices)."""


class GeneratorKind(ABC):
    """How one kind of generator is obtained, checked and loaded."""

    name: ClassVar[str]
    trains: ClassVar[bool] = False          # prepare trains it (the generator job's work)
    takes_checkpoint: ClassVar[bool] = False  # --checkpoint NAME=FOLDER can replace it (NAME=FILE.pt: any kind)

    @abstractmethod
    def prepare(self, spec: GeneratorSpec, dataset: Dataset, cache_dir: Path, device: str, tracking, policy,
                progress: bool) -> tuple[str, str]:
        """(location load() reads, digest of what makes its images what they are)."""

    @abstractmethod
    def load(self, location: str, spec: GeneratorSpec, device: str) -> LoadedGenerator:
        ...

    def problem(self, spec: GeneratorSpec, classes: Sequence[str], served: Sequence[str]) -> str | None:
        """Why it cannot serve `served` (of the data's `classes`) on this machine, or None."""
        return None

    def source(self, spec: GeneratorSpec) -> str:
        """Where its images come from, for the dry run, the sweep and the sweep run's tags; "" when trained here."""
        return ""

    def sampling_measured(self, spec: GeneratorSpec) -> bool:
        """Whether BENCHMARKS.md's CIFAR UNet throughput prices its sampling (the dry run's estimate)."""
        return True

    def timesteps(self, spec: GeneratorSpec) -> int:
        """Its noise schedule's steps, as the dry run resolves a sampler's default steps against."""
        return spec.ddpm.num_train_timesteps


def conditioning(map_name: str, class_index: int | None, classes: Sequence[str], pool_id: str, start: int,
                 n: int) -> list[int] | None:
    """The class each of images [start, start + n) of a pool is drawn as: none (unconditional), class_index, or,
    through a label map (a model of other classes: ImageNet's, or train_data's), one of the class's classes
    there that image k's own seed picks."""
    from synthaug.diffusion.imagenet import source_labels

    if class_index is None:
        return None
    if map_name:
        return source_labels(map_name, classes[class_index], pool_id, range(start, start + n))
    return [class_index] * n


class _UNet(LoadedGenerator):
    def __init__(self, location: str, spec: GeneratorSpec, device: str):
        from synthaug.diffusion.ddpm import load_generator, load_scheduler_config

        self.unet, _ = load_generator(location, device)
        self.device, self.label_map = device, spec.label_map
        self.schedule = load_scheduler_config(location) or {
            "num_train_timesteps": spec.ddpm.num_train_timesteps, "beta_schedule": spec.ddpm.beta_schedule}

    def sample(self, sampler, seeds, class_index, classes, pool_id, start, batch_size, progress, autocast=None):
        from synthaug.diffusion.sampling import sample

        labels = conditioning(self.label_map, class_index, classes, pool_id, start, len(seeds))
        return sample(self.unet, sampler, seeds, labels, self.device, batch_size=batch_size, progress=progress,
                      scheduler_config=self.schedule, autocast=autocast)


class TrainedDDPM(GeneratorKind):
    """A DDPM trained here on the real training split (synthaug.generation.generator_training), cached; or on
    another source (train_data), asked for the data's classes through its label map."""

    name = "ddpm"
    trains = True
    takes_checkpoint = True

    def prepare(self, spec, dataset, cache_dir, device, tracking, policy, progress):
        from synthaug.generation.generator_training import train_generator

        directory, weights = train_generator(spec, dataset, cache_dir, device, tracking, policy, progress=progress)
        return str(directory), weights

    def load(self, location, spec, device):
        return _UNet(location, spec, device)

    def problem(self, spec, classes, served):
        if not spec.train_data:
            return None
        from synthaug.data.sources import DataError, resolve_source
        from synthaug.diffusion.imagenet import label_map, unmapped

        try:
            resolve_source(spec.train_data)
        except DataError as err:
            return f"train_data: {err}"
        problem = unmapped(spec.label_map, served, spec.train_data)
        return f"{problem} (it serves {', '.join(label_map(spec.label_map))})" if problem else None

    def source(self, spec):
        return (f"a DDPM trained here on {spec.train_data}, never on the sweep's data, asked for each class's "
                f"{spec.train_data} classes through label map {spec.label_map}") if spec.train_data else ""


class DDPMCheckpoint(GeneratorKind):
    """A diffusers UNet2DModel folder brought by the user (e.g. google/ddpm-cifar10-32), used as it is."""

    name = "checkpoint"
    takes_checkpoint = True

    def prepare(self, spec, dataset, cache_dir, device, tracking, policy, progress):
        from synthaug.diffusion.ddpm import load_generator, weights_digest

        model, _ = load_generator(spec.checkpoint, "cpu")
        return str(Path(spec.checkpoint)), weights_digest(model)

    def load(self, location, spec, device):
        return _UNet(location, spec, device)

    def problem(self, spec, classes, served):
        from synthaug.diffusion.ddpm import checkpoint_problem

        return checkpoint_problem(spec.checkpoint, spec.ddpm.conditional, len(classes))

    def source(self, spec):
        return f"the diffusers UNet2DModel folder {spec.checkpoint}"


class _Pipeline(LoadedGenerator):
    def __init__(self, location: str, spec: GeneratorSpec, device: str):
        from synthaug.diffusion.imagenet import load_pipeline

        self.pipeline = load_pipeline(location, device)
        self.schedule = dict(self.pipeline.scheduler.config)
        self.spec, self.device = spec, device

    def sample(self, sampler, seeds, class_index, classes, pool_id, start, batch_size, progress, autocast=None):
        """Each image as one of its CIFAR class's ImageNet classes (the label map), chosen by its seed."""
        from synthaug.diffusion.imagenet import sample_pipeline, source_labels

        labels = source_labels(self.spec.label_map, classes[class_index], pool_id, range(start, start + len(seeds)))
        return sample_pipeline(self.pipeline, sampler, seeds, labels, self.device,
                               guidance_scale=self.spec.guidance_scale, batch_size=batch_size, autocast=autocast)


class PretrainedDiT(GeneratorKind):
    """A pretrained ImageNet class-conditional DiTPipeline (E2a), through a CIFAR -> ImageNet label map,
    its images resized to 32x32; from a folder or the local hub cache, never downloaded."""

    name = "pretrained-dit"

    def prepare(self, spec, dataset, cache_dir, device, tracking, policy, progress):
        from synthaug.diffusion.imagenet import load_pipeline, pipeline_digest

        return spec.pretrained, pipeline_digest(load_pipeline(spec.pretrained, "cpu"), spec.label_map,
                                                spec.guidance_scale)

    def load(self, location, spec, device):
        return _Pipeline(location, spec, device)

    def problem(self, spec, classes, served):
        from synthaug.diffusion.imagenet import unavailable

        return unavailable(spec.pretrained, spec.label_map, served)

    def source(self, spec):
        return (f"the pretrained {spec.pretrained}, a substitute for the study's ImageNet 64x64 model (improved-"
                f"diffusion's, which --checkpoint {spec.name}=FILE.pt serves)")

    def sampling_measured(self, spec):
        return False


class _Released(LoadedGenerator):
    def __init__(self, location: str, spec: GeneratorSpec, device: str):
        from synthaug.diffusion.improved_unet import load_released

        self.model, self.shape = load_released(location, device, spec.released.num_heads)
        self.schedule = {"num_train_timesteps": spec.released.diffusion_steps,
                         "noise_schedule": spec.released.noise_schedule,
                         "rescale_timesteps": spec.released.rescale_timesteps}
        self.spec, self.device = spec, device

    def sample(self, sampler, seeds, class_index, classes, pool_id, start, batch_size, progress, autocast=None):
        """An ImageNet model's image k as one of its CIFAR class's ImageNet classes (the label map), chosen by
        its seed; another conditional file's as class_index itself."""
        from synthaug.diffusion.improved_sampling import sample_released

        labels = conditioning(self.spec.label_map, class_index, classes, pool_id, start, len(seeds))
        return sample_released(self.model, self.shape.image_size, self.shape.learn_sigma, self.spec.released,
                               sampler, seeds, labels, self.device, batch_size=batch_size, autocast=autocast)


class ReleasedImprovedDiffusion(GeneratorKind):
    """An improved-diffusion .pt file (a plain state_dict, such as the study's released CIFAR-10 and ImageNet
    64x64 models) in our copy of its UNet (diffusion/improved_unet), sampled with its learned variances
    (diffusion/improved_sampling); `released` says what the file does not: its schedule and steps."""

    name = "improved-diffusion"
    takes_checkpoint = True

    def prepare(self, spec, dataset, cache_dir, device, tracking, policy, progress):
        import dataclasses
        import hashlib

        from synthaug.diffusion.ddpm import weights_digest
        from synthaug.diffusion.improved_unet import load_released

        model, _ = load_released(spec.checkpoint, "cpu", spec.released.num_heads)
        what = f"{weights_digest(model)}|{sorted(dataclasses.asdict(spec.released).items())}|{spec.label_map}"
        return str(Path(spec.checkpoint)), hashlib.sha256(what.encode()).hexdigest()

    def load(self, location, spec, device):
        return _Released(location, spec, device)

    def problem(self, spec, classes, served):
        from synthaug.diffusion.imagenet import label_map, unmapped
        from synthaug.diffusion.improved_unet import released_shape

        path = spec.checkpoint
        if not Path(path).is_file():
            return f"{path!r} is not a file"
        try:
            shape = released_shape(path, spec.released.num_heads)
        except ValueError as err:
            return f"{path!r} is not improved-diffusion's UNetModel: {err}"
        if shape.num_classes is None:
            return None if not spec.conditional else (
                f"{path!r} is unconditional; generator {spec.name} is class-conditional (on "
                + (f"ImageNet's classes through label map {spec.label_map})" if spec.label_map
                   else f"the data's {len(classes)} classes)"))
        if not spec.conditional:
            return f"{path!r} is conditional on {shape.num_classes} classes; generator {spec.name} is unconditional"
        if not spec.label_map:
            return None if shape.num_classes == len(classes) else (
                f"{path!r} is conditional on {shape.num_classes} classes; generator {spec.name} is class-conditional "
                f"on the data's {len(classes)} classes (an ImageNet model needs a label_map)")
        mapping = label_map(spec.label_map)
        highest = max(i for c in mapping.values() for i in c)
        if highest >= shape.num_classes:
            return (f"{path!r} is conditional on {shape.num_classes} classes; label map {spec.label_map} asks for "
                    f"ImageNet class {highest} (the 1000 classes of the class-conditional ImageNet 64x64 model)")
        return unmapped(spec.label_map, served)

    def source(self, spec):
        flags = spec.released
        return (f"the file {spec.checkpoint}, assumed trained with {flags.diffusion_steps} steps, the "
                f"{flags.noise_schedule} schedule, rescale_timesteps {flags.rescale_timesteps}")

    def sampling_measured(self, spec):
        """A 32x32 file (the CIFAR-10 model's size); not a 64x64 one (the ImageNet model: 270M parameters)."""
        from synthaug.diffusion.improved_unet import released_shape

        return released_shape(spec.checkpoint, spec.released.num_heads).image_size == 32

    def timesteps(self, spec):
        return spec.released.diffusion_steps


KINDS: dict[str, GeneratorKind] = {kind.name: kind for kind in (TrainedDDPM(), DDPMCheckpoint(), PretrainedDiT(),
                                                                ReleasedImprovedDiffusion())}


def generator_kind(spec: GeneratorSpec) -> GeneratorKind:
    return KINDS[spec.kind]

