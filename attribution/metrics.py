"""Classification metrics in numpy (no scikit-learn at run time; the tests compare against it)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _check(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    return y, s


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve, ties counted as half (Mann-Whitney U). NaN when one class is absent."""
    y, s = _check(labels, scores)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """PR-AUC as average precision (the step-wise area, as scikit-learn computes it)."""
    y, s = _check(labels, scores)
    n_pos = y.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    # one threshold per distinct score
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(labels: ArrayLike, probabilities: ArrayLike, eps: float = 1e-7) -> float:
    y, p = _check(labels, probabilities)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def reliability(labels: ArrayLike, probabilities: ArrayLike, bins: int = 10) -> list[dict]:
    """The reliability curve: the predictions in ``bins`` equal-width bins of [0, 1] (a prediction of
    exactly 1 in the last), and per non-empty bin its bounds, sessions, mean prediction and conversion
    rate. A calibrated model's rate is near its mean prediction in every bin."""
    y, p = _check(labels, probabilities)
    at = np.minimum((p * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        mask = at == b
        if mask.any():
            out.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "sessions": int(mask.sum()),
                    "mean_prediction": float(p[mask].mean()),
                    "positive_rate": float(y[mask].mean()),
                }
            )
    return out


def binary_metrics(labels: ArrayLike, logits: ArrayLike) -> dict:
    """ROC-AUC, PR-AUC, log loss, rates and the reliability curve from labels and logits."""
    y = np.asarray(labels, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    return {
        "roc_auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "log_loss": log_loss(y, p),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "mean_prediction": float(p.mean()) if len(p) else float("nan"),
        "sessions": int(len(y)),
        "reliability": reliability(y, p) if len(y) else [],
    }
