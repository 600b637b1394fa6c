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
