"""The validation images: held out of every real image a trial takes, the same for every seed."""

import dataclasses

import numpy as np
import pytest

from synthaug.config import TrialConfig
from synthaug.data.instances import restricted, training_index
from synthaug.data.mixing import class_orders, compose, plan, real_index
from synthaug.data.sources import load_dataset, long_tail_counts
from synthaug.data.splits import VALIDATION_SEED, training_orders, validation_index
from synthaug.pools.store import PoolSlice

HELD = 20           # the smoke preset's validation_per_class
WITHHELD = 50       # a "withheld" arm's K: the images after the trial's subset in its class orders


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return load_dataset("shapes", tmp_path_factory.mktemp("cache"))


def take(c, n):
    return PoolSlice("p", np.arange(n), np.zeros((n, 32, 32, 3), np.uint8), np.full(n, c), np.ones(n, np.float32))


def test_validation_images_are_held_out_of_every_seeds_subset_and_what_a_withheld_arm_adds(shapes):
    cfg = TrialConfig(imbalance=0.1, real_per_class=100, validation_per_class=HELD, replace_pct=10,
                      augment_classes=("frame",), augment_count=5, generator="ddpm-cond")
    held = validation_index(shapes.train_y, shapes.num_classes, HELD)
    assert np.bincount(shapes.train_y[held], minlength=10).tolist() == [HELD] * 10
    assert len(np.unique(held)) == len(held)
    manifests = set()
    for seed in range(5):
        trial = dataclasses.replace(cfg, seed=seed)
        subset = real_index(trial, shapes)
        assert np.bincount(shapes.train_y[subset]).tolist() == long_tail_counts(100, 0.1, 10)
        assert not np.intersect1d(subset, held).size
        after = np.concatenate([order[p.real_target:p.real_target + WITHHELD]
                                for order, p in zip(class_orders(trial, shapes), plan(trial, shapes))])
        assert len(after) == 10 * WITHHELD and not np.intersect1d(after, held).size
        assert not np.intersect1d(after, subset).size
        # the orders are every training image outside the validation split, once
        orders = np.concatenate(class_orders(trial, shapes))
        assert np.array_equal(np.sort(np.concatenate([orders, held])), np.arange(len(shapes.train_y)))
        # what a train_on="trial" generator learns from is the subset: no validation image
        learned = restricted(shapes, training_index(trial, shapes))
        assert not ({x.tobytes() for x in learned.train_x} & {x.tobytes() for x in shapes.train_x[held]})
        # the real images trained on, a withheld arm's added ones too: none is a validation image
        validation_images = {x.tobytes() for x in shapes.train_x[held]}
        for arm in (trial, dataclasses.replace(trial, augment_source="withheld", augment_count=WITHHELD)):
            training = compose(arm, shapes, take)
            real = {x.tobytes() for x in training.x[~training.synthetic]}
            assert real and not real & validation_images
        assert len(real) == sum(p.real for p in plan(trial, shapes)) + WITHHELD     # the kept ones and K withheld
        manifests.add(training.manifest["validation"]["indices_sha256"])
    assert len(manifests) == 1                  # the same validation images for every seed


def test_real_per_class_zero_is_every_image_but_the_validation_ones_and_no_validation_changes_nothing(shapes):
    balanced = plan(TrialConfig(validation_per_class=HELD), shapes)
    assert [p.real_target for p in balanced] == [600 - HELD] * 10
    assert [p.real_target for p in plan(TrialConfig(), shapes)] == [600] * 10
    assert len(validation_index(shapes.train_y, 10, 0)) == 0
    from synthaug.data.sources import class_permutations
    unheld = training_orders(shapes.train_y, 10, 4, 0)
    assert all(np.array_equal(a, b) for a, b in zip(unheld, class_permutations(shapes.train_y, 10, 4)))
    # fixed by VALIDATION_SEED, not by the trial's seed: a trial seeded with it still takes no validation image
    cfg = TrialConfig(seed=VALIDATION_SEED, validation_per_class=HELD)
    assert not np.intersect1d(real_index(cfg, shapes), validation_index(shapes.train_y, 10, HELD)).size


def test_a_long_tail_subsets_labeller_sees_every_class_equally_often_for_a_balanced_sets_steps(shapes):
    """train_on "trial": the pseudo-labeller of a long-tailed subset repeats each class's own images up to the
    largest class's count (no image from outside the subset) and takes as many optimizer steps as on a
    balanced set of labeller_per_class a class; on balanced data nothing changes. (Before, the smoke E3
    labellers named no tail class: "the labeller gave class plus to 0 of 2096 samples".)"""
    from synthaug.config import preset
    from synthaug.generation.generator_training import labeller_key, labeller_recipe

    spec = preset("smoke").generator("ddpm-uncond-subset")          # 4 epochs, 200 images a class
    recipe, index = labeller_recipe(spec, shapes.train_y, 10)
    assert recipe == spec.labeller and len(np.unique(index)) == len(index) == 200 * 10
    trial = TrialConfig(imbalance=0.1, real_per_class=100, validation_per_class=HELD)
    subset = restricted(shapes, training_index(trial, shapes))
    counts = np.bincount(subset.train_y, minlength=10)
    assert counts.max() == 100 and counts.min() == 10
    recipe, index = labeller_recipe(spec, subset.train_y, 10)
    assert np.bincount(subset.train_y[index], minlength=10).tolist() == [100] * 10
    assert set(index.tolist()) == set(range(len(subset.train_y)))   # every subset image, nothing else
    for c in range(10):     # each class cycles its images: none repeated more than once beyond the others
        repeats = np.bincount(index[subset.train_y[index] == c])
        assert repeats[repeats > 0].max() - repeats[repeats > 0].min() <= 1
    assert recipe == dataclasses.replace(spec.labeller, epochs=8)   # 4 x 200 / 100: 2,000 images' steps
    assert labeller_key(spec, subset) != labeller_key(spec, shapes)
    full = restricted(shapes, np.arange(len(shapes.train_y)))
    assert labeller_recipe(spec, full.train_y, 10)[0] == spec.labeller
