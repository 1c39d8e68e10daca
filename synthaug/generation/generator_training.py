"""A generator and its pseudo-labeller, trained as jobs: cached, resumable, tracked in MLflow.

Both `sweeps/train_generators.py` and a sweep's preparation step train through here, under
the same cache keys, so whichever runs first trains and the other finds the result:

    cache/generators/<name>-<key>/                  the finished generator (diffusers folder)
    cache/generators/<name>-<key>.checkpoint.pt     its training checkpoint, while it trains
    cache/labellers/<key>/labeller.pt               the finished pseudo-labeller
    cache/labellers/<key>/checkpoint.pt             its checkpoint (one an epoch), while it trains

Killed and rerun (or retried by Ray after a lost node), a job continues from its last
checkpoint. Each generator training and each labeller has one MLflow run in the
`generators` experiment, found again by its cache key (tag synthaug.artifact_key) when the
job resumes: the training settings as params, the loss and images/s every log_every steps,
a sample grid every grid_every steps and at the end, then the fidelity figures (FID and KID
against real test images, the labeller's agreement with a conditional generator's classes
or its class shares for an unconditional one, the labeller's test accuracy).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from filelock import FileLock

from synthaug.config import GeneratorSpec, TrainConfig, digest, to_flat
from synthaug.core.files import DamagedFile, atomic_torch_save, atomic_write
from synthaug.core.progress import Progress
from synthaug.core.tracking import ROLE, RunLogger, ensure_experiment
from synthaug.data.sources import Dataset, class_permutations, load_dataset, resolve_source, source_digest
from synthaug.diffusion.ddpm import load_generator, load_scheduler_config, save_generator, weights_digest
from synthaug.diffusion.imagenet import label_map, source_labels
from synthaug.diffusion.sampling import image_seed, sample
from synthaug.diffusion.training import Checkpointing, DDPMTraining
from synthaug.models.classifier import Trainer, evaluate, predict
from synthaug.models.labeller import checked_labeller, load_labeller

GENERATORS_EXPERIMENT = "generators"    # MLflow experiment of every generator and labeller run
GENERATORS_DESCRIPTION = (
    "Generator and pseudo-labeller trainings (sweeps/train_generators.py and every sweep's preparation): one run "
    "a cache key (tag `synthaug.artifact_key`, role `generator` or `labeller`), trained once and reused by every "
    "sweep that names it. Metrics: the training loss and images/s by step, then the fidelity figures (FID/KID "
    "against real test images, the labeller's agreement or class shares) and a labeller's `test_acc` (a fraction); "
    "sample grids as artifacts.")
ARTIFACT_KEY = "synthaug.artifact_key"  # tag: the cache key a run trained (finds it again on resume)
GRID_SEEDS = 64                         # an unconditional grid's images (8 a class when conditional)
ACCEPTANCE_THRESHOLDS = (0.5, 0.7, 0.9)  # confidence filters whose acceptance an evaluation reports
EVALUATION_PER_CLASS = 100              # samples a class behind FID/KID at the end (FID-1k at 10 classes)


@dataclass(frozen=True)
class Tracking:
    """Where generator and labeller runs go."""

    uri: str
    experiment_id: str
    session: str = ""           # the command's (synthaug.sweep.interrupt): an interrupted one ends the runs it left RUNNING

    @classmethod
    def at(cls, uri: str, session: str = "") -> "Tracking":
        return cls(uri, ensure_experiment(uri, GENERATORS_EXPERIMENT, GENERATORS_DESCRIPTION), session)

    def open(self, key: str, role: str, run_name: str) -> RunLogger:
        """The run that trains `key`: found again (reopened unless finished), else created; an open one is
        tagged with the session that (re)opened it."""
        from synthaug.core.tracking import SESSION_TAG

        run = RunLogger.reopen_or_create(self.uri, self.experiment_id, f"tags.`{ARTIFACT_KEY}` = '{key}'", run_name,
                                         {ARTIFACT_KEY: key, ROLE: role})
        if self.session and run.finished_metrics is None:
            run.set_tags({SESSION_TAG: self.session})
        return run

    def run_id(self, key: str) -> str:
        found = RunLogger(self.uri, "").client.search_runs(
            [self.experiment_id], f"tags.`{ARTIFACT_KEY}` = '{key}'", max_results=1)
        return found[0].info.run_id if found else ""


# ---------------------------------------------------------------------------- cache keys


def generator_key(spec: GeneratorSpec, dataset: Dataset) -> str:
    """The trained generator's identity: its data (dataset's, or spec.train_data's), its DDPM recipe, its
    training seed (not its name: two generators of one preset that differ only in sampling or filtering share
    the weights)."""
    kind = "ddpm-cond" if spec.ddpm.conditional else "ddpm-uncond"
    data = source_digest(resolve_source(spec.train_data)) if spec.train_data else dataset.digest
    return f"{kind}-" + digest({"data": data, "ddpm": spec.ddpm, "seed": spec.train_seed})[:16]


def generator_dir(spec: GeneratorSpec, dataset: Dataset, cache_dir: Path) -> Path:
    return Path(cache_dir) / "generators" / generator_key(spec, dataset)


def labeller_key(spec: GeneratorSpec, dataset: Dataset) -> str:
    recipe, index = labeller_recipe(spec, dataset.train_y, dataset.num_classes)
    balanced = len(index) > len(np.unique(index))
    return digest({"data": dataset.digest, "train": recipe, "per_class": spec.labeller_per_class,
                   "seed": spec.train_seed, **({"classes": "balanced by repetition"} if balanced else {})})[:16]


def labeller_recipe(spec: GeneratorSpec, labels: np.ndarray, num_classes: int) -> tuple[TrainConfig, np.ndarray]:
    """The labeller's recipe and the training images it learns from (indices into the training split whose
    labels are `labels`).

    On balanced classes: spec.labeller on labeller_per_class images a class (all when 0). When they are
    unequal across classes (a long-tailed subset, train_on "trial"), every class is repeated (cycled in its
    seeded order) up to the largest class's count, so the labeller sees each class equally often and names
    tail classes instead of calling every sample a head class; and it takes as many optimizer steps as on a
    balanced set of labeller_per_class a class (else the largest class's count), its epochs scaled to match."""
    index = _per_class_subset(labels, num_classes, spec.labeller_per_class, spec.train_seed)
    counts = np.bincount(labels[index], minlength=num_classes)
    present = counts[counts > 0]
    if np.all(present == present[0]):
        return spec.labeller, index
    largest = int(present.max())
    balanced = np.concatenate([np.resize(index[labels[index] == c], largest) for c in range(num_classes) if counts[c]])
    epochs = math.ceil(spec.labeller.epochs * max(spec.labeller_per_class, largest) / largest)
    return dataclasses.replace(spec.labeller, epochs=epochs), np.sort(balanced)


def labeller_path(spec: GeneratorSpec, dataset: Dataset, cache_dir: Path) -> Path:
    return Path(cache_dir) / "labellers" / labeller_key(spec, dataset) / "labeller.pt"


# ---------------------------------------------------------------------------- the generator


def trained_generator(spec: GeneratorSpec, dataset: Dataset, cache_dir: Path, *, verify: bool
                      ) -> tuple[Path, str] | None:
    """(folder, weights digest) of the finished generator in the cache, else None. `verify`: its weights
    are loaded and checked against weights.sha256 (DamagedFile, one line, when they differ or do not load)."""
    directory = generator_dir(spec, dataset, cache_dir)
    digest_file = directory / "weights.sha256"
    if not digest_file.exists():
        return None
    expected = digest_file.read_text().strip()
    if verify:
        try:
            found = weights_digest(load_generator(directory, "cpu")[0])
        except (OSError, ValueError, RuntimeError) as err:
            found = f"unreadable: {str(err).splitlines()[0][:120]}"
        if found != expected:
            raise DamagedFile(f"generator {directory} is damaged (its weights {found[:16]} do not match "
                              f"weights.sha256 {expected[:16]}); delete the folder to train it again")
    return directory, expected


def train_generator(spec: GeneratorSpec, dataset: Dataset, cache_dir: Path, device: torch.device | str,
                    tracking: Tracking | None, policy: Checkpointing, rank: int = 0, world_size: int = 1,
                    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                    gather_rng: Callable[[], list[dict]] | None = None, autocast: bool | None = None,
                    progress: bool = True) -> tuple[Path, str]:
    """Train spec's DDPM (resuming from its checkpoint) unless it is cached; (folder, weights digest).
    With world_size > 1 every rank calls this; rank 0 logs, checkpoints and saves. It learns from `dataset`, or
    from spec.train_data (loaded here, every rank) when the spec names one."""
    if spec.train_data:
        dataset = load_dataset(spec.train_data, cache_dir)
    directory = generator_dir(spec, dataset, cache_dir)
    with _exclusive(directory, rank):               # two sweeps (or preparations) train it once
        return _train_generator(spec, dataset, cache_dir, device, tracking, policy, rank, world_size, wrap,
                                gather_rng, autocast, progress)


def _train_generator(spec, dataset, cache_dir, device, tracking, policy, rank, world_size, wrap, gather_rng,
                     autocast, progress) -> tuple[Path, str]:
    done = trained_generator(spec, dataset, cache_dir, verify=rank == 0)   # one rank reads and checks the weights
    if done:
        return done
    directory = generator_dir(spec, dataset, cache_dir)
    checkpoint = directory.with_name(directory.name + ".checkpoint.pt")
    labels = dataset.train_y if spec.ddpm.conditional else None
    training = DDPMTraining(spec.ddpm, dataset.train_x, labels, spec.train_seed, device, rank, world_size,
                            autocast, wrap)
    run = tracking.open(directory.name, "generator", f"generator {directory.name}") if tracking and rank == 0 else None
    on_grid = None
    if run is not None:
        def log_grid(step: int, ema: torch.nn.Module) -> None:
            log_sample_grid(run, ema, spec, dataset.classes, step, training.device)

        run.log_params({**{f"ddpm.{k}": v for k, v in to_flat(spec.ddpm).items()},
                        "generator": spec.name, "data": dataset.name, "data_digest": dataset.digest[:16],
                        "train_seed": spec.train_seed, "train_images": len(dataset.train_y),
                        "workers": world_size, "effective_batch": spec.ddpm.batch_size,
                        "batch_per_worker": spec.ddpm.batch_size // world_size, "lr": spec.ddpm.lr,
                        "device": training.device.type, "bf16_autocast": training.autocast,
                        "deterministic": torch.are_deterministic_algorithms_enabled(),
                        "parameters": sum(p.numel() for p in training.model.parameters()),
                        "checkpoint_every": policy.every_steps, "checkpoint_every_s": policy.every_seconds})
        on_grid = log_grid
    shown = Progress(f"training generator {spec.name} ({directory.name}, {training.device.type})",
                     spec.ddpm.train_steps, "steps") if progress and rank == 0 else None

    def on_log(step: int, metrics: dict) -> None:
        if run is not None:
            run.log_metrics(metrics, step=step)
        if shown is not None:
            shown.update(step, f"loss {metrics['loss']:.4f}")

    try:
        model = training.run(checkpoint, policy, on_log=on_log, on_grid=on_grid, gather_rng=gather_rng)
    except BaseException as stop:       # an error, or its process stopped: not left RUNNING
        if run is not None:     # a cancelled task (KeyboardInterrupt), a worker Ray stops (SystemExit): KILLED
            run.finish("FAILED" if isinstance(stop, Exception) else "KILLED")
        raise
    if rank != 0:
        return directory, ""
    weights = save_generator(model, spec.ddpm, directory)
    atomic_write(directory / "weights.sha256", weights.encode())
    checkpoint.unlink(missing_ok=True)
    if run is not None:
        log_sample_grid(run, model, spec, dataset.classes, spec.ddpm.train_steps, training.device)
        run.set_tags({"synthaug.weights_digest": weights})
    return directory, weights


def log_sample_grid(run: RunLogger, unet, spec: GeneratorSpec, classes, step: int, device) -> None:
    """Images from fixed seeds (GRID_SEEDS, or 8 a class when conditional) as samples/step_<step>.png."""
    from synthaug.core.report import save_grid

    conditional = unet.config.num_class_embeds is not None
    rows = len(classes) if conditional else GRID_SEEDS // 8
    labels = np.repeat(np.arange(rows), 8)
    seeds = [image_seed("sample-grid", i) for i in range(len(labels))]
    images = sample(unet, spec.sampler, seeds, labels if conditional else None, device, progress=False,
                    num_train_timesteps=spec.ddpm.num_train_timesteps, beta_schedule=spec.ddpm.beta_schedule)
    names = list(classes[:rows]) if conditional else [""] * rows
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"step_{step:07d}.png"
        save_grid(path, images, labels, names, title=f"{spec.name} (EMA) at step {step}")
        run.log_artifacts(folder, "samples")


# ---------------------------------------------------------------------------- the pseudo-labeller


def train_labeller(spec: GeneratorSpec, dataset: Dataset, cache_dir: Path, device: str,
                   tracking: Tracking | None, progress: bool = True) -> tuple[Path, str, float]:
    """(path, weights digest, test accuracy) of spec's pseudo-labeller: cached, else trained,
    resuming by epoch from its checkpoint."""
    path = labeller_path(spec, dataset, cache_dir)
    with _exclusive(path.parent, 0):
        if path.exists():
            saved = checked_labeller(path)
            return path, saved["digest"], saved["test_acc"]
        return _train_labeller(spec, dataset, path, device, tracking, progress)


def _train_labeller(spec: GeneratorSpec, dataset: Dataset, path: Path, device: str, tracking: Tracking | None,
                    progress: bool) -> tuple[Path, str, float]:
    checkpoint = path.with_name("checkpoint.pt")
    recipe, index = labeller_recipe(spec, dataset.train_y, dataset.num_classes)
    repeated = len(index) > len(np.unique(index))
    trainer = Trainer(recipe, dataset.train_x[index], dataset.train_y[index], dataset.num_classes,
                      seed=spec.train_seed, device=device, progress=False)
    shown = Progress(f"training the labeller of {spec.name} ({path.parent.name}, {len(index)} images)",
                     recipe.epochs, "epochs") if progress else None
    if checkpoint.exists():
        trainer.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        print(f"labeller {path.parent.name}: resuming at epoch {trainer.epoch} of {recipe.epochs}", flush=True)
    run = tracking.open(f"labeller-{path.parent.name}", "labeller", f"labeller {path.parent.name}") if tracking else None
    if run is not None:
        run.log_params({**{f"train.{k}": v for k, v in to_flat(recipe).items()},
                        "data": dataset.name, "train_images": len(index), "per_class": spec.labeller_per_class,
                        "train_seed": spec.train_seed, "device": str(device),
                        "classes": "balanced by repetition" if repeated else "as they are"})
    if shown is not None:
        shown.update(trainer.epoch)
    while trainer.epoch < recipe.epochs:
        metrics = trainer.train_epoch()
        if run is not None:
            run.log_metrics(metrics, step=trainer.epoch)
        if shown is not None:
            shown.update(trainer.epoch, f"train_loss {metrics['train_loss']:.3f}")
        atomic_torch_save(trainer.state_dict(), checkpoint)
    result = evaluate(trainer.model, dataset.test_x, dataset.test_y, dataset.num_classes, device)
    state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    labeller_digest = weights_digest(trainer.model)
    atomic_torch_save({"state_dict": state, "width": recipe.width, "stem": recipe.stem,
                       "num_classes": dataset.num_classes,
                       "classes": list(dataset.classes), "test_acc": result.accuracy, "digest": labeller_digest}, path)
    checkpoint.unlink(missing_ok=True)
    if run is not None:
        run.log_metrics({"test_acc": result.accuracy, **{f"test_acc.{c}": float(a) for c, a in
                                                        zip(dataset.classes, result.per_class_accuracy)}},
                        step=recipe.epochs)
        run.set_tags({"synthaug.weights_digest": labeller_digest})
        run.finish("FINISHED")
    return path, labeller_digest, result.accuracy


@contextmanager
def _exclusive(target: Path, rank: int) -> Iterator[None]:
    """One process at a time trains `target` (rank 0 of a data-parallel run holds it for all)."""
    if rank != 0:
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        yield


def _per_class_subset(labels: np.ndarray, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    orders = class_permutations(labels, num_classes, seed)
    return np.sort(np.concatenate([order[:per_class] if per_class else order for order in orders]))


# ---------------------------------------------------------------------------- what it learned


def evaluate_generator(spec: GeneratorSpec, dataset: Dataset, cache_dir: Path, device: str,
                       tracking: Tracking, labeller: Path, labeller_test_acc: float, per_class: int) -> dict:
    """FID and KID against real test images, named by their feature space (fid_inception or
    fid_labeller_features: FeatureSpace.metric_name), and the labeller's view of per_class samples a class,
    logged to the generator's run, which it then finishes; {} when that run is finished already."""
    from synthaug.generation.feature_spaces import feature_space
    from synthaug.generation.image_metrics import fid, kid

    key = generator_key(spec, dataset)
    run = tracking.open(key, "generator", f"generator {key}")
    if run.finished_metrics is not None:
        return run.finished_metrics
    unet, _ = load_generator(generator_dir(spec, dataset, cache_dir), device)
    conditional = unet.config.num_class_embeds is not None
    # the classes it can be asked for: every class, or those its label map gives classes of its train_data
    judged = [i for i, c in enumerate(dataset.classes) if not spec.label_map or label_map(spec.label_map).get(c)]
    n = per_class * len(judged)
    intended = np.repeat(np.array(judged, dtype=np.int64), per_class)
    seeds = [image_seed(f"evaluation:{key}", i) for i in range(n)]
    asked = intended if not spec.label_map else np.array(
        [source_labels(spec.label_map, dataset.classes[c], f"evaluation:{key}", [k])[0] for k, c in enumerate(intended)])
    scheduler_config = load_scheduler_config(generator_dir(spec, dataset, cache_dir))
    shown = Progress(f"scoring generator {spec.name} ({key}): sampling", n, "images")
    shown.update(0)
    batches = []
    # batch by batch, for the progress lines: image k comes from its own seed whatever the batch
    for start in range(0, n, spec.sample_batch_size):
        chunk = slice(start, start + spec.sample_batch_size)
        batches.append(sample(unet, spec.sampler, seeds[chunk], asked[chunk] if conditional else None, device,
                              batch_size=spec.sample_batch_size, progress=False, scheduler_config=scheduler_config))
        shown.update(min(start + spec.sample_batch_size, n))
    images = np.concatenate(batches) if batches else np.zeros((0, 32, 32, 3), dtype=np.uint8)
    model = load_labeller(labeller, device)
    probs = predict(model, images, device)
    predicted = probs.argmax(1)
    space = feature_space(model, device)
    real = dataset.test_x[np.sort(np.random.default_rng(0).permutation(len(dataset.test_x))[:max(n, 2)])]
    print(f"scoring generator {spec.name} ({key}): {space.name} features of {n} samples and {len(real)} real "
          f"test images, then FID and KID", flush=True)
    fake_f, real_f = space.extract(images), space.extract(real)
    kid_mean, kid_sd = kid(fake_f, real_f)      # as many real as generated images: one subset, no sd (nan)
    metrics = {space.metric_name("fid"): fid(fake_f, real_f), space.metric_name("kid"): kid_mean,
               "labeller_test_acc": labeller_test_acc, "labeller_confidence": float(probs.max(1).mean())}
    if np.isfinite(kid_sd):
        metrics[space.metric_name("kid_sd")] = kid_sd
    if conditional:
        metrics["labeller_agreement"] = float((predicted == intended).mean())
        metrics.update({f"labeller_agreement.{dataset.classes[i]}": float((predicted[intended == i] == i).mean())
                        for i in judged})
    else:
        metrics.update({f"labeller_share.{c}": float((predicted == i).mean()) for i, c in enumerate(dataset.classes)})
        # what a confidence filter (GeneratorSpec.min_confidence) at each threshold would keep
        metrics.update({f"acceptance_at_{t:g}": float((probs.max(1) >= t).mean()) for t in ACCEPTANCE_THRESHOLDS})
    run.log_params({"evaluation.samples": n, "evaluation.real": len(real), "evaluation.features": space.name,
                    "evaluation.fid_comparable_with_published": space.comparable})
    run.log_metrics(metrics, step=spec.ddpm.train_steps)
    run.finish("FINISHED")
    return metrics
