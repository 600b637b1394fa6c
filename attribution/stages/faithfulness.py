"""The faithfulness stage: how faithful each method's scores are, and how much the methods agree.

It evaluates the scores people read, the published event-level table, not a recomputation: a sample of
its sessions (the ``faithfulness.max_sessions`` with the smallest hash of session_id, so the same
sessions on every run) is grouped back into per-session score arrays, joined with the sessions' model
inputs and handed to the faithfulness UDF (:mod:`udfs.faithfulness_udf`). Its per-session rows are
written as parquet and summarized with Spark SQL into ``attribution_faithfulness`` and
``attribution_agreement``, published as CSV, Delta and parquet under the report directory, with
``attribution_faithfulness.png``.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, Observation, SparkSession

from attribution import figures, report, sinks
from attribution.config import Config
from attribution.faithfulness import HIGHER_IS_BETTER, METRICS, FaithfulnessInputError, FaithfulnessOptions
from attribution.io import join, read_table, run_days, write_text
from attribution.methods import get, present
from attribution.observed import metrics, metrics_if_delivered
from attribution.schema import INPUT_COLUMNS
from attribution.spark import default_parallelism
from attribution.stages.results import FaithfulnessResult
from attribution.statistics import mean_ci
from attribution.tracking import check_chosen, chosen_model
from udfs.faithfulness_udf import GAPS, evaluate
from udfs.worker import STATS_COLUMN, ModelPayload, observed_stats, stats_metric

log = logging.getLogger(__name__)

TABLES = {"faithfulness": "attribution_faithfulness", "agreement": "attribution_agreement"}

PICTURE = "attribution_faithfulness.png"


def options_of(conf: Config) -> FaithfulnessOptions:
    """The faithfulness options the configuration gives."""
    f = conf.faithfulness
    return FaithfulnessOptions(
        k_events=tuple(f.k_events),
        k_fractions=tuple(f.k_fractions),
        deletion_steps=f.deletion_steps,
        random_draws=f.random_draws,
        seed=conf.run.seed,
        batch_positions=f.batch_positions,
    )


def sample_sessions(
    spark: SparkSession,
    events: DataFrame,
    sessions: DataFrame,
    methods: list[str],
    max_sessions: int,
    seed: int,
    observed: Observation | None = None,
) -> tuple[DataFrame, list[str]]:
    """The sampled sessions: model inputs, label, the stored prediction and one score array per method.
    ``observed`` (an Observation) counts the sampled sessions of the event table, before the join with
    the sessions table."""
    from pyspark.sql import functions as F

    score_cols = [get(m).attribution for m in methods]
    picked = (
        events.where(F.col("event_position") == 0)
        .select("session_id", F.xxhash64(F.lit(seed), "session_id").alias("h"))
        .orderBy("h", "session_id")
        .limit(max_sessions)
        .select("session_id")
    )
    grouped = (
        events.join(F.broadcast(picked), "session_id")
        .groupBy("session_id")
        .agg(
            F.sort_array(F.collect_list(F.struct("event_position", *score_cols))).alias("ev"),
            F.max("prediction").alias("prediction"),
            F.count(F.lit(1)).alias("scored_events"),
        )
        .select("session_id", "prediction", "scored_events", *[F.col(f"ev.{c}").alias(c) for c in score_cols])
    )
    if observed is not None:
        grouped = grouped.observe(observed, F.count(F.lit(1)).alias("sampled"))
    inputs = sessions.select(
        "session_id", "label", "session_length", *[c for c in INPUT_COLUMNS if c != "session_length"]
    )
    # The sample is small, so adaptive execution would coalesce it into one partition, and one task would
    # do all the work: spread it over the executors' cores instead (about 50 sessions at least per task).
    tasks = max(1, min(default_parallelism(spark), max_sessions // 50))
    return grouped.join(inputs, "session_id").repartition(tasks, "session_id"), score_cols


def run(spark: SparkSession, conf: Config, model_path: str | None = None) -> FaithfulnessResult:
    """Evaluate the event table's methods on a sample of its sessions; write the per-session table, the
    two summary tables, the picture and ``faithfulness_summary.json``."""
    from pyspark.sql import functions as F

    f = conf.faithfulness
    started = time.time()

    chosen = chosen_model(conf, model_path)
    model_location = chosen.location
    payload = ModelPayload.read(model_location, members=False)  # faithfulness reads the model alone
    check_chosen(chosen, payload.sha256)
    events = run_days(
        read_table(spark, conf.output(conf.attribution.output_path), "parquet", {}, "attribution"), conf.run
    )
    shas = [r[0] for r in events.select("model_sha256").distinct().limit(3).collect()]
    if shas and shas != [payload.sha256]:
        raise FaithfulnessInputError(
            f"the event table was attributed with model(s) {', '.join(s[:12] for s in shas)}, but the model at "
            f"{model_location} is {payload.sha256[:12]}: re-run the attribute stage with this model"
        )
    methods = [m.name for m in present(events.columns)]
    sessions = run_days(
        read_table(spark, conf.output(conf.sessions.sessions_path), "parquet", {}, "sessions"), conf.run
    )
    observed = Observation("faithfulness_sample")
    sampled, score_cols = sample_sessions(spark, events, sessions, methods, f.max_sessions, conf.run.seed, observed)
    options = options_of(conf)
    evaluated = evaluate(spark, sampled, payload, methods, score_cols, options, conf.attribution.threads_per_task)
    per_session_path = conf.output(f.sessions_path)
    t0 = time.time()
    udf_seen = Observation("faithfulness_stats")
    try:
        per_session_rows = evaluated.observe(udf_seen, stats_metric()).drop(STATS_COLUMN)
        per_session_rows.write.mode("overwrite").parquet(per_session_path)
    except Exception as exc:
        # the UDF's own check, raised on an executor: one clear line instead of the Java trace
        marker = "FaithfulnessInputError: "
        text = str(exc)
        if marker in text:
            raise FaithfulnessInputError(text.split(marker, 1)[1].splitlines()[0]) from exc
        raise
    evaluate_seconds = time.time() - t0
    # the UDF's counters, for the summary alone: the UDF itself checks each session's prediction
    delivered = metrics_if_delivered(udf_seen, "faithfulness's UDF counters")
    counters = None if delivered is None else observed_stats(delivered, GAPS)
    per_session = spark.read.parquet(per_session_path)
    tables = summarize(per_session, methods, options, conf.run.run_id or "")
    if tables["faithfulness"].num_rows == 0:
        raise FaithfulnessInputError(f"{conf.output(conf.attribution.output_path)}: no sessions to evaluate")
    # the sampled sessions of the event table, or as many as there are (a recount where Connect dropped them)
    sampled_count = metrics(
        observed,
        "faithfulness's sampled sessions",
        lambda: events.where(F.col("event_position") == 0).agg(
            F.least(F.count(F.lit(1)), F.lit(f.max_sessions)).alias("sampled")
        ),
    )
    sampled_n = int(sampled_count["sampled"] or 0)
    evaluated_n = int(max(tables["faithfulness"].column("sessions").to_pylist()))
    if evaluated_n != sampled_n:
        raise FaithfulnessInputError(
            f"{sampled_n - evaluated_n} of the {sampled_n} sampled sessions of the event table are not in the "
            f"sessions table {conf.output(conf.sessions.sessions_path)}: it changed after the attribute stage; "
            "re-run the attribute stage"
        )

    base = conf.output(conf.report.output_path)
    views = {name: t.to_pandas() for name, t in tables.items()}
    png = figures.faithfulness_picture(views, methods)
    staged, outputs = sinks.stage_all(
        [
            lambda: ([sinks.stage_bytes(join(base, PICTURE), png)], {PICTURE: join(base, PICTURE)}),
            *(
                lambda table=table, stem=TABLES[name]: report.stage_table(spark, table, stem, conf)
                for name, table in tables.items()
            ),
        ]
    )
    for s in staged:
        s.publish()
    verdict = most_faithful(views["faithfulness"])
    summary = {
        "run_id": conf.run.run_id,
        "model_sha256": payload.sha256,
        "methods": methods,
        "sessions": int(views["faithfulness"]["sessions"].max()),
        "random_draws": options.random_draws,
        "k": options.k_labels(),
        "most_faithful": verdict,
        "aopc": {
            r["method"]: {
                "comprehensiveness": r["value"],
                "random": r["random_baseline"],
            }
            for _, r in views["faithfulness"][views["faithfulness"]["metric"] == "aopc_comprehensiveness"].iterrows()
        },
        "agreement_median_spearman": {
            f"{r['method']} vs {r['other_method']}": r["median"] for _, r in views["agreement"].iterrows()
        },
        # null where Spark Connect dropped the UDF's counters (attribution.observed)
        "prediction_check_max_abs": None if counters is None else float(counters.get("prediction_gap", 0.0)),
        "forward_positions": None if counters is None else int(counters.get("forward_positions", 0)),
        "evaluate_seconds": round(evaluate_seconds, 2),
        "seconds": round(time.time() - started, 2),
        "outputs": {**outputs, "per_session": per_session_path},
    }
    write_text(conf.output(conf.run.day_file(f.summary_path)), json.dumps(summary, indent=1, default=float))
    return FaithfulnessResult(summary, verdict, {**outputs, "per_session": per_session_path})


def summarize(
    per_session: DataFrame, methods: list[str], options: FaithfulnessOptions, run_id: str
) -> dict[str, pa.Table]:
    """The two small tables, from the per-session rows with Spark SQL (one job each), CIs added on the
    driver. Faithfulness: per (method, metric, k) the mean over sessions, its 95% CI, the random baseline
    with its CI, and the paired difference from random with its CI; ``beats_random`` when that CI lies
    on the better side of 0. Agreement: per method pair the mean Spearman and its quartiles."""
    from pyspark.sql import functions as F

    diff = F.col("value") - F.col("random_value")
    faith = (
        per_session.where(F.col("metric") != "spearman")
        .groupBy("method", "metric", "k")
        .agg(
            F.count(F.lit(1)).alias("sessions"),
            F.avg("value").alias("value"),
            F.stddev_samp("value").alias("sd"),
            F.avg("random_value").alias("random_baseline"),
            F.stddev_samp("random_value").alias("random_sd"),
            F.avg(diff).alias("vs_random"),
            F.stddev_samp(diff).alias("diff_sd"),
        )
        .toArrow()
        .to_pandas()
    )
    for col, sd, low, high in (
        ("value", "sd", "ci_low", "ci_high"),
        ("random_baseline", "random_sd", "random_ci_low", "random_ci_high"),
        ("vs_random", "diff_sd", "vs_random_ci_low", "vs_random_ci_high"),
    ):
        faith[low], faith[high] = mean_ci(faith[col], faith[sd].fillna(0.0), faith["sessions"])
    higher = faith["metric"].map(HIGHER_IS_BETTER).astype(bool)
    faith["better"] = np.where(higher, "higher", "lower")
    faith["beats_random"] = np.where(higher, faith["vs_random_ci_low"] > 0, faith["vs_random_ci_high"] < 0)
    k_order = {k: i for i, k in enumerate([*options.k_labels(), "all", "curve"])}
    faith["_m"] = faith["method"].map({m: i for i, m in enumerate(methods)})
    faith["_x"] = faith["metric"].map({m: i for i, m in enumerate(METRICS)})
    faith["_k"] = faith["k"].map(k_order)
    faith = faith.sort_values(["_x", "_k", "_m"]).reset_index(drop=True)
    faith.insert(0, "run_id", run_id)
    columns = [
        "run_id",
        "method",
        "metric",
        "k",
        "value",
        "ci_low",
        "ci_high",
        "random_baseline",
        "random_ci_low",
        "random_ci_high",
        "vs_random",
        "vs_random_ci_low",
        "vs_random_ci_high",
        "better",
        "beats_random",
        "sessions",
    ]
    agree = (
        per_session.where(F.col("metric") == "spearman")
        .groupBy("method", "other_method")
        .agg(
            F.count(F.lit(1)).alias("sessions"),
            F.avg("value").alias("mean"),
            F.percentile("value", F.array(F.lit(0.25), F.lit(0.5), F.lit(0.75))).alias("q"),
            F.avg((F.col("value") > 0).cast("double")).alias("share_positive"),
        )
        .toArrow()
        .to_pandas()
    )
    if len(agree):
        quartiles = np.stack(agree["q"].to_numpy())
    else:
        quartiles = np.zeros((0, 3))
    agree["q25"], agree["median"], agree["q75"] = quartiles[:, 0], quartiles[:, 1], quartiles[:, 2]
    order = {m: i for i, m in enumerate(methods)}
    agree["_a"], agree["_b"] = agree["method"].map(order), agree["other_method"].map(order)
    agree = agree.sort_values(["_a", "_b"]).reset_index(drop=True)
    agree.insert(0, "run_id", run_id)
    agree_columns = ["run_id", "method", "other_method", "sessions", "mean", "q25", "median", "q75", "share_positive"]
    return {
        "faithfulness": pa.Table.from_pandas(faith[columns], preserve_index=False),
        "agreement": pa.Table.from_pandas(agree[agree_columns], preserve_index=False),
    }


def most_faithful(faith: pd.DataFrame) -> dict:
    """The method whose top-ranked events move the prediction most beyond a random order's (AOPC
    comprehensiveness minus random), and the one whose top events best reproduce it alone (AOPC
    sufficiency, lowest minus random)."""
    comp = faith[faith["metric"] == "aopc_comprehensiveness"].sort_values("vs_random", ascending=False)
    suff = faith[faith["metric"] == "aopc_sufficiency"].sort_values("vs_random", ascending=True)
    if comp.empty:
        return {}
    best = comp.iloc[0]
    return {
        "by_comprehensiveness": best["method"],
        "comprehensiveness_vs_random": float(best["vs_random"]),
        "beats_random": bool(best["beats_random"]),
        "by_sufficiency": suff.iloc[0]["method"],
        "sufficiency_vs_random": float(suff.iloc[0]["vs_random"]),
    }
