"""Error rates of the primary analysis, from simulated sweeps through the functions the analysis calls.

Run with -s to see the figures. The regime is the paper's replacement sweep (replace_pct 0, 2, ..., 12, baseline
0; 8 seeds; test accuracy 77%; seed sd of accuracy 0.27 pp; test-sampling sd of accuracy 0.42 pp, as 10,000 test
images give). The model, per simulated sweep:

* a fresh test set: image i has a difficulty a_i ~ N(mu, sigma^2) on the logit scale, (mu, sigma) giving mean
  accuracy 77% and E[p(1-p)] = 0.045 (two networks disagree on 9% of the images);
* run (seed s, configuration k) is right on image i with probability sigmoid(a_i + u_sk + delta_k + g_ki):
  u_sk = sd_u (sqrt(1/2) v_s + sqrt(1/2) w_sk) is the network's own shift, half of it shared by the runs of one
  seed (the same subset, initial weights and data order: the paired design), sd_u giving the seed sd of accuracy
  0.27 pp with the per-image Bernoulli noise; delta_k the configuration's effect on the population accuracy;
  g_ki ~ N(0, 1) an image x configuration interaction (which images configuration k finds hard; zero unless
  stated), mu moved so that every configuration's population accuracy stays 77%.

Aggregated size: 1,000 test images, not 10,000, with every seed-level figure and effect scaled by sqrt(10) (the
test-sampling sd of accuracy is then 1.33 pp = sqrt(10) x 0.42 pp): every variance component of every
statistic below scales by the same factor 10 (the per-image ones by 1/1000 instead of 1/10000, the network and
effect ones by the scaling), so each t statistic (and McNemar's) has the distribution it has at 10,000 images,
at a tenth of the draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pytest
from scipy import optimize, stats as st

from synthaug.stats import compare as stats
from synthaug.stats.inference import exchange_rate, power_table, seed_trend, two_way_cluster_t, two_way_trend

SWEEPS = 2_000
SEEDS = 8
REPLACE_PCT = np.arange(0, 13, 2)               # configuration k = replace_pct 2k; k = 0 the baseline
ALPHA = 0.05
IMAGES, FULL_IMAGES = 1_000, 10_000
SCALE = math.sqrt(FULL_IMAGES / IMAGES)
ACCURACY, SEED_SD, DISAGREEMENT = 0.77, 0.0027, 0.09
SHARED = 0.5                                    # share of a network's own shift common to a seed's runs
CHUNK = 250                                     # sweeps drawn at once (memory: CHUNK x 8 x 7 x 1000)
SE = math.sqrt(ALPHA * (1 - ALPHA) / SWEEPS)    # the Monte Carlo standard error of a rate near 0.05

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _expect(f, mu: float, sd: float) -> float:
    """E f(a) for a ~ N(mu, sd^2), by Gauss-Hermite quadrature."""
    return float(_WEIGHTS @ f(mu + sd * _NODES))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Regime:
    mu: float               # mean image difficulty (logit) without the interaction
    sigma: float            # its sd
    sd_u: float             # a network's own logit shift (scaled), half shared by a seed's runs

    def mu_with(self, interaction: float) -> float:
        """The mean difficulty that keeps population accuracy at ACCURACY with an interaction of this sd."""
        sd = math.hypot(self.sigma, interaction)
        return optimize.brentq(lambda m: _expect(_sigmoid, m, sd) - ACCURACY, -10, 10)

    def shift_for(self, effect: float) -> float:
        """The logit shift delta that adds `effect` (a fraction, at full size) to the population accuracy."""
        return optimize.brentq(lambda d: _expect(_sigmoid, self.mu + d, self.sigma) - ACCURACY - effect * SCALE,
                               -2, 2)


@lru_cache(maxsize=1)
def regime() -> Regime:
    def gaps(params):
        mu, log_sigma = params
        sd = math.exp(log_sigma)
        return [_expect(_sigmoid, mu, sd) - ACCURACY,
                _expect(lambda a: _sigmoid(a) * (1 - _sigmoid(a)), mu, sd) - DISAGREEMENT / 2]
    mu, log_sigma = optimize.fsolve(gaps, [1.5, 1.0])
    sigma = math.exp(log_sigma)
    slope = _expect(lambda a: _sigmoid(a) * (1 - _sigmoid(a)), mu, sigma)     # d accuracy / d logit shift
    network_sd = math.sqrt(SEED_SD ** 2 - DISAGREEMENT / 2 / FULL_IMAGES)     # the seed sd beyond Bernoulli noise
    return Regime(mu, sigma, network_sd * SCALE / slope)


@dataclass(frozen=True)
class Sweeps:
    """Simulated sweeps' analyses: p-values of each test, shape (SWEEPS,) or (SWEEPS, 6) per configuration."""

    t_primary: np.ndarray           # seed-paired t, 2% vs 0%
    t_all: np.ndarray               # seed-paired t, each of 2..12% vs 0% (the old headline, Holm over 6)
    trend: np.ndarray               # seed_trend over the 7 configurations
    two_way_primary: np.ndarray     # two_way_cluster_t, 2% vs 0%
    two_way_trend: np.ndarray       # two_way_trend
    gains: np.ndarray               # (SWEEPS, seed, 6): images a configuration got right and the baseline wrong
    losses: np.ndarray              # ... and the other way round: McNemar's b and c
    paired_sd: float                # pooled sd of the seeds' 2% - 0% accuracy differences, at full size


@lru_cache(maxsize=None)
def simulate(effect_2pct: float = 0.0, interaction: float = 0.0, seed: int = 0) -> Sweeps:
    """SWEEPS sweeps of the regime; replace_pct 2 adds `effect_2pct` (a fraction) to the population accuracy."""
    r = regime()
    mu = r.mu_with(interaction) if interaction else r.mu
    delta = np.zeros(len(REPLACE_PCT), np.float32)
    delta[1] = r.shift_for(effect_2pct) if effect_2pct else 0.0
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("t_primary", "t_all", "trend", "two_way_primary", "two_way_trend",
                                            "gains", "losses", "var")}
    k = len(REPLACE_PCT)
    for start in range(0, SWEEPS, CHUNK):
        n = min(CHUNK, SWEEPS - start)
        image = mu + r.sigma * rng.standard_normal((n, 1, 1, IMAGES)) + interaction * rng.standard_normal(
            (n, 1, k, IMAGES))
        run = r.sd_u * (math.sqrt(SHARED) * rng.standard_normal((n, SEEDS, 1, 1))
                        + math.sqrt(1 - SHARED) * rng.standard_normal((n, SEEDS, k, 1))) + delta[:, None]
        # right with probability sigmoid(image + run) = 1 / (1 + e^-image e^-run): two small exps, not a big one
        with np.errstate(over="ignore"):
            p = np.exp(-image).astype(np.float32) * np.exp(-run).astype(np.float32)
        p += 1
        np.reciprocal(p, out=p)
        correct = np.less(rng.random(p.shape, dtype=np.float32), p).view(np.int8)
        accuracy = correct.mean(axis=-1)                                              # (n, seed, k)
        _, p_all = stats.paired_t_test(np.moveaxis(accuracy[:, :, 1:], 1, 2),
                                       np.moveaxis(accuracy[:, :, :1].repeat(k - 1, 2), 1, 2))
        out["t_all"].append(p_all)
        out["t_primary"].append(p_all[:, 0])
        out["trend"].append(seed_trend(accuracy, REPLACE_PCT).pvalue)
        out["two_way_primary"].append(two_way_cluster_t(correct[:, :, 1] - correct[:, :, 0]).pvalue)
        out["two_way_trend"].append(two_way_trend(correct, REPLACE_PCT).pvalue)
        out["var"].append((accuracy[:, :, 1] - accuracy[:, :, 0]).var(axis=-1, ddof=1))
        out["gains"].append((correct[:, :, 1:] > correct[:, :, :1]).sum(axis=-1))
        out["losses"].append((correct[:, :, 1:] < correct[:, :, :1]).sum(axis=-1))
    joined = {name: np.concatenate(v) for name, v in out.items() if name != "var"}
    return Sweeps(**joined, paired_sd=float(np.sqrt(np.concatenate(out["var"]).mean())) / SCALE)


@lru_cache(maxsize=None)
def _mcnemar_p(gains: int, losses: int) -> float:
    """The old analysis's McNemar p on a pair of runs with these discordant counts (the concordant images do not
    enter it): exact binomial below 25 discordant images, else chi-square with continuity correction. Kept here,
    the analysis no longer has it."""
    n = gains + losses
    if n < 25:
        return min(1.0, 2.0 * float(st.binom.cdf(min(gains, losses), n, 0.5))) if n else 1.0
    return 1.0 if gains == losses else float(st.chi2.sf((abs(gains - losses) - 1.0) ** 2 / n, 1))


def combined_mcnemar(sweeps: Sweeps) -> np.ndarray:
    """(SWEEPS, 6): the old analysis's p a configuration, twice the mean of its seeds' McNemar p (capped at 1)."""
    seed_p = np.vectorize(_mcnemar_p, otypes=[float])(sweeps.gains, sweeps.losses)      # (SWEEPS, seed, 6)
    return np.minimum(1.0, 2.0 * seed_p.mean(axis=1))


def family_error(*pvalues: np.ndarray) -> float:
    """The share of sweeps where Holm over these tests rejects anything at ALPHA."""
    return float(np.mean((stats.holm(np.column_stack(pvalues)) < ALPHA).any(axis=1)))


def report(line: str) -> None:
    print(f"\n[error rates] {line}")


# ----------------------------------------------------------------------------------- the tests


def test_the_primary_family_keeps_its_familywise_error_under_the_global_null():
    """No configuration changes the population accuracy. Holm over two level-0.05 tests keeps the FWER at or below
    0.05 (Bonferroni's bound); the simulated rate must stay within 3 Monte Carlo standard errors of that
    (0.05 + 0.015, the bound of tests/test_stats.py's Holm test), and the same two tests without Holm must not."""
    null = simulate()
    seed_paired = family_error(null.t_primary, null.trend)
    two_way = family_error(null.two_way_primary, null.two_way_trend)
    unadjusted = np.mean((null.two_way_primary < ALPHA) | (null.two_way_trend < ALPHA))
    report(f"global null, paper regime, {SWEEPS} sweeps: primary family (2% vs 0% + trend, Holm over 2) FWER "
           f"{seed_paired:.3f} seed-paired t, {two_way:.3f} two-way (unadjusted {unadjusted:.3f}); old headline "
           f"(seed-paired t, Holm over 6) {family_error(*null.t_all.T):.3f}; the simulated paired sd "
           f"{null.paired_sd * 100:.3f} pp")
    bound = ALPHA + 3 * SE
    assert seed_paired <= bound and two_way <= bound
    assert unadjusted > bound
    for p in (null.t_primary, null.trend, null.two_way_primary, null.two_way_trend):     # each at its level
        assert np.mean(p < ALPHA) <= bound


def test_the_two_way_test_keeps_the_familywise_error_when_configurations_change_which_images_are_hard():
    """Image x configuration interaction (sd 1 on the logit, population accuracy unchanged): the distribution-level
    null holds, but on one test set the configurations differ, which the seed-paired t reads as an effect."""
    mixed = simulate(interaction=1.0)
    two_way = family_error(mixed.two_way_primary, mixed.two_way_trend)
    seed_paired = family_error(mixed.t_primary, mixed.trend)
    report(f"image x configuration interaction (sd 1), {SWEEPS} sweeps: primary family FWER against the "
           f"distribution-level null {two_way:.3f} two-way, {seed_paired:.3f} seed-paired t (not asserted; the "
           f"issue's figure 0.142); old headline (seed-paired t, Holm over 6) {family_error(*mixed.t_all.T):.3f}")
    assert two_way <= ALPHA
    assert seed_paired > ALPHA + 3 * SE         # the simulation can tell a test that does not hold its level


def test_the_primary_tests_power_at_half_a_point_matches_the_power_table():
    """+0.5 pp at replace_pct 2, 8 seeds, no interaction: the primary decision at alpha 0.05 / 2 (Holm's first step
    over the contrast and the trend) by the two-way test, which the report uses when predictions exist, against
    power_table's figure from the paired sd this simulation implies (the pooled sd of its seeds' differences)."""
    effect = 0.005
    planted = simulate(effect_2pct=effect)
    level = ALPHA / 2
    two_way, seed_paired = np.mean(planted.two_way_primary < level), np.mean(planted.t_primary < level)
    (row,) = power_table(planted.paired_sd, SEEDS, family_size=2, effects=(effect,))
    report(f"+0.5 pp, 8 seeds, {SWEEPS} sweeps, alpha {level}: simulated power {two_way:.3f} two-way, "
           f"{seed_paired:.3f} seed-paired t; power_table {row.power:.3f} (paired sd {planted.paired_sd * 100:.3f} pp, "
           f"dz {row.dz:.2f}; {row.seeds_needed:.0f} seeds for 80%); old headline (seed-paired t, Holm over 6) "
           f"{np.mean(stats.holm(planted.t_all)[:, 0] < ALPHA):.3f}")
    assert row.alpha == level
    assert abs(two_way - row.power) <= 0.05
    assert abs(seed_paired - row.power) <= 3 * math.sqrt(row.power * (1 - row.power) / SWEEPS)


def test_before_the_combined_mcnemar_neither_errs_nor_detects():
    """The figures before issue 20 for its closing note: the old combined McNemar (twice the mean of the seeds'
    McNemar p, Holm over the 6 configurations) in the same regime. Printed, not asserted."""
    null, planted = combined_mcnemar(simulate()), combined_mcnemar(simulate(effect_2pct=0.005))
    fwer = np.mean((stats.holm(null) < ALPHA).any(axis=1))
    power = np.mean(stats.holm(planted)[:, 0] < ALPHA)
    single = np.mean(np.vectorize(_mcnemar_p)(simulate().gains, simulate().losses) < ALPHA)
    report(f"before: combined McNemar (2 x mean p over 8 seeds, Holm over 6), {SWEEPS} sweeps: FWER {fwer:.3f}, "
           f"power at +0.5 pp {power:.3f}; one seed's McNemar rejects {single:.3f} of the time under the null")
    assert null.shape == (SWEEPS, len(REPLACE_PCT) - 1)


def test_fieller_exchange_rate_covers_at_8_seeds():
    """Planted per-seed gains (synthetic 0.3 pp, real 0.6 pp: a synthetic image worth half a real one), seed sds
    0.38 pp, correlated 0.5 through the shared baseline; 4,000 sweeps of 8 seeds. Coverage counts the true 0.5
    inside the set Fieller gives, bounded or not."""
    rng = np.random.default_rng(20)
    sd, corr, draws = 0.0038, 0.5, 4_000
    noise = rng.multivariate_normal([0, 0], sd ** 2 * np.array([[1, corr], [corr, 1]]), size=(draws, SEEDS))
    result = exchange_rate(0.003 + noise[..., 0], 0.006 + noise[..., 1])
    truth = 0.5
    inside = np.where(result.bounded, (result.ci_low <= truth) & (truth <= result.ci_high),
                      ~((result.gap_low < truth) & (truth < result.gap_high)))     # a gap of nan excludes nothing
    report(f"Fieller exchange rate, {draws} sweeps of 8 seeds: coverage {inside.mean():.3f}, bounded in "
           f"{np.mean(result.bounded):.3f}, median rate {np.median(result.rate):.3f}")
    assert 0.93 <= inside.mean() <= 0.97
    assert 0.5 < np.mean(result.bounded) < 1        # both kinds of set occur, so both are checked
