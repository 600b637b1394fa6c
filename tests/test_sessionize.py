"""Every sessionization rule on small hand-written inputs, checked with chispa."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality

from attribution.errors import InputError
from attribution.sessionize import ReconciliationError, prepare_stores, summarize
from tests.conftest import make_conf
from tests.helpers import quarantine_df, sessionize_df

COLS = ["session_id", "status", "label", "session_length", "original_length", "event_names"]
SCHEMA = (
    "session_id string, status string, label int, session_length int, original_length int, event_names array<string>"
)


def check(spark, actual, expected_rows, cols=COLS, schema=SCHEMA):
    expected = spark.createDataFrame(expected_rows, schema)
    assert_df_equality(actual.select(*cols), expected, ignore_row_order=True, ignore_nullable=True)


def test_gap_of_exactly_30_minutes_stays_in_session_and_just_over_splits(spark):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),
        ("u1", "d1", "2025-01-15 10:30:00", "m_card_click"),  # exactly 30 min later: same session
        ("u1", "d1", "2025-01-15 11:00:01", "store_page_load"),  # 30 min 1 s: a new session
        ("u1", "d1", "2025-01-15 11:05:00", "m_card_view"),
    ]
    check(
        spark,
        sessionize_df(spark, rows, make_conf()),
        [
            ("u1_d1_2025-01-15_1", "kept", 0, 2, 2, ["m_card_view", "m_card_click"]),
            ("u1_d1_2025-01-15_2", "kept", 0, 2, 2, ["store_page_load", "m_card_view"]),
        ],
    )


def test_gap_is_configurable(spark):
    rows = [("u1", "d1", "2025-01-15 10:00:00", "m_card_view"), ("u1", "d1", "2025-01-15 10:11:00", "m_card_click")]
    out = sessionize_df(spark, rows, make_conf("session.inactivity_gap_minutes=10", "session.min_events=1"))
    assert sorted(r.session_id for r in out.collect()) == ["u1_d1_2025-01-15_1", "u1_d1_2025-01-15_2"]


def test_session_crossing_midnight_is_cut_at_the_local_day(spark):
    rows = [
        ("u1", "d1", "2025-01-15 23:50:00", "m_card_view"),
        ("u1", "d1", "2025-01-15 23:55:00", "m_card_click"),
        ("u1", "d1", "2025-01-16 00:05:00", "store_page_load"),
        ("u1", "d1", "2025-01-16 00:10:00", "m_card_view"),
    ]
    check(
        spark,
        sessionize_df(spark, rows, make_conf()),
        [
            ("u1_d1_2025-01-15_1", "kept", 0, 2, 2, ["m_card_view", "m_card_click"]),
            ("u1_d1_2025-01-16_1", "kept", 0, 2, 2, ["store_page_load", "m_card_view"]),
        ],
    )


def test_users_and_devices_are_separate_sessions(spark):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),
        ("u1", "d2", "2025-01-15 10:00:01", "m_card_view"),
        ("u1", "d1", "2025-01-15 10:00:02", "m_card_click"),
        ("u2", "d1", "2025-01-15 10:00:03", "m_card_view"),
        ("u1", "d2", "2025-01-15 10:00:04", "m_card_click"),
        ("u2", "d1", "2025-01-15 10:00:05", "m_card_click"),
    ]
    check(
        spark,
        sessionize_df(spark, rows, make_conf()),
        [
            ("u1_d1_2025-01-15_1", "kept", 0, 2, 2, ["m_card_view", "m_card_click"]),
            ("u1_d2_2025-01-15_1", "kept", 0, 2, 2, ["m_card_view", "m_card_click"]),
            ("u2_d1_2025-01-15_1", "kept", 0, 2, 2, ["m_card_view", "m_card_click"]),
        ],
    )


def test_tied_timestamps_have_a_deterministic_order(spark):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "store_page_load", 7),
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view", 9),
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_click", 7),
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view", 3),
    ]
    expected = [
        ("u1_d1_2025-01-15_1", "kept", 0, 4, 4, ["m_card_click", "m_card_view", "m_card_view", "store_page_load"])
    ]
    conf = make_conf()
    check(spark, sessionize_df(spark, rows, conf), expected)
    check(spark, sessionize_df(spark, list(reversed(rows)), conf), expected)
    stores = sessionize_df(spark, rows, conf).select("store_ids").first()[0]
    assert stores == ["7", "3", "9", "7"]  # ties broken by name, then store id


def test_exact_duplicates_are_dropped_and_counted(spark):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view", 5, "Home Feed", 1),
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view", 5, "Home Feed", 1),  # exact duplicate
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view", 5, "Home Feed", 2),  # differs in rank: kept
        ("u1", "d1", "2025-01-15 10:00:05", "m_card_click", 5, "Home Feed", 1),
        ("u1", "d1", "2025-01-15 10:00:05", "m_card_click", 5, "Home Feed", 1),  # exact duplicate
    ]
    out = sessionize_df(spark, rows, make_conf())
    check(spark, out, [("u1_d1_2025-01-15_1", "kept", 0, 3, 3, ["m_card_view", "m_card_view", "m_card_click"])])
    assert out.select("n_duplicate", "n_model_input").first() == (2, 3)


FUNNEL_SESSION = [
    ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),
    ("u1", "d1", "2025-01-15 10:00:10", "m_card_click"),
    ("u1", "d1", "2025-01-15 10:00:20", "action_add_item"),
    ("u1", "d1", "2025-01-15 10:00:30", "cart_page_load"),
    ("u1", "d1", "2025-01-15 10:00:40", "store_page_load"),
    ("u1", "d1", "2025-01-15 10:00:50", "action_place_order"),
    ("u1", "d1", "2025-01-15 10:01:00", "system_checkout_success"),
    ("u1", "d1", "2025-01-15 10:01:10", "home_page_load"),  # after the order
    ("u1", "d1", "2025-01-15 10:01:20", "m_card_view"),
]


def test_funnel_events_removed_and_events_after_conversion_cut(spark):
    out = sessionize_df(spark, FUNNEL_SESSION, make_conf())
    check(spark, out, [("u1_d1_2025-01-15_1", "kept", 1, 3, 3, ["m_card_view", "m_card_click", "store_page_load"])])
    assert out.select("n_funnel", "n_after_conversion", "n_model_input").first() == (2, 4, 3)


def test_funnel_kept_when_exclude_is_false(spark):
    out = sessionize_df(spark, FUNNEL_SESSION, make_conf("funnel.exclude=false"))
    names = ["m_card_view", "m_card_click", "action_add_item", "cart_page_load", "store_page_load"]
    check(spark, out, [("u1_d1_2025-01-15_1", "kept", 1, 5, 5, names)])
    assert out.select("n_funnel", "n_after_conversion").first() == (0, 4)


def test_abandoned_cart_is_not_a_conversion(spark):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_click"),
        ("u1", "d1", "2025-01-15 10:00:10", "action_add_item"),
        ("u1", "d1", "2025-01-15 10:00:20", "cart_page_load"),
        ("u1", "d1", "2025-01-15 10:00:30", "m_app_background"),
    ]
    check(
        spark,
        sessionize_df(spark, rows, make_conf()),
        [("u1_d1_2025-01-15_1", "kept", 0, 2, 2, ["m_card_click", "m_app_background"])],
    )


def test_conversion_only_counts_in_its_own_session(spark):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),
        ("u1", "d1", "2025-01-15 10:00:10", "action_place_order"),
        ("u1", "d1", "2025-01-15 12:00:00", "m_card_view"),  # a later session: not converted
        ("u1", "d1", "2025-01-15 12:00:10", "m_card_click"),
    ]
    out = sessionize_df(spark, rows, make_conf("session.min_events=1"))
    check(
        spark,
        out,
        [
            ("u1_d1_2025-01-15_1", "kept", 1, 1, 1, ["m_card_view"]),
            ("u1_d1_2025-01-15_2", "kept", 0, 2, 2, ["m_card_view", "m_card_click"]),
        ],
    )


def test_error_events_excluded(spark):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),
        ("u1", "d1", "2025-01-15 10:00:10", "m_store_page_load_ERROR"),
        ("u1", "d1", "2025-01-15 10:00:20", "m_card_click"),
    ]
    out = sessionize_df(spark, rows, make_conf())
    check(spark, out, [("u1_d1_2025-01-15_1", "kept", 0, 2, 2, ["m_card_view", "m_card_click"])])
    assert out.select("n_error").first()[0] == 1


def test_truncation_keeps_the_first_events_and_records_original_length(spark):
    rows = [("u1", "d1", f"2025-01-15 10:00:{s:02d}", f"e{s}") for s in (0, 10, 25, 30, 40)]
    out = sessionize_df(spark, rows, make_conf("session.max_length=3"))
    check(spark, out, [("u1_d1_2025-01-15_1", "kept", 0, 3, 5, ["e0", "e10", "e25"])])
    r = out.select("n_truncated", "n_model_input", "seconds_from_prev").first()
    assert (r.n_truncated, r.n_model_input) == (2, 3)
    assert r.seconds_from_prev == [0.0, 10.0, 15.0]


def test_seconds_from_prev_is_between_model_input_events(spark):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00.000", "m_card_view"),
        ("u1", "d1", "2025-01-15 10:00:01.500", "action_add_item"),  # funnel: not model input
        ("u1", "d1", "2025-01-15 10:00:04.250", "m_card_click"),
    ]
    r = sessionize_df(spark, rows, make_conf()).select("seconds_from_prev").first()
    assert r[0] == [0.0, 4.25]


def test_minimum_length(spark):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),
        ("u1", "d1", "2025-01-15 10:00:10", "action_place_order"),
        ("u2", "d1", "2025-01-15 10:00:00", "action_add_item"),  # only funnel events: 0 model input
        ("u2", "d1", "2025-01-15 10:00:10", "cart_page_load"),
    ]
    out = sessionize_df(spark, rows, make_conf())
    check(
        spark,
        out,
        [
            ("u1_d1_2025-01-15_1", "short_session", 1, 1, 1, ["m_card_view"]),
            ("u2_d1_2025-01-15_1", "short_session", 0, 0, 0, []),
        ],
    )
    assert sorted(out.select("n_short_session").toPandas()["n_short_session"]) == [0, 1]
    kept = sessionize_df(spark, rows[:2], make_conf("session.min_events=1"))
    assert kept.select("status").first()[0] == "kept"


def test_bot_like_device_days_are_excluded_when_capped(spark):
    rows = [("bot", "d9", f"2025-01-15 10:00:{s:02d}", "m_card_view") for s in range(6)]
    rows += [("u1", "d1", "2025-01-15 10:00:00", "m_card_view"), ("u1", "d1", "2025-01-15 10:00:01", "m_card_click")]
    out = sessionize_df(spark, rows, make_conf("session.max_events_per_device_day=5"))
    check(
        spark,
        out,
        [
            ("bot_d9_2025-01-15_1", "bot_like_device_day", 0, 0, 0, []),
            ("u1_d1_2025-01-15_1", "kept", 0, 2, 2, ["m_card_view", "m_card_click"]),
        ],
    )
    assert out.where("status != 'kept'").select("n_bot_like_device_day").first()[0] == 6


def test_quarantine_reasons(spark):
    rows = [
        (None, "d1", "2025-01-15 10:00:00", "m_card_view"),
        ("u1", " ", "2025-01-15 10:00:00", "m_card_view"),
        ("u1", "d1", "2025-01-15 10:00:00", None),
        ("u1", "d1", None, "m_card_view"),
        ("u1", "d1", "2025-13-45 99:99:99", "m_card_view"),
        ("u1", "d1", "1970-01-01 00:00:00", "m_card_view"),
        ("u1", "d1", "2999-01-01 00:00:00", "m_card_view"),
        ("u1", "d1", "2025-01-15 10:00:00", "m_legacy_widget_tap"),
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),  # valid
        ("u1", "d1", "2025-01-15 10:00:00", "action_add_item"),  # funnel events are always known
    ]
    conf = make_conf("events.known_events=[m_card_view]")
    expected = spark.createDataFrame(
        [
            (None, "d1", "2025-01-15 10:00:00", "m_card_view", "null_user_id"),
            ("u1", " ", "2025-01-15 10:00:00", "m_card_view", "null_device_id"),
            ("u1", "d1", "2025-01-15 10:00:00", None, "null_event_name"),
            ("u1", "d1", None, "m_card_view", "null_event_ts"),
            ("u1", "d1", "2025-13-45 99:99:99", "m_card_view", "unparseable_event_ts"),
            ("u1", "d1", "1970-01-01 00:00:00", "m_card_view", "event_ts_out_of_range"),
            ("u1", "d1", "2999-01-01 00:00:00", "m_card_view", "event_ts_out_of_range"),
            ("u1", "d1", "2025-01-15 10:00:00", "m_legacy_widget_tap", "unknown_event_name"),
        ],
        "user_id string, device_id string, event_ts string, event_name string, reject_reason string",
    )
    actual = quarantine_df(spark, rows, conf).select("user_id", "device_id", "event_ts", "event_name", "reject_reason")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_naive_times_are_local_to_the_configured_zone(spark):
    rows = [
        ("u1", "d1", "2025-01-15 23:50:00", "m_card_view"),  # 04:50 UTC on the 16th
        ("u1", "d1", "2025-01-16 00:10:00", "m_card_click"),  # the next local day
        ("u2", "d1", "2025-01-16 00:10:00", "m_card_view"),
        ("u2", "d1", "2025-01-16T05:12:00Z", "m_card_click"),  # explicit UTC: 00:12 New York
    ]
    out = sessionize_df(spark, rows, make_conf("input.time_zone=America/New_York", "session.min_events=1"))
    got = {r.session_id: r.event_ts for r in out.select("session_id", "event_ts").collect()}
    assert got == {
        "u1_d1_2025-01-15_1": [dt.datetime(2025, 1, 16, 4, 50)],
        "u1_d1_2025-01-16_1": [dt.datetime(2025, 1, 16, 5, 10)],
        "u2_d1_2025-01-16_1": [dt.datetime(2025, 1, 16, 5, 10), dt.datetime(2025, 1, 16, 5, 12)],
    }


def test_dst_spring_forward_gap_is_two_minutes_not_an_hour(spark):
    rows = [
        ("u1", "d1", "2025-03-09 01:59:00", "m_card_view"),
        ("u1", "d1", "2025-03-09 03:01:00", "m_card_click"),  # 2 real minutes later (clocks jumped)
    ]
    out = sessionize_df(spark, rows, make_conf("input.time_zone=America/New_York", "session.inactivity_gap_minutes=5"))
    r = out.select("session_id", "seconds_from_prev").first()
    assert r.session_id == "u1_d1_2025-03-09_1" and r.seconds_from_prev == [0.0, 120.0]


def _epoch_ms_conf():
    """Epoch-millisecond times and only the four required columns."""
    return make_conf(
        "input.timestamp_format=epoch_ms",
        "input.columns.store_id=null",
        "input.columns.discovery_feature=null",
        "input.columns.event_rank=null",
    )


def test_custom_format_and_epoch_millis(spark):
    rows = [("u1", "d1", "15/01/2025 10:00", "m_card_view"), ("u1", "d1", "15/01/2025 10:01", "m_card_click")]
    out = sessionize_df(spark, rows, make_conf("input.timestamp_format=dd/MM/yyyy HH:mm"))
    assert out.select("event_ts").first()[0] == [dt.datetime(2025, 1, 15, 10, 0), dt.datetime(2025, 1, 15, 10, 1)]
    schema = "user_id string, device_id string, event_timestamp long, event_name string"
    ms = int(dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.timezone.utc).timestamp() * 1000)
    rows = [("u1", "d1", ms, "m_card_view"), ("u1", "d1", ms + 1500, "m_card_click")]
    conf = _epoch_ms_conf()
    out = sessionize_df(spark, rows, conf, schema=schema)
    r = out.select("event_ts", "seconds_from_prev").first()
    assert r.event_ts == [dt.datetime(2025, 1, 15, 10, 0), dt.datetime(2025, 1, 15, 10, 0, 1, 500000)]
    assert r.seconds_from_prev == [0.0, 1.5]


def test_epoch_millis_as_text_quarantines_what_does_not_parse(spark):
    """A CSV's epoch numbers arrive as text: a value that is not a number is quarantined, not a failed job."""
    from tests.helpers import quarantine_df

    ms = int(dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.timezone.utc).timestamp() * 1000)
    rows = [
        ("u1", "d1", str(ms), "m_card_view"),
        ("u1", "d1", str(ms + 1500), "m_card_click"),
        ("u1", "d1", "not-a-timestamp", "m_card_view"),
        ("u1", "d1", "1.5e12x", "m_card_view"),
    ]
    schema = "user_id string, device_id string, event_timestamp string, event_name string"
    conf = _epoch_ms_conf()
    out = sessionize_df(spark, rows, conf, schema=schema)
    assert out.select("event_ts").first()[0] == [
        dt.datetime(2025, 1, 15, 10, 0),
        dt.datetime(2025, 1, 15, 10, 0, 1, 500000),
    ]
    reasons = sorted(r.reject_reason for r in quarantine_df(spark, rows, conf, schema=schema).collect())
    assert reasons == ["unparseable_event_ts", "unparseable_event_ts"]


def test_event_type_label_with_discovery_feature(spark):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_click", 1, "Traditional Carousel"),
        ("u1", "d1", "2025-01-15 10:00:05", "m_app_background"),
    ]
    out = sessionize_df(spark, rows, make_conf("events.event_type_label=event_feature"))
    assert out.select("event_types").first()[0] == ["m_card_click - Traditional Carousel", "m_app_background"]


def test_stores_dimension_is_joined(spark):
    stores = spark.createDataFrame(
        [(12345, "McDonald's", "Burgers", "QSR", False), (67890, "Chipotle", "Mexican", "Fast Casual", False)],
        "store_id long, store_name string, store_category string, store_tag string, is_new_vertical boolean",
    )
    conf = make_conf()
    dim = prepare_stores(stores, conf.stores.columns)
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_click", 12345),
        ("u1", "d1", "2025-01-15 10:00:05", "store_page_load", 99999),  # not in the dimension
        ("u1", "d1", "2025-01-15 10:00:09", "m_card_view", 67890),
    ]
    r = sessionize_df(spark, rows, conf, stores=dim).select("store_ids", "store_names", "store_categories").first()
    assert r.store_ids == ["12345", "99999", "67890"]
    assert r.store_names == ["McDonald's", None, "Chipotle"]
    assert r.store_categories == ["Burgers", None, "Mexican"]


def test_duplicate_store_ids_are_an_error(spark):
    stores = spark.createDataFrame([(1, "A"), (1, "B"), (2, "C")], "store_id long, store_name string")
    conf = make_conf(
        "stores.columns.store_category=null", "stores.columns.store_tag=null", "stores.columns.is_new_vertical=null"
    )
    with pytest.raises(InputError, match=r"duplicate store ids: 1 \(x2\)"):
        prepare_stores(stores, conf.stores.columns)


def test_missing_column_is_named(spark):
    df = spark.createDataFrame(
        [("u1", "d1", "2025-01-15 10:00:00")], "user_id string, device_id string, event_timestamp string"
    )
    from attribution.sessionize import validated

    with pytest.raises(
        InputError,
        match=r"input column 'event_name' \(input\.columns\.event_name\) not found; the input has: device_id, event_timestamp, user_id",
    ):
        validated(df, make_conf())


def test_wrong_column_type_names_found_and_expected(spark):
    df = spark.createDataFrame(
        [("u1", "d1", "2025-01-15 10:00:00", 3)],
        "user_id string, device_id string, event_timestamp string, event_name int",
    )
    from attribution.sessionize import validated

    with pytest.raises(InputError, match=r"'event_name' \(input\.columns\.event_name\) has type int, expected string"):
        validated(
            df,
            make_conf(
                "input.columns.store_id=null", "input.columns.discovery_feature=null", "input.columns.event_rank=null"
            ),
        )


def test_numeric_ids_are_cast_to_strings(spark):
    schema = "user_id long, device_id int, event_timestamp string, event_name string"
    rows = [(42, 7, "2025-01-15 10:00:00", "m_card_view"), (42, 7, "2025-01-15 10:00:01", "m_card_click")]
    conf = make_conf(
        "input.columns.store_id=null", "input.columns.discovery_feature=null", "input.columns.event_rank=null"
    )
    out = sessionize_df(spark, rows, conf, schema=schema)
    assert out.select("session_id").first()[0] == "42_7_2025-01-15_1"


def test_split_is_deterministic_and_proportional(spark):
    from pyspark.sql import functions as F

    from attribution.sessionize import split_col

    conf = make_conf()
    ids = spark.range(20000).select(
        F.concat(F.lit("user"), F.col("id").cast("string"), F.lit("_d1_2025-01-15_1")).alias("sid")
    )
    first = ids.select("sid", split_col(F.col("sid"), conf.split).alias("split"))
    shares = {r.split: r["count"] / 20000 for r in first.groupBy("split").count().collect()}
    assert (
        abs(shares["train"] - 0.7) < 0.015
        and abs(shares["validation"] - 0.1) < 0.01
        and abs(shares["test"] - 0.2) < 0.012
    )
    again = ids.repartition(5).select("sid", split_col(F.col("sid"), conf.split).alias("split"))
    assert_df_equality(first, again, ignore_row_order=True)


def test_summary_reconciles_or_refuses():
    counts = {"n_duplicate": 1, "n_model_input": 5, "n_funnel": 2, "sessions_total": 2, "sessions_kept": 2}
    s = summarize(10, {"null_user_id": 2}, counts)
    assert s["rows_accounted"] == 10 and s["rows"]["quarantined_null_user_id"] == 2
    with pytest.raises(ReconciliationError, match="read 11, accounted 10"):
        summarize(11, {"null_user_id": 2}, counts)
