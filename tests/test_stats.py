"""Tests for synthaug.stats.compare: every statistic against scipy/statsmodels, plus simulations.

Offline and fast (a few seconds). statsmodels is used only here, as the reference.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats as st

from synthaug.stats import compare as S

sm_power = pytest.importorskip("statsmodels.stats.power")
sm_multitest = pytest.importorskip("statsmodels.stats.multitest")
sm_weightstats = pytest.importorskip("statsmodels.stats.weightstats")

# Fixed, hand-picked inputs: accuracies (%) of a baseline and a treatment over 7 seeds.
BASE = np.array([71.2, 70.8, 72.1, 70.5, 71.9, 71.0, 70.2])
TREAT = np.array([72.0, 71.1, 72.9, 70.4, 72.6, 71.8, 71.0])
A = np.array([3.1, 2.4, 4.8, 3.9, 2.2, 5.0, 3.3, 4.1])
B = np.array([1.9, 2.8, 2.1, 1.2, 3.0])


def _assert_plain(obj) -> None:
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        assert type(v) in (int, float, bool), (f.name, type(v))


# ----------------------------------------------------------------------------- describe


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_describe_matches_scipy_t_interval(confidence):
    s = S.describe(A, confidence)
    lo, hi = st.t.interval(confidence, len(A) - 1, loc=A.mean(), scale=st.sem(A))
    assert s.n == len(A)
    assert s.mean == pytest.approx(A.mean())
    assert s.std == pytest.approx(A.std(ddof=1))
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    _assert_plain(s)


def test_describe_degenerate():
    s0 = S.describe([])
    assert s0.n == 0 and all(math.isnan(v) for v in (s0.mean, s0.std, s0.ci_low, s0.ci_high))
    s1 = S.describe([3.0])
    assert s1.n == 1 and s1.mean == 3.0 and math.isnan(s1.std) and math.isnan(s1.ci_low)
    sc = S.describe([2.0, 2.0, 2.0])           # no spread: no interval, not a zero-width one
    assert sc.std == 0.0 and math.isnan(sc.ci_low) and math.isnan(sc.ci_high)
    assert S.interval_note(sc.n, sc.std, sc.mean) == "not estimable: all 3 values equal"
    with pytest.raises(ValueError):
        S.describe([1.0, np.nan])
    with pytest.raises(ValueError):
        S.describe([[1.0, 2.0]])


def test_proportion_interval_stays_within_0_and_1_near_the_ceiling_and_floor():
    near_one = [0.999, 1.0, 0.97]
    plain = S.describe(near_one)
    assert plain.ci_high > 1.0                                  # what a t interval on the raw scale does
    s = S.proportion_interval(near_one)
    assert s.mean == pytest.approx(np.mean(near_one)) and s.std == pytest.approx(plain.std)
    assert 0.0 <= s.ci_low < s.mean <= s.ci_high <= 1.0
    low = S.proportion_interval([0.0, 0.01, 0.04, 0.0])
    assert low.ci_low == 0.0 < low.ci_high < 1.0
    # on the angular scale the interval is a t interval: back-transformed it matches by hand
    x = np.array([0.6, 0.7, 0.65, 0.72])
    a = np.arcsin(np.sqrt(x))
    lo, hi = st.t.interval(0.95, len(x) - 1, loc=a.mean(), scale=st.sem(a))
    s = S.proportion_interval(x)
    assert (s.ci_low, s.ci_high) == pytest.approx((np.sin(lo) ** 2, np.sin(hi) ** 2), rel=1e-12)
    _assert_plain(s)
    with pytest.raises(ValueError, match="proportions must be in"):
        S.proportion_interval([0.5, 1.2])


def test_two_seeds_never_give_a_zero_width_interval():
    """Two seeds that agree (exactly, or up to float noise) give no interval; two that differ a wide one."""
    for agree in ([1.0, 1.0], [0.3 - 0.7, 0.1 - 0.5]):
        for s in (S.describe(agree), S.proportion_interval(np.abs(agree))):
            assert math.isnan(s.ci_low) and math.isnan(s.ci_high)
            assert S.interval_note(s.n, s.std, s.mean) == "not estimable: all 2 values equal"
    for s in (S.describe([0.98, 0.99]), S.proportion_interval([0.98, 0.99])):
        assert s.ci_high - s.ci_low > 0.05                          # t with 1 df: wide, as it should be
    assert S.proportion_interval([0.98, 0.99]).ci_high <= 1.0
    r = S.paired_comparison([0.3, 0.1], [0.7, 0.5])
    assert math.isnan(r.ci_low) and math.isnan(r.ci_high)


# ----------------------------------------------------------------------------- bootstrap


def test_bca_matches_scipy_bootstrap_same_seed():
    lo, hi = S.bootstrap_bca_ci(A, confidence=0.9, n_resamples=2000, seed=7)
    kw = {S._BOOTSTRAP_SEED_KW: np.random.default_rng(7)}
    ref = st.bootstrap((A,), np.mean, n_resamples=2000, confidence_level=0.9, method="BCa", **kw)
    assert (lo, hi) == pytest.approx(
        (ref.confidence_interval.low, ref.confidence_interval.high), rel=1e-12
    )
    assert lo < A.mean() < hi
    assert isinstance(lo, float) and isinstance(hi, float)


def test_bca_non_vectorised_statistic_and_reproducible():
    med = lambda x: float(np.median(x))  # noqa: E731  (no axis keyword)
    r1 = S.bootstrap_bca_ci(A, med, n_resamples=500, seed=3)
    r2 = S.bootstrap_bca_ci(A, med, n_resamples=500, seed=3)
    assert r1 == r2 and r1[0] <= np.median(A) <= r1[1]


def test_bca_degenerate_inputs_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(math.isnan(v) for v in S.bootstrap_bca_ci([1.0, 2.0]))
        assert all(math.isnan(v) for v in S.bootstrap_bca_ci([]))
        assert all(math.isnan(v) for v in S.bootstrap_bca_ci([4.0, 4.0, 4.0, 4.0]))
        # one outlier among ties: most resamples are identical; must not warn
        S.bootstrap_bca_ci([1.0, 1.0, 1.0, 1.0, 1.0, 9.0], n_resamples=500)


# ----------------------------------------------------------------------------- paired


def test_paired_comparison_matches_scipy_and_is_plain():
    r = S.paired_comparison(TREAT, BASE)
    d = TREAT - BASE
    ref = st.ttest_rel(TREAT, BASE)
    lo, hi = st.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=st.sem(d))
    assert r.n == len(d)
    assert r.mean_diff == pytest.approx(d.mean())
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    assert r.t_stat == pytest.approx(ref.statistic, rel=1e-12)
    assert r.t_pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    assert r.cohens_dz == pytest.approx(d.mean() / d.std(ddof=1))
    assert r.prob_improve == pytest.approx(6 / 7)
    assert not {"wilcoxon_pvalue", "seeds_for_power"} & {f.name for f in dataclasses.fields(r)}   # no observed power
    _assert_plain(r)


def test_paired_t_test_vectorised_matches_scipy():
    rng = np.random.default_rng(1)
    t, b = rng.normal(size=(2, 4, 3, 6))
    ts, ps = S.paired_t_test(t, b)
    ref = st.ttest_rel(t, b, axis=-1)
    np.testing.assert_allclose(ts, ref.statistic, rtol=1e-12)
    np.testing.assert_allclose(ps, ref.pvalue, rtol=1e-10)


def test_prob_improve_counts_ties_half():
    r = S.paired_comparison([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 4.0, 3.0])
    assert r.prob_improve == pytest.approx((2 + 0.5) / 4)


def _brute_force_sign_flip(d):
    obs = abs(d.mean())
    means = [abs(np.mean(np.array(s) * d)) for s in itertools.product([-1, 1], repeat=len(d))]
    return np.mean(np.array(means) >= obs - 1e-12)


@pytest.mark.parametrize(
    "d",
    [
        TREAT - BASE,
        np.array([0.5, -0.2, 0.9, 1.1, 0.3]),
        np.array([1.0, 1.0, -1.0, 2.0, 0.0, -2.0]),  # ties, a zero, exact equalities
        np.arange(1, 12, dtype=float),  # most extreme: p = 2 / 2**11
    ],
)
def test_exact_permutation_matches_scipy_and_brute_force(d):
    p = S.sign_flip_pvalue(d)
    ref = st.permutation_test(
        (d,),
        lambda x, axis: np.abs(np.mean(x, axis=axis)),
        permutation_type="samples",
        n_resamples=np.inf,
        alternative="greater",
    )
    assert p == pytest.approx(ref.pvalue, rel=1e-12)
    assert p == pytest.approx(_brute_force_sign_flip(d), rel=1e-12)


def test_exact_permutation_n20_and_monte_carlo():
    rng = np.random.default_rng(5)
    d20 = rng.normal(0.3, 1.0, 20)
    p20 = S.sign_flip_pvalue(d20)  # 2**20 assignments
    assert 0 < p20 <= 1
    # Monte Carlo above n = 20: reproducible with the seed, close to the t-test p
    d40 = rng.normal(0.4, 1.0, 40)
    p1, p2 = S.sign_flip_pvalue(d40, seed=1), S.sign_flip_pvalue(d40, seed=1)
    assert p1 == p2
    assert p1 == pytest.approx(st.ttest_1samp(d40, 0).pvalue, abs=0.02)
    assert S.sign_flip_pvalue(np.zeros(5)) == 1.0
    assert math.isnan(S.sign_flip_pvalue([]))


def test_paired_degenerate_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = S.paired_comparison([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])  # all diffs zero
        assert r.mean_diff == 0.0 and math.isnan(r.ci_low) and math.isnan(r.ci_high)
        assert math.isnan(r.t_pvalue) and math.isnan(r.cohens_dz)
        assert r.permutation_pvalue == 1.0 and r.prob_improve == 0.5
        r1 = S.paired_comparison([2.0], [1.0])
        assert r1.n == 1 and r1.mean_diff == 1.0 and math.isnan(r1.t_pvalue)
        assert r1.permutation_pvalue == 1.0
        rc = S.paired_comparison([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])  # constant diff 1
        assert math.isnan(rc.t_stat) and math.isnan(rc.ci_low) and math.isnan(rc.ci_high)
    with pytest.raises(ValueError):
        S.paired_comparison([1.0, 2.0], [1.0])


# ----------------------------------------------------------------------------- Welch


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_welch_matches_scipy_and_statsmodels(confidence):
    r = S.welch_comparison(A, B, confidence)
    ref = st.ttest_ind(A, B, equal_var=False)
    cm = sm_weightstats.CompareMeans(
        sm_weightstats.DescrStatsW(A), sm_weightstats.DescrStatsW(B)
    )
    lo, hi = cm.tconfint_diff(alpha=1 - confidence, usevar="unequal")
    assert (r.n_a, r.n_b) == (len(A), len(B))
    assert r.mean_diff == pytest.approx(A.mean() - B.mean())
    assert r.t_stat == pytest.approx(ref.statistic, rel=1e-12)
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    assert r.df == pytest.approx(float(ref.df), rel=1e-12)
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    _assert_plain(r)


def test_welch_degenerate():
    r = S.welch_comparison([1.0], [2.0, 3.0])
    assert r.mean_diff == pytest.approx(-1.5) and math.isnan(r.pvalue)
    r = S.welch_comparison([1.0, 1.0], [2.0, 2.0])
    assert r.mean_diff == -1.0 and math.isnan(r.ci_low) and math.isnan(r.ci_high) and math.isnan(r.df)


# ----------------------------------------------------------------------------- power


@pytest.mark.parametrize("dz,n", [(0.5, 10), (1.5, 6), (-0.8, 4), (0.2, 50), (2.0, 2)])
def test_paired_t_power_matches_statsmodels(dz, n):
    ref = sm_power.TTestPower().power(effect_size=abs(dz), nobs=n, alpha=0.05)
    assert S.paired_t_power(dz, n) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("dz", [0.3, 0.5, 1.0, 1.5, 2.5])
def test_seeds_for_power_matches_statsmodels_solve_power(dz):
    n_cont = sm_power.TTestPower().solve_power(effect_size=dz, alpha=0.05, power=0.8)
    n = S.seeds_for_power(dz)
    assert n == max(2.0, float(math.ceil(n_cont - 1e-6)))
    assert S.paired_t_power(dz, n) >= 0.8
    if n > 2:
        assert S.paired_t_power(dz, n - 1) < 0.8


def _power_by_integration(dz: float, n: int, alpha: float = 0.05) -> float:
    """The paired t's power computed another way: over V ~ chi2(n - 1), P(|Z + nc| > c sqrt(V / df))."""
    from scipy import integrate, stats as st

    df, nc = n - 1, abs(dz) * math.sqrt(n)
    c = st.t.ppf(1 - alpha / 2, df)
    tails = lambda v: (st.norm.sf(c * math.sqrt(v / df) - nc) + st.norm.cdf(-c * math.sqrt(v / df) - nc)) \
        * st.chi2.pdf(v, df)
    return integrate.quad(tails, 0, 50 * df + 200, points=[df, df * (nc / c) ** 2], limit=1000, epsabs=1e-14)[0]


def test_power_is_finite_and_monotone_in_n_on_the_whole_dz_n_grid():
    """Where scipy's noncentral t cdf underflows (344 of these 3,540 points), the power is still the exact one."""
    grid = np.array([S.paired_t_power(dz, np.arange(2, 61)) for dz in np.logspace(-2, np.log10(20), 60)])
    assert np.isfinite(grid).all() and ((grid >= 0) & (grid <= 1)).all()
    assert (np.diff(grid, axis=1) >= 0).all()
    # at points where nct.cdf gives nan, agreement with an independent integral; then 4.71 needs 3 seeds, not 10
    for dz, n in [(4.71, 3), (3.747, 6), (1.0, 30), (20.0, 2)]:
        assert S.paired_t_power(dz, n) == pytest.approx(_power_by_integration(dz, n), abs=1e-9)
    assert S.paired_t_power(4.71, 3) == pytest.approx(0.96296, abs=1e-5)
    assert S.paired_t_power(4.71, 2) < 0.8 and S.seeds_for_power(4.71) == 3.0


def test_power_edge_cases():
    assert S.seeds_for_power(0.0) == math.inf
    assert math.isnan(S.seeds_for_power(float("nan")))
    assert S.seeds_for_power(0.01, max_n=100) == math.inf
    assert S.seeds_for_power(-1.0) == S.seeds_for_power(1.0)
    assert math.isnan(S.paired_t_power(1.0, 1))
    assert S.paired_t_power(0.0, 10) == pytest.approx(0.05)
    np.testing.assert_allclose(
        S.paired_t_power(0.7, np.array([5, 10])),
        [S.paired_t_power(0.7, 5), S.paired_t_power(0.7, 10)],
    )


# ----------------------------------------------------------------------------- corrections

PVALS = np.array([0.01, 0.04, 0.03, 0.005, 0.2, 0.04, 0.9, 0.0001])


@pytest.mark.parametrize("ours,method", [(S.holm, "holm"), (S.benjamini_hochberg, "fdr_bh")])
def test_corrections_match_statsmodels(ours, method):
    ref = sm_multitest.multipletests(PVALS, method=method)[1]
    np.testing.assert_allclose(ours(PVALS), ref, rtol=1e-12)
    # nans are excluded from the family and passed through
    with_nan = np.insert(PVALS, [2, 5], np.nan)
    got = ours(with_nan)
    assert np.isnan(got[[2, 6]]).all()
    np.testing.assert_allclose(got[~np.isnan(with_nan)], ref, rtol=1e-12)


@pytest.mark.parametrize("ours,method", [(S.holm, "holm"), (S.benjamini_hochberg, "fdr_bh")])
def test_corrections_vectorised_over_families(ours, method):
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 0.2, size=(20, 6))  # statsmodels' holm is ~45 ms a call
    p[rng.uniform(size=p.shape) < 0.2] = np.nan
    got = ours(p)
    for row, g in zip(p, got):
        keep = ~np.isnan(row)
        assert np.isnan(g[~keep]).all()
        if keep.any():
            ref = sm_multitest.multipletests(row[keep], method=method)[1]
            np.testing.assert_allclose(g[keep], ref, rtol=1e-12)


def test_corrections_edge_cases():
    assert np.isnan(S.holm([np.nan, np.nan])).all()
    assert S.holm([]).size == 0
    np.testing.assert_array_equal(S.holm([0.3]), [0.3])
    assert (S.holm([0.5, 0.6, 0.7]) <= 1).all()
    with pytest.raises(ValueError):
        S.holm([0.1, 1.2])


# ----------------------------------------------------------------------------- simulations

N_SIM = 2000


def test_holm_controls_familywise_error_under_null():
    """No true effect: 6 configurations, each compared with one shared baseline on 5
    paired seeds, over 2,000 simulated sweeps. Accuracy = seed effect (sd 1, shared by
    every configuration of that seed) + run noise (sd 0.5); so the 6 tests are
    positively correlated through the shared baseline. A family-wise error is any
    Holm-adjusted paired-t p-value < 0.05; its rate must be <= 0.05 + 3 standard errors
    (sqrt(0.05*0.95/2000) = 0.0049). Uncorrected testing must exceed that bound, to show
    the simulation can detect a failure of control.
    """
    rng = np.random.default_rng(20240601)
    n_cfg, n_seeds = 6, 5
    seed_effect = rng.normal(0.0, 1.0, size=(N_SIM, 1, n_seeds))
    baseline = seed_effect[:, 0, :] + rng.normal(0.0, 0.5, size=(N_SIM, n_seeds))
    configs = seed_effect + rng.normal(0.0, 0.5, size=(N_SIM, n_cfg, n_seeds))
    _, p = S.paired_t_test(configs, np.broadcast_to(baseline[:, None, :], configs.shape))
    assert p.shape == (N_SIM, n_cfg)
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / N_SIM)
    fwer_holm = np.mean((S.holm(p) < 0.05).any(axis=1))
    fwer_raw = np.mean((p < 0.05).any(axis=1))
    assert fwer_holm <= bound, fwer_holm
    assert fwer_raw > bound, fwer_raw


def test_planted_effect_detected_at_theoretical_power():
    """Planted effect dz = 1.5 on n = 6 paired seeds (differences ~ N(1.5 * 0.8, 0.8)),
    2,000 simulations. The share of paired t-tests with p < 0.05 must lie within 3
    standard errors of the theoretical power P = paired_t_power(1.5, 6) (about 0.83).
    """
    dz, n, sd = 1.5, 6, 0.8
    power = S.paired_t_power(dz, n)
    assert 0.75 < power < 0.9
    rng = np.random.default_rng(7)
    baseline = rng.normal(70.0, 1.0, size=(N_SIM, n))
    treatment = baseline + rng.normal(dz * sd, sd, size=(N_SIM, n))
    _, p = S.paired_t_test(treatment, baseline)
    hit = np.mean(p < 0.05)
    se = math.sqrt(power * (1 - power) / N_SIM)
    assert abs(hit - power) <= 3 * se, (hit, power)


def test_equal_differences_up_to_float_noise_have_no_t_test():
    """Two seeds both 40 points worse, as accuracies: sd is ~4e-17, not a real spread."""
    from synthaug.stats.compare import paired_comparison, paired_t_test

    treatment, baseline = np.array([0.3, 0.1]), np.array([0.7, 0.5])
    assert np.std(treatment - baseline) > 0              # the float noise this guards against
    t, p = paired_t_test(treatment, baseline)
    assert np.isnan(t) and np.isnan(p)
    result = paired_comparison(treatment, baseline)
    assert np.isnan(result.t_pvalue) and np.isnan(result.cohens_dz)
    assert result.mean_diff == pytest.approx(-0.4)


def test_the_smallest_exact_p():
    assert S.smallest_exact_pvalue(5) == 0.0625 and S.smallest_exact_pvalue(8) == 2 / 256
    d = np.arange(1.0, 6.0)                          # all on one side: the exact sign-flip test's floor
    assert S.sign_flip_pvalue(d) == S.smallest_exact_pvalue(5)
