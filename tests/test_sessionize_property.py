"""Spark's sessionization against a plain-Python reference of the same rules, on random inputs."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_conf
from tests.helpers import sessionize_df

NAMES = [
    "m_card_view",
    "m_card_click",
    "store_page_load",
    "x_error",
    "action_add_item",
    "cart_page_load",
    "action_place_order",
]
FUNNEL = {"action_add_item", "cart_page_load", "action_place_order", "system_checkout_success"}
CONVERSION = {"action_place_order"}
BASE = dt.datetime(2025, 1, 15, 21, 0, 0)
GAP_S = 30 * 60
MAX_LEN = 4
MIN_EVENTS = 2

event = st.tuples(
    st.sampled_from(["u1", "u2"]),
    st.sampled_from(["d1", "d2"]),
    # offsets cluster around the 30-minute gap and run past midnight (BASE is 21:00)
    st.one_of(st.integers(0, 6 * 3600), st.sampled_from([0, 1800, 1801, 3600, 3601, 10800])),
    st.sampled_from(NAMES),
    st.one_of(st.none(), st.sampled_from([1, 2])),
)


def reference(rows):
    """The documented rules, written the obvious way (no Spark)."""
    days = defaultdict(list)
    for user, device, offset, name, store in rows:
        ts = BASE + dt.timedelta(seconds=offset)
        days[(user, device, ts.date())].append((ts, name, store))
    out = {}
    for (user, device, day), events in days.items():
        events.sort(key=lambda e: (e[0], e[1], -1 if e[2] is None else e[2]))
        deduped = [e for i, e in enumerate(events) if i == 0 or e != events[i - 1]]
        sessions, current = [], []
        for e in deduped:
            if current and (e[0] - current[-1][0]).total_seconds() > GAP_S:
                sessions.append(current)
                current = []
            current.append(e)
        sessions.append(current)
        for n, session in enumerate(sessions, start=1):
            names = [e[1] for e in session]
            conv = next((i for i, x in enumerate(names) if x in CONVERSION), None)
            before = session if conv is None else session[:conv]
            inputs = [e for e in before if e[1] not in FUNNEL and "error" not in e[1]]
            status = "kept" if len(inputs) >= MIN_EVENTS else "short_session"
            sid = f"{user}_{device}_{day.isoformat()}_{n}"
            out[sid] = (status, int(conv is not None), len(inputs), [e[1] for e in inputs[:MAX_LEN]])
    return out


@pytest.mark.slow
# derandomize: the same examples on every run, so a counterexample found once comes back every time
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(event, min_size=1, max_size=40))
def test_matches_reference(spark, rows):
    raw = [(u, d, (BASE + dt.timedelta(seconds=o)).isoformat(sep=" "), n, s) for u, d, o, n, s in rows]
    conf = make_conf(
        f"session.max_length={MAX_LEN}",
        f"session.min_events={MIN_EVENTS}",
        "events.funnel_events=" + str(sorted(FUNNEL)),
        "events.conversion_events=[action_place_order]",
    )
    got = {
        r.session_id: (r.status, r.label, r.original_length, r.event_names)
        for r in sessionize_df(spark, raw, conf)
        .select("session_id", "status", "label", "original_length", "event_names")
        .collect()
    }
    expected = reference(rows)
    # Short sessions carry their (too few) events too; compare names only where the session is kept.
    got = {k: v if v[0] == "kept" else v[:3] + ([] if v[2] == 0 else v[3],) for k, v in got.items()}
    expected = {k: v if v[0] == "kept" else v[:3] + ([] if v[2] == 0 else v[3],) for k, v in expected.items()}
    assert got == expected
