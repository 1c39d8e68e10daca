"""Replacement counts and nesting, augmentation, the manifest."""

import numpy as np
import pytest

from synthaug.config import ConfigError, TrialConfig
from synthaug.data.mixing import compose, plan, synthetic_requests, select_test
from synthaug.data.sources import Dataset
from synthaug.pools.store import UNCONDITIONAL, PoolSlice

CLASSES = ("a", "b", "c")


def toy_dataset(per_class=(50, 40, 30)) -> Dataset:
    rng = np.random.default_rng(0)
    y = np.concatenate([np.full(n, c, np.int64) for c, n in enumerate(per_class)])
    rng.shuffle(y)
    x = rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8)
    test_y = np.repeat(np.arange(3, dtype=np.int64), 10)
    return Dataset("toy", CLASSES, x, y, x[: len(test_y)].copy(), test_y, digest="0" * 64)


def fake_pool(class_index: int, n: int) -> PoolSlice:
    """A pool whose image k of class c is the constant 100 + c (pixel 0 holds k)."""
    images = np.full((n, 32, 32, 3), 100 + class_index, np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return PoolSlice(f"pool{class_index}", np.arange(n), images, np.full(n, class_index, np.int64),
                     np.ones(n, np.float32))


def test_replacement_keeps_class_sizes_and_rounds_real_counts():
    data = toy_dataset()
    for pct in (0, 2, 4, 6, 8, 10, 12, 50):
        cfg = TrialConfig(replace_pct=pct, seed=3)
        result = compose(cfg, data, fake_pool)
        counts = np.bincount(result.y, minlength=3)
        assert counts.tolist() == [50, 40, 30]
        for c, n in enumerate((50, 40, 30)):
            real = int(round(n * (1 - pct / 100)))
            mask = result.y == c
            assert (~result.synthetic[mask]).sum() == real
            assert result.synthetic[mask].sum() == n - real
            assert result.manifest["classes"][c]["real"] == real
            assert result.manifest["classes"][c]["replaced"] == n - real
        assert result.manifest["totals"]["synthetic"] == result.synthetic.sum()


def real_rows(result, data):
    """Indices of the real training images used (matched by content)."""
    lookup = {data.train_x[i].tobytes(): i for i in range(len(data.train_y))}
    return {lookup[x.tobytes()] for x, s in zip(result.x, result.synthetic) if not s}


def test_replacement_is_nested_across_percentages_for_one_seed():
    data = toy_dataset()
    kept = [real_rows(compose(TrialConfig(replace_pct=p, seed=1), data, fake_pool), data) for p in (0, 2, 4, 12, 40)]
    for smaller, larger in zip(kept[1:], kept[:-1]):
        assert smaller < larger            # images removed at 2% are also removed at 4%
    other_seed = real_rows(compose(TrialConfig(replace_pct=40, seed=2), data, fake_pool), data)
    assert other_seed != kept[-1]          # the seed chooses the real subset


def test_synthetic_images_are_pool_prefixes_so_larger_requests_contain_smaller():
    data = toy_dataset()
    small = compose(TrialConfig(replace_pct=10), data, fake_pool)
    large = compose(TrialConfig(replace_pct=40), data, fake_pool)
    for c in range(3):
        a = small.x[small.synthetic & (small.y == c)]
        b = large.x[large.synthetic & (large.y == c)]
        assert np.array_equal(a, b[: len(a)])


def test_long_tail_cap_and_augmentation():
    data = toy_dataset((60, 60, 60))
    cfg = TrialConfig(imbalance=0.25, real_per_class=40, augment_classes=("c",), augment_count=7)
    plans = plan(cfg, data)
    assert [p.real_target for p in plans] == [40, 20, 10]     # floor(40 * 0.25 ** (i / 2))
    assert [p.augmented for p in plans] == [0, 0, 7]
    result = compose(cfg, data, fake_pool)
    assert np.bincount(result.y).tolist() == [40, 20, 17]
    assert synthetic_requests(cfg, data) == {2: 7}
    assert result.manifest["classes"][2]["pool_id"] == "pool2"


def test_no_synthetic_trial_never_asks_the_pool():
    def refuse(c, n):
        raise AssertionError("asked for synthetic images")
    result = compose(TrialConfig(replace_pct=0), toy_dataset(), refuse)
    assert not result.synthetic.any()


def test_wrong_pool_answer_is_an_error():
    with pytest.raises(RuntimeError, match="pool"):
        compose(TrialConfig(replace_pct=20), toy_dataset(), lambda c, n: fake_pool(c, n - 1))


def test_test_subset_is_the_same_for_every_trial():
    data = toy_dataset()
    index = select_test(data, 4)
    assert np.bincount(data.test_y[index]).tolist() == [4, 4, 4]
    assert len(select_test(data, 0)) == len(data.test_y)


def fake_stream(class_index: int, n: int) -> PoolSlice:
    """The unconditional stream: sample k labelled k % 3 when k is even, else 0; pixel 0 holds k."""
    assert class_index == UNCONDITIONAL
    labels = np.where(np.arange(n) % 2 == 0, np.arange(n) % 3, 0).astype(np.int64)
    images = np.full((n, 32, 32, 3), 200, np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return PoolSlice("stream", np.arange(n), images, labels, np.full(n, 0.5, np.float32))


def test_stream_mode_adds_the_same_total_under_the_labellers_labels():
    data = toy_dataset()
    cfg = TrialConfig(augment_classes=("a", "c"), augment_count=6, augment_mode="stream", seed=0)
    assert cfg.stream_count == 12 and synthetic_requests(cfg, data) == {UNCONDITIONAL: 12}
    assert [p.augmented for p in plan(cfg, data)] == [0, 0, 0]      # nothing targeted
    result = compose(cfg, data, fake_stream)
    labels = fake_stream(UNCONDITIONAL, 12).labels
    expected = np.bincount(labels, minlength=3)                       # [7, 2, 3]: not the classes named
    assert np.bincount(result.y, minlength=3).tolist() == (np.array([50, 40, 30]) + expected).tolist()
    assert result.synthetic.sum() == 12
    for c in range(3):
        synthetic = result.x[(result.y == c) & result.synthetic]
        assert sorted(synthetic[:, 0, 0, 0].tolist()) == np.flatnonzero(labels == c).tolist()
        row = result.manifest["classes"][c]
        assert row["stream"] == row["augmented"] == row["synthetic"] == expected[c]
    assert result.manifest["stream"]["count"] == 12 and result.manifest["totals"]["synthetic"] == 12
    targeted = compose(TrialConfig(augment_classes=("a", "c"), augment_count=6, seed=0), data, fake_pool)
    assert targeted.synthetic.sum() == cfg.stream_count              # equal count, by construction
    assert targeted.manifest["stream"] is None


def test_stream_mode_with_replacement_keeps_both_parts():
    data = toy_dataset()
    cfg = TrialConfig(replace_pct=10, augment_classes=("b",), augment_count=4, augment_mode="stream", seed=1)

    def take(class_index, n):
        return fake_stream(class_index, n) if class_index == UNCONDITIONAL else fake_pool(class_index, n)

    result = compose(cfg, data, take)
    replaced = [r["replaced"] for r in result.manifest["classes"]]
    assert replaced == [5, 4, 3]
    assert result.synthetic.sum() == sum(replaced) + 4


def test_augment_mode_is_validated():
    with pytest.raises(ConfigError, match="augment_mode: one of per_class, stream"):
        TrialConfig(augment_mode="random").validate()


# ------------------------------------------------------------------------ control arms


def refuse_pool(c, n):
    raise AssertionError("a control arm asked the generator for images")


def lt_config(**changes) -> TrialConfig:
    """A long tail of 40, 20, 10 real images over toy_dataset((60, 60, 60)), class c augmented."""
    return TrialConfig(**{"imbalance": 0.25, "real_per_class": 40, "augment_classes": ("c",), "seed": 2, **changes})


def images_of(result, c: int) -> np.ndarray:
    return result.x[result.y == c]


@pytest.mark.parametrize("k", [4, 23])      # fewer than the class's 10 real images, and more than twice as many
def test_oversample_adds_exactly_k_copies_of_the_classs_own_real_images_and_nothing_else(k):
    data = toy_dataset((60, 60, 60))
    base = compose(lt_config(), data, refuse_pool)
    cfg = lt_config(augment_count=k, augment_source="oversample")
    assert not cfg.uses_synthetic and synthetic_requests(cfg, data) == {}
    result = compose(cfg, data, refuse_pool)
    assert np.bincount(result.y).tolist() == [40, 20, 10 + k] and not result.synthetic.any()
    for c in (0, 1):                                                  # other classes: unchanged, byte for byte
        assert np.array_equal(images_of(result, c), images_of(base, c))
    own = images_of(base, 2)
    assert np.array_equal(images_of(result, 2)[:len(own)], own)       # the class's real part: unchanged
    added = images_of(result, 2)[len(own):]
    lookup = {x.tobytes(): i for i, x in enumerate(own)}
    uses = np.bincount([lookup[x.tobytes()] for x in added], minlength=len(own))   # KeyError: not one of its own
    assert uses.sum() == k and set(uses.tolist()) <= {k // len(own), k // len(own) + 1}    # spread evenly
    row = result.manifest["classes"][2]
    assert (row["augment_source"], row["added_real"], row["augmented"], row["synthetic"]) == ("oversample", k, 0, 0)
    assert row["added_indices_sha256"] and result.manifest["classes"][0]["added_indices_sha256"] is None
    assert result.manifest["generator"] is None and result.reference_images == base.reference_images == 70
    again = compose(cfg, data, refuse_pool)
    assert np.array_equal(again.x, result.x)                          # seeded


def test_withheld_adds_k_real_images_of_the_class_from_outside_the_trials_subset():
    from synthaug.data.mixing import real_index
    from synthaug.data.sources import class_permutations
    from synthaug.sweep.sweep_inputs import check_counts

    data = toy_dataset((60, 60, 60))
    lookup = {data.train_x[i].tobytes(): i for i in range(len(data.train_y))}
    cfg = lt_config(augment_count=15, augment_source="withheld")
    assert not cfg.uses_synthetic
    base, result = compose(lt_config(), data, refuse_pool), compose(cfg, data, refuse_pool)
    assert np.bincount(result.y).tolist() == [40, 20, 25] and not result.synthetic.any()
    for c in (0, 1):
        assert np.array_equal(images_of(result, c), images_of(base, c))
    added = images_of(result, 2)[10:]
    index = np.array([lookup[x.tobytes()] for x in added])
    assert len(set(index)) == 15 and np.all(data.train_y[index] == 2)     # real images of the class
    assert not set(index) & set(real_index(cfg, data))                   # none the trial's subset holds
    order = class_permutations(data.train_y, 3, cfg.seed)[2]
    assert sorted(index) == sorted(order[10:25])                           # the class order's next 15
    smaller = compose(lt_config(augment_count=5, augment_source="withheld"), data, refuse_pool)
    assert {x.tobytes() for x in images_of(smaller, 2)[10:]} <= {x.tobytes() for x in added}   # nested in K
    check_counts([cfg, lt_config(augment_count=50, augment_source="withheld")], data)
    with pytest.raises(ConfigError) as info:                               # class c: 60 images, 10 in the subset
        check_counts([cfg, lt_config(augment_count=51, augment_source="withheld")], data)
    assert str(info.value) == ("augment_count: at most 50 with augment_source withheld (c has 50 real images "
                               "outside the trial's long-tailed subset and the validation split), got 51")


def test_reweight_adds_no_image_and_weights_each_class_to_its_augmented_prior():
    data = toy_dataset((60, 60, 60))
    base = compose(lt_config(), data, refuse_pool)
    cfg = lt_config(augment_count=30, augment_source="reweight")
    assert not cfg.uses_synthetic
    result = compose(cfg, data, refuse_pool)
    assert np.array_equal(result.x, base.x) and np.array_equal(result.y, base.y)     # no image added
    assert base.class_weights is None
    weights = result.class_weights
    totals = weights * np.bincount(result.y)                    # each class's total weight ...
    assert totals / totals.sum() == pytest.approx(np.array([40, 20, 10 + 30]) / 100)    # ... is n_c + K_c, scaled
    assert weights[result.y].mean() == pytest.approx(1.0)       # mean weight over the training images: 1
    assert [r["class_weight"] for r in result.manifest["classes"]] == pytest.approx(weights.tolist())
    assert result.manifest["classes"][2]["reweighted"] == 30


def test_augment_source_is_validated_and_a_stream_needs_a_generator():
    with pytest.raises(ConfigError) as info:
        TrialConfig(augment_source="copies").validate()
    assert str(info.value) == "augment_source: one of synthetic, oversample, withheld, reweight, got 'copies'"
    with pytest.raises(ConfigError) as info:
        TrialConfig(augment_mode="stream", augment_source="oversample").validate()
    assert str(info.value) == ("augment_mode: per_class with augment_source oversample (a stream comes from a "
                               "generator), got 'stream'")
    for source in ("oversample", "withheld", "reweight"):
        assert not TrialConfig(augment_classes=("a",), augment_count=5, augment_source=source).uses_synthetic
    assert TrialConfig(augment_classes=("a",), augment_count=5).uses_synthetic


def test_the_dry_run_prices_a_step_budget_trial_at_its_reference_images():
    import dataclasses

    from synthaug.sweep.dry_run import _trial_cost
    from synthaug.training.benchmarks import cpu_row

    data, row = toy_dataset((60, 60, 60)), cpu_row("smoke")
    def train_s(k, budget):
        cfg = lt_config(augment_count=k, augment_source="oversample")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, budget=budget, width=4))
        return _trial_cost(cfg, data, row, 0.0, 1.0, plan).train_s
    assert train_s(0, "steps") == train_s(50, "steps") == train_s(0, "epochs") < train_s(50, "epochs")
