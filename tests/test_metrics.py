"""Classification metrics in numpy against scikit-learn (attribution/metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attribution.metrics import average_precision, log_loss, roc_auc


def test_metrics_agree_with_scikit_learn():
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.metrics import log_loss as sk_log_loss

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) * 0.5 + 0.4 * y, 2)  # rounded: ties on purpose
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert log_loss(y, s) == pytest.approx(sk_log_loss(y, s), abs=1e-9)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_the_reliability_curve_by_hand_and_against_scikit_learn():
    from sklearn.calibration import calibration_curve

    from attribution.metrics import binary_metrics, reliability

    # 0.05 and 0.08 in the first bin (one converted), 0.35 alone in the fourth, 0.95 and exactly 1.0 in
    # the last (both converted); the bins between are empty and left out
    bins = reliability([1, 0, 0, 1, 1], [0.05, 0.08, 0.35, 0.95, 1.0])
    assert [(b["low"], b["high"], b["sessions"]) for b in bins] == [(0.0, 0.1, 2), (0.3, 0.4, 1), (0.9, 1.0, 2)]
    assert [b["mean_prediction"] for b in bins] == pytest.approx([0.065, 0.35, 0.975])
    assert [b["positive_rate"] for b in bins] == pytest.approx([0.5, 0.0, 1.0])
    rng = np.random.default_rng(3)
    p = rng.random(2000)
    y = (rng.random(2000) < p).astype(int)
    rate, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    mine = reliability(y, p)
    assert [b["positive_rate"] for b in mine] == pytest.approx(rate, abs=1e-12)
    assert [b["mean_prediction"] for b in mine] == pytest.approx(mean, abs=1e-12)
    # the training metrics carry it, from the logits
    logits = np.log(p / (1 - p))
    curve = binary_metrics(y, logits)["reliability"]
    assert sum(b["sessions"] for b in curve) == 2000 and [b["mean_prediction"] for b in curve] == pytest.approx(mean)
