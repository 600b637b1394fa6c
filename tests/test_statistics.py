"""The statistics behind the CIs and the store ranking (attribution/statistics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from attribution import statistics
from attribution.metrics import roc_auc


def test_shrinkage_pulls_noisy_effects_towards_zero():
    effects = np.array([0.5, 0.5, -0.1, 0.0])
    se = np.array([0.05, 0.5, 0.05, np.nan])
    shrunk, tau2, b = statistics.shrink(effects, se)
    # what effect^2 has beyond se^2, its positive part, averaged over the three stores with an SE
    assert tau2 == pytest.approx(((0.25 - 0.0025) + 0 + (0.01 - 0.0025)) / 3) and b == 0
    assert shrunk[0] > shrunk[1] > 0  # the same effect, less precise: pulled further towards 0
    assert shrunk[3] == 0.0  # no SE: no evidence
    assert statistics.shrink(np.array([0.1, -0.1]), np.array([1.0, 1.0]))[0].tolist() == [0.0, 0.0]  # all noise


def test_the_chi2_median_is_what_squared_standard_normals_have():
    z = np.random.default_rng(3).standard_normal(200_000)
    assert float(np.median(z * z)) == pytest.approx(statistics.CHI2_1_MEDIAN, abs=0.01)


def test_shrinkage_by_support_finds_the_models_noise_and_ranks_the_real_stores_first():
    """300 stores with no effect, whose measured effect is the model's noise, N(0, se^2 + b / sessions)
    with b = 0.8 (a store seen in 20 sessions measures +/-0.2 typically), supports log-uniform in 20-1,500
    sessions; and 7 popular stores with real effects of 0.25-0.6. Fitting b on the stores as if all had
    no effect recovers it, and the shrunk effects rank the 7 real stores first, where the raw effects
    rank rare, noisy stores among them. (Over 60 draws of this setup: b within 25% in 56, the shrunk
    top 7 right in 60, the raw top 7 wrong in 53; this is one fixed draw.)"""
    rng = np.random.default_rng(7)
    b_true = 0.8
    null_support = np.exp(rng.uniform(np.log(20), np.log(1500), 300)).round()
    real_support = rng.integers(300, 1500, 7).astype(float)
    support = np.r_[null_support, real_support]
    se = np.full(len(support), 0.003)
    noise_sd = np.sqrt(se**2 + b_true / support)
    truth = np.r_[np.zeros(300), rng.uniform(0.25, 0.6, 7)]
    effects = truth + rng.standard_normal(len(support)) * noise_sd
    shrunk, tau2, b = statistics.shrink(effects, se, support)
    assert b == pytest.approx(b_true, rel=0.25)
    noise = se**2 + b / support
    # b is where the median store's effect^2 / noise is the chi-square median
    assert float(np.median(effects**2 / noise)) == pytest.approx(statistics.CHI2_1_MEDIAN, rel=1e-6)
    assert tau2 == pytest.approx(float(np.mean(np.maximum(effects**2 - noise, 0))))
    assert shrunk == pytest.approx(effects * tau2 / (tau2 + noise))
    real = set(range(300, 307))
    assert set(np.argsort(-shrunk)[:7]) == real
    assert set(np.argsort(-effects)[:7]) != real  # raw, rare stores' noise gets in among them
    # sampling noise alone (no support) explains none of it: b = 0, and the ranking is the raw one's
    plain, _, b0 = statistics.shrink(effects, se)
    assert b0 == 0 and list(np.argsort(-plain)[:7]) == list(np.argsort(-effects)[:7])


def test_the_roc_auc_interval_covers_the_true_auc_about_95_percent_of_the_time():
    """Scores of the two classes from N(0, 1) and N(d, 1): the true AUC is Phi(d / sqrt(2)). Over 400 test
    sets the Hanley & McNeil interval covers it in about 95% of them (binomial noise: 92-98%)."""
    from statistics import NormalDist

    rng = np.random.default_rng(11)
    d, positives, negatives = 0.8, 60, 340
    true_auc = NormalDist().cdf(d / np.sqrt(2))
    covered = 0
    for _ in range(400):
        y = np.r_[np.ones(positives), np.zeros(negatives)]
        s = np.r_[rng.normal(d, 1, positives), rng.normal(0, 1, negatives)]
        low, high = statistics.roc_auc_ci(roc_auc(y, s), positives, negatives)
        covered += low <= true_auc <= high
    assert 0.92 <= covered / 400 <= 0.98
    assert all(np.isnan(statistics.roc_auc_ci(0.7, 0, 10)))  # one class: no interval


def test_a_normal_interval_is_the_mean_plus_minus_z95_standard_errors():
    low, high = statistics.normal_ci(np.array([0.0, 1.0]), np.array([1.0, 0.5]))
    # the standard normal's 97.5% quantile, computed here rather than read from the module's constant
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.975)
    assert low == pytest.approx([-z, 1 - 0.5 * z]) and high == pytest.approx([z, 1 + 0.5 * z])


def test_the_ci_of_a_mean_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(12)
    draws = rng.normal(0.3, 2.0, size=(500, 200))
    low, high = statistics.mean_ci(draws.mean(axis=1), draws.std(axis=1, ddof=1), 200)
    assert 0.92 <= np.mean((low <= 0.3) & (0.3 <= high)) <= 0.98
    assert statistics.mean_ci(1.0, 2.0, 0) == statistics.normal_ci(1.0, 2.0)  # no count: counted as one


def test_removal_ci_covers_at_95_percent_when_a_few_members_estimate_the_model_part():
    """Three members drawn around the true value (model SE from their spread) plus an independent sampling
    error of known SE: the interval holds the true value about 95% of the time. With the normal quantile
    for the model part (three members estimate the spread roughly) it would hold it far less often."""
    rng = np.random.default_rng(11)
    n, k, sd_model, se_sampling = 20000, 3, 1.0, 0.5
    members = rng.normal(0.0, sd_model, (n, k))
    estimate = members.mean(axis=1) + rng.normal(0.0, se_sampling, n)
    se_model = members.std(axis=1, ddof=1) / np.sqrt(k)
    low, high = statistics.removal_ci(estimate, np.full(n, se_sampling), se_model, np.full(n, k))
    coverage = ((low <= 0) & (0 <= high)).mean()
    assert 0.94 <= coverage <= 0.99, coverage
    z_half = np.hypot(statistics.Z95 * se_sampling, statistics.Z95 * se_model)
    assert (np.abs(estimate) <= z_half).mean() < 0.92
    # one member: no model part, the sampling interval alone
    low1, high1 = statistics.removal_ci(1.0, 0.5, float("nan"), 1)
    assert (low1, high1) == pytest.approx(statistics.normal_ci(1.0, 0.5))


def test_removal_ci_counts_the_other_model_family_as_one_standard_error():
    """The model-choice part: with another family's estimate ``b`` at distance d from the published one,
    the half-width is sqrt(sampling^2 + model^2 + (1.96 d)^2) (the parts add in quadrature, each at its
    own quantile), so the interval always holds ``b`` itself, and it is at least as wide as every part
    alone. No other family (NaN): the interval without that part."""
    rng = np.random.default_rng(5)
    n = 1000
    mean, other = rng.normal(0, 2, n), rng.normal(0, 2, n)
    se, se_model, k = rng.uniform(0.01, 0.5, n), rng.uniform(0.01, 0.5, n), np.full(n, 3)
    low, high = statistics.removal_ci(mean, se, se_model, k, np.abs(mean - other))
    assert np.all((low < other) & (other < high))
    t2 = 4.302652729911275  # Student's t, 97.5%, 2 degrees of freedom
    expected = np.sqrt((1.959963984540054 * se) ** 2 + (t2 * se_model) ** 2 + (1.959963984540054 * (mean - other)) ** 2)
    np.testing.assert_allclose(high - mean, expected, rtol=1e-9)
    two_low, two_high = statistics.removal_ci(mean, se, se_model, k)
    assert np.all(high - low >= two_high - two_low)
    assert statistics.removal_ci(1.0, 0.5, float("nan"), 1, float("nan")) == pytest.approx(
        statistics.normal_ci(1.0, 0.5)
    )
