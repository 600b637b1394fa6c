"""Removal effects: how much the model's P(convert) falls when every event of one key leaves a session.

For a session x and a key k (an event type, a position bin or a store) present in it, the removal effect
is ``p(x) - p(x without the events of k)``: positive when the key's events raise the predicted
conversion (a driver), negative when they lower it (a detractor). It is the removal-effect convention of
multi-touch attribution (the Markov-chain removal effect), applied to the model. It needs no attribution
method, so it is the same for every method's row of a table.

**"Without" closes the gap**: the session as if the key's events had never happened, its remaining events
in their order at positions 1, 2, ... (each keeps its own features: event type, store, seconds since the
previous event as logged). That is a session like the ones the model was trained on. Keeping the removed
events' positions empty instead makes sessions no training session looks like (one that starts at
position 6 when the first five events go), and on the embedded default it moved the published effects
further from the planted model's (docs/scenarios.md, Removal effects against the truth). A session whose
every event has the key becomes the empty session (the CLS token alone).

**Ensemble.** With ``train.ensemble_members`` K > 1 the model directory holds K models: the one every
table reads and K - 1 trained from other seeds on bootstrap resamples of the training sessions. Each
member's removal effect is computed on the same sessions and variants; the published value is their
mean, and the members' spread is the removal effect's model uncertainty (attribution/removal_tables.py turns
it into the model SE). The members agree where the data pins an effect down and spread where it does
not (two event types that nearly always occur together), which session sampling alone never shows.

**Pairs.** For ordered pairs of event types (a, b), each sampled session with an a before a b also gets
the pair's **interaction** R(a and b) - R(a) - R(b), R being the removal effect: below 0 the two work
together (each one's effect depends on the other), above 0 they stand in for each other. It is given on
the logit as well as in P(convert): a model whose logit adds one term per event has no interaction on the
logit (but what closing the gap does to the positions), while in P(convert) the S-curve makes one.

Each event carries the removal effect of its own key in its session, so the event table holds it with no
extra table; the report reads one value per (session, key). Only a deterministic sample of sessions is
evaluated (about ``attribution.removal_sessions`` of them, by a hash of the session id), which bounds the
cost: per member, one forward pass per distinct key of a sampled session, on that session's remaining
events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from attribution.features import EncodedSessions, length_buckets
from attribution.model import SessionTransformer, to_tensors
from attribution.schema import POSITION_BIN_UPPER


def sampled(session_ids: list[str], fraction: float) -> np.ndarray:
    """Whether each session is in the removal sample: a hash of its id below ``fraction``, so the same
    sessions are chosen on every run, in every partitioning."""
    if fraction >= 1.0:
        return np.ones(len(session_ids), dtype=bool)
    if fraction <= 0.0:
        return np.zeros(len(session_ids), dtype=bool)
    limit = int(fraction * 2**64)
    return np.array(
        [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") < limit for s in session_ids],
        dtype=bool,
    )


def position_codes(offsets: np.ndarray) -> np.ndarray:
    """The position bin index (0 = 1-5, ..., 4 = 50+) of every event, flat and aligned with ``offsets``."""
    lengths = np.diff(offsets)
    positions = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths) + 1
    return np.searchsorted(np.asarray(POSITION_BIN_UPPER), positions, side="left").astype(np.int64)


def key_codes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A list column -> per-event integer codes of its values, flat; -1 where the value is null (an
    event without a store has no store key)."""
    return key_values(column)[0]


def key_values(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """:func:`key_codes` and the value of each code (code i is ``values[i]``)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = pc.list_flatten(arr)
    if values.type != pa.string():
        values = pc.cast(values, pa.string())
    encoded = pc.dictionary_encode(values)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


def masked_probabilities(
    model: SessionTransformer,
    x: torch.Tensor,
    sessions: np.ndarray,
    keep: np.ndarray,
    max_positions: int,
    keep_positions: bool = True,
) -> np.ndarray:
    """P(convert) of each variant v: session ``sessions[v]`` of ``x`` (S, Lmax, d) with only the events of
    ``keep[v]`` (V, Lmax), compacted to them, in order: at their original positions (``keep_positions``,
    as faithfulness deletes events) or at positions 1..k (the gap closed, as removal effects remove
    them). Every variant keeps at least one event (the empty session is :func:`empty_probability`)."""
    return _sigmoid(masked_logits(model, x, sessions, keep, max_positions, keep_positions))


def masked_logits(
    model: SessionTransformer,
    x: torch.Tensor,
    sessions: np.ndarray,
    keep: np.ndarray,
    max_positions: int,
    keep_positions: bool = True,
) -> np.ndarray:
    """The logits of :func:`masked_probabilities`' variants."""
    kept = keep.sum(axis=1)
    out = np.empty(len(keep))
    if not len(keep):
        return out
    device = x.device
    for rows in length_buckets(kept, max(1, max_positions // max(1, int(kept.max()))), max_positions=max_positions):
        if not len(rows):
            continue
        width = int(kept[rows].max())
        idx = np.argsort(~keep[rows], axis=1, kind="stable")[:, :width]  # kept events first, in order
        valid = np.arange(width)[None, :] < kept[rows][:, None]
        s = torch.from_numpy(sessions[rows]).to(device)
        i = torch.from_numpy(idx).to(device)
        with torch.no_grad():
            logits, _ = model.forward_from_representation(
                x[s[:, None], i], torch.from_numpy(valid).to(device), positions=(i + 1) if keep_positions else None
            )
        out[rows] = logits.double().cpu().numpy()
    return out


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def empty_logit(model: SessionTransformer, device: torch.device | str) -> float:
    """The logit of a session with every event removed (the CLS token alone)."""
    x = torch.zeros(1, 0, model.spec.input_width, device=device)
    with torch.no_grad():
        logit, _ = model.forward_from_representation(x, torch.zeros(1, 0, dtype=torch.bool, device=device))
    return float(logit[0])


def empty_probability(model: SessionTransformer, device: torch.device | str) -> float:
    """P(convert) of a session with every event removed (the CLS token alone)."""
    return float(_sigmoid(np.array(empty_logit(model, device))))


def represent(
    model: SessionTransformer, encoded: EncodedSessions, rows: np.ndarray, device: torch.device | str
) -> tuple[torch.Tensor, np.ndarray]:
    """Sessions ``rows`` padded into one batch: their input representations (S, Lmax, d), from which
    masked variants are cut, and their full sessions' logits (S,)."""
    tokens, cont, mask = to_tensors(encoded.batch(rows), model.spec.fields, device)
    with torch.no_grad():
        x = model.represent(tokens, cont)
        full, _ = model.forward_from_representation(x, mask)
    return x, full.double().cpu().numpy()


@dataclass
class PairInteraction:
    """One ordered pair's interaction in one session (:func:`removal_effects` with ``pairs``): the
    session's row in ``encoded``, the pair's index in ``pairs``, and per ensemble member R(a and b) -
    R(a) - R(b) in P(convert) (``probability``) and on the logit (``log_odds``)."""

    row: int
    pair: int
    probability: np.ndarray
    log_odds: np.ndarray


def ordered_pair_present(codes: np.ndarray, a: int, b: int) -> bool:
    """Whether a session's per-event codes have an ``a`` before a ``b``."""
    at_a, at_b = np.flatnonzero(codes == a), np.flatnonzero(codes == b)
    return bool(len(at_a) and len(at_b) and at_a[0] < at_b[-1])


EMPTY = -1  # a variant's index when it is the empty session (every event removed)


class _Variants:
    """The masked sessions of one chunk of removal: each a keep-mask (as wide as the chunk's longest
    session) and the chunk-local session it is cut from."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.keep: list[np.ndarray] = []
        self.owners: list[int] = []

    def add(self, local: int, length: int, removed: np.ndarray) -> int:
        """The index of the variant of session ``local`` (``length`` events) without the ``removed``
        events; :data:`EMPTY` when that leaves none."""
        if removed.all():
            return EMPTY
        keep = np.zeros(self.width, dtype=bool)
        keep[:length] = ~removed
        self.keep.append(keep)
        self.owners.append(local)
        return len(self.keep) - 1


def removal_effects(
    models: SessionTransformer | Sequence[SessionTransformer],
    encoded: EncodedSessions,
    keys: dict[str, np.ndarray],
    selected: np.ndarray,
    device: torch.device | str = "cpu",
    max_positions: int = 65536,
    stats_out: dict | None = None,
    pairs: Sequence[tuple[int, int]] = (),
    pairs_out: list[PairInteraction] | None = None,
) -> dict[str, np.ndarray]:
    """Per dimension of ``keys`` (flat per-event codes, -1 = no key), the removal effect of each event's
    key in its session under each of ``models`` (the ensemble; one model alone is an ensemble of one):
    (members, events), aligned with ``encoded.offsets``; NaN for events of sessions not ``selected`` and
    events without a key. :func:`ensemble_mean` gives the published value.

    ``pairs``: ordered pairs (a, b) of ``keys["event_type"]`` codes. For each selected session with an a
    before a b, the pair's interaction R(a and b) - R(a) - R(b) is appended to ``pairs_out`` (R: the
    removal effect; one more forward pass per pair of types, shared by (a, b) and (b, a))."""
    ensemble = [models] if isinstance(models, SessionTransformer) else list(models)
    if any(m.training for m in ensemble):
        raise ValueError("removal effects need the model in eval mode (dropout off); call model.eval()")
    if pairs and "event_type" not in keys:
        raise ValueError("pair interactions need the event_type dimension among the keys")
    total = int(encoded.offsets[-1])
    out = {dim: np.full((len(ensemble), total), np.nan) for dim in keys}
    rows_all = np.flatnonzero(selected)
    stats = {"removal_sessions": int(len(rows_all)), "removal_variants": 0, "removal_positions": 0}
    if not len(rows_all) or not keys:
        if stats_out is not None:
            stats_out.update(stats)
        return out
    l_empty = [empty_logit(m, device) for m in ensemble]
    lengths = encoded.lengths
    for chunk in length_buckets(lengths[rows_all], max(1, max_positions // 100), max_positions=max_positions):
        if not len(chunk):
            continue
        rows = rows_all[chunk]
        width = int(lengths[rows].max())
        variants = _Variants(width)
        targets = []  # (dimension, events, local session, variant index)
        pair_targets = []  # (local session, pair index, variant of a, of b, of a and b)
        for local, row in enumerate(rows):
            lo, length = int(encoded.offsets[row]), int(lengths[row])
            of_type = {}
            for dim, codes in keys.items():
                c = codes[lo : lo + length]
                for key in np.unique(c[c >= 0]):
                    has = c == key
                    v = variants.add(local, length, has)
                    targets.append((dim, lo + np.flatnonzero(has), local, v))
                    if dim == "event_type":
                        of_type[int(key)] = v
            if pairs:
                c = keys["event_type"][lo : lo + length]
                both = {}
                for index, (a, b) in enumerate(pairs):
                    if not ordered_pair_present(c, a, b):
                        continue
                    unordered = (min(a, b), max(a, b))
                    if unordered not in both:
                        both[unordered] = variants.add(local, length, (c == a) | (c == b))
                    pair_targets.append((local, index, of_type[a], of_type[b], both[unordered]))
        found = [
            PairInteraction(int(rows[local]), index, np.empty(len(ensemble)), np.empty(len(ensemble)))
            for local, index, *_ in pair_targets
        ]
        for m, model in enumerate(ensemble):
            x, l_full = represent(model, encoded, rows, device)
            logits = np.full(len(variants.keep) + 1, l_empty[m])  # the last entry: the empty session (-1)
            if variants.keep:
                keep = np.stack(variants.keep)
                logits[:-1] = masked_logits(
                    model, x, np.asarray(variants.owners, dtype=np.int64), keep, max_positions, keep_positions=False
                )
                stats["removal_variants"] += len(keep)
                stats["removal_positions"] += int(keep.sum())
            p_full, probs = _sigmoid(l_full), _sigmoid(logits)
            for dim, events, local, v in targets:
                out[dim][m, events] = p_full[local] - probs[v]
            for pair, (local, _, va, vb, vab) in zip(found, pair_targets, strict=True):
                pair.probability[m] = probs[va] + probs[vb] - p_full[local] - probs[vab]
                pair.log_odds[m] = logits[va] + logits[vb] - l_full[local] - logits[vab]
        if pairs_out is not None:
            pairs_out.extend(found)
    if stats_out is not None:
        stats_out.update(stats)
    return out


def ensemble_mean(effects: np.ndarray) -> np.ndarray:
    """The published removal effect per event: the members' mean of :func:`removal_effects`' (members,
    events) array (NaN where every member is NaN: they are NaN at the same events)."""
    if effects.shape[0] == 1:
        return effects[0]
    out = np.full(effects.shape[1], np.nan)
    present = ~np.isnan(effects[0])
    out[present] = effects[:, present].mean(axis=0)
    return out
