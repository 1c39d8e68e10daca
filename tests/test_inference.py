"""synthaug.stats.inference against independent computations: statsmodels' two-way clustering, numpy's polyfit,
scipy's one-sample t, Fieller's defining inequality, stats.paired_t_power."""

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as st
from statsmodels.stats.sandwich_covariance import cov_cluster_2groups

from synthaug.stats import inference as inf
from synthaug.stats import compare as stats

X = np.arange(0, 13, 2)


def test_two_way_cluster_t_is_statsmodels_two_way_clustered_mean():
    """An intercept-only regression of d on seeds x images, clustered both ways (its small-sample factor
    G/(G-1) (N-1)/(N-k) is G/(G-1) with k = 1): the same variance."""
    rng = np.random.default_rng(3)
    seeds, images = 6, 40
    d = (rng.normal(0.1, 0.3, (seeds, 1)) + rng.normal(0, 0.5, (1, images)) + rng.normal(0, 1, (seeds, images)))
    fit = sm.OLS(d.ravel(), np.ones((d.size, 1))).fit()
    seed_of, image_of = np.divmod(np.arange(d.size), images)
    both, by_seed, _ = cov_cluster_2groups(fit, seed_of, image_of)
    r = inf.two_way_cluster_t(d)
    assert both[0, 0] > 0
    assert r.mean_diff == pytest.approx(d.mean()) and r.se == pytest.approx(math.sqrt(both[0, 0]), rel=1e-12)
    assert r.se_seeds == pytest.approx(math.sqrt(by_seed[0, 0]), rel=1e-12)
    assert r.df == seeds - 1 and (r.n_seeds, r.n_images) == (seeds, images)
    assert r.pvalue == pytest.approx(2 * st.t.sf(abs(r.mean_diff / r.se), seeds - 1))
    half = st.t.ppf(0.975, seeds - 1) * r.se
    assert (r.ci_low, r.ci_high) == pytest.approx((r.mean_diff - half, r.mean_diff + half))
    assert r.covers == "seeds and test images"
    # its seed part is the seed-paired t of the seeds' accuracy differences
    t, _ = stats.paired_t_test(d.mean(axis=1), np.zeros(seeds))
    assert r.mean_diff / r.se_seeds == pytest.approx(t)


def test_two_way_falls_back_to_the_larger_one_way_variance_where_the_sum_is_not_positive():
    seeds, images = 4, 50
    checker = (-1.0) ** np.add.outer(np.arange(seeds), np.arange(images))       # only cell-level variation
    d = checker + np.array([0.01, -0.02, 0.03, 0.0])[:, None]
    r = inf.two_way_cluster_t(d)
    v_seed = d.mean(axis=1).var(ddof=1) / seeds
    assert v_seed + 0.0 - d.var(ddof=1) / d.size < 0
    assert r.se == pytest.approx(math.sqrt(v_seed)) and np.isfinite(r.pvalue)


def test_two_way_over_leading_axes_is_the_loop_and_takes_0_1_differences_as_integers():
    rng = np.random.default_rng(4)
    correct = rng.integers(0, 2, (3, 5, 2, 8, 30), dtype=np.int8)
    d = correct[:, :, 1] - correct[:, :, 0]
    r = inf.two_way_cluster_t(d)
    assert r.pvalue.shape == (3, 5)
    for idx in np.ndindex(3, 5):
        one = inf.two_way_cluster_t(d[idx].astype(float))
        assert isinstance(one.pvalue, float)
        assert (r.mean_diff[idx], r.se[idx], r.pvalue[idx], r.ci_low[idx]) == pytest.approx(
            (one.mean_diff, one.se, one.pvalue, one.ci_low))


def test_two_way_degenerate_inputs():
    assert math.isnan(inf.two_way_cluster_t(np.ones((1, 10))).pvalue)          # one seed
    assert math.isnan(inf.two_way_cluster_t(np.ones((5, 1))).se)               # one image
    flat = inf.two_way_cluster_t(np.zeros((5, 10)))                             # no spread: no interval
    assert flat.mean_diff == 0 and math.isnan(flat.ci_low) and math.isnan(flat.pvalue)
    with pytest.raises(ValueError, match="NaN or inf"):
        inf.two_way_cluster_t(np.array([[0.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="at least 2 axes"):
        inf.two_way_cluster_t(np.zeros(4))


def test_seed_trend_is_a_one_sample_t_of_the_seeds_polyfit_slopes():
    rng = np.random.default_rng(5)
    values = 0.77 + 0.0004 * X + rng.normal(0, 0.003, (8, 1)) + rng.normal(0, 0.002, (8, X.size))
    slopes = np.array([np.polyfit(X, v, 1)[0] for v in values])
    ref = st.ttest_1samp(slopes, 0.0)
    r = inf.seed_trend(values, X)
    assert r.slope == pytest.approx(slopes.mean()) and r.t_stat == pytest.approx(ref.statistic)
    assert r.pvalue == pytest.approx(ref.pvalue) and r.df == 7 and (r.n_seeds, r.n_levels, r.n_images) == (8, 7, 0)
    assert (r.ci_low, r.ci_high) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert r.covers == "seeds"
    many = inf.seed_trend(np.stack([values, values[::-1]]), X)
    assert many.pvalue.shape == (2,) and many.pvalue[0] == pytest.approx(r.pvalue)
    with pytest.raises(ValueError, match="one value a level"):
        inf.seed_trend(values, X[:-1])
    with pytest.raises(ValueError, match="2 distinct values"):
        inf.seed_trend(values, np.zeros(X.size))


def test_two_way_trend_has_the_seed_trends_slope_and_adds_the_images_to_its_variance():
    rng = np.random.default_rng(6)
    hard = rng.random(200)
    correct = (rng.random((8, X.size, 200)) < hard).astype(np.int8)             # (seed, level, image)
    r = inf.two_way_trend(correct, X)
    by_seed = inf.seed_trend(correct.mean(axis=-1), X)
    assert r.slope == pytest.approx(by_seed.slope)
    w = (X - X.mean()) / ((X - X.mean()) ** 2).sum()
    contributions = np.einsum("ski,k->si", correct, w)
    direct = inf.two_way_cluster_t(contributions)
    assert (r.se, r.pvalue) == pytest.approx((direct.se, direct.pvalue))
    assert direct.se_seeds == pytest.approx(by_seed.se)          # the seed-only part is seed_trend's variance
    assert (r.n_seeds, r.n_levels, r.n_images, r.covers) == (8, 7, 200, "seeds and test images")


def _in_fieller_set(rate, syn, real):
    """Fieller's defining inequality at each rate (an array of rates)."""
    n = syn.size
    a, b = syn.mean(), real.mean()
    cov = np.cov(syn, real) / n
    t2 = st.t.ppf(0.975, n - 1) ** 2
    return (a - rate * b) ** 2 <= t2 * (cov[0, 0] - 2 * rate * cov[0, 1] + rate ** 2 * cov[1, 1]) + 1e-15


def test_exchange_rate_is_fiellers_set_in_each_of_its_three_shapes():
    rng = np.random.default_rng(7)
    base = rng.normal(0, 1, 8)
    cases = {"bounded": (0.5 + base + rng.normal(0, 0.3, 8), 1.0 + base),
             "gap": (1.0 + rng.normal(0, 0.3, 8), 0.3 + base),
             "any": (0.1 + rng.normal(0, 1, 8), 0.1 + base)}
    for shape, (syn, real) in cases.items():
        r = inf.exchange_rate(syn, real)
        assert r.rate == pytest.approx(syn.mean() / real.mean()) and r.df == 7 and r.n_seeds == 8
        assert _in_fieller_set(r.rate, syn, real)
        probes = np.linspace(-20, 20, 4001)
        inside = _in_fieller_set(probes, syn, real)
        if shape == "bounded":
            assert r.bounded and r.note == "bounded"
            assert inside[(probes > r.ci_low + 1e-9) & (probes < r.ci_high - 1e-9)].all()
            assert not inside[(probes < r.ci_low - 1e-9) | (probes > r.ci_high + 1e-9)].any()
        elif shape == "gap":
            assert not r.bounded and (r.ci_low, r.ci_high) == (-np.inf, np.inf) and "outside a gap" in r.note
            assert r.gap_low < r.gap_high
            assert not inside[(probes > r.gap_low + 1e-9) & (probes < r.gap_high - 1e-9)].any()
            assert inside[(probes < r.gap_low - 1e-9) | (probes > r.gap_high + 1e-9)].all()
        else:
            assert not r.bounded and "any rate" in r.note and math.isnan(r.gap_low) and inside.all()
    many = inf.exchange_rate(np.stack([c[0] for c in cases.values()]), np.stack([c[1] for c in cases.values()]))
    assert many.bounded.tolist() == [True, False, False] and many.note[0] == "bounded"
    assert "not estimable" in inf.exchange_rate([0.1], [0.2]).note
    with pytest.raises(ValueError, match="shapes differ"):
        inf.exchange_rate([0.1, 0.2], [0.1, 0.2, 0.3])


def test_power_table_is_the_paired_t_at_holms_first_step():
    rows = inf.power_table(0.0038, n_seeds=8, family_size=3)
    assert [r.effect for r in rows] == [0.003, 0.005, 0.010]
    for r in rows:
        assert r.alpha == pytest.approx(0.05 / 3) and r.dz == pytest.approx(r.effect / 0.0038)
        assert r.power == pytest.approx(stats.paired_t_power(r.dz, 8, 0.05 / 3))
        assert r.seeds_needed == stats.seeds_for_power(r.dz, 0.8, 0.05 / 3)
        assert stats.paired_t_power(r.dz, r.seeds_needed, r.alpha) >= 0.8
    assert rows[0].power < rows[1].power < rows[2].power
    lines = inf.power_table_lines(rows, 8)
    assert lines[0].split() == ["effect", "power", "(8", "seeds)", "seeds", "for", "80%"]
    assert lines[2].startswith("+0.5 pp") and len(lines) == 4
    for bad in ({"paired_sd": 0.0}, {"n_seeds": 1}, {"family_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            inf.power_table(**{"paired_sd": 0.0038, "n_seeds": 8, "family_size": 2, **bad})
