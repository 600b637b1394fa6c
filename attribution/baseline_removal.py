"""The counts baseline's removal effects on the sampled sessions, in numpy over Arrow batches.

The counts baseline (attribution/baseline.py) is a logistic regression whose logit is a sum over the
session's events: each event adds its type's, its store's, its position bin's and its type-and-bin
pair's coefficients, the bin being that of the event's position in the session. Removing a key (an event
type, a position bin, a store) takes the key's events away and moves the later ones up, so they may
change bin; the baseline's removal effect is its P(convert) of the whole session minus its P(convert) of
the shorter one. A removal model with order terms (``baseline.order_penalties``) also adds, per session,
each order pair's weight where a t comes after the first u, each type's repeats' and its first and last
event's; they are recomputed on the shorter session's events, in order.

:class:`BaselineWeights` holds, per fit, every event type's logit contribution at each bin and every
store's; :func:`session_removals` evaluates every (key, session) of complete sessions at once (each
removal as a block of the session's events, summed with ``np.bincount``); :class:`SessionChunks` cuts a
sorted partition's Arrow batches at session boundaries, so a session split between two batches is
evaluated whole. attribution/removal_tables.py runs it in a ``mapInArrow``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from attribution.baseline import (
    CROSS_PREFIX,
    CROSS_SEPARATOR,
    FIRST_PREFIX,
    LAST_PREFIX,
    ORDER_PAIR_PREFIX,
    ORDER_SEPARATOR,
    REPEAT_PREFIX,
    STORE_PREFIX,
)
from attribution.schema import EVENT_TYPE, POSITION_BIN, POSITION_BIN_UPPER, POSITION_BINS, SESSION_ID, STORE_ID
from attribution.session_rules import spark_ddl

# the input columns besides the keys: the session, the event's position in it (for the order)
POSITION = "event_position"
# the output of :func:`session_removals`: per (table kind, key, session), the main fit's removal effect,
# each fit's (centred on the main fit's) and the main fit's P(convert)
OUTPUT_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("key", pa.string()),
        (SESSION_ID, pa.string()),
        ("db", pa.float64()),
        ("dbm", pa.list_(pa.float64())),
        ("pb", pa.float64()),
    ]
)
OUTPUT_DDL = spark_ddl(OUTPUT_SCHEMA)  # the same, for ``mapInArrow``


@dataclass(frozen=True)
class BaselineWeights:
    """Per fit ``j`` of the baseline: ``intercepts[j]``, ``types[j, t, b]`` (event type ``t``'s logit
    contribution at position bin ``b``: its own, the bin's and the pair's coefficients; the last row is a
    type no fit knows: the bin's alone) and ``stores[j, s]`` (the last entry, 0, for a store no fit knows
    and for no store). A value a fit has no feature for counts 0, as in its fit. The order terms, over the
    same type rows: ``repeats[j, t]``, ``first[j, t]`` and ``last[j, t]`` (per event of ``t`` after its
    first; per session whose first, last event is a ``t``), and ``pairs[j, k]`` the weight of the pair
    ``pair_types[k]`` = (u, t); all 0 for a fit without them."""

    intercepts: np.ndarray
    type_index: dict[str, int]
    types: np.ndarray
    store_index: dict[str, int]
    stores: np.ndarray
    repeats: np.ndarray
    first: np.ndarray
    last: np.ndarray
    pair_types: np.ndarray
    pairs: np.ndarray

    @property
    def ordered(self) -> bool:
        """Whether any fit has an order term."""
        return bool(self.repeats.any() or self.first.any() or self.last.any() or self.pairs.any())

    @classmethod
    def of(cls, fits: list[dict]) -> BaselineWeights:
        """From the fits' ``intercept`` and ``coefficients`` (attribution/removal_tables.py's
        :func:`~attribution.removal_tables.baseline_fits`)."""
        tables = [f["coefficients"] for f in fits]
        types = [c.get(EVENT_TYPE) or {} for c in tables]
        bins = [c.get(POSITION_BIN) or {} for c in tables]
        pairs = [c.get(CROSS_PREFIX) or {} for c in tables]
        stores = [c.get(STORE_PREFIX) or {} for c in tables]
        singles = {p: [c.get(p) or {} for c in tables] for p in (REPEAT_PREFIX, FIRST_PREFIX, LAST_PREFIX)}
        orders = [c.get(ORDER_PAIR_PREFIX) or {} for c in tables]

        def at_bins(j: int, kind: str | None) -> list[float]:
            own = types[j].get(kind, 0.0) if kind is not None else 0.0
            cross = (
                pairs[j].get(f"{kind}{CROSS_SEPARATOR}{b}", 0.0) if kind is not None else 0.0 for b in POSITION_BINS
            )
            return [own + bins[j].get(b, 0.0) + x for b, x in zip(POSITION_BINS, cross, strict=True)]

        known = (
            {k for t in types for k in t}
            | {p.rpartition(CROSS_SEPARATOR)[0] for t in pairs for p in t}
            | {k for tables_ in singles.values() for t in tables_ for k in t}
        )
        split = {p: _split_pair(p, known) for t in orders for p in t}
        known |= {k for u_t in split.values() for k in u_t}
        index = {k: i for i, k in enumerate(sorted(known))}
        pair_keys = sorted(split)
        store_keys = sorted({str(k) for t in stores for k in t})
        fits_n = len(fits)

        def per_type(tables_: list[dict]) -> np.ndarray:
            return np.array([[float(t.get(k, 0.0)) for k in index] + [0.0] for t in tables_]).reshape(fits_n, -1)

        return cls(
            intercepts=np.array([float(f["intercept"]) for f in fits]),
            type_index=index,
            types=np.array([[at_bins(j, k) for k in [*index, None]] for j in range(fits_n)], dtype=float),
            store_index={k: i for i, k in enumerate(store_keys)},
            stores=np.array([[*(float(t.get(k, 0.0)) for k in store_keys), 0.0] for t in stores], dtype=float).reshape(
                fits_n, len(store_keys) + 1
            ),
            repeats=per_type(singles[REPEAT_PREFIX]),
            first=per_type(singles[FIRST_PREFIX]),
            last=per_type(singles[LAST_PREFIX]),
            pair_types=np.array([[index[u] for u in split[p]] for p in pair_keys], dtype=np.int64).reshape(-1, 2),
            pairs=np.array([[float(t.get(p, 0.0)) for p in pair_keys] for t in orders]).reshape(fits_n, len(pair_keys)),
        )


def _split_pair(pair: str, known: set[str]) -> tuple[str, str]:
    """An order pair's key ``u>t`` as (u, t): at the separator that leaves two known event types where a
    type's name holds the separator itself, else at the first."""
    cuts = [i for i, c in enumerate(pair) if pair.startswith(ORDER_SEPARATOR, i)]
    for i in cuts:
        u, t = pair[:i], pair[i + len(ORDER_SEPARATOR) :]
        if u in known and t in known:
            return u, t
    u, _, t = pair.partition(ORDER_SEPARATOR)
    return u, t


def _order_logits(
    weights: BaselineWeights, group: np.ndarray, groups: int, code: np.ndarray, rank: np.ndarray, kept: np.ndarray
) -> np.ndarray:
    """Per fit and group (a session, or a session with a key's events removed), the order terms' logit:
    events ``kept`` of each ``group`` (0 .. groups - 1, sorted by group, then ``rank``: the 0-based place
    among the group's kept events), of type row ``code``. Returns (fits, groups)."""
    w = weights
    g, c, r = group[kept], code[kept], rank[kept]
    rows = w.repeats.shape[1]
    cell = g * rows + c
    counts = np.bincount(cell, minlength=groups * rows).reshape(groups, rows)
    logit = np.maximum(counts - 1, 0) @ w.repeats.T  # (groups, fits)
    size = counts.sum(axis=1)
    is_first = r == 0
    is_last = r == size[g] - 1
    logit += np.stack([np.bincount(g[is_first], f[c[is_first]], minlength=groups) for f in w.first], axis=1)
    logit += np.stack([np.bincount(g[is_last], f[c[is_last]], minlength=groups) for f in w.last], axis=1)
    if len(w.pair_types):
        # each type's first and last place in each group: a pair (u, t) holds when the first u is before the last t
        first_at = np.full((groups, rows), np.iinfo(np.int64).max)
        last_at = np.full((groups, rows), -1)
        cells, at = np.unique(cell, return_index=True)  # events are in order: the first of each cell
        first_at.reshape(-1)[cells] = r[at]
        cells, at = np.unique(cell[::-1], return_index=True)
        last_at.reshape(-1)[cells] = r[::-1][at]
        u, t = w.pair_types[:, 0], w.pair_types[:, 1]
        holds = first_at[:, u] < last_at[:, t]  # (groups, pairs)
        logit += holds.astype(float) @ w.pairs.T
    return logit.T


def _codes(values: pa.ChunkedArray | pa.Array, index: dict[str, int]) -> np.ndarray:
    """Each value's row in a weight table, the last row (``len(index)``) for null and unknown values."""
    s = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
    return s.map(index).fillna(len(index)).to_numpy(dtype=np.int64)


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logit))


def _bin(position_1based: np.ndarray) -> np.ndarray:
    """The index in ``POSITION_BINS`` of each 1-based position."""
    return np.searchsorted(np.array(POSITION_BIN_UPPER), position_1based, side="left")


def session_removals(t: pa.Table, weights: BaselineWeights, dimensions: list[tuple[str, str]]) -> pa.Table:
    """For complete sessions in ``t`` (``session_id``, ``event_position``, ``event_type`` and ``store_id``
    as strings, and every dimension's key column as a string; sorted by session, then position), one row
    per (table kind, non-null key, session) for each ``(kind, key column)`` of ``dimensions``: ``db``, the
    main fit's P(convert) of the session minus its P(convert) without the key's events; ``dbm``, every
    fit's, moved by the fits' mean to centre on the main fit's (so the fits' spread is kept and their
    mean is ``db``); ``pb``, the main fit's P(convert) of the whole session (:data:`OUTPUT_SCHEMA`)."""
    n = t.num_rows
    sid = t.column(SESSION_ID).combine_chunks()
    if n == 0:
        return OUTPUT_SCHEMA.empty_table()
    change = np.ones(n, dtype=bool)
    if n > 1:
        change[1:] = pc.not_equal(sid.slice(1), sid.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(change)
    session = np.cumsum(change) - 1
    lengths = np.diff(np.append(starts, n))
    rank = np.arange(n) - starts[session]  # 0-based position among the session's events

    w = weights
    type_code = _codes(t.column(EVENT_TYPE), w.type_index)
    # contribution[j, e, b]: event e's logit contribution under fit j at bin b
    contribution = w.types[:, type_code, :] + w.stores[:, _codes(t.column(STORE_ID), w.store_index)][:, :, None]
    fits = len(w.intercepts)
    ordered = w.ordered
    at_own = contribution[:, np.arange(n), _bin(rank + 1)]
    full = np.stack([w.intercepts[j] + np.bincount(session, at_own[j], minlength=len(starts)) for j in range(fits)])
    if ordered:
        full += _order_logits(w, session, len(starts), type_code, rank, np.ones(n, dtype=bool))
    p_full = _sigmoid(full)

    out: list[pa.Table] = []
    for kind, column in dimensions:
        code, keys = pd.factorize(pd.Series(t.column(column).to_numpy(zero_copy_only=False), dtype=object))
        k = max(len(keys), 1)
        has = code >= 0
        pair, pair_of_event = np.unique(session[has] * k + code[has], return_inverse=True)
        event_pair = np.full(n, -1, dtype=np.int64)
        event_pair[has] = pair_of_event
        pair_session, pair_key = pair // k, pair % k
        # each (key, session) as a block of the session's events, the key's events marked removed
        span = lengths[pair_session]
        block_start = np.cumsum(span) - span
        block = np.repeat(np.arange(len(pair)), span)
        event = np.repeat(starts[pair_session] - block_start, span) + np.arange(span.sum())
        kept = event_pair[event] != block
        before = np.cumsum(kept) - kept  # kept events before each one, over all blocks
        new_rank = before - np.repeat(before[block_start], span)
        at_new = contribution[:, event, _bin(new_rank + 1)] * kept
        less = np.stack([w.intercepts[j] + np.bincount(block, at_new[j], minlength=len(pair)) for j in range(fits)])
        if ordered:
            less += _order_logits(w, block, len(pair), type_code[event], new_rank, kept)
        each = p_full[:, pair_session] - _sigmoid(less)
        db = each[0]
        centred = each - each.sum(axis=0) / fits + db
        out.append(
            pa.table(
                {
                    "kind": pa.array([kind] * len(pair), pa.string()),
                    "key": pa.array(np.asarray(keys, dtype=object)[pair_key], pa.string()),
                    SESSION_ID: sid.take(pa.array(starts[pair_session])).cast(pa.string()),
                    "db": pa.array(db, pa.float64()),
                    "dbm": pa.ListArray.from_arrays(
                        pa.array(np.arange(0, (len(pair) + 1) * fits, fits, dtype=np.int32)),
                        pa.array(centred.T.reshape(-1), pa.float64()),
                    ),
                    "pb": pa.array(p_full[0, pair_session], pa.float64()),
                },
                schema=OUTPUT_SCHEMA,
            )
        )
    return pa.concat_tables(out)


class SessionChunks:
    """Cuts a partition's Arrow batches, sorted by session, into tables of complete sessions: the rows
    of a batch's last session wait for the next batch (a session may be split between two), and the
    partition's end closes them."""

    def __init__(self) -> None:
        self._open: list[pa.Table] = []

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            t = pa.Table.from_batches([batch])
            sid = t.column(SESSION_ID)
            last = sid[t.num_rows - 1]
            same = pc.equal(sid, last).to_numpy(zero_copy_only=False)
            cut = int(np.argmax(same))  # sorted: the last session's rows are the batch's tail
            if cut > 0:
                yield pa.concat_tables([*self._open, t.slice(0, cut)])
                self._open = []
            self._open.append(t.slice(cut))
        if self._open:
            yield pa.concat_tables(self._open)
            self._open = []
