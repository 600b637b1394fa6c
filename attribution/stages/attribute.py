"""The attribute stage: the configured split of the sessions table through the attribution UDF
(:mod:`udfs.attribution_udf`), exploded to the event-level table, reconciled, published, and checked for
drift against the model's test ROC-AUC."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession

from attribution import sinks
from attribution.baseline import curve_metrics
from attribution.config import Config
from attribution.errors import InputError
from attribution.events import event_table
from attribution.features import FeatureMismatch
from attribution.io import read_table, run_days, write_text
from attribution.methods import resolve
from attribution.observed import metrics
from attribution.schema import INPUT_COLUMNS
from attribution.sinks import day_partition, drop_empty_marker, partitioned_write, remove_tree
from attribution.spark import single_row
from attribution.stages.results import AttributeResult
from attribution.tracking import check_chosen, chosen_model
from udfs.attribution_udf import PEAKS, scoring_udf
from udfs.event_files import TABLE, event_files, observed, write_event_table
from udfs.worker import ModelPayload, observed_stats, stats_metric


class AttributionReconciliationError(RuntimeError):
    """Events out != events in: a bug, never a user error."""


def publish_events(spark: SparkSession, conf: Config, output: str) -> dict:
    """The event-level table just written at ``output`` (parquet), published as Delta and/or one CSV file
    as configured, read back from ``output`` so the model does not run again. Returns, per sink, its
    location and seconds."""
    import time

    a = conf.attribution
    published: dict = {}
    if not (a.delta_path or a.csv_path):
        return published
    events = run_days(read_table(spark, output, "parquet", {}, "attribution"), conf.run)
    if a.delta_path:
        t0 = time.time()
        location = conf.output(a.delta_path)
        version = sinks.write_delta_events(spark, events, location, conf.run.run_id or "")
        published["delta"] = {"location": location, "version": version, "seconds": round(time.time() - t0, 2)}
    if a.csv_path:
        from pyspark.sql import functions as F
        from pyspark.sql.types import ArrayType, MapType, StructType

        t0 = time.time()
        location = conf.output(a.csv_path)
        # CSV has no arrays or structs: the ensemble members' values and the pair interactions as JSON text
        nested = (ArrayType, MapType, StructType)
        flat = events.select(
            *[
                F.to_json(f.name).alias(f.name) if isinstance(f.dataType, nested) else F.col(f.name)
                for f in events.schema
            ]
        )
        sinks.write_csv_single_file(flat, location)
        published["csv"] = {"location": location, "seconds": round(time.time() - t0, 2)}
    return published


def sessions_to_score(spark: SparkSession, conf: Config) -> DataFrame:
    """The sessions table's configured split (``attribution.split``; ``all`` for every session), checked
    for the columns the stage needs."""
    from pyspark.sql import functions as F

    sessions_path = conf.output(conf.sessions.sessions_path)
    sessions = read_table(spark, sessions_path, "parquet", {}, "sessions")
    missing = [
        c
        for c in ["session_id", "label", "split", "session_date", "event_types", "event_ts", *INPUT_COLUMNS]
        if c not in sessions.columns
    ]
    if missing:
        raise FeatureMismatch(f"{sessions_path} lacks column(s) {', '.join(missing)}; re-run the sessionize stage")
    split = conf.attribution.split
    sessions = run_days(sessions, conf.run)
    return sessions if split == "all" else sessions.where(F.col("split") == split)


def frequent_pairs(sessions: DataFrame, n: int) -> list[tuple[str, str]]:
    """The ``n`` ordered pairs of event types (a, b), a != b, with an a before a b in most of ``sessions``
    (ties by name): the pairs whose interaction the removal sample evaluates. One pass over the sessions'
    event types (higher-order functions per session, no join), a small aggregation to the driver."""
    from pyspark.sql import functions as F

    if n <= 0:
        return []
    types = F.col("event_types")
    distinct = F.array_distinct(types)

    def first(t: Column) -> Column:  # 1-based position of t's first event
        return F.array_position(types, t)

    def last(t: Column) -> Column:  # 1-based position of t's last event
        return F.size(types) - F.array_position(F.reverse(types), t) + 1

    pairs = F.flatten(
        F.transform(
            distinct,
            lambda a: F.transform(
                F.filter(distinct, lambda b: (b != a) & (first(a) < last(b))),
                lambda b: F.struct(a.alias("first"), b.alias("second")),
            ),
        )
    )
    counted = (
        sessions.select(F.explode(pairs).alias("p"))
        .groupBy(F.col("p.first").alias("first"), F.col("p.second").alias("second"))
        .count()
        .orderBy(F.desc("count"), "first", "second")
        .limit(n)
    )
    return [(r["first"], r["second"]) for r in counted.collect()]


def drift_check(spark: SparkSession, conf: Config, output: str, model_auc: float | None) -> dict:
    """The attributed sessions' ROC-AUC (one prediction and label per session, read back from the event
    table just written) against the model's test ROC-AUC: ``flagged`` when it is lower by more than
    ``attribution.max_auc_drop``. The AUC is null when the sessions are of one class (a day without
    conversions): then nothing can be said, and ``flagged`` is null too."""
    from pyspark.sql import functions as F

    events = run_days(read_table(spark, output, "parquet", {}, "attribution"), conf.run)
    # one row per label and prediction bin, computed in Spark: a day of any size, no session on the driver
    sessions = events.where(F.col("event_position") == 0).select("label", "prediction")
    curve = curve_metrics(sessions, score="prediction")
    computed = curve["roc_auc"]
    auc = None if computed != computed else computed  # NaN: one class
    drop = None if auc is None or model_auc is None else model_auc - auc
    return {
        "sessions": int(curve["sessions"]),
        "converted": int(curve["positives"]),
        "roc_auc": auc,
        "model_test_roc_auc": model_auc,
        "drop": drop,
        "max_drop": conf.attribution.max_auc_drop,
        "flagged": None if drop is None else bool(drop > conf.attribution.max_auc_drop),
    }


def run(spark: SparkSession, conf: Config, model_path: str | None = None) -> AttributeResult:
    """Attribute the configured split of the sessions table; write the event-level table and a summary."""
    import json
    import time

    from pyspark.sql import functions as F

    a = conf.attribution
    started = time.time()

    chosen = chosen_model(conf, model_path)
    model_location = chosen.location
    # the ensemble's members only where they are used: the removal effects
    payload = ModelPayload.read(model_location, members=a.removal_sessions > 0)
    check_chosen(chosen, payload.sha256)
    sessions = sessions_to_score(spark, conf)
    max_length = payload.config["model"]["max_length"]
    longest, n_sessions = single_row(sessions.agg(F.max("session_length"), F.count(F.lit(1))))
    if longest is None:
        day = f" of {conf.run.date}" if conf.run.date else ""
        raise InputError(
            f"no sessions{day} in the {a.split} split of {conf.output(conf.sessions.sessions_path)}: nothing to "
            "attribute (run the sessionize stage for that day first, or the day has no sessions)"
        )
    if longest > max_length:
        raise FeatureMismatch(
            f"sessions of up to {longest} events but the model was trained with max_length {max_length}; "
            f"sessionize with session.max_length <= {max_length} or retrain"
        )
    # the share of sessions that makes about attribution.removal_sessions of them
    removal_sample = min(1.0, a.removal_sessions / n_sessions)
    pairs = frequent_pairs(sessions, a.removal_pairs) if removal_sample > 0 else []
    scoring = scoring_udf(sessions, payload, conf, spark, removal_sample, pairs)
    vocab_fields = scoring.vocab_fields
    # the methods' per-session values (a completeness gap): their mean and largest |value| in the summary
    session_checks = tuple(c for m in resolve(a.methods) for c, _ in m.session_columns)
    output = conf.output(a.output_path)
    run_id = conf.run.run_id or ""
    # day mode: the day's partition is replaced, no other
    if a.writer == "arrow":
        files = event_files(spark, scoring.schema, output, run_id, payload.sha256, session_checks, vocab_fields)
        committed = write_event_table(scoring.selected, scoring.udf, files, output, conf.run.date)
        s = observed(committed, session_checks, vocab_fields)
        counters: dict | None = {k: v for k, v in committed.counters.items() if not k.startswith(TABLE)}
        events_out = committed.events
    else:
        if conf.run.date is not None:
            remove_tree(day_partition(output, conf.run.date))
            drop_empty_marker(output)
        s, counters, events_out = _spark_write(
            scoring.apply(), conf, output, payload.sha256, session_checks, vocab_fields
        )
    if int(s["events_in"]) != events_out:
        raise AttributionReconciliationError(
            f"{s['events_in']} events in {s['sessions']} sessions but {events_out} event rows written"
        )
    published = publish_events(spark, conf, output)
    # the registered version's test ROC-AUC when the registry chose the model, else the artifact's own
    model_auc = chosen.test_roc_auc if chosen.registered_version else payload.config.get("test_roc_auc")
    drift = drift_check(spark, conf, output, model_auc)
    summary = {
        "run_id": conf.run.run_id,
        "model_sha256": payload.sha256,
        "model_path": model_location,
        "model_registered_version": chosen.registered_version,
        "split": a.split,
        "methods": list(a.methods),
        "sessions": int(s["sessions"]),
        "converted_sessions": int(s["converted"]),
        "events": events_out,
        "mean_prediction": s["mean_prediction"],
        "unknown_tokens": {f: None if s[f"unknown_{f}"] is None else int(s[f"unknown_{f}"]) for f in vocab_fields},
        "seconds": round(time.time() - started, 2),
        "output": output,
        **counter_fields(counters, events_out),
        # the ordered pairs of event types whose interaction the removal sample evaluated
        "removal_pairs": [list(p) for p in pairs],
        "published": published,
        "drift": drift,
    }
    for c in session_checks:
        summary[c] = {"max_abs": s[f"max_abs_{c}"], "mean_abs": s[f"mean_abs_{c}"]}
    if conf.run.date is not None:
        summary["date"] = conf.run.date
    write_text(conf.output(conf.run.day_file(a.summary_path)), json.dumps(summary, indent=1))
    return AttributeResult(summary, output, summary["sessions"], summary["events"])


def counter_fields(counters: dict | None, events_out: int) -> dict:
    """The summary's figures from the UDF's counters; each null where the counters did not arrive (Spark
    Connect dropped them, attribution.observed)."""
    if counters is None:
        return dict.fromkeys(counter_fields({}, events_out))
    return {
        "model_batches": int(counters.get("batches", 0)),
        "oom_splits": int(counters.get("oom_splits", 0)),
        # real events / positions computed: how little compute went to padding
        "padding_efficiency": events_out / max(1, int(counters.get("computed_positions", 0))),
        "python_worker_peak_rss_mb": round(float(counters.get("rss_mb", 0.0)), 1),
        # where the Python workers' time went, summed over tasks (seconds of one core each)
        "worker_seconds": {
            part: round(float(counters.get(f"seconds_{part}", 0.0)), 4)
            for part in ("input", "encode", "model", "removal", "output", "write")
        },
        # where the events were scored, and how many in tasks Spark gave a GPU (spark.task.resource.gpu.amount)
        "events_by_device": {
            k.split(":", 1)[1]: int(v) for k, v in sorted(counters.items()) if k.startswith("events_on:")
        },
        "events_in_gpu_tasks": int(counters.get("events_in_gpu_tasks", 0)),
        # sessions in the removal sample and the forward passes their removal effects took
        "removal_sessions": int(counters.get("removal_sessions", 0)),
        "removal_forward_passes": int(counters.get("removal_variants", 0)),
    }


def _spark_write(
    scored: DataFrame,
    conf: Config,
    output: str,
    model_sha256: str,
    session_checks: tuple[str, ...],
    vocab_fields: tuple[str, ...],
) -> tuple[dict, dict | None, int]:
    """``attribution.writer: spark``: the scored sessions back in the JVM, exploded by Spark and written
    by its parquet writer. (what the stage observed of the scored sessions, the UDF's counters, events
    written). Where Spark Connect dropped the observed metrics (attribution.observed), the event table
    just written is counted instead: the sessions' figures from its first events, the unknown tokens and
    the UDF's counters null, as nothing else holds them."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    seen = Observation("attribute_sessions")
    scored = scored.observe(
        seen,
        stats_metric(),
        F.count(F.lit(1)).alias("sessions"),
        F.coalesce(F.sum("session_length"), F.lit(0)).alias("events_in"),
        F.coalesce(F.sum("label"), F.lit(0)).alias("converted"),
        F.avg("prediction").alias("mean_prediction"),
        *[F.max(F.abs(c)).alias(f"max_abs_{c}") for c in session_checks],
        *[F.avg(F.abs(c)).alias(f"mean_abs_{c}") for c in session_checks],
        *[F.coalesce(F.sum(f"unknown_{f}"), F.lit(0)).alias(f"unknown_{f}") for f in vocab_fields],
    )
    events = event_table(scored, conf.run.run_id or "", model_sha256)
    written = Observation("attribute_events")
    events = events.observe(written, F.count(F.lit(1)).alias("events_out"))
    partitioned_write(events.write, conf.run.date).parquet(output)

    def table() -> DataFrame:
        return run_days(read_table(scored.sparkSession, output, "parquet", {}, "attribution"), conf.run)

    recounted: list[bool] = []

    def count_sessions() -> DataFrame:
        recounted.append(True)
        return (
            table()
            .where(F.col("event_position") == 0)
            .agg(
                F.count(F.lit(1)).alias("sessions"),
                F.coalesce(F.sum("session_length"), F.lit(0)).alias("events_in"),
                F.coalesce(F.sum("label"), F.lit(0)).alias("converted"),
                F.avg("prediction").alias("mean_prediction"),
                *[F.max(F.abs(c)).alias(f"max_abs_{c}") for c in session_checks],
                *[F.avg(F.abs(c)).alias(f"mean_abs_{c}") for c in session_checks],
                *[F.lit(None).cast("long").alias(f"unknown_{f}") for f in vocab_fields],
            )
        )

    s = metrics(seen, "the attribute stage's scored sessions", count_sessions)
    out = metrics(
        written, "the attribute stage's event rows", lambda: table().agg(F.count(F.lit(1)).alias("events_out"))
    )
    return s, None if recounted else observed_stats(s, PEAKS), int(out["events_out"])
