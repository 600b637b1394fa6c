"""attribution/baseline_removal.py without Spark: the counts baseline's removal effects against a
per-session loop written from the definition, and the cutting of a partition's batches at session
boundaries (tests/test_baseline.py checks the Spark path against the saved Spark ML models)."""

from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pytest

from attribution.baseline import CROSS_PREFIX
from attribution.baseline_removal import BaselineWeights, SessionChunks, session_removals
from attribution.schema import POSITION_BIN_UPPER, POSITION_BINS

FITS = [
    {
        "intercept": -1.2,
        "coefficients": {
            "event_type": {"a": 0.9, "b": -0.4, "c": 0.3},
            "position_bin": {"1-5": 0.2, "6-10": -0.1, "11-20": 0.05},
            CROSS_PREFIX: {"a@1-5": 0.7, "b@6-10": -0.6, "z@1-5": 0.25},  # 'z': a type known only by its pair
            "store": {"s1": 1.1, "s2": -0.8},
        },
    },
    {
        "intercept": -0.7,
        "coefficients": {"event_type": {"a": 0.5, "c": 0.6}, "store": {"s1": 0.4}, "position_bin": {"1-5": 0.1}},
    },
]
# fits with order terms (baseline.order_penalties): 'y' is a type known only through them, 'x>y' a type
# whose name holds the pair separator, and the second fit has none of its own
ORDERED_FITS = [
    {
        "intercept": -0.9,
        "coefficients": {
            **FITS[0]["coefficients"],
            "order_pair": {"a>b": 0.8, "b>a": -0.5, "c>a": 0.35, "a>y": -0.7, "x>y>a": 0.45, "zz>a": 9.0},
            "repeat": {"a": -0.3, "c": 0.2},
            "first_event": {"b": 0.6, "y": -0.25},
            "last_event": {"c": -0.9, "a": 0.4, "x>y": 0.3},
        },
    },
    {
        "intercept": -0.6,
        "coefficients": {**FITS[1]["coefficients"], "order_pair": {"a>b": 0.2}, "repeat": {"b": 0.5}},
    },
    FITS[1],
]
DIMENSIONS = [("event_type", "event_type"), ("position", "position_bin"), ("store", "store_id")]


def _bin(position):  # 1-based
    return next(
        (b for b, u in zip(POSITION_BINS, POSITION_BIN_UPPER, strict=False) if position <= u), POSITION_BINS[-1]
    )


def _p(fit, events):
    """One fit's P(convert) of a session of (type, store) events, from the coefficients by hand: the
    counts' terms per event at its bin, then the order terms from their definitions (a pair once when a t
    follows the first u; a repeat per event whose type came before; the first and the last event's type)."""
    c = fit["coefficients"]
    logit = fit["intercept"]
    for i, (t, s) in enumerate(events):
        b = _bin(i + 1)
        logit += c.get("event_type", {}).get(t, 0.0) + c.get("position_bin", {}).get(b, 0.0)
        logit += c.get(CROSS_PREFIX, {}).get(f"{t}@{b}", 0.0) + c.get("store", {}).get(s, 0.0)
    types = [t for t, _ in events]
    pairs = {(u, t) for i, t in enumerate(types) for u in types[:i] if u != t}
    logit += sum(c.get("order_pair", {}).get(f"{u}>{t}", 0.0) for u, t in pairs)
    logit += sum(c.get("repeat", {}).get(t, 0.0) for i, t in enumerate(types) if t in types[:i])
    if types:
        logit += c.get("first_event", {}).get(types[0], 0.0) + c.get("last_event", {}).get(types[-1], 0.0)
    return 1 / (1 + math.exp(-logit))


def _sessions(seed=3, count=40, kinds=("a", "b", "c", "z", "unseen")):
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        length = rng.choice([1, 2, 4, 7, 12, 23, 55])
        for i in range(length):
            rows.append(
                {
                    "session_id": f"u{n:03d}",
                    "event_position": i,
                    "event_type": rng.choice(kinds),
                    "store_id": rng.choice(["s1", "s2", "s3", None, None]),
                    "position_bin": _bin(i + 1),
                }
            )
    return pa.Table.from_pylist(rows)


def _by_hand(t, fits=FITS):
    """(kind, key, session) -> (db, dbm, pb): every fit's P(convert) of the session minus its P(convert)
    of the session without the key's events, the later events moved up."""
    out = {}
    rows = t.to_pylist()
    for sid in sorted({r["session_id"] for r in rows}):
        events = [r for r in rows if r["session_id"] == sid]
        for kind, column in DIMENSIONS:
            for key in {r[column] for r in events if r[column] is not None}:
                kept = [(r["event_type"], r["store_id"]) for r in events if r[column] != key]
                whole = [(r["event_type"], r["store_id"]) for r in events]
                each = [_p(f, whole) - _p(f, kept) for f in fits]
                out[(kind, key, sid)] = (each[0], [e - np.mean(each) + each[0] for e in each], _p(fits[0], whole))
    return out


def _as_dict(table):
    return {(r["kind"], r["key"], r["session_id"]): (r["db"], r["dbm"], r["pb"]) for r in table.to_pylist()}


def _assert_equal(got, want):
    assert got.keys() == want.keys() and len(want) > 200
    for k, (db, dbm, pb) in want.items():
        assert got[k][0] == pytest.approx(db, abs=1e-12), k
        assert got[k][1] == pytest.approx(dbm, abs=1e-12), k
        assert got[k][2] == pytest.approx(pb, abs=1e-12), k


def test_every_key_of_every_session_equals_the_fits_on_the_session_without_it():
    t = _sessions()
    got = _as_dict(session_removals(t, BaselineWeights.of(FITS), DIMENSIONS))
    want = _by_hand(t)
    assert got.keys() == want.keys() and len(want) > 200
    for k, (db, dbm, pb) in want.items():
        assert got[k][0] == pytest.approx(db, abs=1e-12), k
        assert got[k][1] == pytest.approx(dbm, abs=1e-12), k
        assert got[k][2] == pytest.approx(pb, abs=1e-12), k
    # removing the first bin moves the later events into it: not the bin's own weight alone
    moved = [v[0] for (kind, key, _), v in want.items() if kind == "position" and key == "1-5"]
    assert max(abs(m) for m in moved) > 0.05
    # the fits differ, so the centred members spread around the main fit's value
    assert any(abs(v[1][1] - v[1][0]) > 1e-3 for v in got.values())


@pytest.mark.parametrize("rows_per_batch", [1, 2, 5, 13, 10_000])
def test_sessions_split_between_batches_are_evaluated_whole(rows_per_batch):
    t = _sessions(seed=8, count=25)
    weights = BaselineWeights.of(FITS)
    chunks = list(SessionChunks()(t.to_batches(max_chunksize=rows_per_batch)))
    assert sum(c.num_rows for c in chunks) == t.num_rows
    # every chunk holds whole sessions: no session appears in two chunks
    seen = [set(c.column("session_id").to_pylist()) for c in chunks]
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == 25
    got = {}
    for c in chunks:
        got.update(_as_dict(session_removals(c, weights, DIMENSIONS)))
    whole = _as_dict(session_removals(t, weights, DIMENSIONS))
    assert got.keys() == whole.keys()
    for k, v in whole.items():
        assert got[k][0] == pytest.approx(v[0], abs=1e-12)


def test_a_dimension_without_keys_and_an_empty_batch_give_no_rows():
    t = _sessions(seed=1, count=3).drop_columns(["store_id"])
    t = t.append_column("store_id", pa.nulls(t.num_rows, pa.string()))
    got = session_removals(t, BaselineWeights.of(FITS), DIMENSIONS)
    assert set(got.column("kind").to_pylist()) == {"event_type", "position"}
    assert session_removals(t.slice(0, 0), BaselineWeights.of(FITS), DIMENSIONS).num_rows == 0
    assert list(SessionChunks()(iter([]))) == []


def test_order_terms_are_recomputed_on_the_session_without_the_key():
    """The removal model's order terms (pairs, repeats, first and last step) on every (key, session) equal
    the fits' P(convert) from their definitions on the session with and without the key's events."""
    t = _sessions(seed=5, count=60, kinds=("a", "b", "c", "y", "x>y", "unseen"))
    weights = BaselineWeights.of(ORDERED_FITS)
    assert weights.ordered and not BaselineWeights.of(FITS).ordered
    got = _as_dict(session_removals(t, weights, DIMENSIONS))
    want = _by_hand(t, ORDERED_FITS)
    _assert_equal(got, want)
    # the order terms move the effects: the counts' terms alone give other values
    counts_only = _by_hand(
        t,
        [
            {**f, "coefficients": {k: v for k, v in f["coefficients"].items() if k in FITS[0]["coefficients"]}}
            for f in ORDERED_FITS
        ],
    )
    assert max(abs(want[k][0] - counts_only[k][0]) for k in want) > 0.05
    # split between batches, the same values
    chunked = {}
    for c in SessionChunks()(t.to_batches(max_chunksize=7)):
        chunked.update(_as_dict(session_removals(c, weights, DIMENSIONS)))
    _assert_equal(chunked, want)


def test_an_order_pair_splits_where_both_sides_are_event_types():
    weights = BaselineWeights.of(ORDERED_FITS)
    names = {i: k for k, i in weights.type_index.items()}
    pairs = {(names[u], names[t]) for u, t in weights.pair_types}
    assert ("x>y", "a") in pairs and ("a", "y") in pairs and ("zz", "a") in pairs
