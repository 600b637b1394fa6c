"""Is the attribution right? Faithfulness of each method's event ranking, and agreement between methods.
Plain torch and numpy on batches of sessions, no Spark (``udfs/faithfulness_udf.py`` runs it in Spark).

A method ranks a session's events by its normalized score, highest first (ties: the earlier event
first). For a session x with predicted conversion probability p(x):

- ``comprehensiveness`` at k = |p(x) - p(x without its top-k events)|: higher = the events the method
  ranks first carry the prediction (ERASER, DeYoung et al. 2020).
- ``sufficiency`` at k = |p(x) - p(only its top-k events)|: lower = those events alone reproduce it.
- k is a number of events (1, 3, 5) or a share of the session (10%, 20%, 50%: k = ceil(share x length)),
  at least 1 and at most the session's length. ``aopc_comprehensiveness`` and ``aopc_sufficiency``
  average over the k set (ERASER's AOPC).
- ``deletion_area``: events removed in the method's order; the area under |p(x) - p(x without the first
  round(f x length) events)| for f from 0 to 1 (trapezoids, ``deletion_steps`` of them). Petsiuk et al.
  (2018) integrate the probability itself as it falls; here the curve is the distance from the full
  session's prediction, so, like comprehensiveness, higher is better.

Why absolute changes: the normalized scores (``gradient_attribution`` and the others) rank events by
magnitude, so an event that strongly lowers conversion ranks as high as one that raises it. ERASER's
"drop in the predicted class's probability" would count removing a strong negative event as a negative
comprehensiveness, penalizing a method for finding it.

"Removing" an event masks it out exactly as padding is masked: the model sees a shorter session, the
remaining events keep their positions, and no unseen token is introduced. It is computed by compacting
the session to its remaining events at their original positions (``positions=`` of
:meth:`SessionTransformer.forward_from_representation`), which gives the masked logit exactly at the
cost of the remaining events only.

**Random baseline**: the same metrics for ``random_draws`` uniformly random orders of the same session,
averaged. The draws are seeded by the session id, so a run is reproducible and every method is compared
with the same random orders.

**Agreement**: per session, the Spearman rank correlation (average ranks for ties) between two methods'
scores; sessions with fewer than ``AGREEMENT_MIN_EVENTS`` events, or where a method's scores are all
equal, have none.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from attribution.errors import InputError
from attribution.features import EncodedSessions, length_buckets
from attribution.model import SessionTransformer
from attribution.removal import empty_probability, masked_probabilities, represent

METRICS = ("comprehensiveness", "sufficiency", "aopc_comprehensiveness", "aopc_sufficiency", "deletion_area")
HIGHER_IS_BETTER = {
    "comprehensiveness": True,
    "sufficiency": False,
    "aopc_comprehensiveness": True,
    "aopc_sufficiency": False,
    "deletion_area": True,
}
AGREEMENT_MIN_EVENTS = 3


@dataclass(frozen=True)
class FaithfulnessOptions:
    k_events: tuple[int, ...] = (1, 3, 5)
    k_fractions: tuple[float, ...] = (0.1, 0.2, 0.5)
    deletion_steps: int = 10
    random_draws: int = 5
    seed: int = 0
    batch_positions: int = 65536  # padded positions (variants x longest) per forward pass

    def k_labels(self) -> list[str]:
        return [str(k) for k in self.k_events] + [f"{round(100 * f):g}%" for f in self.k_fractions]


def k_values(length: int, options: FaithfulnessOptions) -> np.ndarray:
    """The k set for a session of ``length`` events, each in [1, length]."""
    ks = [*options.k_events, *(math.ceil(f * length - 1e-9) for f in options.k_fractions)]
    return np.clip(np.array(ks, dtype=np.int64), 1, length)


def deletion_counts(length: int, steps: int) -> np.ndarray:
    """Events removed at f = 0, 1/steps, ..., 1: round half up of f x length."""
    return np.floor(np.arange(steps + 1) / steps * length + 0.5).astype(np.int64)


def ranks_of(scores: np.ndarray) -> np.ndarray:
    """rank[i] = the place of event i in the order highest score first (0 = first; ties: earlier first)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(len(scores))
    return rank


def random_ranks(session_id: str, length: int, draws: int, seed: int) -> np.ndarray:
    """(draws, length) uniformly random rank vectors, the same for a session id and seed on every run."""
    key = int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng([seed, key])
    return rng.permuted(np.tile(np.arange(length), (draws, 1)), axis=1)


def average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    top = np.cumsum(counts)
    return (top - (counts - 1) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either side is constant or has fewer than 2 values."""
    if len(a) < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


@dataclass
class SessionMetrics:
    """Per session: for each order (the methods, then the random draws), each metric's value.

    ``values[name]`` is (orders, K) for comprehensiveness and sufficiency (K = len(k_labels)) and
    (orders,) for the AOPCs and the deletion area."""

    values: dict[str, np.ndarray]
    p_full: float


class Variants(NamedTuple):
    """The keep-masks one session needs, for all its orders. Variant v keeps ``masks[inverse[v]]``; it is
    of kind ``kinds[v]`` (0: the order's top ``js[v]`` events removed; 1: only they kept), for order
    ``orders[v]`` (the methods, then the random draws)."""

    masks: np.ndarray  # (U, L) bool: the distinct keep-masks
    inverse: np.ndarray  # (V,): each variant's mask
    kinds: np.ndarray  # (V,) int8
    orders: np.ndarray  # (V,)
    js: np.ndarray  # (V,)


def _variants(rank: np.ndarray, length: int, options: FaithfulnessOptions) -> Variants:
    """The variants of one session. Trivial ones (nothing or everything removed) are not listed: their
    probabilities are p(x) and p(empty session)."""
    ks = k_values(length, options)
    removed = np.unique(np.r_[ks, deletion_counts(length, options.deletion_steps)])
    removed = removed[(removed > 0) & (removed < length)]
    kept = np.unique(ks[ks < length])
    o = rank.shape[0]
    masks = np.concatenate(
        [
            (rank[:, None, :] >= removed[None, :, None]).reshape(-1, length),
            (rank[:, None, :] < kept[None, :, None]).reshape(-1, length),
        ]
    )
    kinds = np.r_[np.zeros(o * len(removed), np.int8), np.ones(o * len(kept), np.int8)]
    orders = np.r_[np.repeat(np.arange(o), len(removed)), np.repeat(np.arange(o), len(kept))]
    js = np.r_[np.tile(removed, o), np.tile(kept, o)]
    # Orders often agree (two methods with the same top event, a random draw that happens to match):
    # each distinct set of remaining events is evaluated once.
    unique, inverse = np.unique(masks, axis=0, return_inverse=True)
    return Variants(unique, inverse.reshape(-1), kinds, orders, js)


def evaluate_sessions(
    model: SessionTransformer,
    encoded: EncodedSessions,
    scores: list[np.ndarray],
    session_ids: list[str],
    options: FaithfulnessOptions = FaithfulnessOptions(),
    device: torch.device | str = "cpu",
    stats_out: dict | None = None,
) -> list[SessionMetrics]:
    """Faithfulness metrics of every session of ``encoded``. ``scores[m]`` is method m's normalized
    scores, flat and aligned with ``encoded.offsets``. Orders per session: the methods in the order
    given, then ``options.random_draws`` random ones."""
    if model.training:
        raise ValueError("faithfulness needs the model in eval mode (dropout off); call model.eval()")
    n = len(encoded)
    lengths = encoded.lengths
    n_orders = len(scores) + options.random_draws
    p_empty = empty_probability(model, device)
    results: list[SessionMetrics] = [None] * n  # type: ignore[list-item]
    stats = {"forward_positions": 0, "variants": 0}
    # chunks of sessions whose representations are held at once (bounded by batch_positions)
    for chunk in length_buckets(lengths, max(1, options.batch_positions // 100), max_positions=options.batch_positions):
        if not len(chunk):
            continue
        x, l_full = represent(model, encoded, chunk, device)
        p_full = 1.0 / (1.0 + np.exp(-l_full))
        width = x.shape[1]
        all_masks, owners, meta = [], [], []
        for local, row in enumerate(chunk):
            length = int(lengths[row])
            lo = int(encoded.offsets[row])
            rank = np.concatenate(
                [
                    np.stack([ranks_of(s[lo : lo + length]) for s in scores]).reshape(len(scores), length),
                    random_ranks(session_ids[row], length, options.random_draws, options.seed),
                ]
            )
            variants = _variants(rank, length, options)
            padded = np.zeros((len(variants.masks), width), dtype=bool)
            padded[:, :length] = variants.masks
            all_masks.append(padded)
            owners.append(np.full(len(variants.masks), local))
            meta.append(variants)
        masks = np.concatenate(all_masks)
        owner = np.concatenate(owners)
        probs = masked_probabilities(model, x, owner, masks, options.batch_positions)
        stats["forward_positions"] += int(masks.sum()) + int(lengths[chunk].sum())
        stats["variants"] += len(masks)
        start = 0
        for local, row in enumerate(chunk):
            v = meta[local]
            distinct = len(v.masks)
            p = probs[start : start + distinct][v.inverse]
            start += distinct
            results[row] = _metrics(
                int(lengths[row]), float(p_full[local]), p_empty, v.kinds, v.orders, v.js, p, n_orders, options
            )
    if stats_out is not None:
        stats_out.update(stats)
    return results


def _metrics(
    length: int,
    p_full: float,
    p_empty: float,
    kinds: np.ndarray,
    orders: np.ndarray,
    js: np.ndarray,
    p: np.ndarray,
    n_orders: int,
    options: FaithfulnessOptions,
) -> SessionMetrics:
    # p after removing the top-j (j = 0..length) and keeping only the top-j, per order
    removed = np.full((n_orders, length + 1), np.nan)
    kept = np.full((n_orders, length + 1), np.nan)
    removed[:, 0], removed[:, length] = p_full, p_empty
    kept[:, 0], kept[:, length] = p_empty, p_full
    removed[orders[kinds == 0], js[kinds == 0]] = p[kinds == 0]
    kept[orders[kinds == 1], js[kinds == 1]] = p[kinds == 1]
    ks = k_values(length, options)
    comp = np.abs(p_full - removed[:, ks])
    suff = np.abs(p_full - kept[:, ks])
    fractions = np.arange(options.deletion_steps + 1) / options.deletion_steps
    curve = np.abs(p_full - removed[:, deletion_counts(length, options.deletion_steps)])
    deletion = ((curve[:, 1:] + curve[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)
    return SessionMetrics(
        values={
            "comprehensiveness": comp,
            "sufficiency": suff,
            "aopc_comprehensiveness": comp.mean(axis=1),
            "aopc_sufficiency": suff.mean(axis=1),
            "deletion_area": deletion,
        },
        p_full=p_full,
    )


def long_rows(
    metrics: SessionMetrics, methods: list[str], options: FaithfulnessOptions
) -> Iterator[tuple[str, str, str, float, float]]:
    """(method, metric, k, value, random_value) rows of one session; random_value is the mean over the
    random draws of the same metric."""
    labels = options.k_labels()
    n = len(methods)
    for name in METRICS:
        v = metrics.values[name]
        rand = v[n:].mean(axis=0)
        for m, method in enumerate(methods):
            if v.ndim == 2:
                for j, label in enumerate(labels):
                    yield method, name, label, float(v[m, j]), float(rand[j])
            else:
                yield method, name, "all" if name.startswith("aopc") else "curve", float(v[m]), float(rand)


def agreement_rows(scores: dict[str, np.ndarray]) -> Iterator[tuple[str, str, float]]:
    """(method, other_method, spearman) for each pair of methods of one session, where defined."""
    names = list(scores)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if len(scores[a]) < AGREEMENT_MIN_EVENTS:
                continue
            rho = spearman(scores[a], scores[b])
            if not math.isnan(rho):
                yield a, b, rho


class FaithfulnessInputError(InputError):
    """The event table and the model or sessions don't belong together."""
