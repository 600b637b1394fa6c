"""The faithfulness UDF: sampled sessions (model inputs plus one score array per method) in, per-session
metric rows out, on the task's GPU or the CPU (:mod:`udfs.worker`'s device choice and model cache).

It runs :func:`attribution.faithfulness.evaluate_sessions` on each Arrow batch and emits one row per
(session, method, metric, k), and per (session, method pair) for agreement. The stage that samples the
sessions and summarizes the rows is :mod:`attribution.stages.faithfulness`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from attribution.faithfulness import (
    FaithfulnessInputError,
    FaithfulnessOptions,
    agreement_rows,
    evaluate_sessions,
    long_rows,
)
from attribution.features import encode_sessions, flatten_lists
from udfs.worker import ModelPayload, cached_model, choose_device, ship, spark_fields, stats_field, with_stats

log = logging.getLogger(__name__)

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


# The event table's prediction vs the model's on the same session, recomputed here: CPU and GPU agree
# within 1e-5; more means the sessions are not the ones that were attributed.
PREDICTION_TOLERANCE = 1e-4


def evaluate_batches(
    batches: Iterable[pa.RecordBatch],
    payload: ModelPayload,
    methods: list[str],
    score_columns: list[str],
    options: FaithfulnessOptions,
    threads_per_task: int | None = None,
    on_stats: Callable[[dict], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The body of the UDF: sessions (model inputs plus one score array per method) in, per-session
    metric rows out."""

    device = choose_device(threads_per_task)
    loaded = cached_model(payload, device)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        encoded = encode_sessions(batch, loaded.vocab, loaded.spec.continuous)
        scores = []
        for col in score_columns:
            values, lens = flatten_lists(batch.column(col))
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
        if gap > PREDICTION_TOLERANCE:
            raise FaithfulnessInputError(
                f"the model's prediction for a sampled session differs from the event table's by {gap:.2g}: "
                "the sessions table changed after the attribute stage; re-run the attribute stage"
            )
        if on_stats is not None:
            on_stats({**stats, "sessions": len(ids), "prediction_gap": gap})
        labels = batch.column("label").to_pylist()
        lengths = encoded.lengths
        cols: dict[str, list] = {f.name: [] for f in SESSION_SCHEMA}
        for i, sid in enumerate(ids):
            lo, hi = int(encoded.offsets[i]), int(encoded.offsets[i + 1])
            # (method, other method, metric, k, value, random value): metric rows, then agreement rows
            rows: list[tuple[str, str | None, str, str, float, float | None]] = [
                (m, None, name, k, v, r) for m, name, k, v, r in long_rows(metrics[i], methods, options)
            ]
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


def evaluate(
    spark: SparkSession,
    sampled: DataFrame,
    payload: ModelPayload,
    methods: list[str],
    score_columns: list[str],
    options: FaithfulnessOptions,
    threads: int | None,
) -> DataFrame:
    """The UDF over ``sampled`` (sessions with their model inputs and score arrays): a DataFrame of the
    per-session metric rows, with the UDF's counters in :data:`udfs.worker.STATS_COLUMN`."""
    from pyspark.sql.types import StructType

    shipped = ship(spark, payload)

    def udf(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        pending: list[dict] = []
        evaluated = evaluate_batches(batches, shipped.value, methods, score_columns, options, threads, pending.append)
        return with_stats(evaluated, pending, GAPS)

    return sampled.mapInArrow(udf, StructType([*spark_fields(list(SESSION_SCHEMA)), stats_field()]))
