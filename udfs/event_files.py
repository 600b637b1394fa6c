"""The event table written by the attribution UDF's own Python worker (``attribution.writer: arrow``).

Spark's way to write the event table is to take the UDF's scored sessions back into the JVM, explode
them to one row per event and write them with its parquet writer. Here the worker does all three in
Arrow, in the same process that scored the sessions: the per-event arrays are flattened (no copy), the
session's values are repeated with one ``take``, and pyarrow's parquet writer writes the files. What goes
back to Spark is a manifest: one row per file written, and one row of counters per task. The files and
the table are the same as Spark's writer makes (same columns, types, nullability, the Spark schema in
the footer, ``session_date=...`` directories); tests/test_event_files.py compares the two.

The commit protocol, since Spark's committer is not in the loop:

1. every task attempt writes under ``<table>/_staging-<token>/``, a name Spark and pyarrow readers skip,
   its files named by partition and task attempt id, so a retried or speculative attempt never
   overwrites another's file;
2. the driver collects the manifest, which holds the files of the successful attempt of each partition
   only, and moves them into ``session_date=...``: in day mode after removing the partitions the run
   writes (Spark's dynamic partition overwrite), else after removing the previous table;
3. the staging directory goes, with any file a failed attempt left, and ``_SUCCESS`` is written.

A job that fails leaves the previous table as it was (Spark's overwrite removes it first).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs
from pyspark import TaskContext
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import DoubleType, LongType, MapType, StringType, StructField, StructType

from attribution.errors import ConfigError
from attribution.events import EventLayout, event_layout, event_table
from attribution.schema import POSITION_BIN_UPPER, POSITION_BINS
from attribution.sinks import EMPTY_MARKER, filesystem_for, remove_path
from udfs.attribution_udf import PEAKS
from udfs.worker import STATS_COLUMN, merge_stats

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem
    from pyspark.sql import DataFrame, SparkSession

PARTITION = "session_date"
STAGING_PREFIX = "_staging-"
# Spark's own name for a null partition value
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# Spark's parquet footer key for the Spark schema: Spark reads the files back with exactly these types
SPARK_SCHEMA_KEY = b"org.apache.spark.sql.parquet.row.metadata"
# Events buffered per file before a row group is written: row groups of a useful size for readers,
# memory bounded (a few tens of MB at the event table's width)
ROW_GROUP_EVENTS = 131_072
# spark.sql.parquet.compression.codec -> pyarrow's name
CODECS = {
    "none": "NONE",
    "uncompressed": "NONE",
    "snappy": "SNAPPY",
    "gzip": "GZIP",
    "brotli": "BROTLI",
    "lz4": "LZ4",
    "lz4_raw": "LZ4",
    "zstd": "ZSTD",
}
# The prefix of the counters the writer adds to the UDF's (udfs/worker.py): the stage's summary reads them.
TABLE = "table."


def position_bins(position: np.ndarray) -> pa.Array:
    """The bin label (``attribution.schema.POSITION_BINS``) of each 0-based position, as
    :func:`attribution.events.position_bin` gives it."""
    code = np.searchsorted(np.asarray(POSITION_BIN_UPPER), position + 1, side="left").astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(code), pa.array(POSITION_BINS)).cast(pa.string())


def _constant(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value])).cast(pa.string())


def flat_events(
    batch: pa.RecordBatch, layout: EventLayout, target: pa.Schema, run_id: str, model_sha256: str
) -> tuple[pa.Table, pa.Array]:
    """One batch of scored sessions as the event table's rows (``target``'s columns, in its order), and
    each row's ``session_date``. The same rows as :func:`attribution.events.event_table`."""
    names = batch.schema.names
    events = batch.column(names.index(layout.arrays["event_type"]))
    offsets = events.offsets.to_numpy()
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    for dst, src in layout.arrays.items():  # arrays_zip pads a shorter array with nulls; the UDF never makes one
        column = batch.column(names.index(src))
        if column.null_count or not np.array_equal(pc.list_value_length(column).to_numpy(), lengths):
            raise ValueError(f"{src}: its arrays do not have one value per event of their session ({dst})")
    n = int(offsets[-1])
    parents = np.repeat(np.arange(batch.num_rows, dtype=np.int64), lengths)
    position = np.arange(n, dtype=np.int32) - offsets[:-1].astype(np.int32)[parents]
    first = position == 0
    computed = {
        "event_position": lambda: pa.array(position, pa.int32()),
        "position_bin": lambda: position_bins(position),
        "run_id": lambda: _constant(run_id, n),
        "model_sha256": lambda: _constant(model_sha256, n),
    }
    take = pa.array(parents)
    take_first = pa.array(parents, mask=~first)  # a null index takes a null
    columns = []
    for f in target:
        if f.name in layout.arrays:
            column = batch.column(names.index(layout.arrays[f.name])).flatten()
        elif f.name in computed:
            column = computed[f.name]()
        elif f.name in layout.first_event:
            column = batch.column(names.index(f.name)).take(take_first)
        else:
            column = batch.column(names.index(f.name)).take(take)
        columns.append(column if column.type == f.type else column.cast(f.type))
    dates = batch.column(names.index(PARTITION)).take(take)
    return pa.Table.from_arrays(columns, schema=target), dates


def _session_counters(batch: pa.RecordBatch, session_checks: tuple[str, ...], vocab_fields: tuple[str, ...]) -> dict:
    """What the stage's Observation gathers from the scored sessions (attribution/stages/attribute.py), as
    sums and maxima over this batch."""

    def total(name: str) -> float:
        return float(pc.sum(batch.column(batch.schema.get_field_index(name))).as_py() or 0)

    out = {
        f"{TABLE}sessions": float(batch.num_rows),
        f"{TABLE}events_in": total("session_length"),
        f"{TABLE}converted": total("label"),
        f"{TABLE}prediction_sum": total("prediction"),
    }
    for c in session_checks:
        values = pc.abs(batch.column(batch.schema.get_field_index(c)))
        valid = len(values) - values.null_count
        if valid:
            out[f"{TABLE}max_abs_{c}"] = float(pc.max(values).as_py())
            out[f"{TABLE}abs_sum_{c}"] = float(pc.sum(values).as_py())
            out[f"{TABLE}abs_count_{c}"] = float(valid)
    for f in vocab_fields:
        out[f"{TABLE}unknown_{f}"] = total(f"unknown_{f}")
    return out


MANIFEST_FIELDS = (
    ("session_date", pa.string()),
    ("path", pa.string()),
    ("events", pa.int64()),
    (STATS_COLUMN, pa.map_(pa.string(), pa.float64())),
)


def manifest_schema() -> StructType:
    return StructType(
        [
            StructField("session_date", StringType()),
            StructField("path", StringType()),
            StructField("events", LongType()),
            StructField(STATS_COLUMN, MapType(StringType(), DoubleType())),
        ]
    )


@dataclass(frozen=True)
class EventFiles:
    """What a task needs to write its part of the event table: shipped in the UDF's closure."""

    staging: str  # <table>/_staging-<token>
    token: str
    target: pa.Schema  # the file's columns: the event table's without session_date
    spark_schema_json: str
    layout: EventLayout
    run_id: str
    model_sha256: str
    compression: str
    session_checks: tuple[str, ...]
    vocab_fields: tuple[str, ...]

    def write(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Consume the UDF's scored batches, write this task's files, yield the manifest."""
        ctx = TaskContext.get()
        # the task attempt's id is unique in the application: no two attempts, of any stage attempt, share a file
        partition, attempt = (ctx.partitionId(), ctx.taskAttemptId()) if ctx is not None else (0, 0)
        filesystem, root = filesystem_for(self.staging)
        files: dict[str, tuple[pq.ParquetWriter, str]] = {}
        pending: dict[str, list[pa.Table]] = {}
        written: dict[str, int] = {}
        counters: list[dict] = []

        def flush(day: str) -> None:
            if day not in files:
                name = f"part-{partition:05d}-{self.token}-t{attempt}.c000.{self.compression.lower()}.parquet"
                path = f"{root}/{PARTITION}={day}/{name}"
                filesystem.create_dir(f"{root}/{PARTITION}={day}", recursive=True)
                writer = pq.ParquetWriter(
                    filesystem.open_output_stream(path), self.target, compression=self.compression, store_schema=False
                )
                # Spark's schema in the footer, as Spark's writer leaves it (not pyarrow's own)
                writer.add_key_value_metadata({SPARK_SCHEMA_KEY: self.spark_schema_json})
                files[day] = (writer, path)
            files[day][0].write_table(pa.concat_tables(pending.pop(day)), row_group_size=ROW_GROUP_EVENTS)

        writing = 0.0
        for batch in batches:
            started = time.perf_counter()
            names = batch.schema.names
            if STATS_COLUMN in names:
                counters += [dict(m) for m in batch.column(names.index(STATS_COLUMN)).to_pylist() if m]
            if not batch.num_rows:
                continue
            counters.append(_session_counters(batch, self.session_checks, self.vocab_fields))
            table, dates = flat_events(batch, self.layout, self.target, self.run_id, self.model_sha256)
            days = pc.unique(dates)
            for value in days.to_pylist():
                day = NULL_PARTITION if value is None else str(value)
                part = table if len(days) == 1 else table.filter(_is(dates, value))
                pending.setdefault(day, []).append(part)
                written[day] = written.get(day, 0) + part.num_rows
                if sum(t.num_rows for t in pending[day]) >= ROW_GROUP_EVENTS:
                    flush(day)
            writing += time.perf_counter() - started
        started = time.perf_counter()
        for day in list(pending):
            flush(day)
        for writer, _ in files.values():
            writer.close()
        counters.append({"seconds_write": writing + time.perf_counter() - started})
        rows: list[dict[str, object]] = [
            {"session_date": day, "path": path, "events": written[day], STATS_COLUMN: None}
            for day, (_, path) in files.items()
        ]
        stats = merge_stats(counters, maxima=tuple(k for c in counters for k in c if _is_peak(k)))
        rows.append({"session_date": None, "path": None, "events": 0, STATS_COLUMN: list(stats.items())})
        yield pa.RecordBatch.from_pylist(rows, schema=pa.schema(MANIFEST_FIELDS))


def _is(dates: pa.Array, value: object) -> pa.Array:
    return pc.is_null(dates) if value is None else pc.fill_null(pc.equal(dates, pa.scalar(value, dates.type)), False)


def _is_peak(key: str) -> bool:
    return key in PEAKS or key.startswith(f"{TABLE}max_abs_")


@dataclass(frozen=True)
class Committed:
    """The event table a run wrote: its files' events and days, and the counters its tasks reported."""

    events: int
    days: tuple[str, ...]
    counters: dict


def compression_codec(spark: SparkSession) -> str:
    """pyarrow's name for the session's ``spark.sql.parquet.compression.codec``."""
    codec = (spark.conf.get("spark.sql.parquet.compression.codec", "snappy") or "snappy").lower()
    if codec not in CODECS:
        raise ConfigError(
            f"spark.sql.parquet.compression.codec={codec}: pyarrow cannot write it; choose one of "
            f"{', '.join(sorted(CODECS))}, or set attribution.writer=spark"
        )
    return CODECS[codec]


def event_files(
    spark: SparkSession,
    scored_schema: StructType,
    output: str,
    run_id: str,
    model_sha256: str,
    session_checks: tuple[str, ...] = (),
    vocab_fields: tuple[str, ...] = (),
) -> EventFiles:
    """The writer for an event table at ``output`` from scored sessions of ``scored_schema``: its
    columns are those :func:`attribution.events.event_table` gives (derived from an empty DataFrame, so
    the two writers cannot drift apart)."""
    empty = spark.createDataFrame([], scored_schema)
    spark_schema = event_table(empty, run_id, model_sha256).drop(PARTITION).schema
    token = uuid.uuid4().hex[:12]
    # absolute on the driver: an executor resolves a relative path against its own working directory
    located = output if "://" in output else os.path.abspath(output)
    return EventFiles(
        staging=f"{located.rstrip('/')}/{STAGING_PREFIX}{token}",
        token=token,
        target=to_arrow_schema(spark_schema),
        spark_schema_json=spark_schema.json(),
        layout=event_layout(scored_schema.fieldNames()),
        run_id=run_id,
        model_sha256=model_sha256,
        compression=compression_codec(spark),
        session_checks=tuple(session_checks),
        vocab_fields=tuple(vocab_fields),
    )


def write_event_table(
    selected: DataFrame,
    udf: Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]],
    files: EventFiles,
    output: str,
    day: str | None = None,
) -> Committed:
    """Run ``udf`` (the scoring UDF) over ``selected`` with the table written in its worker, then commit
    the files (the module's docstring). The staging directory is removed whether the job succeeds or not."""

    def scored_and_written(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return files.write(udf(batches))

    filesystem, root = filesystem_for(output)
    try:
        manifest = selected.mapInArrow(scored_and_written, manifest_schema()).collect()
        written = [r for r in manifest if r["path"] is not None]
        days = tuple(sorted({r["session_date"] for r in written}))
        _replace(filesystem, root, days, day, keep=files.staging.rsplit("/", 1)[1])
        for r in written:
            directory = f"{root}/{PARTITION}={r['session_date']}"
            filesystem.create_dir(directory, recursive=True)
            filesystem.move(r["path"], f"{directory}/{r['path'].rsplit('/', 1)[1]}")
        with filesystem.open_output_stream(f"{root}/_SUCCESS"):
            pass
    finally:
        remove_path(filesystem, filesystem_for(files.staging)[1])
    parts = [dict(r[STATS_COLUMN]) for r in manifest if r[STATS_COLUMN]]
    counters = merge_stats(parts, maxima=tuple(k for p in parts for k in p if _is_peak(k)))
    return Committed(sum(int(r["events"]) for r in written), days, counters)


def _replace(filesystem: FileSystem, root: str, days: tuple[str, ...], day: str | None, keep: str) -> None:
    """Make room for the new files: in day mode (``day``) that day's partition and any other the files go
    to, and the empty table's marker (attribution/sinks.py); else the whole table but the staging
    directory ``keep``."""
    if day is not None:
        for d in sorted({day, *days}):
            remove_path(filesystem, f"{root}/{PARTITION}={d}")
        remove_path(filesystem, f"{root}/{EMPTY_MARKER}")
        return
    for info in filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True)):
        if info.base_name != keep:
            remove_path(filesystem, info.path)


def observed(committed: Committed, session_checks: tuple[str, ...], vocab_fields: tuple[str, ...]) -> dict:
    """The stage's Observation dict (attribution/stages/attribute.py) from the writer's counters."""
    c = committed.counters
    sessions = int(c.get(f"{TABLE}sessions", 0))
    out: dict = {
        "sessions": sessions,
        "events_in": int(c.get(f"{TABLE}events_in", 0)),
        "converted": int(c.get(f"{TABLE}converted", 0)),
        "mean_prediction": c[f"{TABLE}prediction_sum"] / sessions if sessions else None,
    }
    for name in session_checks:
        count = c.get(f"{TABLE}abs_count_{name}", 0)
        out[f"max_abs_{name}"] = c.get(f"{TABLE}max_abs_{name}") if count else None
        out[f"mean_abs_{name}"] = c[f"{TABLE}abs_sum_{name}"] / count if count else None
    for f in vocab_fields:
        out[f"unknown_{f}"] = int(c.get(f"{TABLE}unknown_{f}", 0))
    return out
