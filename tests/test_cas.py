"""CAS (synthaug.analysis.cas) against planted generators: one whose pool holds real training images (CAS must be the
real-data reference's accuracy, within noise) and one whose pool holds noise (CAS must be near chance).

The planted pools go where a generator's pools go (synthaug.analysis.fidelity.take_per_class reads them as it reads a
DDPMServer's), then through the same function that scores every generator. A small shapes set, 10 classes, the
tiny preset's recipe at 6 epochs (2 learn little from 300 images): three classifiers, 15 s each on this shared 2-core
machine at load average 3 (96 s for the module at load 11-17).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from synthaug.analysis.cas import (OVERALL, REAL, cas_setup, cas_table, class_counts, classification_accuracy,
                                   real_reference)
from synthaug.analysis.fidelity import take_per_class
from synthaug.config import preset
from synthaug.data.shapes import SHAPE_CLASSES, make_shapes
from synthaug.data.sources import Dataset
from synthaug.data.splits import training_orders
from synthaug.pools.store import PoolSlice

PER_CLASS = 30          # CAS's images a class, and the reference's
TEST_PER_CLASS = 40     # 400 test images: a binomial sd of about 2 pp at 80%


class PlantedPools:
    """A 'generator' whose class-c pool is the given images of class c, in order (DDPMServer.take's shape)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def take(self, class_index: int, n: int, seed: int) -> PoolSlice:
        where = np.flatnonzero(self.labels == class_index)[:n]
        return PoolSlice("planted", np.arange(len(where)), self.images[where], self.labels[where],
                         np.ones(len(where), np.float32))


@pytest.fixture(scope="module")
def setting():
    train_x, train_y, test_x, test_y = make_shapes(seed=5, train_per_class=80, test_per_class=TEST_PER_CLASS)
    dataset = Dataset("shapes-cas", SHAPE_CLASSES, train_x, train_y, test_x, test_y, digest="cas-test")
    tiny = preset("tiny")
    chosen = dataclasses.replace(tiny, test_per_class=TEST_PER_CLASS, train=dataclasses.replace(tiny.train, epochs=6))
    setup = cas_setup(chosen, "shapes", seed=0, per_class=PER_CLASS)
    return dataset, setup, real_reference(dataset, setup, "cpu")


def test_cas_trains_the_presets_recipe_on_its_real_set_count_unless_told_a_count():
    tiny, paper = preset("tiny"), preset("paper")
    assert cas_setup(tiny, "shapes", seed=0).real_per_class == tiny.real_per_class == 20
    assert cas_setup(tiny, "shapes", seed=0, per_class=7).real_per_class == 7
    setup = cas_setup(paper, "cifar10", seed=3)            # the study recipe: plain SGD, no augmentation
    assert (setup.seed, setup.recipe, setup.train.epochs, setup.train.momentum, setup.train.augment) == (
        3, "study", paper.train.epochs, 0.0, False)
    assert (setup.imbalance, setup.replace_pct, setup.augment_count) == (1.0, 0.0, 0)     # a real-only trial


def test_a_generator_whose_samples_are_real_images_scores_the_real_data_accuracy(setting):
    """The planted pool holds the real training images that follow the reference's in each class's seeded order
    (none of them the reference's, none a validation image). The two classifiers then share the recipe, the seed
    (initial weights, data order), the count a class and the test images, and differ only in which real images
    they saw. Allowed: 4 sd of the difference of two independent binomial accuracies on the test images,
    4 sqrt(2 p (1 - p) / n), about 11 pp at p = 0.8, n = 400 (training on another draw of 30 images a class adds
    noise of its own: gaps of 2 to 8 pp over four draws when this was written)."""
    dataset, setup, reference = setting
    counts = class_counts(dataset, setup)
    assert counts == [PER_CLASS] * 10 and reference.train_counts.tolist() == counts
    orders = training_orders(dataset.train_y, dataset.num_classes, setup.seed, setup.validation_per_class)
    withheld = np.concatenate([order[PER_CLASS:] for order in orders])
    pools = PlantedPools(dataset.train_x[withheld], dataset.train_y[withheld])
    images, labels, short = take_per_class(pools, counts, setup.seed, dataset.classes)
    assert short == [] and np.bincount(labels).tolist() == counts
    planted = classification_accuracy("real-images", images, labels, dataset, setup, "cpu")

    n, p = int(reference.test_counts.sum()), reference.accuracy
    assert n == 10 * TEST_PER_CLASS and p > 0.5, p          # it learns: the chance case below can be told apart
    tolerance = 4 * math.sqrt(2 * p * (1 - p) / n)
    assert abs(planted.accuracy - p) <= tolerance, (planted.accuracy, p, tolerance)

    table = cas_table([planted], reference, dataset.classes)
    overall = table[table["class"] == OVERALL].set_index("generator")
    assert list(overall.index) == [REAL, "real-images"] and overall.loc[REAL, "gap"] == 0
    assert overall.loc["real-images", "gap"] == pytest.approx(planted.accuracy - p)
    assert overall.loc["real-images", "train_images"] == 10 * PER_CLASS and overall.loc[REAL, "test_images"] == n
    per_class = table[(table["generator"] == "real-images") & (table["class"] != OVERALL)]
    assert per_class["test_images"].tolist() == [TEST_PER_CLASS] * 10
    assert per_class["cas"].to_numpy() @ per_class["test_images"].to_numpy() / n == pytest.approx(planted.accuracy)


def test_a_generator_of_noise_scores_chance(setting):
    """Uniform noise images under balanced labels: nothing to learn about the real images, so CAS is about
    1/10; allowed: chance + 4 binomial sd on the test images (16 pp), against a reference above 50%."""
    dataset, setup, reference = setting
    counts = class_counts(dataset, setup)
    labels = np.repeat(np.arange(10), PER_CLASS)
    noise = np.random.default_rng(9).integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    images, labels, _ = take_per_class(PlantedPools(noise, labels), counts, setup.seed, dataset.classes)
    score = classification_accuracy("noise", images, labels, dataset, setup, "cpu")
    n = int(score.test_counts.sum())
    assert score.accuracy <= 0.1 + 4 * math.sqrt(0.1 * 0.9 / n), score.accuracy
    assert reference.accuracy - score.accuracy > 0.3
