"""What a trial costs on a device, from its recipe and one row of BENCHMARKS.md's throughput table.

A trial's epoch trains its images on its recipe's network (the two stems cost 15x apart in FLOPs, but on
a GPU both are bound by kernel launches: the throughput row has a figure for each) and evaluates the
validation images; its last also the test images; every checkpoint interval it writes its state (synthaug.models.classifier.checkpoint_bytes) to --storage.
Trials sharing a GPU (1 / gpus_per_trial of them) run faster together than one alone by the speed-up the
GPU suite measured, interpolated linearly up to the count it measured best, and no further beyond it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from synthaug.models.classifier import checkpoint_bytes
from synthaug.training.benchmarks import Throughput


@dataclass(frozen=True)
class TrialCost:
    """One trial alone on one device."""

    train_s: float                  # its epochs' training and evaluation
    checkpoint_s: float             # its checkpoints' writing, at the row's bandwidth
    checkpoints: int
    checkpoint_bytes: int           # one checkpoint

    @property
    def seconds(self) -> float:
        return self.train_s + self.checkpoint_s


def trial_cost(train, train_images: int, validation_images: int, test_images: int, num_classes: int,
               throughput: Throughput, every_s: float, sharing: float = 1.0) -> TrialCost:
    """A trial of TrainConfig `train` (its recipe applied) over that many images (validation images evaluated
    every epoch, test images once), checkpointing every `every_s` seconds of its own wall time (0: every epoch)
    and at its last epoch; `sharing` is how many times longer an epoch takes beside the trials sharing its GPU."""
    epoch_s = train_images / throughput.train_images(train.stem) + validation_images / throughput.eval_images
    size = checkpoint_bytes(train, num_classes)
    interval_epochs = 1 if every_s <= 0 else max(1, math.floor(every_s / (epoch_s * sharing)))
    checkpoints = math.ceil(train.epochs / interval_epochs)        # the interval's, the last epoch's
    return TrialCost(train.epochs * epoch_s + test_images / throughput.eval_images,
                     checkpoints * size / (throughput.checkpoint_mib_s * 2**20), checkpoints, size)


def sharing_speedup(per_gpu: int, throughput: Throughput) -> float:
    """How much more `per_gpu` trials sharing one GPU train than one alone: the measured speed-up at the
    measured count, linear from 1 up to it, flat past it."""
    best, speedup = throughput.trials_per_gpu, throughput.sharing_speedup
    if per_gpu <= 1 or best <= 1:
        return 1.0
    return 1 + (speedup - 1) * (min(per_gpu, best) - 1) / (best - 1)


def trials_per_gpu(gpus_per_trial: float) -> int:
    """Trials that share one GPU at that share (a share of a whole GPU or more: 1)."""
    return max(1, int(1 / gpus_per_trial + 1e-9)) if gpus_per_trial > 0 else 1
