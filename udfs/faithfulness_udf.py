"""The faithfulness stage: how faithful each method's scores are, and how much the methods agree.

It evaluates the scores people read, the published event-level table, not a recomputation: a sample of
its sessions (the ``faithfulness.max_sessions`` with the smallest hash of session_id, so the same
sessions on every run) is grouped back into per-session score arrays, joined with the sessions' model
inputs and handed, as Arrow batches, to a ``mapInArrow`` UDF that runs
:func:`attribution.faithfulness.evaluate_sessions` on the task's GPU or the CPU (the attribution UDF's
device choice and model cache). The UDF emits one row per (session, method, metric, k) and per (session,
method pair) for agreement; that per-session table is written as parquet and summarized with Spark SQL
into ``attribution_faithfulness`` and ``attribution_agreement``, published as CSV, Delta and parquet
under the report directory, with ``attribution_faithfulness.png``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from attribution.io import InputError
from attribution.metrics import Z95
from udfs.attribution_udf import (
    STATS_COLUMN,
    ModelPayload,
    cached_model,
    choose_device,
    observed_stats,
    ship,
    stats_field,
    stats_metric,
    with_stats,
)

log = logging.getLogger(__name__)

TABLES = {"faithfulness": "attribution_faithfulness", "agreement": "attribution_agreement"}
PICTURE = "attribution_faithfulness.png"
# The event table's prediction vs the model's on the same session, recomputed here: CPU and GPU agree
# within 1e-5; more means the sessions are not the ones that were attributed.
PREDICTION_TOLERANCE = 1e-4

SESSION_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string()),
        pa.field("label", pa.int32()),
        pa.field("session_length", pa.int32()),
        pa.field("method", pa.string()),
        pa.field("other_method", pa.string()),  # agreement rows: the second method
        pa.field("metric", pa.string()),
        pa.field("k", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("random_value", pa.float64()),  # faithfulness rows: the mean over the random orders
    ]
)


class FaithfulnessInputError(InputError):
    """The event table and the model or sessions don't belong together."""


def options_of(conf):
    from attribution.faithfulness import FaithfulnessOptions

    f = conf.faithfulness
    return FaithfulnessOptions(
        k_events=tuple(f.k_events),
        k_fractions=tuple(f.k_fractions),
        deletion_steps=f.deletion_steps,
        random_draws=f.random_draws,
        seed=conf.run.seed,
        batch_positions=f.batch_positions,
    )


def evaluate_batches(
    batches: Iterator[pa.RecordBatch],
    payload: ModelPayload,
    methods: list[str],
    score_columns: list[str],
    options,
    threads_per_task: int | None = None,
    on_stats=None,
) -> Iterator[pa.RecordBatch]:
    """The body of the UDF: sessions (model inputs plus one score array per method) in, per-session
    metric rows out."""
    from attribution.faithfulness import agreement_rows, evaluate_sessions, long_rows
    from attribution.features import _flat, encode_sessions

    device = choose_device(threads_per_task)
    loaded = cached_model(payload, device)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        encoded = encode_sessions(batch, loaded.vocab)
        scores = []
        for col in score_columns:
            values, lens = _flat(batch.column(col))
            if not np.array_equal(lens, encoded.lengths):
                raise FaithfulnessInputError(
                    f"{col}: the event table's scores do not cover the sessions' events one to one; the "
                    "sessions table changed after the attribute stage: re-run it"
                )
            scores.append(values.to_numpy(zero_copy_only=False).astype(np.float64))
        ids = batch.column("session_id").to_pylist()
        stats: dict = {}
        metrics = evaluate_sessions(loaded.model, encoded, scores, ids, options, device=device, stats_out=stats)
        stored = batch.column("prediction").to_numpy(zero_copy_only=False)
        gap = float(np.max(np.abs(np.array([m.p_full for m in metrics]) - stored)))
        if on_stats is not None:
            on_stats({**stats, "sessions": len(ids), "prediction_gap": gap})
        labels = batch.column("label").to_pylist()
        lengths = encoded.lengths
        cols: dict[str, list] = {f.name: [] for f in SESSION_SCHEMA}
        for i, sid in enumerate(ids):
            lo, hi = int(encoded.offsets[i]), int(encoded.offsets[i + 1])
            rows = [(m, None, name, k, v, r) for m, name, k, v, r in long_rows(metrics[i], methods, options)]
            rows += [
                (a, b, "spearman", "all", rho, None)
                for a, b, rho in agreement_rows({m: s[lo:hi] for m, s in zip(methods, scores, strict=True)})
            ]
            for method, other, name, k, v, r in rows:
                cols["session_id"].append(sid)
                cols["label"].append(labels[i])
                cols["session_length"].append(int(lengths[i]))
                cols["method"].append(method)
                cols["other_method"].append(other)
                cols["metric"].append(name)
                cols["k"].append(k)
                cols["value"].append(v)
                cols["random_value"].append(r)
        yield pa.RecordBatch.from_pydict(cols, schema=SESSION_SCHEMA)


# The UDF's counters that are maxima, not sums: the largest gap between a recomputed prediction and the
# event table's.
GAPS = ("prediction_gap",)


def sample_sessions(spark, events, sessions, methods: list[str], max_sessions: int, seed: int, observed=None):
    """The sampled sessions: model inputs, label, the stored prediction and one score array per method.
    ``observed`` (an Observation) counts the sampled sessions of the event table, before the join with
    the sessions table."""
    from pyspark.sql import functions as F

    from attribution.features import INPUT_COLUMNS
    from attribution.methods import get
    from attribution.spark import default_parallelism

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


def run(spark, conf, model_path: str | None = None) -> dict:
    """Evaluate the event table's methods on a sample of its sessions; write the per-session table, the
    two summary tables, the picture and ``faithfulness_summary.json``."""
    from pyspark.sql import Observation

    from attribution import report, sinks
    from attribution.io import join, read_table, run_days, write_text
    from attribution.methods import present

    f = conf.faithfulness
    started = time.time()
    from attribution.model import model_location as resolve

    model_location = model_path or resolve(conf.output(conf.train.model_path), conf.train.model_version)
    payload = ModelPayload.read(model_location)
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
    threads = conf.attribution.threads_per_task
    shipped = ship(spark, payload)

    def udf(batches):
        pending: list[dict] = []
        evaluated = evaluate_batches(batches, shipped.value, methods, score_cols, options, threads, pending.append)
        return with_stats(evaluated, pending, GAPS)

    from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

    spark_types = {pa.string(): StringType(), pa.int32(): IntegerType(), pa.float64(): DoubleType()}
    schema = StructType([StructField(x.name, spark_types[x.type], True) for x in SESSION_SCHEMA] + [stats_field()])
    per_session_path = conf.output(f.sessions_path)
    t0 = time.time()
    udf_seen = Observation("faithfulness_stats")
    try:
        per_session_rows = sampled.mapInArrow(udf, schema).observe(udf_seen, stats_metric()).drop(STATS_COLUMN)
        per_session_rows.write.mode("overwrite").parquet(per_session_path)
    except Exception as exc:
        # the UDF's own check, raised on an executor: one clear line instead of the Java trace
        marker = "FaithfulnessInputError: "
        text = str(exc)
        if marker in text:
            raise FaithfulnessInputError(text.split(marker, 1)[1].splitlines()[0]) from exc
        raise
    evaluate_seconds = time.time() - t0
    counters = observed_stats(udf_seen.get, GAPS)
    worst_gap = counters.get("prediction_gap", 0.0)
    per_session = spark.read.parquet(per_session_path)
    tables = summarize(per_session, methods, options, conf.run.run_id or "")
    if tables["faithfulness"].num_rows == 0:
        raise FaithfulnessInputError(f"{conf.output(conf.attribution.output_path)}: no sessions to evaluate")
    sampled_n = int(observed.get["sampled"])
    evaluated = int(max(tables["faithfulness"].column("sessions").to_pylist()))
    if evaluated != sampled_n:
        raise FaithfulnessInputError(
            f"{sampled_n - evaluated} of the {sampled_n} sampled sessions of the event table are not in the "
            f"sessions table {conf.output(conf.sessions.sessions_path)}: it changed after the attribute stage; "
            "re-run the attribute stage"
        )
    if worst_gap > PREDICTION_TOLERANCE:
        raise FaithfulnessInputError(
            f"the model's prediction for a sampled session differs from the event table's by {worst_gap:.2g}: "
            "the sessions table changed after the attribute stage; re-run the attribute stage"
        )

    base = conf.output(conf.report.output_path)
    views = {name: t.to_pandas() for name, t in tables.items()}
    png = picture(views, methods)
    staged, outputs = report.stage_all(
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
        "prediction_check_max_abs": float(worst_gap),
        "forward_positions": int(counters.get("forward_positions", 0)),
        "evaluate_seconds": round(evaluate_seconds, 2),
        "seconds": round(time.time() - started, 2),
        "outputs": {**outputs, "per_session": per_session_path},
    }
    write_text(conf.output(conf.run.day_file(f.summary_path)), json.dumps(summary, indent=1, default=float))
    return summary


def summarize(per_session, methods: list[str], options, run_id: str) -> dict[str, pa.Table]:
    """The two small tables, from the per-session rows with Spark SQL (one job each), CIs added on the
    driver. Faithfulness: per (method, metric, k) the mean over sessions, its 95% CI, the random baseline
    with its CI, and the paired difference from random with its CI; ``beats_random`` when that CI lies
    on the better side of 0. Agreement: per method pair the mean Spearman and its quartiles."""
    from pyspark.sql import functions as F

    from attribution.faithfulness import HIGHER_IS_BETTER, METRICS

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
    n = np.sqrt(faith["sessions"].clip(lower=1))
    for col, sd, low, high in (
        ("value", "sd", "ci_low", "ci_high"),
        ("random_baseline", "random_sd", "random_ci_low", "random_ci_high"),
        ("vs_random", "diff_sd", "vs_random_ci_low", "vs_random_ci_high"),
    ):
        half = Z95 * faith[sd].fillna(0.0) / n
        faith[low], faith[high] = faith[col] - half, faith[col] + half
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


def most_faithful(faith) -> dict:
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


def picture(views: dict, methods: list[str]) -> bytes:
    """Three panels: AOPC per method beside random (95% CI), comprehensiveness by k, method agreement."""
    import io

    from matplotlib.figure import Figure

    faith, agree = views["faithfulness"], views["agreement"]
    fig = Figure(figsize=(18, 5.5))
    axes = fig.subplots(1, 3)
    fig.suptitle("Is the attribution right? Faithfulness against random orders, and agreement between methods")

    ax = axes[0]
    at = np.arange(len(methods))
    for offset, metric, color in ((-0.2, "aopc_comprehensiveness", "#1565c0"), (0.2, "aopc_sufficiency", "#ef6c00")):
        rows = faith[faith["metric"] == metric].set_index("method").reindex(methods)
        err = (rows["ci_high"] - rows["value"]).to_numpy()
        ax.bar(at + offset, rows["value"], 0.38, yerr=err, capsize=3, color=color, label=metric.replace("_", " "))
        ax.scatter(at + offset, rows["random_baseline"], marker="_", s=600, color="black", zorder=3)
    ax.scatter([], [], marker="_", s=200, color="black", label="random order")
    ax.set_xticks(at, methods, rotation=15)
    ax.set_ylabel("mean |change in P(convert)|")
    ax.set_title("AOPC: comprehensiveness (higher better), sufficiency (lower better)")
    top = faith[faith["metric"].str.startswith("aopc")]["ci_high"].max()
    ax.set_ylim(0, 1.4 * top if top > 0 else 1)  # room for the legend above the bars
    ax.legend(fontsize=8, ncol=3, loc="upper left")

    ax = axes[1]
    comp = faith[faith["metric"] == "comprehensiveness"]
    ks = list(dict.fromkeys(comp["k"]))
    for m in methods:
        rows = comp[comp["method"] == m].set_index("k").reindex(ks)
        ax.plot(ks, rows["value"], marker="o", label=m)
    rand = comp.groupby("k", sort=False)["random_baseline"].mean().reindex(ks)
    ax.plot(ks, rand, linestyle="--", color="black", label="random order")
    ax.set_xlabel("k (events, or share of the session)")
    ax.set_ylabel("comprehensiveness: |P(x) - P(x without top k)|")
    ax.set_title("Removing each method's top-k events")
    ax.legend(fontsize=8)

    ax = axes[2]
    grid = np.eye(len(methods))
    for _, r in agree.iterrows():
        i, j = methods.index(r["method"]), methods.index(r["other_method"])
        grid[i, j] = grid[j, i] = r["median"]
    image = ax.imshow(grid, vmin=-1, vmax=1, cmap="RdBu")
    ax.set_xticks(range(len(methods)), methods, rotation=15)
    ax.set_yticks(range(len(methods)), methods)
    for i in range(len(methods)):
        for j in range(len(methods)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=9)
    ax.set_title("Median per-session Spearman between methods")
    fig.colorbar(image, ax=ax)

    fig.tight_layout(rect=(0, 0, 1, 0.93))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
