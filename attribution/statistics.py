"""The statistics behind every confidence interval and verdict the outputs carry.

- :data:`Z95`, the two-sided 95% normal quantile every CI uses;
- :func:`clustered_ratio_mean`: a ratio mean over sessions with its session-clustered standard error, as
  Spark columns (the tables' lift and effect; aggregate.py's docstring derives it);
- :func:`normal_ci`: mean +/- Z95 x SE; :func:`mean_ci`, the same from a standard deviation and a count
  (the faithfulness metrics);
- :func:`removal_ci`: an interval with a sampling part, a model part and a model-choice part (the removal
  effect);
- :func:`shrink`: empirical-Bayes shrinkage by support (the stores' ranking);
- :func:`roc_auc_ci`: the Hanley & McNeil interval for a ROC-AUC (is the model better than chance?).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import t as student_t

if TYPE_CHECKING:
    from pyspark.sql import Column

# The standard normal quantile of a two-sided 95% interval: every CI in the tables uses it.
Z95 = 1.959963984540054


def normal_ci(mean: Any, se: Any) -> tuple[Any, Any]:
    """(low, high) = mean -/+ Z95 x se, for numbers or numpy arrays."""
    return mean - Z95 * se, mean + Z95 * se


def removal_ci(
    mean: Any, se_sampling: Any, se_model: Any, models: Any, se_choice: Any = float("nan")
) -> tuple[Any, Any]:
    """(low, high) of a 95% interval with up to three independent parts: session sampling
    (``se_sampling``, a normal quantile: many sessions), the model's own variance (``se_model``: the SE of
    a mean over ``models`` ensemble members, from their spread; Student's t with ``models`` - 1 degrees of
    freedom, since a few members estimate that spread roughly) and the model choice (``se_choice``: how
    far another model family's estimate lies, counted as one standard error; a normal quantile). The
    half-width is the root of the sum of the parts' squared half-widths; a part that is NaN (one member:
    no spread to measure; no other family) counts as 0. Numpy arrays or numbers."""
    se_model = np.nan_to_num(np.asarray(se_model, float), nan=0.0)
    se_choice = np.nan_to_num(np.asarray(se_choice, float), nan=0.0)
    dof = np.maximum(np.asarray(models, float) - 1, 1)
    half = np.sqrt(
        (Z95 * np.asarray(se_sampling, float)) ** 2
        + (student_t.ppf(0.975, dof) * se_model) ** 2
        + (Z95 * se_choice) ** 2
    )
    return mean - half, mean + half


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


# The median of a chi-square with 1 degree of freedom, (the normal's 75% quantile)^2: what e^2 / var has as
# its median when e ~ N(0, var).
CHI2_1_MEDIAN = NormalDist().inv_cdf(0.75) ** 2


def shrink(effect: np.ndarray, se: np.ndarray, support: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """Empirical-Bayes shrinkage towards 0 by support: ``effect * tau2 / (tau2 + noise)``.

    A store's measured effect is its true effect plus two kinds of noise: the sampling noise of the
    sessions that measured it (``se^2``), and the noise of the model's own estimate for that store,
    which is larger the fewer sessions it was learned from (a rarely seen store id keeps an embedding
    that is mostly its random start, and gives large, consistent and meaningless contributions that
    ``se`` can't see). So ``noise = se^2 + b / support``.

    ``b`` comes from the stores that have no effect of their own, which are most of them: for such a
    store effect / sqrt(noise) is a standard normal, so effect^2 / noise has the median of a chi-square
    with 1 degree of freedom (:data:`CHI2_1_MEDIAN`). ``b`` is the value (at least 0) that gives the
    stores' effect^2 / noise that median. A median is moved little by the few stores with real effects,
    which would pull a least-squares fit of effect^2 against 1 / support towards themselves.

    ``tau2``, the spread of the true effects, is the mean of what effect^2 has beyond its noise (its
    positive part). Without ``support`` (or with fewer than 3 stores) ``b`` = 0. A NaN effect or SE
    shrinks to 0. Returns (shrunk, tau2, b)."""
    ok = np.isfinite(effect) & np.isfinite(se)
    if support is not None:
        ok &= np.asarray(support, float) > 0
    out = np.zeros(len(effect))
    if ok.sum() < 2:
        return np.where(ok, effect, 0.0), float("nan"), float("nan")
    e, s2 = effect[ok], se[ok] ** 2
    x = 1.0 / np.asarray(support, float)[ok] if support is not None else np.zeros(len(e))
    b = _model_noise(e, s2, x) if support is not None and ok.sum() >= 3 else 0.0
    noise = s2 + b * x
    tau2 = float(np.mean(np.maximum(e * e - noise, 0.0)))
    if tau2 > 0:
        out[ok] = e * tau2 / (tau2 + noise)
    return out, tau2, b


def _model_noise(e: np.ndarray, s2: np.ndarray, x: np.ndarray) -> float:
    """The ``b`` >= 0 at which median(e^2 / (s2 + b x)) is :data:`CHI2_1_MEDIAN` (0 when the sampling noise
    alone already brings it there), by bisection: the median falls as ``b`` grows. ``x`` = 1 / support > 0."""

    def median_ratio(b: float) -> float:
        var = s2 + b * x
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(e == 0, 0.0, np.where(var > 0, e * e / var, np.inf))
        return float(np.median(ratio))

    if median_ratio(0.0) <= CHI2_1_MEDIAN:
        return 0.0
    # at this b every store has e^2 / (b x) <= the target, so the median is at most it
    high = float(np.max(e * e / x)) / CHI2_1_MEDIAN
    low = 0.0
    for _ in range(100):
        mid = (low + high) / 2
        if median_ratio(mid) > CHI2_1_MEDIAN:
            low = mid
        else:
            high = mid
    return high


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
