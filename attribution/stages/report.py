"""The report stage: the event-level table (one day, a window of days, or all of it) aggregated into the
tables people act on, written as CSV, Delta and parquet with the picture, ``index.html`` and the key
insights; the planted-driver check on synthetic data and the faithfulness verdict beside them."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

from pyspark.sql import DataFrame, SparkSession

from attribution import aggregate, baseline, figures, ground_truth, page, removal_tables, sinks
from attribution.config import Config
from attribution.errors import InputError
from attribution.io import join, read_bytes, read_table, run_days
from attribution.report import (
    PICTURE,
    build_tables,
    data_status,
    frames,
    gate_pairs,
    model_comparison,
    model_dir,
    model_status,
    stage_table,
    stage_tables,
)
from attribution.report_text import faithful_text, ground_truth_text, key_insights, planted_sentence
from attribution.schema import GROUND_TRUTH_TABLE, MODEL_COMPARISON_TABLE, PAIR_TABLE
from attribution.sinks import day_partition, partitioned_write, remove_tree
from attribution.spark import single_row
from attribution.stages.results import ReportResult

log = logging.getLogger(__name__)


def run(spark: SparkSession, conf: Config) -> ReportResult:
    """Read the event-level table, build and write every table, the picture and index.html."""

    started = time.time()
    events = run_days(
        read_table(spark, conf.output(conf.attribution.output_path), "parquet", {}, "attribution"), conf.run
    )
    shas = [r[0] for r in events.select("model_sha256").distinct().limit(2).collect()]
    if not shas:
        day = f" of {conf.run.date}" if conf.run.date else ""
        raise InputError(
            f"the event table {conf.output(conf.attribution.output_path)} has no rows{day}: nothing to report "
            "(run the attribute stage for it first)"
        )
    statistics = None
    counts_model = baseline_of(conf, model_status(conf, shas))
    if conf.run.date is not None:  # day mode: keep the day's statistics; the tables cover the window
        write_day_statistics(spark, conf, events, counts_model)
        days = window_of(conf)
        statistics, (sessions, converted) = statistics_of_days(spark, conf, days)
        if len(days) > 1:
            import dataclasses

            label = f"{conf.run.run_id}-last{len(days)}d"
            conf = dataclasses.replace(conf, run=dataclasses.replace(conf.run, run_id=label))
    else:
        sessions, converted = _sessions_of(events)
    span = (
        conf.run.date
        if not conf.report.window_days or conf.report.window_days == 1
        else (f"the {conf.report.window_days} days to {conf.run.date}")
    )
    status = data_status(model_status(conf, shas), sessions, converted, conf.report.min_sessions, span)
    tables = build_tables(events, conf, status["status"], statistics, counts_model)
    base = conf.output(conf.report.output_path)
    method = conf.report.default_method
    views = frames(tables)
    comparison_table, comparison = None, None
    if counts_model is not None:
        comparison_table, comparison = model_comparison(spark, events, conf, views, counts_model)
        if conf.report.pair_needs_better_model:
            gated = gate_pairs(tables, comparison, status["status"])
            if gated is not tables:  # the pair table's verdicts withheld: only its view changes
                tables = gated
                views = {**views, **frames({PAIR_TABLE.name: tables[PAIR_TABLE.name]})}
    truth, recovered = ground_truth_of(conf), None
    if truth is not None:
        recovered = ground_truth.recovery(views, truth, conf.run.run_id or "")
    faithful = faithfulness_of(conf, shas)
    insights = key_insights(views, method, status=status, comparison=comparison)
    if recovered is not None and recovered.num_rows:
        insights += "\n" + ground_truth_text(recovered.to_pandas(), method)
    elif recovered is not None:
        insights += (
            f"\n{conf.generate.ground_truth_path} does not describe these events (no event types in common): "
            "no planted-driver comparison"
        )
    if faithful:
        insights += "\n" + faithful_text(faithful)

    planted = None
    if recovered is not None and recovered.num_rows:
        checks = ground_truth.summary(recovered, method)
        planted = planted_sentence(checks, recovered.to_pandas(), method)

    drawn: Future[bytes]  # the picture, drawn on a thread while the tables are staged (below)

    scope = page.scope_sentence(
        conf.attribution.split,
        int(status["data_sessions"]),
        int(status["data_converted"]),
        *days_of(events, conf),
        shas[0],
    )

    def html() -> bytes:
        return page.render(
            views,
            method,
            status,
            faithful,
            drawn.result(),
            conf.run.run_id or "",
            planted=planted,
            comparison=comparison,
            scope=scope,
        )

    extra = [
        lambda: ([sinks.stage_bytes(join(base, PICTURE), drawn.result())], {PICTURE: join(base, PICTURE)}),
        lambda: ([sinks.stage_bytes(join(base, page.PAGE), html())], {page.PAGE: join(base, page.PAGE)}),
    ]
    if recovered is not None and recovered.num_rows:
        extra.append(lambda: stage_table(spark, recovered, GROUND_TRUTH_TABLE, conf))
    if comparison_table is not None:
        extra.append(lambda: stage_table(spark, comparison_table, MODEL_COMPARISON_TABLE, conf))
    # Everything is staged first (the picture drawn on a thread meanwhile), then published at once, so
    # a run that fails or is killed before the end leaves the previous run's outputs as they were.
    with ThreadPoolExecutor(max_workers=1) as pool:
        drawn = pool.submit(figures.report_picture, views, method, conf.report.top_event_types, status)
        staged, outputs = stage_tables(spark, tables, conf, extra=tuple(extra))
    for s in staged:
        s.publish()
    result = {
        "run_id": conf.run.run_id,
        "model_status": status,
        "rows": {name: int(t.num_rows) for name, t in tables.items()},
        "outputs": outputs,
        "insights": insights,
        "seconds": round(time.time() - started, 2),
    }
    if recovered is not None and recovered.num_rows:
        result["ground_truth"] = checks
    if faithful:
        result["most_faithful"] = faithful
    if comparison is not None:
        result["model_comparison"] = comparison
    return ReportResult(result, insights, outputs, checks if "ground_truth" in result else None, base)


def days_of(events: DataFrame, conf: Config) -> tuple[str | None, str | None]:
    """The first and last day the tables cover: the day-mode window's, or the event table's session dates
    (None when it has none)."""
    from pyspark.sql import functions as F

    if conf.run.date is not None:
        days = window_of(conf)
        return days[0], days[-1]
    if "session_date" not in events.columns:  # an event table written without it: no days to state
        return None, None
    first, last = single_row(events.agg(F.min("session_date"), F.max("session_date")))
    return (None if first is None else str(first)), (None if last is None else str(last))


def baseline_of(conf: Config, status: dict) -> dict | None:
    """The counts baseline trained beside the model that scored the event table, or None (none was
    trained, or the event table was scored by another model: the status says ``unknown`` then)."""
    if status.get("status") == "unknown" and "test_roc_auc" not in status:
        return None
    try:
        return baseline.read_summary(model_dir(conf))
    except (InputError, FileNotFoundError, ValueError):
        log.info("no counts baseline beside the model in %s: no model comparison", model_dir(conf))
        return None


def _sessions_of(events: DataFrame) -> tuple[int, int]:
    """(sessions, converted sessions) of an event table: its rows at position 0, one per session."""
    from pyspark.sql import functions as F

    n, converted = single_row(events.where(F.col("event_position") == 0).agg(F.count(F.lit(1)), F.sum("label")))
    return int(n), int(converted or 0)


def write_day_statistics(
    spark: SparkSession, conf: Config, events: DataFrame, counts_model: dict | None = None
) -> None:
    """Store the day's additive statistics, replacing the day's partition of each, under report.stats_path:
    ``key_sums`` (per key, the sums over sessions: a few rows per key), ``store_rows`` (per store, session
    and type x position cell: a store's net effect is measured against the window's cell means, so it is
    resolved when the window is read), ``cells``, ``removal_rows`` (the sampled sessions' removal effects,
    with ``counts_model`` the counts baseline's too) and ``sessions`` (per label). A window's tables are computed from them (:func:`statistics_of_days`)."""
    day_text = conf.run.date
    assert day_text is not None, "day statistics are written in day mode"
    from pyspark.sql import functions as F

    long = aggregate.long_format(events)
    r = conf.report
    rows = aggregate.session_rows(long, max_position=r.heatmap_positions)
    cells = aggregate.cell_sums(long)
    parts = {
        "key_sums": aggregate.key_sums(rows, cells),
        "store_rows": rows.where(F.col("kind") == "store"),
        "cells": cells,
        "removal_rows": removal_tables.removal_rows(events, counts_model),
    }
    # the day of a session is the day being reported (its partition), also for the heatmap's rows
    day = F.lit(conf.run.date).cast("date")
    sessions_today = events.where(F.col("event_position") == 0).select("label")
    counts = sessions_today.groupBy("label").count().withColumn("session_date", day)
    parts["sessions"] = counts
    base = conf.output(r.stats_path)
    for name, df in parts.items():
        location = join(base, name)
        remove_tree(day_partition(location, day_text))
        if df is not None:
            partitioned_write(df.withColumn("session_date", day).write, day_text).parquet(location)


def window_of(conf: Config) -> list[str]:
    """The days a day-mode report covers: report.window_days days up to run.date (the day alone by
    default), oldest first."""
    import datetime as dt

    assert conf.run.date is not None, "a window is of day mode"
    last = dt.date.fromisoformat(conf.run.date)
    n = conf.report.window_days or 1
    return [(last - dt.timedelta(days=n - 1 - i)).isoformat() for i in range(n)]


def statistics_of_days(spark: SparkSession, conf: Config, days: list[str]) -> tuple[tuple, tuple[int, int]]:
    """((lift statistics, removal statistics), (sessions, converted)) of ``days`` from the stored daily
    statistics; a day without them is a one-line error naming it."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    base = conf.output(conf.report.stats_path)
    first, last = F.lit(days[0]).cast("date"), F.lit(days[-1]).cast("date")

    def read(name: str) -> DataFrame:
        # the schemas of the days are merged: a day stored before a column existed reads it as null
        df = spark.read.option("mergeSchema", "true").parquet(join(base, name))
        return df.where(F.col("session_date").between(first, last))

    try:
        counts = (
            read("sessions")
            .groupBy("session_date")
            .agg(F.sum("count").alias("n"), F.sum(F.when(F.col("label") == 1, F.col("count"))).alias("converted"))
            .collect()
        )
    except AnalysisException as exc:  # no statistics at all under stats_path
        raise InputError(f"no daily statistics under {base}: run the report with --date for each day first") from exc
    have = {str(r["session_date"]) for r in counts}
    missing = [d for d in days if d not in have]
    if missing:
        raise InputError(
            f"report.window_days={len(days)}: no statistics for {', '.join(missing)} under {base}; run the report "
            "with --date for those days first"
        )
    sessions = sum(int(r["n"]) for r in counts)
    converted = sum(int(r["converted"] or 0) for r in counts)
    stats = aggregate.window_statistics(read("key_sums"), read("store_rows"), read("cells")).toArrow()
    try:
        removal = removal_tables.removal_from(read("removal_rows"))
    except AnalysisException:  # no day had removal effects (attribution.removal_sessions 0)
        removal = None
    return (stats, removal), (sessions, converted)


def ground_truth_of(conf: Config) -> dict | None:
    """The planted drivers, when the input is the generated dataset and its ground truth is there."""
    if conf.input.path != conf.generate.output_path:
        return None
    return ground_truth.load(conf.generate.ground_truth_path)


def faithfulness_of(conf: Config, shas: list[str]) -> dict | None:
    """The faithfulness stage's verdict, when it evaluated this event table (same model) in this run."""

    try:
        summary = json.loads(read_bytes(conf.output(conf.run.day_file(conf.faithfulness.summary_path))))
    except (InputError, FileNotFoundError, ValueError):
        return None
    if summary.get("run_id") != conf.run.run_id or shas != [summary.get("model_sha256")]:
        return None
    return summary.get("most_faithful") or None
