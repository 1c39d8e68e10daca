"""Replacement counts and nesting, augmentation, the manifest."""

import numpy as np
import pytest

from synthaug.config import ConfigError, TrialConfig
from synthaug.data import Dataset
from synthaug.mixing import compose, plan, synthetic_requests, select_test
from synthaug.pools import UNCONDITIONAL, PoolSlice

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
