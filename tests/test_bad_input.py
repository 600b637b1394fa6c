"""The bad-input corpus: every case through the real sessionize stage (files on disk, Spark local), each with
its expected outcome: a clear error at start naming the problem, or rows quarantined / counted with a
reason, and a run summary that reconciles every row read. docs/reliability.md lists them."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from attribution.errors import InputError
from attribution.stages import sessionize as sessionize_stage
from tests.conftest import make_conf
from tests.helpers import raw_events

GOOD = [  # one clean 3-event session: every case adds its bad rows to it
    ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),
    ("u1", "d1", "2025-01-15 10:00:10", "m_card_click"),
    ("u1", "d1", "2025-01-15 10:00:20", "store_page_load"),
]
# inputs that have only the four required columns
NO_OPTIONAL = [f"input.columns.{c}=null" for c in ("store_id", "discovery_feature", "event_rank")]


def _run(spark, tmp_path, df=None, *overrides, fmt="parquet", path=None, stores=None):
    raw = path or str(tmp_path / "raw")
    if df is not None:
        df.write.mode("overwrite").format(fmt).option("header", "true").save(raw)
    extra = []
    if stores is not None:
        stores.write.mode("overwrite").parquet(str(tmp_path / "stores"))
        extra = [f"stores.path={tmp_path}/stores"]
    conf = make_conf(
        f"input.path={raw}",
        f"input.format={fmt}",
        f"run.output_dir={tmp_path}/out",
        "run.run_id=bad",
        *extra,
        *overrides,
    )
    return sessionize_stage.run(spark, conf).summary


def _quarantine(spark, tmp_path) -> dict[str, int]:
    rows = spark.read.parquet(f"{tmp_path}/out/quarantine").groupBy("reject_reason").count().collect()
    return {r.reject_reason: r["count"] for r in rows}


def _reconciles(summary: dict) -> None:
    # every row read ends in exactly one place (sessionize.run raises otherwise; checked again here)
    assert summary["rows_read"] == summary["rows_accounted"] == sum(summary["rows"].values())


# --------------------------------------------------------------------------------------------------
# Clear errors at start
# --------------------------------------------------------------------------------------------------


def test_missing_required_column_names_it_and_what_the_input_has(spark, tmp_path):
    df = raw_events(spark, GOOD).drop("device_id")
    with pytest.raises(
        InputError, match=r"input column 'device_id' \(input.columns.device_id\) not found; the input has: "
    ):
        _run(spark, tmp_path, df)


def test_wrong_column_type_names_the_column_the_type_found_and_expected(spark, tmp_path):
    df = raw_events(spark, GOOD).withColumn("event_name", F.lit(7))
    with pytest.raises(InputError, match=r"'event_name' .* has type int, expected string"):
        _run(spark, tmp_path, df)


def test_empty_input_is_an_error_not_an_empty_day(spark, tmp_path):
    df = raw_events(spark, GOOD).limit(0)
    with pytest.raises(InputError, match="has no rows; nothing to sessionize"):
        _run(spark, tmp_path, df)
    assert not (tmp_path / "out" / "sessions").exists()  # nothing published


def test_corrupted_parquet_file_is_named_and_nothing_is_published(spark, tmp_path):
    raw = tmp_path / "raw"
    raw_events(spark, GOOD).coalesce(1).write.parquet(str(raw))
    (raw / "part-99999-broken.parquet").write_bytes(b"PAR1 this is not a parquet file at all")
    with pytest.raises(InputError, match=r"part-99999-broken\.parquet can't be read: it is corrupt"):
        _run(spark, tmp_path)
    assert not (tmp_path / "out" / "sessions").exists()


def test_a_failed_quarantine_write_fails_the_stage_and_leaves_no_sessions(spark, tmp_path):
    # The quarantine and sessions passes run as concurrent Spark jobs: when the quarantine one fails (here
    # its directory can't be created: a file is in the way), the sessions one may already have finished,
    # yet the stage fails and no sessions table is left for the next stage to read.
    (tmp_path / "blocker").write_text("a file where a directory should be")
    # the error names the failed write (the path alone would match anything raised about this location)
    with pytest.raises(Exception, match=r"(?s)(FileAlreadyExists|[Nn]ot a directory|Mkdirs failed|exists).*blocker"):
        _run(spark, tmp_path, raw_events(spark, GOOD), f"sessions.quarantine_path={tmp_path}/blocker/quarantine")
    assert not (tmp_path / "out" / "sessions").exists()
    assert not (tmp_path / "out" / "sessionize_summary.json").exists()


def test_an_input_where_every_row_is_quarantined_gives_an_empty_sessions_table(spark, tmp_path):
    bad = [(None, "d1", "2025-01-15 10:00:00", "m_card_view"), ("u1", "d1", "noon", "m_card_view")]
    summary = _run(spark, tmp_path, raw_events(spark, bad))
    _reconciles(summary)
    assert summary["rows_read"] == 2
    assert _quarantine(spark, tmp_path) == {"null_user_id": 1, "unparseable_event_ts": 1}
    assert summary["sessions"]["total"] == 0 and summary["rows"]["model_input"] == 0
    assert spark.read.parquet(f"{tmp_path}/out/sessions").count() == 0
    # pandas and pyarrow read both tables too: the empty one by its schema file, the quarantine's row of
    # no readable time in the partition quarantine_date=unknown (a null partition would not read)
    import pandas as pd

    empty = pd.read_parquet(tmp_path / "out" / "sessions")
    assert len(empty) == 0 and {"session_id", "session_date", "event_names"} <= set(empty.columns)
    q = pd.read_parquet(tmp_path / "out" / "quarantine")
    dates = dict(zip(q.reject_reason, q.quarantine_date.astype(str), strict=True))
    assert dates == {"null_user_id": "2025-01-15", "unparseable_event_ts": "unknown"}


def test_stores_dimension_with_duplicate_ids_is_an_error(spark, tmp_path):
    stores = spark.createDataFrame(
        [(1, "A", "burgers", "fast", False), (1, "B", "pizza", "fast", False), (2, "C", "sushi", "new", True)],
        "store_id long, store_name string, store_category string, store_tag string, is_new_vertical boolean",
    )
    with pytest.raises(InputError, match=r"duplicate store ids: 1 \(x2\)"):
        _run(spark, tmp_path, raw_events(spark, GOOD), stores=stores)
    assert not (tmp_path / "out" / "sessions").exists()


# --------------------------------------------------------------------------------------------------
# Quarantined with a reason, or counted; the summary reconciles
# --------------------------------------------------------------------------------------------------

QUARANTINE_CASES = {
    "null keys": (
        [
            (None, "d1", "2025-01-15 10:00:00", "m_card_view"),
            ("u1", " ", "2025-01-15 10:00:00", "m_card_view"),
            ("u1", "d1", "2025-01-15 10:00:00", None),
            ("u1", "d1", None, "m_card_view"),
        ],
        {"null_user_id": 1, "null_device_id": 1, "null_event_name": 1, "null_event_ts": 1},
    ),
    "unparseable timestamp": ([("u1", "d1", "15/01/2025 noon", "m_card_view")], {"unparseable_event_ts": 1}),
    "far-future and epoch-zero timestamps": (
        [("u1", "d1", "2999-01-01 00:00:00", "m_card_view"), ("u1", "d1", "1970-01-01 00:00:00", "m_card_view")],
        {"event_ts_out_of_range": 2},
    ),
    "unknown event name": ([("u1", "d1", "2025-01-15 10:00:05", "m_card_veiw")], {"unknown_event_name": 1}),
}


@pytest.mark.parametrize("case", list(QUARANTINE_CASES))
def test_bad_rows_are_quarantined_with_their_reason(spark, tmp_path, case):
    bad, expected = QUARANTINE_CASES[case]
    known = json.dumps(["m_card_view", "m_card_click", "store_page_load"])
    summary = _run(spark, tmp_path, raw_events(spark, GOOD + bad), f"events.known_events={known}")
    _reconciles(summary)
    assert _quarantine(spark, tmp_path) == expected
    assert {
        k.removeprefix("quarantined_"): v for k, v in summary["rows"].items() if k.startswith("quarantined_") and v
    } == expected
    assert summary["rows"]["model_input"] == 3 and summary["sessions"]["kept"] == 1


def test_csv_with_bad_quoting_is_quarantined_as_malformed_with_the_raw_line(spark, tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text(
        "user_id,device_id,event_timestamp,event_name\n"
        + "".join(f"{u},{d},{t},{n}\n" for u, d, t, n in GOOD)
        + 'u2,d2,"2025-01-15 10:00:00,m_card_view\n'  # an unclosed quote swallows the rest of the line
        + "u3,d3,2025-01-15 10:00:00,m_card_view,extra,fields\n"  # more fields than the header
        + 'u4,"d""4",2025-01-15 10:00:00,m_card_click\n'  # a correctly escaped quote: fine
    )
    summary = _run(spark, tmp_path, None, *NO_OPTIONAL, fmt="csv", path=str(raw))
    _reconciles(summary)
    assert summary["rows_read"] == 6
    quarantine = spark.read.parquet(f"{tmp_path}/out/quarantine").collect()
    assert sorted(r.reject_reason for r in quarantine) == ["malformed_row", "malformed_row"]
    assert any(r.malformed_record.startswith('u2,d2,"2025') for r in quarantine)
    assert summary["rows"]["short_session"] == 1  # u4's lone event: parsed, then too short


def test_numeric_ids_become_strings(spark, tmp_path):
    df = spark.createDataFrame(
        [(7, 70, t, n) for _, _, t, n in GOOD], "user_id long, device_id int, event_timestamp string, event_name string"
    )
    summary = _run(spark, tmp_path, df, *NO_OPTIONAL)
    _reconciles(summary)
    sessions = spark.read.parquet(f"{tmp_path}/out/sessions").collect()
    assert [(s.user_id, s.device_id, s.session_id) for s in sessions] == [("7", "70", "7_70_2025-01-15_1")]


def test_sessions_made_only_of_funnel_events_are_counted_not_kept(spark, tmp_path):
    funnel = [
        ("u2", "d2", "2025-01-15 11:00:00", "cart_page_load"),
        ("u2", "d2", "2025-01-15 11:00:10", "checkout_page_load"),
        ("u2", "d2", "2025-01-15 11:00:20", "action_place_order"),
    ]
    summary = _run(spark, tmp_path, raw_events(spark, GOOD + funnel))
    _reconciles(summary)
    # the two pre-order funnel events are funnel rows; the order itself starts the after-conversion cut
    assert summary["rows"]["funnel"] + summary["rows"]["after_conversion"] == 3
    assert summary["rows"]["model_input"] == 3 and summary["sessions"]["kept"] == 1


def test_exact_duplicate_rows_are_dropped_and_counted(spark, tmp_path):
    summary = _run(spark, tmp_path, raw_events(spark, GOOD + GOOD[:2] + GOOD[:1]))
    _reconciles(summary)
    assert summary["rows"]["duplicate"] == 3 and summary["rows"]["model_input"] == 3


def test_a_user_with_200k_events_in_one_day_is_dropped_as_bot_like(spark, tmp_path):
    bot = (
        spark.range(200_000)
        .select(
            F.lit("bot").alias("user_id"),
            F.lit("b1").alias("device_id"),
            F.date_format(F.timestamp_seconds(F.lit(1736935200) + F.col("id") % 80_000), "yyyy-MM-dd HH:mm:ss").alias(
                "event_timestamp"
            ),
            F.when(F.col("id") % 2 == 0, "m_card_view").otherwise("m_card_click").alias("event_name"),
            F.lit(None).cast("long").alias("store_id"),
            F.lit(None).cast("string").alias("discovery_feature"),
            F.lit(None).cast("int").alias("event_rank"),
        )
        .repartition(4)
    )
    df = raw_events(spark, GOOD).unionByName(bot)
    summary = _run(spark, tmp_path, df, "session.max_events_per_device_day=5000")
    _reconciles(summary)
    assert summary["rows_read"] == 200_003
    assert summary["rows"]["bot_like_device_day"] + summary["rows"]["duplicate"] == 200_000
    assert summary["sessions"]["kept"] == 1
    sessions = spark.read.parquet(f"{tmp_path}/out/sessions")
    assert sessions.where("user_id = 'bot'").count() == 0


def test_offsets_and_a_dst_change_order_events_by_instant_and_day_by_local_zone(spark, tmp_path):
    # New York, 2025-03-09: clocks jump 02:00 -> 03:00. Written three ways, these are 20 minutes apart.
    rows = [
        ("u1", "d1", "2025-03-09 01:50:00", "m_card_view"),  # naive: local time in input.time_zone
        ("u1", "d1", "2025-03-09T07:00:00Z", "m_card_click"),  # 03:00 EDT, 10 minutes later
        ("u1", "d1", "2025-03-09T03:10:00-04:00", "store_page_load"),  # 10 minutes after that
        ("u1", "d1", "2025-03-10T04:30:00+00:00", "m_card_view"),  # 00:30 EDT on the 10th: next local day
        ("u1", "d1", "2025-03-10 00:40:00", "m_card_click"),
    ]
    summary = _run(spark, tmp_path, raw_events(spark, rows), "input.time_zone=America/New_York")
    _reconciles(summary)
    sessions = sorted(spark.read.parquet(f"{tmp_path}/out/sessions").collect(), key=lambda s: s.session_id)
    assert [(s.session_id, s.event_names) for s in sessions] == [
        ("u1_d1_2025-03-09_1", ["m_card_view", "m_card_click", "store_page_load"]),
        ("u1_d1_2025-03-10_1", ["m_card_view", "m_card_click"]),
    ]
    assert sessions[0].seconds_from_prev[1:] == [600.0, 600.0]


def test_a_session_of_10k_events_is_truncated_as_configured(spark, tmp_path):
    long_session = spark.range(10_000).select(
        F.lit("u9").alias("user_id"),
        F.lit("d9").alias("device_id"),
        F.date_format(F.timestamp_seconds(F.lit(1736935200) + F.col("id")), "yyyy-MM-dd HH:mm:ss").alias(
            "event_timestamp"
        ),
        F.when(F.col("id") % 3 == 0, "m_card_view").otherwise("m_card_click").alias("event_name"),
        F.lit(None).cast("long").alias("store_id"),
        F.lit(None).cast("string").alias("discovery_feature"),
        F.lit(None).cast("int").alias("event_rank"),
    )
    summary = _run(spark, tmp_path, raw_events(spark, GOOD).unionByName(long_session))
    _reconciles(summary)
    assert summary["rows"]["truncated"] == 10_000 - 100 and summary["rows"]["model_input"] == 3 + 100
    long = spark.read.parquet(f"{tmp_path}/out/sessions").where("user_id = 'u9'").first()
    assert long.session_length == 100 and long.original_length == 10_000 and len(long.event_names) == 100
