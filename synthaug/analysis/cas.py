"""CAS, the classification accuracy score (Ravuri & Vinyals 2019): the project's classifier trained on a
generator's samples only and tested on real test images, overall and class by class, beside the same
recipe trained on the same count of real images (the real-data reference).

    setup = cas_setup(preset("smoke"), "shapes", seed=0)            # K = the preset's real_per_class
    reference = real_reference(dataset, setup, device)              # trained once per fidelity run
    score = classification_accuracy("ddpm-cond", x, y, dataset, setup, device)   # x, y: pool images
    table = cas_table([score], reference, dataset.classes)          # cas.csv: a row a generator x class

The training set of the reference is the real set of a balanced real-only trial of the seed (synthaug.data.mixing:
K images a class, fewer where a class has fewer outside the validation split); a generator's CAS set has the same
count a class (class_counts), taken from its pools by the caller (synthaug.analysis.fidelity: the class conditioned on, or
the pseudo-labeller's class for an unconditional generator). Both are trained by synthaug.models.classifier.Trainer with
the preset's train recipe (TrialConfig.train after with_recipe: epochs, batch, lr, width, optimiser, augmentation,
stem) and the same seed (the same initial weights and data order), and tested on the trials' test images
(select_test with the preset's test_per_class). So with real images in place of samples, CAS is the reference's
accuracy up to the noise of which images were drawn (tests/test_cas.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from synthaug.config import Preset, TrialConfig, with_recipe
from synthaug.data.mixing import plan, real_index, select_test
from synthaug.data.sources import Dataset
from synthaug.models.classifier import Trainer, evaluate

REAL = "real"           # the reference's source name in cas.csv's `generator` column
OVERALL = "all"         # cas.csv's `class` for the accuracy over every test image
COLUMNS = ("generator", "class", "cas", "real_acc", "gap", "train_images", "test_images")


def cas_setup(chosen: Preset, data: str, seed: int, per_class: int | None = None) -> TrialConfig:
    """The balanced real-only trial of `seed` whose real set is the reference and whose recipe every CAS
    classifier uses: real_per_class per_class (None: the preset's; 0: all a class has), the preset's
    validation and test images, its train recipe."""
    return with_recipe(TrialConfig(
        experiment="cas", seed=seed, data=data, imbalance=1.0,
        real_per_class=chosen.real_per_class if per_class is None else per_class,
        test_per_class=chosen.test_per_class, validation_per_class=chosen.validation_per_class,
        recipe=chosen.recipe, train=chosen.train))


def class_counts(dataset: Dataset, setup: TrialConfig) -> list[int]:
    """Images a class in every CAS training set: the reference's (K, or fewer where a class has fewer)."""
    return [p.real_target for p in plan(setup, dataset)]


@dataclass(frozen=True, eq=False)
class Score:
    """A classifier's accuracy on the real test images, trained on one source's images."""

    source: str                 # a generator's name, or REAL
    accuracy: float
    per_class: np.ndarray       # (C,) float64: recall on each class's test images
    train_counts: np.ndarray    # (C,) int64: its training images a class
    test_counts: np.ndarray     # (C,) int64: the test images a class


def classification_accuracy(source: str, x: np.ndarray, y: np.ndarray, dataset: Dataset, setup: TrialConfig,
                            device: str) -> Score:
    """Train setup's recipe with setup's seed on (x, y) alone, then test it on the trials' real test images."""
    trainer = Trainer(setup.train, x, np.asarray(y, np.int64), dataset.num_classes, seed=setup.seed, device=device,
                      progress=False)
    while trainer.epoch < setup.train.epochs:
        trainer.train_epoch()
    test = select_test(dataset, setup.test_per_class)
    result = evaluate(trainer.model, dataset.test_x[test], dataset.test_y[test], dataset.num_classes, device)
    return Score(source, result.accuracy, result.per_class_accuracy,
                 np.bincount(np.asarray(y, np.int64), minlength=dataset.num_classes),
                 np.bincount(dataset.test_y[test], minlength=dataset.num_classes))


def real_reference(dataset: Dataset, setup: TrialConfig, device: str) -> Score:
    """The reference: the same recipe and seed on the real set of setup's trial (class_counts images a class)."""
    index = real_index(setup, dataset)
    return classification_accuracy(REAL, dataset.train_x[index], dataset.train_y[index], dataset, setup, device)


def cas_table(scores: Sequence[Score], reference: Score, classes: Sequence[str]) -> pd.DataFrame:
    """A row a source x (OVERALL, then each class): its accuracy (`cas`; the reference's own rows come first,
    generator REAL), the reference's (`real_acc`), the gap (cas - real_acc, a fraction), its training images."""
    rows = []
    for score in [reference, *scores]:
        rows.append([score.source, OVERALL, score.accuracy, reference.accuracy, score.accuracy - reference.accuracy,
                     int(score.train_counts.sum()), int(score.test_counts.sum())])
        rows += [[score.source, name, score.per_class[c], reference.per_class[c],
                  score.per_class[c] - reference.per_class[c], int(score.train_counts[c]), int(score.test_counts[c])]
                 for c, name in enumerate(classes)]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COLUMNS))


def recipe_text(setup: TrialConfig) -> str:
    """'recipe strong: 2 epochs, batch 32, lr 0.05, width 8, stem cifar, seed 0' for the report."""
    train = setup.train
    return (f"recipe {setup.recipe}: {train.epochs} epochs, batch {train.batch_size}, lr {train.lr:g}, width "
            f"{train.width}, stem {train.stem}, seed {setup.seed}")

