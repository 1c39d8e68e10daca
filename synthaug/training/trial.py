"""The Ray Tune trainable: a configuration in, per-epoch metrics, a checkpoint and artifacts out.

run_trial composes the training set (real images chosen by the seed, synthetic images from
the shared DDPM server), trains the ResNet18 one epoch at a time, evaluates each epoch on the
validation images held out of the training split (val_acc, val_loss: synthaug.data.splits), reports
it to Tune with a checkpoint and logs it to the trial's own MLflow run. The test images are
evaluated once, after the last epoch: test_acc, test_loss, per-class recall, precision and F1,
the confusion matrix and per-sample predictions, logged at the last step and reported to Tune
with done=True only; with the manifest and a grid of the synthetic images it used. Restored
after a crash, it resumes from its last checkpoint and keeps logging into the same MLflow run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune

from synthaug.config import TrialConfig, digest, from_flat, to_flat, trial_values, with_recipe
from synthaug.core import report
from synthaug.core.devices import default_device
from synthaug.core.gates import pass_trial_gate
from synthaug.core.tracking import CELL, SWEEP, TRIAL_ID, RunLogger
from synthaug.data.instances import instance_name
from synthaug.data.mixing import TrainingSet, compose, select_test
from synthaug.data.sources import Dataset
from synthaug.data.splits import validation_index
from synthaug.generation.server import get_server
from synthaug.models.classifier import Evaluation, Trainer, evaluate

ERROR_TAG = "synthaug.error"        # a failed trial's run: the exception that ended its last attempt
RESTARTED_TAG = "synthaug.restarted"    # a trial whose checkpoint was gone: trained again from scratch


# Ray logs a line a checkpoint (an epoch a trial): Tune's status table already says where trials are.
logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)


@dataclass(frozen=True)
class TrialContext:
    """Where a trial finds things: all absolute, resolved on the driver."""

    cache_dir: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep: str
    per_trial: dict = dataclasses.field(default_factory=dict)   # generator -> "subset" or "seed" (synthaug.data.instances)
    generators: dict = dataclasses.field(default_factory=dict)  # name -> its GeneratorSpec, flat: logged by its trials
    checkpoint_every_s: float = 0.0     # Preset.trial_checkpoint_s: 0 checkpoints every epoch
    server_scope: str = ""              # the servers' names' scope (synthaug.generation.server.server_name): "" = the sweep's


@dataclass(frozen=True)
class SweepConstants:
    """What every trial of a sweep shares (passed once through Ray's object store, not in Tune's config,
    so Tune's tables show only the grid): the base configuration, the arms, where things are."""

    base: dict                          # the flat TrialConfig every trial starts from
    arms: dict                          # arm -> its flat TrialConfig fields
    context: TrialContext


def trial_config(params: dict, base: dict, arms: dict) -> TrialConfig:
    """The TrialConfig behind Tune's params (its cell, SweepPlan.cells, and its seed; or those values flat): the
    base, then the trial's arm, then its cell's values, then its recipe's train fields (as plan_sweep built it)."""
    values = trial_values(params)
    arm = arms.get(values.get("arm"), {})
    return with_recipe(from_flat(TrialConfig, {**base, **arm, **values}))


def trial_key(cfg: TrialConfig) -> str:
    """Identifies one trial of a sweep: the digest of its whole configuration, seed included."""
    return digest(to_flat(cfg))[:16]


def cell_key(cfg: TrialConfig) -> str:
    """Identifies a configuration across seeds: the digest of everything but the seed."""
    return digest({k: v for k, v in to_flat(cfg).items() if k != "seed"})[:12]


def run_trial(params: dict, dataset: Dataset, constants: SweepConstants) -> None:
    """A trial; `dataset` and `constants` come through the object store (tune.with_parameters): the driver
    loaded the data once, so --data need exist on the driver's machine only."""
    if "seed" not in trial_values(params):      # Tune's own fallback when it could not restore (tune_snapshot.py)
        raise ValueError("Tune started this trial without a configuration (it could not restore the sweep from its "
                         "storage): rerun the command with --fresh")
    cfg = trial_config(params, constants.base, constants.arms)
    ctx = constants.context
    device = default_device()
    torch.set_num_threads(_assigned_cpus())
    run = RunLogger.for_trial(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, trial_key(cfg),
                              run_name=_run_name(params), tags={SWEEP: ctx.sweep, CELL: cell_key(cfg),
                                                             "synthaug.data_digest": dataset.digest,
                                                             TRIAL_ID: tune.get_context().get_trial_id()})
    metrics = run.finished_metrics
    if metrics is not None:     # done before a crash that Tune could not restore from: report, do not retrain
        tune.report({k: metrics[k] for k in ("test_acc", "val_acc", "train_loss", "train_acc") if k in metrics}
                    | {"epoch": cfg.train.epochs, "done": True, "mlflow_run_id": run.run_id})
        return
    described = {"generator_instance": instance_name(cfg, ctx.per_trial),
                 **{f"generator_spec.{k}": v for k, v in ctx.generators.get(cfg.generator, {}).items()}}
    run.log_params({**to_flat(cfg), **(described if cfg.uses_synthetic else {})})
    try:
        pass_trial_gate(trial_key(cfg))
        training = compose(cfg, dataset, _synthetic_source(cfg, ctx))
        _train(cfg, dataset, training, select_test(dataset, cfg.test_per_class), run, device, ctx.checkpoint_every_s)
    except Exception as err:
        # Tune retries the trial (from its checkpoint); the retry reopens this run. The error stays on it.
        run.set_tags({ERROR_TAG: f"{type(err).__name__}: {err}"[:5000]})
        run.finish("FAILED")
        raise


def _train(cfg: TrialConfig, dataset: Dataset, training: TrainingSet, test_index: np.ndarray,
           run: RunLogger, device: str, checkpoint_every_s: float = 0.0) -> None:
    """Train from the last checkpoint (if any) to the last epoch, reporting every epoch (with its validation
    metrics) and the test metrics once, at the last; a checkpoint at the last epoch and once checkpoint_every_s
    seconds have passed since the last one (0: every epoch)."""
    held_out = validation_index(dataset.train_y, dataset.num_classes, cfg.validation_per_class)
    val_x, val_y = dataset.train_x[held_out], dataset.train_y[held_out]      # copied once, evaluated every epoch
    trainer = Trainer(cfg.train, training.x, training.y, dataset.num_classes, seed=cfg.seed,
                      device=device, progress=False, class_weights=training.class_weights,
                      reference_images=training.reference_images)
    _restore(trainer, tune.get_checkpoint(), run)
    if trainer.epoch == 0:
        run.log_metrics({"train_images": len(training.y), "train_synthetic": int(training.synthetic.sum()),
                         "train_steps_per_epoch": trainer.steps_per_epoch})
    last_checkpoint = time.monotonic()
    while trainer.epoch < cfg.train.epochs:
        metrics = trainer.train_epoch()
        if len(held_out):
            validation = evaluate(trainer.model, val_x, val_y, dataset.num_classes, device)
            metrics |= {"val_acc": validation.accuracy, "val_loss": validation.loss}
        run.log_metrics(metrics, step=trainer.epoch)
        last = trainer.epoch == cfg.train.epochs
        if last:    # the test images, once: nothing chosen during training has seen them
            result = evaluate(trainer.model, dataset.test_x[test_index], dataset.test_y[test_index],
                              dataset.num_classes, device)
            metrics |= {"test_acc": result.accuracy, "test_loss": result.loss}
            _log_final(run, cfg, dataset, training, result, test_index)
            run.finish("FINISHED")
        reported = {**metrics, "epoch": trainer.epoch, "done": last, "mlflow_run_id": run.run_id}
        if not (last or time.monotonic() - last_checkpoint >= checkpoint_every_s):
            tune.report(reported)
            continue
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trainer.state_dict(), Path(folder) / "trainer.pt")
            tune.report(reported, checkpoint=tune.Checkpoint.from_directory(folder))
        last_checkpoint = time.monotonic()


def _restore(trainer: Trainer, checkpoint: tune.Checkpoint | None, run: RunLogger) -> None:
    """Continue from the trial's checkpoint; one that storage no longer holds (a kill -9 between Tune deleting
    an old checkpoint and snapshotting the new one: Ray issue 27790) restarts the trial from scratch in its
    own run, tagged, instead of failing on every rerun."""
    if checkpoint is None:
        return
    try:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(torch.load(Path(folder) / "trainer.pt", weights_only=True))   # no pickle
    except (OSError, EOFError, RuntimeError) as err:
        print(f"checkpoint {checkpoint.path} cannot be read ({type(err).__name__}); training from scratch", flush=True)
        run.set_tags({RESTARTED_TAG: f"{checkpoint.path}: {type(err).__name__}"})


def _log_final(run: RunLogger, cfg: TrialConfig, dataset: Dataset, training: TrainingSet,
               result: Evaluation, test_index: np.ndarray) -> None:
    """The test metrics at the last step (per class: recall as test_acc.<class>, test_precision.<class>,
    test_f1.<class>, NaN where undefined) and the artifacts."""
    per_class = {f"{metric}.{name}": float(value)
                 for metric, values in (("test_acc", result.per_class_accuracy),
                                        ("test_precision", result.per_class_precision),
                                        ("test_f1", result.per_class_f1))
                 for name, value in zip(dataset.classes, values)}
    run.log_metrics({"test_acc": result.accuracy, "test_loss": result.loss, **per_class}, step=cfg.train.epochs)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "manifest.json").write_text(json.dumps(training.manifest, indent=1))
        report.write_confusion(folder, result.confusion, dataset.classes)
        report.write_per_class(folder / "per_class.csv", result, dataset.classes)
        report.write_predictions(folder / "predictions.csv", test_index, dataset.test_y[test_index], result)
        if training.synthetic.any():
            report.save_grid(folder / "synthetic_grid.png", training.x[training.synthetic],
                             training.y[training.synthetic], dataset.classes)
        run.log_artifacts(folder)


def _synthetic_source(cfg: TrialConfig, ctx: TrialContext):
    """take(class_index, n) served by the sweep's shared DDPM server of the trial's generator instance."""
    server = instance_name(cfg, ctx.per_trial)

    def take(class_index: int, n: int):
        return ray.get(get_server(ctx.server_scope or ctx.sweep, server).take.remote(class_index, n, cfg.seed))
    return take


def _assigned_cpus() -> int:
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:  # noqa: BLE001 - outside Ray
        cpus = 1
    return max(1, int(cpus))


def _run_name(params: dict) -> str:
    """The trial's cell (arm and grid values), then its seed (Tune's params hold just those): short, and distinct
    within its sweep, e.g. 'replace_pct=2 seed=0', 'arm=oversample augment_classes=truck seed=1'."""
    flat = trial_values(params)
    values = [f"{key}={'+'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
              for key, v in flat.items() if key != "seed"]
    return " ".join([*values, f"seed={flat.get('seed')}"])
