"""The sessionize stage: raw events (or one day of them) to the sessions table, with the quarantine and a
summary that accounts for every row read (:mod:`attribution.sessionize` holds the transforms)."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from attribution import session_rules
from attribution.config import Config
from attribution.errors import InputError
from attribution.io import naming_unreadable, read_table, write_text
from attribution.observed import metrics
from attribution.sessionize import (
    NO_DICTIONARY,
    QUARANTINE_PARTITION,
    REJECT_REASONS,
    ROW_CATEGORIES,
    SESSION_STATUSES,
    arrow_batch_rows,
    concurrently,
    count_if,
    prepare_stores,
    quarantined_events,
    sessions_all,
    summarize,
    valid_events,
    validated,
)
from attribution.sinks import day_partition, drop_empty_marker, partitioned_write, readable_when_empty, remove_tree
from attribution.stages.results import SessionizeResult

log = logging.getLogger(__name__)


def run(
    spark: SparkSession, conf: Config, raw: DataFrame | None = None, stores: DataFrame | None = None
) -> SessionizeResult:
    """Sessionize the configured input (or ``raw``/``stores`` given directly, e.g. from a notebook).

    Writes the kept sessions (parquet, one row per session), the quarantine (parquet, with
    ``reject_reason``) and the run summary (JSON). The quarantine and sessions
    passes run as concurrent Spark jobs; when either fails, or the input has no rows, the stage raises,
    leaves no sessions table and writes no summary.
    """
    import json
    import time

    from pyspark.sql import Observation

    if spark.conf.get("spark.sql.session.timeZone") != "UTC":
        raise InputError(
            "spark.sql.session.timeZone must be UTC for sessionization (time zones are applied "
            "explicitly from input.time_zone); set it on the session or with --conf"
        )
    t0 = time.time()
    raw_given = raw
    if raw is None:
        raw = read_table(spark, conf.input.path, conf.input.format, conf.input.options, "input")
    if stores is None and conf.stores.path:
        stores = read_table(spark, conf.stores.path, conf.stores.format, conf.stores.options, "stores")
    checked = validated(raw, conf)  # fails now, naming the column, if the input contract is broken

    # Counts ride along with the writes (Observation: exact, once per successful task), so the stage
    # reads the input twice (quarantine, sessions) and nothing more: each rejected row by reason on the
    # quarantine pass, each valid row as it enters the sort, each valid row's category on the way out of
    # the rules. Counting only rows that are written or shuffled anyway keeps the counts cheap (a count
    # over every raw row would materialize every column of every row). The two passes run as concurrent
    # Spark jobs: the small quarantine pass fills the cores the sessions pass leaves idle (its
    # driver-side planning, the tails of its stages).
    day = conf.run.date
    quarantine_obs = Observation("quarantine")
    quarantine_path = conf.output(conf.sessions.quarantine_path)
    rejected_counts = [count_if(F.col("reject_reason") == r).alias(r) for r in REJECT_REASONS]
    quarantine = quarantined_events(checked, day).observe(quarantine_obs, *rejected_counts)
    # Sessions are partitioned by session_date, the quarantine by quarantine_date. A run for one day
    # replaces that day's partition only (Spark's dynamic partition overwrite); the day's old partition is
    # removed first, so a day that now has no rows of a kind doesn't keep the last run's.
    sessions_path = conf.output(conf.sessions.sessions_path)
    replaced = (
        [sessions_path, quarantine_path]
        if day is None
        else [day_partition(sessions_path, day), day_partition(quarantine_path, day, QUARANTINE_PARTITION)]
    )
    if day is not None:
        for location in replaced:
            remove_tree(location)
        for location in (sessions_path, quarantine_path):
            drop_empty_marker(location)

    def write_quarantine() -> None:
        partitioned_write(quarantine.write, day, QUARANTINE_PARTITION).parquet(quarantine_path)

    valid_obs = Observation("valid")
    session_obs = Observation("sessions")
    written: dict = {}  # the schema of the sessions written
    is_kept = F.col("status") == "kept"
    aggs = [F.sum(f"n_{c}").alias(f"n_{c}") for c in ROW_CATEGORIES]
    aggs += [F.count(F.lit(1)).alias("sessions_total")]
    aggs += [count_if(F.col("status") == s).alias(f"sessions_{s}") for s in SESSION_STATUSES]
    aggs += [count_if(is_kept & (F.col("split") == k)).alias(f"split_{k}") for k in ("train", "validation", "test")]
    aggs += [count_if(is_kept & (F.col("label") == 1)).alias("converted")]
    stores_dim: list = [None]  # the stores dimension, once prepared

    def write_sessions() -> None:
        if stores is not None:
            with naming_unreadable("stores.path"):
                stores_dim[0] = prepare_stores(stores, conf.stores.columns)
        valid = valid_events(checked).observe(valid_obs, F.count(F.lit(1)).alias("rows"))
        sessions = sessions_all(valid, stores_dim[0], conf).observe(session_obs, *aggs)
        with arrow_batch_rows(spark, session_rules.CHUNK_ROWS):
            kept = sessions.where(is_kept).drop("status")
            written["sessions"] = kept.schema
            partitioned_write(kept.write.options(**NO_DICTIONARY), day).parquet(sessions_path)

    try:
        with naming_unreadable("input.path"):  # a corrupt input file surfaces here, deep in a Java trace
            concurrently(spark, write_quarantine, write_sessions)
        # Where Spark Connect dropped a pass's counts, the same query counts them again (attribution.observed).
        rejected = metrics(
            quarantine_obs,
            "sessionize's quarantine counts",
            lambda: quarantined_events(checked, day).agg(*rejected_counts),
        )
        quarantine_counts = {r: int(rejected.get(r) or 0) for r in REJECT_REASONS}
        valid_rows = metrics(
            valid_obs, "sessionize's valid rows", lambda: valid_events(checked).agg(F.count(F.lit(1)).alias("rows"))
        )
        rows_read = sum(quarantine_counts.values()) + int(valid_rows.get("rows") or 0)
        if rows_read == 0:
            where = conf.input.path if raw_given is None else "the DataFrame given"
            raise InputError(
                f"input.path: {where} has no rows{f' for {day}' if day else ''}; nothing to sessionize (an "
                "upstream job may have written an empty day)"
            )
    except Exception:
        # A failed stage leaves no sessions (the whole table, or in day mode the day's partition), so the
        # next stage can't read a stale or partial day.
        remove_tree(replaced[0])
        raise
    with arrow_batch_rows(spark, session_rules.CHUNK_ROWS):  # a recount runs the rules as the write did
        session_counts = metrics(
            session_obs,
            "sessionize's session counts",
            lambda: sessions_all(valid_events(checked), stores_dim[0], conf).agg(*aggs),
        )
    if day is None:  # a table with no rows still has a schema its readers can infer
        readable_when_empty(quarantine.schema, quarantine_path)
        readable_when_empty(written["sessions"], sessions_path)
    summary = summarize(rows_read, quarantine_counts, session_counts)
    summary.update(
        {
            "run_id": conf.run.run_id,
            "outputs": {"sessions": sessions_path, "quarantine": quarantine_path},
            "seconds": round(time.time() - t0, 2),
        }
    )
    if day is not None:
        summary["date"] = day
    write_text(conf.output(conf.run.day_file(conf.sessions.summary_path)), json.dumps(summary, indent=2))
    return SessionizeResult(summary, sessions_path, quarantine_path)
