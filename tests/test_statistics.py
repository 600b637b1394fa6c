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
    assert tau2 == pytest.approx((0.25 + 0.25 + 0.01) / 3 - (0.0025 + 0.25 + 0.0025) / 3) and b == 0
    assert shrunk[0] > shrunk[1] > 0  # the same effect, less precise: pulled further towards 0
    assert shrunk[3] == 0.0  # no SE: no evidence
    assert statistics.shrink(np.array([0.1, -0.1]), np.array([1.0, 1.0]))[0].tolist() == [0.0, 0.0]  # all noise


def test_shrinkage_by_support_discounts_what_a_rarely_seen_store_measures():
    """Rare stores (20 sessions) measure large effects of either sign with tiny sampling SEs (the model's
    estimate for them is noise, consistent across their sessions); common ones (1,000 sessions) small
    ones. The effect^2 vs 1/sessions line has slope ~ 0.04 x 20: a rare store's effect is mostly that."""
    rare = np.array([0.2, -0.2, 0.2, -0.2])
    common = np.array([0.1, -0.1, 0.0, 0.0])
    effects = np.r_[rare, common]
    se = np.full(8, 0.01)
    support = np.r_[np.full(4, 20.0), np.full(4, 1000.0)]
    shrunk, tau2, b = statistics.shrink(effects, se, support)
    x, y = 1 / support, effects**2 - se**2
    slope, intercept = np.polyfit(x, y, 1)
    assert b == pytest.approx(slope) and tau2 == pytest.approx(intercept)
    assert shrunk == pytest.approx(effects * tau2 / (tau2 + se**2 + b * x))
    assert shrunk[4] > shrunk[0] > 0  # the common store's 0.1 now ranks above the rare store's 0.2
    plain = statistics.shrink(effects, se)[0]
    assert plain[0] > plain[4]  # by sampling noise alone it would not


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
