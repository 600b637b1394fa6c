"""The vectorized session rules without Spark: batch boundaries and the streamed bot-like days.

``SessionStream`` sees a partition as Arrow batches of any size; a device-day may span many of them, and
one past the cap is folded session by session instead of held. Whatever the batch sizes, the sessions
must be exactly those of ``sessions_of_days`` on the whole, in-memory table (which decides bot-like
days from the full day's count, with no streaming). The Spark tests (``test_sessionize*``) check the
rules themselves against hand-written expectations and a plain-Python reference.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution import session_rules as R

BASE = dt.datetime(2025, 1, 15, 22, 0, tzinfo=dt.timezone.utc)
NAMES = ["m_card_view", "m_card_click", "x_error", "action_add_item", "action_place_order"]
INPUT_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("device_id", pa.string()),
        ("event_date", pa.date32()),
        ("event_ts", R.TS),
        ("event_name", pa.string()),
        ("store_id", pa.string()),
        ("discovery_feature", pa.string()),
        ("event_rank", pa.int32()),
    ]
)


def rules(cap=None, max_length=3, label="event"):
    return R.Rules(
        conversion_events=("action_place_order",),
        funnel_events=("action_add_item", "action_place_order"),
        error_substring="error",
        event_type_label=label,
        gap_us=30 * 60 * 1_000_000,
        max_length=max_length,
        min_events=2,
        max_events_per_device_day=cap,
    )


def sorted_events(rows) -> pa.Table:
    """Rows (user, device, seconds after BASE, name, store, feature) ordered as Spark orders them."""
    out = {f.name: [] for f in INPUT_SCHEMA}
    for user, device, seconds, name, store, feature in rows:
        ts = BASE + dt.timedelta(seconds=seconds)
        for k, v in zip(out, (user, device, ts.date(), ts, name, store, feature, None), strict=True):
            out[k].append(v)
    t = pa.table(out, schema=INPUT_SCHEMA)
    keys = [(c, "ascending") for c in INPUT_SCHEMA.names]
    return t.take(pc.sort_indices(t, sort_keys=keys, null_placement="at_start"))


def stream(t: pa.Table, cuts, chunk_rows: int, r: R.Rules) -> pa.Table:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < t.num_rows)), t.num_rows]
    batches = [
        t.slice(a, b - a).combine_chunks().to_batches()[0]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if b > a
    ]
    out = list(R.SessionStream(r, R.StoresLookup(None), chunk_rows=chunk_rows)(iter(batches)))
    return pa.Table.from_batches(out, schema=R.OUTPUT_SCHEMA) if out else R.OUTPUT_SCHEMA.empty_table()


def by_session(t: pa.Table) -> list[dict]:
    return sorted(t.to_pylist(), key=lambda r: (r["user_id"], r["device_id"], r["session_date"], r["session_n"]))


row = st.tuples(
    st.sampled_from(["u1", "u2"]),
    st.sampled_from(["d1", "d2"]),
    # clustered around the 30-minute gap, across midnight (BASE is 22:00), with exact ties
    st.one_of(st.integers(0, 4 * 3600), st.sampled_from([0, 1800, 1801, 7200, 7200])),
    st.sampled_from(NAMES),
    st.sampled_from([None, "s1", "s2"]),
    st.sampled_from([None, "Core Search"]),
)


# derandomize: the same examples on every run, so a counterexample found once comes back every time
@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    rows=st.lists(row, min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=12),
    chunk_rows=st.sampled_from([1, 5, 1000]),
    cap=st.sampled_from([None, 1, 4, 12]),
)
def test_stream_equals_whole_table_whatever_the_batches(rows, cuts, chunk_rows, cap):
    t = sorted_events(rows)
    r = rules(cap=cap)
    whole = R.sessions_of_days(t, r, R.StoresLookup(None))
    assert by_session(stream(t, cuts, chunk_rows, r)) == by_session(whole)
    # every row is counted once
    assert sum(whole.column("n_rows").to_pylist()) == t.num_rows


def test_bot_day_streamed_one_row_per_batch_keeps_sessions_and_counts():
    # One device-day of 9 rows, cap 4: three sessions (gaps of 31 min), one exact duplicate.
    rows = [("u1", "d1", s, "m_card_view", None, None) for s in (0, 60, 60, 2000, 2100, 4000, 4100, 4200, 4300)]
    t = sorted_events(rows)
    got = by_session(stream(t, range(1, 9), chunk_rows=1, r=rules(cap=4)))
    assert [g["session_n"] for g in got] == [1, 2, 3]
    assert [g["n_rows"] for g in got] == [3, 2, 4]
    assert [g["n_duplicate"] for g in got] == [1, 0, 0]
    assert [g["n_bot_like_device_day"] for g in got] == [2, 2, 4]
    assert {g["status"] for g in got} == {"bot_like_device_day"}
    assert all(g["event_names"] == [] and g["label"] == 0 for g in got)
    assert got[0]["session_start_ts"] == BASE and got[0]["session_end_ts"] == BASE + dt.timedelta(seconds=60)


@pytest.mark.parametrize("label,expected", [("event", "m_card_click"), ("event_feature", "m_card_click - Home Feed")])
def test_event_type_label(label, expected):
    rows = [("u1", "d1", 0, "m_card_click", "s1", "Home Feed"), ("u1", "d1", 5, "m_card_view", "s1", None)]
    got = by_session(stream(sorted_events(rows), [], 1000, rules(label=label)))
    assert got[0]["event_types"] == [expected, "m_card_view"]
    assert got[0]["seconds_from_prev"] == [0.0, 5.0]


def test_stores_are_joined_by_id_and_unknown_ids_are_null():
    stores = pa.table(
        {
            "store_id": ["s1"],
            "store_name": ["Chipotle"],
            "store_category": ["Mexican"],
            "store_tag": ["fast"],
            "is_new_vertical": [False],
        }
    )
    rows = [("u1", "d1", 0, "m_card_click", "s1", None), ("u1", "d1", 5, "m_card_view", "s9", None)]
    out = list(R.SessionStream(rules(), R.StoresLookup(stores))(iter(sorted_events(rows).to_batches())))
    got = pa.Table.from_batches(out).to_pylist()[0]
    assert got["store_names"] == ["Chipotle", None]
    assert got["store_categories"] == ["Mexican", None]
    assert got["is_new_vertical"] == [False, None]
