"""The statistics behind every confidence interval and verdict the outputs carry.

- :data:`Z95`, the two-sided 95% normal quantile every CI uses;
- :func:`clustered_ratio_mean`: a ratio mean over sessions with its session-clustered standard error, as
  Spark columns (the tables' lift and effect; aggregate.py's docstring derives it);
- :func:`normal_ci`: mean +/- Z95 x SE (the removal effect); :func:`mean_ci`, the same from a standard
  deviation and a count (the faithfulness metrics);
- :func:`shrink`: empirical-Bayes shrinkage by support (the stores' ranking);
- :func:`roc_auc_ci`: the Hanley & McNeil interval for a ROC-AUC (is the model better than chance?).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import Column

# The standard normal quantile of a two-sided 95% interval: every CI in the tables uses it.
Z95 = 1.959963984540054


def normal_ci(mean: Any, se: Any) -> tuple[Any, Any]:
    """(low, high) = mean -/+ Z95 x se, for numbers or numpy arrays."""
    return mean - Z95 * se, mean + Z95 * se


def mean_ci(mean: Any, sd: Any, count: Any) -> tuple[Any, Any]:
    """The 95% CI of a mean of ``count`` independent values with standard deviation ``sd``:
    mean -/+ Z95 x sd / sqrt(count) (a count below 1 counts as 1), for numbers, arrays or pandas Series."""
    half = Z95 * sd / np.sqrt(np.maximum(count, 1))
    return mean - half, mean + half


def clustered_ratio_mean(
    c: Callable[[str], Column], total: str, sq: str, cross: str, events: str, nn: str, sessions: str
) -> tuple[Column, Column]:
    """The ratio mean m = sum(x) / sum(n) over sessions and its session-clustered SE, from the per-key
    sums of x, x^2, x*n, n and n^2 and the session count G, read with ``c`` (a column by name):
    Var(m) = G / (G - 1) * sum_i (x_i - m n_i)^2 / (sum_i n_i)^2, null for one session. (mean, se) Columns."""
    from pyspark.sql import functions as F

    mean = c(total) / c(events)
    var = F.when(
        c(sessions) > 1,
        (c(sessions) / (c(sessions) - 1))
        * F.greatest(c(sq) - 2 * mean * c(cross) + mean * mean * c(nn), F.lit(0.0))
        / (c(events) * c(events)),
    )
    return mean, F.sqrt(var)


def shrink(effect: np.ndarray, se: np.ndarray, support: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """Empirical-Bayes shrinkage towards 0 by support: ``effect * tau2 / (tau2 + noise)``.

    A store's measured effect is its true effect plus two kinds of noise: the sampling noise of the
    sessions that measured it (``se^2``), and the noise of the model's own estimate for that store,
    which is larger the fewer sessions it was learned from (a rarely seen store id keeps an embedding
    that is mostly its random start, and gives large, consistent and meaningless contributions that
    ``se`` can't see). So ``noise = se^2 + b / support``, and with ``tau2`` the variance of the true
    effects around 0, E[effect^2 - se^2] = tau2 + b / support: a least-squares line through the stores'
    (1 / support, effect^2 - se^2) gives ``tau2`` (its intercept) and ``b`` (its slope), both at least
    0. Without ``support`` (or fewer than 3 stores), ``b`` = 0 and tau2 = mean(effect^2 - se^2).
    A NaN effect or SE shrinks to 0. Returns (shrunk, tau2, b)."""
    ok = np.isfinite(effect) & np.isfinite(se)
    if support is not None:
        ok &= np.asarray(support, float) > 0
    out = np.zeros(len(effect))
    if ok.sum() < 2:
        return np.where(ok, effect, 0.0), float("nan"), float("nan")
    e, s2 = effect[ok], se[ok] ** 2
    y = e * e - s2
    b = 0.0
    if support is not None and ok.sum() >= 3:
        x = 1.0 / np.asarray(support, float)[ok]
        if np.var(x) > 0:
            b = max(0.0, float(np.cov(x, y, bias=True)[0, 1] / np.var(x)))
        tau2 = float(np.mean(y) - b * np.mean(x))
        if tau2 < 0:  # the line crosses below 0: no spread of true effects beyond the noise
            tau2 = 0.0
        noise = s2 + b * x
    else:
        tau2 = max(0.0, float(np.mean(y)))
        noise = s2
    if tau2 > 0:
        out[ok] = e * tau2 / (tau2 + noise)
    return out, tau2, b


def roc_auc_ci(auc: float, positives: int, negatives: int, z: float = Z95) -> tuple[float, float]:
    """A 95% confidence interval for a ROC-AUC (Hanley & McNeil, 1982), clipped to [0, 1]; (nan, nan) when
    either class is empty or the AUC is undefined."""
    if not positives or not negatives or not math.isfinite(auc):
        return float("nan"), float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives
    )
    se = math.sqrt(max(var, 0.0))
    return max(0.0, auc - z * se), min(1.0, auc + z * se)
