"""Raw events -> one row per session, as pure DataFrame -> DataFrame transforms.

The stages, each testable on its own with chispa:

    select_input      rename the warehouse's columns to ours, check and cast their types
    parse_event_time  text / epoch / timestamp -> event_ts (UTC instant) and event_date (local day)
    flag_invalid      reject_reason per row: null keys, unparseable or out-of-range time, unknown name
    order_events      one shuffle by (user, device, local day) and one sort within each partition
    build_sessions    the rules (``attribution.session_rules``, numpy over Arrow batches, in a
                      mapInArrow): duplicates, sessions, labels, categories, arrays, the stores join;
                      then session_id and the split

Every valid row ends in exactly one category (``ROW_CATEGORIES``), so the run summary reconciles:
rows read = quarantined + duplicates + bot-like + after conversion + funnel + error + truncated
+ short sessions + model input.

Skew: a device-day's rows meet in one task, already sorted; the Python side holds one device-day at a
time, and a device-day past ``session.max_events_per_device_day`` streams (only its open session's
counts are kept), so a bot with millions of events a day costs one long task, not an out-of-memory.
Such device-days are counted as ``bot_like_device_day``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from attribution import session_rules
from attribution.config import TIMESTAMP_EPOCH_FORMATS, Config, EventsConf, InputColumns, SplitConf, StoreColumns
from attribution.errors import InputError
from attribution.io import CORRUPT_RECORD
from attribution.session_rules import EVENT_FIELDS, STORE_FIELDS

# Canonical names used from here on (one name per concept across code, tables and docs).
KEY = ("user_id", "device_id", "event_date")

REJECT_REASONS = (
    "malformed_row",  # CSV/JSON: a line Spark could not split into the columns (bad quoting, wrong count)
    "null_user_id",
    "null_device_id",
    "null_event_name",
    "null_event_ts",
    "unparseable_event_ts",
    "outside_run_date",  # day mode with input.date_column: in the day's partition, but timed on another day
    "event_ts_out_of_range",
    "unknown_event_name",
)
ROW_CATEGORIES = (
    "duplicate",
    "bot_like_device_day",
    "after_conversion",
    "funnel",
    "error",
    "truncated",
    "short_session",
    "model_input",
)
SESSION_STATUSES = ("kept", "short_session", "bot_like_device_day")

_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def _type_error(key: str, column: str, found: T.DataType, expected: str) -> InputError:
    return InputError(
        f"input column {column!r} (input.columns.{key}) has type {found.simpleString()}, expected {expected}"
    )


def select_input(df: DataFrame, columns: InputColumns, timestamp_format: str | None = None) -> DataFrame:
    """Rename the configured columns to canonical names and check their types.

    Ids may be strings or integers (cast to string). ``event_ts_raw`` keeps the time column as read so
    quarantined rows show what arrived. Extra columns are dropped.
    """
    fields = {f.name: f.dataType for f in df.schema.fields}
    available = ", ".join(sorted(f for f in fields if f != CORRUPT_RECORD))

    def col_of(key: str, required: bool) -> str | None:
        name = getattr(columns, key)
        if name is None:
            if required:
                raise InputError(f"input.columns.{key}: a column name is required")
            return None
        if name not in fields:
            raise InputError(f"input column {name!r} (input.columns.{key}) not found; the input has: {available}")
        return name

    def required(key: str) -> str:
        name = col_of(key, True)
        assert name is not None  # col_of raises for a required key without a column
        return name

    out: list[Column] = []
    # The reader's corrupt-record column (CSV and JSON, see attribution.io): the raw line of a row that
    # did not parse, null for good rows.
    corrupt = F.col(CORRUPT_RECORD) if CORRUPT_RECORD in fields else F.lit(None).cast("string")
    out.append(corrupt.alias("malformed_record"))
    for key in ("user_id", "device_id"):
        name = required(key)
        dtype = fields[name]
        if not isinstance(dtype, (T.StringType, *_INTEGRAL)):
            raise _type_error(key, name, dtype, "string or integer")
        out.append(F.col(name).cast("string").alias(key))

    ts_name = required("event_ts")
    ts_type = fields[ts_name]
    epoch = timestamp_format in TIMESTAMP_EPOCH_FORMATS
    allowed = (T.StringType, T.TimestampType, T.TimestampNTZType) + (
        (*_INTEGRAL, T.DoubleType, T.FloatType, T.DecimalType) if epoch else ()
    )
    if not isinstance(ts_type, allowed):
        expected = "a number (epoch)" if epoch else "timestamp or string"
        raise _type_error("event_ts", ts_name, ts_type, expected)
    out.append(F.col(ts_name).alias("event_ts_in"))
    out.append(F.col(ts_name).cast("string").alias("event_ts_raw"))

    name = required("event_name")
    if not isinstance(fields[name], T.StringType):
        raise _type_error("event_name", name, fields[name], "string")
    out.append(F.col(name).alias("event_name"))

    optional = {
        "store_id": ((T.StringType, *_INTEGRAL), "string", "string or integer"),
        "discovery_feature": ((T.StringType,), "string", "string"),
        "event_rank": (_INTEGRAL, "int", "integer"),
    }
    for key, (types_ok, cast_to, expected) in optional.items():
        given = col_of(key, False)
        if given is None:
            out.append(F.lit(None).cast(cast_to).alias(key))
            continue
        if not isinstance(fields[given], types_ok):
            raise _type_error(key, given, fields[given], expected)
        out.append(F.col(given).cast(cast_to).alias(key))
    return df.select(*out)


_OFFSET_RE = r"(Z|[+-]\d{2}(:?\d{2})?)$"


def _format_has_zone(fmt: str) -> bool:
    # Spark datetime pattern letters that carry an offset or zone.
    quoted = False
    for ch in fmt:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "XxZVzO":
            return True
    return False


def parse_event_time(df: DataFrame, timestamp_format: str | None, time_zone: str) -> DataFrame:
    """``event_ts_in`` -> ``event_ts`` (an instant) and ``event_date`` (the calendar day in ``time_zone``).

    Text without an offset is wall-clock time in ``time_zone``; text with one is taken as written.
    Unparseable text gives a null ``event_ts`` (quarantined later), never a failed job. Requires the
    session time zone to be UTC (``build_spark`` sets it), so the conversions below are exact.
    """
    dtype = df.schema["event_ts_in"].dataType
    raw = F.col("event_ts_in")
    utc = time_zone in ("UTC", "Etc/UTC", "GMT")
    if isinstance(dtype, T.TimestampType):
        ts = raw
    elif isinstance(dtype, T.TimestampNTZType):
        ts = F.to_utc_timestamp(raw.cast("timestamp"), time_zone)
    elif timestamp_format in ("epoch_s", "epoch_ms"):
        # try_cast: epoch numbers as text (CSV) that don't parse give null (quarantined), not a failed job
        scale = 1_000_000 if timestamp_format == "epoch_s" else 1_000
        ts = F.timestamp_micros((raw.try_cast("double") * scale).try_cast("long"))
    else:
        text = F.trim(raw.cast("string"))
        parsed = F.try_to_timestamp(text, F.lit(timestamp_format)) if timestamp_format else F.try_to_timestamp(text)
        zoned: bool | Column
        if utc:  # naive text is already UTC wall-clock time; text with an offset parses as written
            zoned = True
        elif timestamp_format:
            zoned = _format_has_zone(timestamp_format)
        else:
            zoned = text.rlike(_OFFSET_RE)
        if isinstance(zoned, bool):
            ts = parsed if zoned else F.to_utc_timestamp(parsed, time_zone)
        else:
            ts = F.when(zoned, parsed).otherwise(F.to_utc_timestamp(parsed, time_zone))
    local = F.col("event_ts") if utc else F.from_utc_timestamp(F.col("event_ts"), time_zone)
    return df.withColumn("event_ts", ts).withColumn("event_date", F.to_date(local)).drop("event_ts_in")


def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def flag_invalid(
    df: DataFrame,
    events: EventsConf,
    valid_from: str,
    valid_until: str,
    run_date: str | None = None,
) -> DataFrame:
    """Add ``reject_reason``: the first rule a row breaks (``REJECT_REASONS`` order), null if valid.
    ``run_date``: the rows' local day must be that day (``outside_run_date`` otherwise)."""
    known = None
    if events.known_events is not None:
        known = sorted(set(events.known_events) | set(events.funnel_events) | set(events.conversion_events))
    ts = F.col("event_ts")
    reason = (
        F.when(F.col("malformed_record").isNotNull(), "malformed_row")
        .when(_blank(F.col("user_id")), "null_user_id")
        .when(_blank(F.col("device_id")), "null_device_id")
        .when(_blank(F.col("event_name")), "null_event_name")
        .when(F.col("event_ts_raw").isNull(), "null_event_ts")
        .when(ts.isNull(), "unparseable_event_ts")
    )
    if run_date is not None:
        reason = reason.when(F.col("event_date") != F.lit(run_date).cast("date"), "outside_run_date")
    reason = reason.when(
        (ts < F.lit(valid_from).cast("timestamp")) | (ts >= F.lit(valid_until).cast("timestamp")),
        "event_ts_out_of_range",
    )
    if known is not None:
        reason = reason.when(~F.col("event_name").isin(known), "unknown_event_name")
    # The never-true spark_partition_id() test makes the expression non-deterministic, so the optimizer
    # can't push the later filter on reject_reason below this projection; pushed down, it inlines (and
    # re-runs) the timestamp parse once per reference: 4x the parsing cost on the stage's hottest path.
    reason = F.when(F.spark_partition_id() < 0, F.lit(None).cast("string")).otherwise(reason)
    return df.withColumn("reject_reason", reason)


def prepare_stores(stores: DataFrame, columns: StoreColumns) -> pa.Table:
    """The canonical stores dimension, collected (it travels to every task and is joined in memory);
    duplicate store ids are an error (a join would duplicate events)."""
    fields = {f.name: f.dataType for f in stores.schema.fields}
    out = []
    for key in ("store_id",) + STORE_FIELDS:
        name = getattr(columns, key)
        if name is None:
            cast_to = "boolean" if key == "is_new_vertical" else "string"
            out.append(F.lit(None).cast(cast_to).alias(key))
            continue
        if name not in fields:
            raise InputError(
                f"stores column {name!r} (stores.columns.{key}) not found; the stores table has: "
                f"{', '.join(sorted(fields))}"
            )
        out.append(F.col(name).cast("boolean" if key == "is_new_vertical" else "string").alias(key))
    dim = stores.select(*out).where(F.col("store_id").isNotNull()).toArrow()
    counts = dim.group_by("store_id").aggregate([("store_id", "count")])
    dups = counts.filter(pc.greater(counts.column("store_id_count"), 1)).sort_by("store_id").slice(0, 5)
    if dups.num_rows:
        ids = ", ".join(f"{r['store_id']} (x{r['store_id_count']})" for r in dups.to_pylist())
        raise InputError(f"stores dimension has duplicate store ids: {ids}; each store id must appear once")
    return dim


def order_events(valid: DataFrame) -> DataFrame:
    """Hash-partition by (user, device, local day) and sort each partition by that key, then time, event
    name, store, feature, rank (nulls first): deterministic ties, and exact duplicates become adjacent.
    One shuffle and one sort, the same work as a plain sort of the events."""
    order = [F.col(c).asc_nulls_first() for c in KEY + ("event_ts",) + EVENT_FIELDS]
    return valid.select(*KEY, "event_ts", *EVENT_FIELDS).repartition(*KEY).sortWithinPartitions(*order)


def split_col(session_id: Column, split: SplitConf) -> Column:
    """'train' / 'validation' / 'test' from a salted hash of session_id: stable across runs and engines."""
    u = F.pmod(F.xxhash64(F.lit(split.salt), session_id), F.lit(1_000_000)) / F.lit(1_000_000.0)
    return F.when(u < split.train, "train").when(u < split.train + split.validation, "validation").otherwise("test")


def count_if(cond: Column) -> Column:
    return F.sum(F.when(cond, 1).otherwise(0)).cast("long")


def build_sessions(ordered: DataFrame, stores: pa.Table | None, conf: Config) -> DataFrame:
    """Ordered events (``order_events``) -> one row per session, every status, with its event arrays,
    label, split and per-category row counts.

    The rules run in a ``mapInArrow`` over each sorted partition (``attribution.session_rules``:
    numpy passes over Arrow columns). The stores dimension travels with the function, as Arrow IPC bytes
    (Spark broadcasts a function over 1 MiB once per executor; a Spark Connect server gets it in the
    plan), and is joined in memory.
    """

    rules = session_rules.rules_from(conf)
    stores_ipc = None
    if stores is not None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, stores.schema) as writer:
            writer.write_table(stores)
        stores_ipc = sink.getvalue().to_pybytes()

    def sessions(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        stores_table = pa.ipc.open_stream(stores_ipc).read_all() if stores_ipc is not None else None
        stream = session_rules.SessionStream(rules, session_rules.StoresLookup(stores_table))
        yield from stream(batches)

    out = ordered.mapInArrow(sessions, session_rules.OUTPUT_DDL)
    session_id = F.concat_ws(
        "_",
        F.col("user_id"),
        F.col("device_id"),
        F.date_format("session_date", "yyyy-MM-dd"),
        F.col("session_n").cast("string"),
    )
    columns = [c for c in out.columns if c not in ("user_id", "device_id", "session_date", "session_n", "label")]
    return out.withColumn("session_id", session_id).select(
        "session_id",
        "user_id",
        "device_id",
        "session_date",
        "session_n",
        "label",
        split_col(F.col("session_id"), conf.split).alias("split"),
        *columns,
    )


def valid_events(df: DataFrame) -> DataFrame:
    return df.where(F.col("reject_reason").isNull()).drop("reject_reason", "event_ts_raw", "malformed_record")


def quarantined_events(df: DataFrame, run_date: str | None = None) -> DataFrame:
    """Rejected rows as they arrived (time as text), with the reason, and ``quarantine_date`` (text, the
    table's partition): the day whose run quarantined them in day mode, else their local date, or
    ``unknown`` when their time can't be read (a text value, not null: pyarrow and pandas can't read a
    table whose partition column has a null partition)."""
    local = F.coalesce(F.date_format("event_date", "yyyy-MM-dd"), F.lit(UNKNOWN_DATE))
    day = F.lit(run_date) if run_date is not None else local
    return df.where(F.col("reject_reason").isNotNull()).select(
        "user_id",
        "device_id",
        F.col("event_ts_raw").alias("event_ts"),
        "event_name",
        "store_id",
        "discovery_feature",
        "event_rank",
        "reject_reason",
        "malformed_record",  # the raw line, for malformed_row
        day.alias(QUARANTINE_PARTITION),
    )


QUARANTINE_PARTITION = "quarantine_date"
UNKNOWN_DATE = "unknown"


def validated(df: DataFrame, conf: Config) -> DataFrame:
    """select_input -> parse_event_time -> flag_invalid, as configured; in day mode, the day's rows only
    (:func:`day_scope`)."""
    inp, day = conf.input, conf.run.date
    parsed = df.transform(day_scope, conf).transform(select_input, inp.columns, inp.timestamp_format)
    parsed = parsed.transform(parse_event_time, inp.timestamp_format, inp.time_zone)
    if day is not None and not inp.date_column:
        # Without a date column the day is the rows' local date; a time that can't be read belongs to no
        # day (the run without --date quarantines it).
        parsed = parsed.where(F.col("event_date") == F.lit(day).cast("date"))
    run_date = day if inp.date_column else None
    return parsed.transform(flag_invalid, conf.events, inp.valid_from, inp.valid_until, run_date)


def day_bounds(day: str, time_zone: str) -> tuple[str, str]:
    """The local day ``day`` in ``time_zone`` as UTC instants [start, end), 'YYYY-MM-DD HH:MM:SS' text."""
    import datetime as dt
    import zoneinfo

    zone = zoneinfo.ZoneInfo(time_zone)
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(0), zone)
    end = dt.datetime.combine(dt.date.fromisoformat(day) + dt.timedelta(days=1), dt.time(0), zone)
    fmt = "%Y-%m-%d %H:%M:%S"
    return start.astimezone(dt.timezone.utc).strftime(fmt), end.astimezone(dt.timezone.utc).strftime(fmt)


def day_scope(raw: DataFrame, conf: Config) -> DataFrame:
    """Day mode: the raw rows of ``run.date``, by a filter Spark pushes down to the files. On
    ``input.date_column`` when configured (a partition column prunes every other day's directory);
    else on the time column when it is a timestamp (row groups of other days are skipped by their
    statistics). Text and epoch times can't be compared before parsing: :func:`validated` filters
    them on their parsed local date (the whole input is read)."""
    day = conf.run.date
    if day is None:
        return raw
    inp = conf.input
    fields = {f.name: f.dataType for f in raw.schema.fields}
    if inp.date_column:
        if inp.date_column not in fields:
            raise InputError(
                f"input.date_column: the input has no column {inp.date_column!r}; columns are "
                f"{', '.join(sorted(fields))}"
            )
        dtype = fields[inp.date_column]
        if isinstance(dtype, T.DateType):
            return raw.where(F.col(inp.date_column) == F.lit(day).cast("date"))
        if isinstance(dtype, T.StringType):
            return raw.where(F.col(inp.date_column) == F.lit(day))
        raise InputError(
            f"input.date_column {inp.date_column!r} has type {dtype.simpleString()}, expected date or YYYY-MM-DD string"
        )
    ts_name = inp.columns.event_ts
    ts_type = fields.get(ts_name)
    if isinstance(ts_type, T.TimestampType):
        start, end = day_bounds(day, inp.time_zone)
    elif isinstance(ts_type, T.TimestampNTZType):  # wall-clock time in input.time_zone
        start, end = f"{day} 00:00:00", f"{_next_day(day)} 00:00:00"
    else:
        return raw
    lit_type = "timestamp" if isinstance(ts_type, T.TimestampType) else "timestamp_ntz"
    ts = F.col(ts_name)
    return raw.where((ts >= F.lit(start).cast(lit_type)) & (ts < F.lit(end).cast(lit_type)))


def _next_day(day: str) -> str:
    import datetime as dt

    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


def sessions_all(valid: DataFrame, stores: pa.Table | None, conf: Config) -> DataFrame:
    """Valid events (+ the prepared stores dimension) -> every session with its status and counts."""
    return build_sessions(order_events(valid), stores, conf)


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


# Parquet dictionary encoding of the per-event times, gaps and ranks (nearly all distinct) cost 40% of
# the sessions write for 10% smaller files; the string arrays keep it (event names repeat).
NO_DICTIONARY = {
    f"parquet.enable.dictionary#{c}": "false"
    for c in ("session_start_ts", "session_end_ts")
    + tuple(f"{a}.list.element" for a in ("event_ts", "seconds_from_prev", "event_ranks"))
}


@contextlib.contextmanager
def arrow_batch_rows(spark: SparkSession, rows: int) -> Iterator[None]:
    """Arrow batches of ``rows`` rows into Python UDFs while the block runs (the session setting is
    restored after): the sessionizer's per-batch cost is fixed, and its memory is a chunk of events
    whatever the batch size. The attribution UDF keeps the configured, smaller batches."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def concurrently(spark: SparkSession, background: Callable[[], None], foreground: Callable[[], None]) -> None:
    """Run ``background`` in a thread while ``foreground`` runs here (each submits its own Spark job),
    wait for both, and raise the first failure: the foreground's, else the background's."""
    from pyspark import InheritableThread  # carries the job group and local properties (Connect: tags)

    failed: list[BaseException] = []

    def target() -> None:
        try:
            background()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread below
            failed.append(exc)

    thread = InheritableThread(target=target, daemon=True, session=spark)
    thread.start()
    try:
        foreground()
    finally:
        thread.join()
    if failed:
        raise failed[0]


class ReconciliationError(RuntimeError):
    """Row counts don't add up: a bug, never a data problem. The run stops before publishing."""


def summarize(rows_read: int, quarantine_counts: dict[str, int], session_counts: dict) -> dict:
    """The run summary, with the reconciliation check: every row read is accounted for exactly once."""
    rows = {f"quarantined_{r}": int(quarantine_counts.get(r, 0)) for r in REJECT_REASONS}
    for c in ROW_CATEGORIES:
        rows[c] = int(session_counts.get(f"n_{c}") or 0)
    accounted = sum(rows.values())
    summary = {
        "rows_read": int(rows_read),
        "rows": rows,
        "rows_accounted": accounted,
        "sessions": {
            "total": int(session_counts.get("sessions_total") or 0),
            **{s: int(session_counts.get(f"sessions_{s}") or 0) for s in SESSION_STATUSES},
        },
        "kept_sessions_by_split": {
            k: int(session_counts.get(f"split_{k}") or 0) for k in ("train", "validation", "test")
        },
        "kept_sessions_converted": int(session_counts.get("converted") or 0),
    }
    if accounted != rows_read:
        raise ReconciliationError(f"row counts do not reconcile: read {rows_read}, accounted {accounted} ({rows})")
    return summary
