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
DIMENSIONS = [("event_type", "event_type"), ("position", "position_bin"), ("store", "store_id")]


def _bin(position):  # 1-based
    return next(
        (b for b, u in zip(POSITION_BINS, POSITION_BIN_UPPER, strict=False) if position <= u), POSITION_BINS[-1]
    )


def _p(fit, events):
    """One fit's P(convert) of a session of (type, store) events, from the coefficients by hand."""
    c = fit["coefficients"]
    logit = fit["intercept"]
    for i, (t, s) in enumerate(events):
        b = _bin(i + 1)
        logit += c.get("event_type", {}).get(t, 0.0) + c.get("position_bin", {}).get(b, 0.0)
        logit += c.get(CROSS_PREFIX, {}).get(f"{t}@{b}", 0.0) + c.get("store", {}).get(s, 0.0)
    return 1 / (1 + math.exp(-logit))


def _sessions(seed=3, count=40):
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        length = rng.choice([1, 2, 4, 7, 12, 23, 55])
        for i in range(length):
            rows.append(
                {
                    "session_id": f"u{n:03d}",
                    "event_position": i,
                    "event_type": rng.choice(["a", "b", "c", "z", "unseen"]),
                    "store_id": rng.choice(["s1", "s2", "s3", None, None]),
                    "position_bin": _bin(i + 1),
                }
            )
    return pa.Table.from_pylist(rows)


def _by_hand(t):
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
                each = [_p(f, whole) - _p(f, kept) for f in FITS]
                out[(kind, key, sid)] = (each[0], [e - np.mean(each) + each[0] for e in each], _p(FITS[0], whole))
    return out


def _as_dict(table):
    return {(r["kind"], r["key"], r["session_id"]): (r["db"], r["dbm"], r["pb"]) for r in table.to_pylist()}


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
