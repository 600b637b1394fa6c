"""The attribution UDF: Arrow batches of sessions in, per-session score arrays out, on GPU or CPU.

It is the iterator form of Spark's Arrow-based Python UDFs, ``DataFrame.mapInArrow``: every task gets an
iterator of Arrow record batches (``spark.sql.execution.arrow.maxRecordsPerBatch`` sessions each) and
yields batches with the same rows plus the score columns. Arrow all the way: the nested event arrays are
never converted to pandas objects, which on a CPU executor would cost more than the model itself.

- The model travels once per executor, as the verified artifact bytes (safetensors + JSON, no pickle):
  a broadcast from a classic session; under Spark Connect (no SparkContext, so no broadcast) inside the
  UDF's function, which the server ships with the stage's task binary (see :func:`ship`). Each Python
  worker builds the model on first use and caches it across tasks, keyed by its sha256
  (``spark.python.worker.reuse``, on by default, keeps the worker and so the cache).
- The UDF's counters (model batches, OOM splits, positions, peak memory) come back as data: a map column
  on the first row of each output batch, gathered by an ``Observation`` and dropped before the write. No
  accumulators, so the stage runs the same from a classic session and from a Spark Connect client.
- Device: the GPU Spark assigned to the task (``spark.task.resource.gpu.amount``, read from
  ``TaskContext.resources()``), else a local CUDA device, else the CPU with torch threads set to the
  task's cores.
- Memory per worker is bounded by the Arrow batch and ``attribution.batch_size``, never by the
  partition: batches stream through and are not accumulated.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from attribution.methods import Method, resolve
from attribution.removal import REMOVAL_COLUMNS

log = logging.getLogger(__name__)

_CACHE: dict[str, object] = {}  # sha256 -> (LoadedModel on its device, device); one per Python worker


@dataclass(frozen=True)
class ModelPayload:
    """What travels to the executors: the artifact's verified bytes. Small (MBs) and pickle-free in content."""

    weights: bytes
    config: dict
    vocab_json: str

    @property
    def sha256(self) -> str:
        return self.config["weights_sha256"]

    @staticmethod
    def read(location: str) -> ModelPayload:
        from attribution.model import read_artifact

        weights, config, vocab = read_artifact(location)
        return ModelPayload(weights=weights, config=config, vocab_json=vocab.to_json())


@dataclass(frozen=True)
class Inline:
    """A value the UDF's function carries itself; read like a broadcast (``.value``)."""

    value: object


def ship(spark, value):
    """``value`` for the executors, read as ``.value`` in the UDF: a broadcast from a classic session (sent
    once per executor, outside the task binary); the value itself under Spark Connect, which has no
    broadcast: the function carries it, in the plan, and the server ships it with the task binary (a Spark
    log line says so when that is over 1 MiB)."""
    from attribution.spark import is_connect

    return Inline(value) if is_connect(spark) else spark.sparkContext.broadcast(value)


def task_gpu_addresses() -> list[str]:
    """The GPU addresses Spark assigned to the running task (``spark.task.resource.gpu.amount``), as the
    worker's discovery script reported them; empty outside a task or when the task has none."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpu = (ctx.resources() if ctx is not None else {}).get("gpu")
    return list(gpu.addresses) if gpu is not None else []


def device_name(addresses: list[str], cuda_devices: int) -> str:
    """The torch device for a task given its GPU addresses and the CUDA devices this process sees.

    Spark gives the physical address; where the cluster manager also sets CUDA_VISIBLE_DEVICES the
    process sees only its own GPUs, renumbered from 0, so an address beyond the visible count means
    device 0. No visible CUDA device means the CPU, whatever Spark assigned.
    """
    if cuda_devices <= 0:
        return "cpu"
    if addresses:
        index = int(addresses[0])
        return f"cuda:{index if index < cuda_devices else 0}"
    return "cuda:0"


def choose_device(threads_per_task: int | None = None):
    """The task's GPU, a local GPU, or the CPU with torch threads matched to the task's cores."""
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    name = device_name(task_gpu_addresses(), cuda)
    if name != "cpu":
        return torch.device(name)
    cores = threads_per_task or (ctx.cpus() if ctx is not None else None)
    if cores and torch.get_num_threads() != cores:  # outside a task (in-process use) leave torch's default
        torch.set_num_threads(int(cores))
    return torch.device("cpu")


def cached_model(payload: ModelPayload, device):
    """Build the model once per Python worker and device; reuse it for every later task."""
    from hashlib import sha256

    from attribution.features import Vocabularies
    from attribution.model import ArtifactError, build_model

    key = f"{payload.sha256}@{device}"
    if key not in _CACHE:
        if sha256(payload.weights).hexdigest() != payload.sha256:
            raise ArtifactError("the model weights shipped to the executor do not match their recorded sha256")
        loaded = build_model(payload.weights, payload.config, Vocabularies.from_json(payload.vocab_json))
        loaded.model.to(device)
        _CACHE.clear()  # a new model replaces the old one: one model's memory per worker
        _CACHE[key] = loaded
    return _CACHE[key]


def output_fields(
    methods: Sequence[str | Method], vocab_fields: tuple[str, ...], removal: bool = False
) -> list[pa.Field]:
    """The columns the UDF appends to each input batch: per method, its per-event score arrays, then every
    method's per-session values."""
    chosen = resolve(methods)
    fields = [pa.field("prediction", pa.float64()), pa.field("logit", pa.float64())]
    fields += [pa.field(col, pa.list_(pa.float64())) for m in chosen for col in m.event_columns]
    fields += [pa.field(col, pa.float64()) for m in chosen for col, _ in m.session_columns]
    if removal:
        fields += [pa.field(col, pa.list_(pa.float64())) for col in REMOVAL_COLUMNS.values()]
    fields += [pa.field(f"unknown_{f}", pa.int64()) for f in vocab_fields]
    return fields


def _per_session_unknown(encoded, field_tokens: np.ndarray) -> np.ndarray:
    from attribution.features import UNK

    cumulative = np.r_[0, np.cumsum(field_tokens == UNK, dtype=np.int64)]
    return cumulative[encoded.offsets[1:]] - cumulative[encoded.offsets[:-1]]


def rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Start a new high-water mark of this process's resident memory (Linux: ``/proc/self/clear_refs``);
    False where that can't be done, and :func:`peak_rss_mb` then means the process's lifetime peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The most resident memory this process has had since :func:`reset_peak_rss`, in MiB: the true peak,
    in the middle of a batch, not a sample taken between batches."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss_mb()


def attribute_batches(
    batches: Iterator[pa.RecordBatch],
    payload: ModelPayload,
    methods: Sequence[str | Method],
    batch_size: int,
    attention_layer: int = -1,
    ig_steps: int = 32,
    ig_baseline: str = "pad",
    threads_per_task: int | None = None,
    on_stats: Callable[[dict], None] | None = None,
    max_positions: int | None = None,
    removal_sample: float = 0.0,
) -> Iterator[pa.RecordBatch]:
    """The body of the UDF: each input batch comes back with the score columns appended, and, with
    ``removal_sample`` > 0, the removal effects of each event's type, position bin and store for that
    share of the sessions (null elsewhere).

    ``on_stats`` gets, per Arrow batch, the model batches run, OOM splits, computed (padded) positions,
    real events and this worker's peak resident memory in MiB since the task began (where Linux lets the
    peak be reset; otherwise the resident memory after the batch)."""
    from attribution.attribute import AttributionOptions, attribute_sessions
    from attribution.features import encode_sessions

    peak_is_this_tasks = reset_peak_rss()
    device = choose_device(threads_per_task)
    given_gpu = bool(task_gpu_addresses())
    loaded = cached_model(payload, device)
    chosen = resolve(methods)
    options = AttributionOptions(
        methods=chosen, attention_layer=attention_layer, ig_steps=ig_steps, ig_baseline=ig_baseline
    )
    removal = removal_sample > 0
    fields = output_fields(chosen, loaded.spec.fields, removal)
    for batch in batches:
        if batch.num_rows == 0:
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, *[pa.array([], f.type) for f in fields]],
                schema=_with(batch.schema, fields),
            )
            continue
        encoded = encode_sessions(batch, loaded.vocab)
        stats: dict = {}
        scores = attribute_sessions(
            loaded.model,
            encoded,
            options,
            batch_size=batch_size,
            device=device,
            stats_out=stats,
            max_positions=max_positions,
        )
        if removal:
            removed = _removal_effects(batch, encoded, loaded.model, removal_sample, device, max_positions, stats)
        if on_stats is not None:
            peak = peak_rss_mb() if peak_is_this_tasks else rss_mb()
            events = int(encoded.offsets[-1])
            on_stats(
                {
                    **stats,
                    "events": events,
                    "rss_mb": peak,
                    f"events_on:{device}": events,
                    "events_in_gpu_tasks": events if given_gpu else 0,
                }
            )
        offsets = pa.array(encoded.offsets.astype(np.int32), pa.int32())
        columns = [pa.array(scores["prediction"], pa.float64()), pa.array(scores["logit"], pa.float64())]
        for m in chosen:
            for col in m.event_columns:
                columns.append(pa.ListArray.from_arrays(offsets, pa.array(scores[col], pa.float64())))
        for m in chosen:
            for col, _ in m.session_columns:
                columns.append(pa.array(scores[col], pa.float64()))
        if removal:
            for dim in REMOVAL_COLUMNS:
                values = pa.array(removed[dim], pa.float64(), from_pandas=True)  # NaN -> null
                columns.append(pa.ListArray.from_arrays(offsets, values))
        for f in loaded.spec.fields:
            columns.append(pa.array(_per_session_unknown(encoded, encoded.tokens[f]), pa.int64()))
        yield pa.RecordBatch.from_arrays([*batch.columns, *columns], schema=_with(batch.schema, fields))


def _removal_effects(batch: pa.RecordBatch, encoded, model, fraction: float, device, max_positions, stats: dict):
    """The removal effects of the batch's sampled sessions, per dimension (see attribution/removal.py)."""
    from attribution.removal import key_codes, position_codes, removal_effects, sampled

    selected = sampled(batch.column("session_id").to_pylist(), fraction)
    if not selected.any():  # no sampled session in this batch: nothing to encode or run
        total = int(encoded.offsets[-1])
        stats.update({"removal_sessions": 0, "removal_variants": 0, "removal_positions": 0})
        return {dim: np.full(total, np.nan) for dim in REMOVAL_COLUMNS}
    keys = {
        "event_type": key_codes(batch.column("event_types")),
        "position_bin": position_codes(encoded.offsets),
        "store": key_codes(batch.column("store_ids")),
    }
    return removal_effects(model, encoded, keys, selected, device, max_positions or 65536, stats_out=stats)


def _with(schema: pa.Schema, fields: list[pa.Field]) -> pa.Schema:
    for f in fields:
        schema = schema.append(f)
    return schema


# --------------------------------------------------------------------------------------------------
# The Spark stage: sessions -> UDF -> event-level table
# --------------------------------------------------------------------------------------------------


class AttributionReconciliationError(RuntimeError):
    """Events out != events in: a bug, never a user error."""


# The column that carries a UDF's counters out of the executors (see with_stats).
STATS_COLUMN = "udf_stats"
STATS_TYPE = pa.map_(pa.string(), pa.float64())


def merge_stats(parts: list[dict], maxima: tuple[str, ...] = ()) -> dict:
    """Counters from many batches as one: sums, except the ``maxima`` keys (peaks), which take the largest."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            value = float(value)
            out[key] = max(out.get(key, value), value) if key in maxima else out.get(key, 0.0) + value
    return out


def with_stats(batches: Iterator[pa.RecordBatch], pending: list[dict], maxima: tuple[str, ...] = ()):
    """``batches`` with :data:`STATS_COLUMN` appended: the counters the UDF reported into ``pending`` since
    the last batch, merged, on the batch's first row; null on every other row. Counters reported before
    an empty batch ride on the next batch that has a row."""
    for batch in batches:
        values: list[list[tuple[str, float]] | None] = [None] * batch.num_rows
        if batch.num_rows and pending:
            values[0] = list(merge_stats(pending, maxima).items())
            pending.clear()
        column = pa.array(values, STATS_TYPE)
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, column], schema=batch.schema.append(pa.field(STATS_COLUMN, STATS_TYPE))
        )


def stats_metric():
    """The Observation metric that gathers :data:`STATS_COLUMN`: one map per output batch, few enough to
    collect (a batch holds ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows)."""
    from pyspark.sql import functions as F

    return F.collect_list(STATS_COLUMN).alias(STATS_COLUMN)


def stats_field():
    from pyspark.sql.types import DoubleType, MapType, StringType, StructField

    return StructField(STATS_COLUMN, MapType(StringType(), DoubleType(), True), True)


def observed_stats(metrics: dict, maxima: tuple[str, ...] = ()) -> dict:
    """The counters of a stage, from its Observation's :func:`stats_metric`."""
    return merge_stats([dict(m) for m in metrics.get(STATS_COLUMN) or []], maxima)


def _spark_fields(methods: Sequence[str | Method], vocab_fields: tuple[str, ...], removal: bool = False):
    from pyspark.sql.types import ArrayType, DoubleType, LongType, StructField

    out = []
    for f in output_fields(methods, vocab_fields, removal):
        if pa.types.is_list(f.type):
            out.append(StructField(f.name, ArrayType(DoubleType(), True), True))
        elif pa.types.is_int64(f.type):
            out.append(StructField(f.name, LongType(), True))
        else:
            out.append(StructField(f.name, DoubleType(), True))
    return out


def _fail_first_attempt(batches, partition: int):
    """Fault injection (``attribution.fail_first_attempt_of_partition``): the first attempt of the
    task of ``partition`` raises after yielding its first batch, i.e. midway through its output."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    for batch in batches:
        yield batch
        if ctx is not None and ctx.partitionId() == partition and ctx.attemptNumber() == 0:
            raise RuntimeError(f"injected failure: partition {partition}, attempt 0 (fail_first_attempt_of_partition)")


def score_sessions(sessions, payload: ModelPayload, conf, spark, removal_sample: float = 0.0):
    """Append the score columns to ``sessions`` (a DataFrame of the sessions table) with the UDF; with
    ``removal_sample`` > 0 also the removal effects of that share of the sessions. The UDF's counters
    come in :data:`STATS_COLUMN` (see :func:`with_stats`)."""
    from attribution.features import Vocabularies

    a = conf.attribution
    vocab_fields = Vocabularies.from_json(payload.vocab_json).fields
    # Method objects, resolved here: the closure carries them, so a method registered at run time works too
    methods = resolve(a.methods)
    batch_size, max_positions = a.batch_size, a.max_batch_positions
    layer, steps, baseline, threads = a.attention_layer, a.ig_steps, a.ig_baseline, a.threads_per_task
    fail_partition = a.fail_first_attempt_of_partition
    shipped = ship(spark, payload)

    def udf(batches):
        pending: list[dict] = []
        scored = attribute_batches(
            batches,
            shipped.value,
            methods,
            batch_size,
            layer,
            steps,
            baseline,
            threads,
            on_stats=pending.append,
            max_positions=max_positions,
            removal_sample=removal_sample,
        )
        scored = with_stats(scored, pending, PEAKS)
        return scored if fail_partition is None else _fail_first_attempt(scored, fail_partition)

    selected, schema = scoring_input(sessions, methods, vocab_fields, removal_sample > 0)
    return selected.mapInArrow(udf, schema.add(stats_field())), vocab_fields


# The UDF's counters that are peaks, not sums.
PEAKS = ("rss_mb",)


def scoring_input(sessions, methods: Sequence[str | Method], vocab_fields: tuple[str, ...], removal: bool = False):
    """The sessions' columns the UDF reads or passes through, and the schema of what it returns."""
    from pyspark.sql.types import StructType

    from attribution.features import INPUT_COLUMNS

    keep = ["session_id", "label", "session_date", "event_types", "event_ts"]
    selected = sessions.select(*dict.fromkeys([*keep, *INPUT_COLUMNS]))
    return selected, StructType([*selected.schema.fields, *_spark_fields(methods, vocab_fields, removal)])


def publish_events(spark, conf, output: str) -> dict:
    """The event-level table just written at ``output`` (parquet), published as Delta and/or one CSV file
    as configured, read back from ``output`` so the model does not run again. Returns, per sink, its
    location and seconds."""
    import time

    from attribution import sinks
    from attribution.io import read_table, run_days

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
        t0 = time.time()
        location = conf.output(a.csv_path)
        sinks.write_csv_single_file(events, location)
        published["csv"] = {"location": location, "seconds": round(time.time() - t0, 2)}
    return published


def sessions_to_score(spark, conf):
    """The sessions table's configured split (``attribution.split``; ``all`` for every session), checked
    for the columns the stage needs."""
    from pyspark.sql import functions as F

    from attribution.features import INPUT_COLUMNS, FeatureMismatch
    from attribution.io import read_table, run_days

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


def drift_check(spark, conf, output: str, model_auc: float | None) -> dict:
    """The attributed sessions' ROC-AUC (one prediction and label per session, read back from the event
    table just written) against the model's test ROC-AUC: ``flagged`` when it is lower by more than
    ``attribution.max_auc_drop``. The AUC is null when the sessions are of one class (a day without
    conversions): then nothing can be said, and ``flagged`` is null too."""
    from pyspark.sql import functions as F

    from attribution.io import read_table, run_days
    from attribution.metrics import roc_auc

    events = run_days(read_table(spark, output, "parquet", {}, "attribution"), conf.run)
    sessions = events.where(F.col("event_position") == 0).select("label", "prediction").toArrow()
    labels = sessions.column("label").to_numpy(zero_copy_only=False)
    computed = roc_auc(labels, sessions.column("prediction").to_numpy(zero_copy_only=False))
    auc = None if computed != computed else computed  # NaN: one class
    drop = None if auc is None or model_auc is None else model_auc - auc
    return {
        "sessions": int(len(labels)),
        "converted": int(labels.sum()),
        "roc_auc": auc,
        "model_test_roc_auc": model_auc,
        "drop": drop,
        "max_drop": conf.attribution.max_auc_drop,
        "flagged": None if drop is None else bool(drop > conf.attribution.max_auc_drop),
    }


def run(spark, conf, model_path: str | None = None) -> dict:
    """Attribute the configured split of the sessions table; write the event-level table and a summary."""
    import json
    import time

    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from attribution.events import event_table
    from attribution.features import FeatureMismatch
    from attribution.io import InputError, write_text
    from attribution.sessionize import _partitioned_write, day_partition, drop_empty_marker
    from attribution.sinks import remove_tree

    a = conf.attribution
    started = time.time()
    from attribution.model import model_location as locate

    model_location = model_path or locate(conf.output(conf.train.model_path), conf.train.model_version)
    payload = ModelPayload.read(model_location)
    sessions = sessions_to_score(spark, conf)
    max_length = payload.config["model"]["max_length"]
    longest, n_sessions = sessions.agg(F.max("session_length"), F.count(F.lit(1))).first()
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
    scored, vocab_fields = score_sessions(sessions, payload, conf, spark, removal_sample)
    # the methods' per-session values (a completeness gap): their mean and largest |value| in the summary
    session_checks = [c for m in resolve(a.methods) for c, _ in m.session_columns]
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
    events = event_table(scored, conf.run.run_id or "", payload.sha256)
    written = Observation("attribute_events")
    events = events.observe(written, F.count(F.lit(1)).alias("events_out"))
    output = conf.output(a.output_path)
    if conf.run.date is not None:  # day mode: the day's partition is replaced, no other
        remove_tree(day_partition(output, conf.run.date))
        drop_empty_marker(output)
    _partitioned_write(events.write, conf.run.date).parquet(output)
    s, w = seen.get, written.get
    counters = observed_stats(s, PEAKS)
    if int(s["events_in"]) != int(w["events_out"]):
        raise AttributionReconciliationError(
            f"{s['events_in']} events in {s['sessions']} sessions but {w['events_out']} event rows written"
        )
    published = publish_events(spark, conf, output)
    drift = drift_check(spark, conf, output, payload.config.get("test_roc_auc"))
    summary = {
        "run_id": conf.run.run_id,
        "model_sha256": payload.sha256,
        "model_path": model_location,
        "split": a.split,
        "methods": list(a.methods),
        "sessions": int(s["sessions"]),
        "converted_sessions": int(s["converted"]),
        "events": int(w["events_out"]),
        "mean_prediction": s["mean_prediction"],
        "unknown_tokens": {f: int(s[f"unknown_{f}"]) for f in vocab_fields},
        "seconds": round(time.time() - started, 2),
        "output": output,
        "model_batches": int(counters.get("batches", 0)),
        "oom_splits": int(counters.get("oom_splits", 0)),
        # real events / positions computed: how little compute went to padding
        "padding_efficiency": int(w["events_out"]) / max(1, int(counters.get("computed_positions", 0))),
        "python_worker_peak_rss_mb": round(float(counters.get("rss_mb", 0.0)), 1),
        # where the events were scored, and how many in tasks Spark gave a GPU (spark.task.resource.gpu.amount)
        "events_by_device": {
            k.split(":", 1)[1]: int(v) for k, v in sorted(counters.items()) if k.startswith("events_on:")
        },
        "events_in_gpu_tasks": int(counters.get("events_in_gpu_tasks", 0)),
        # sessions in the removal sample and the forward passes their removal effects took
        "removal_sessions": int(counters.get("removal_sessions", 0)),
        "removal_forward_passes": int(counters.get("removal_variants", 0)),
        "published": published,
        "drift": drift,
    }
    for c in session_checks:
        summary[c] = {"max_abs": s[f"max_abs_{c}"], "mean_abs": s[f"mean_abs_{c}"]}
    if conf.run.date is not None:
        summary["date"] = conf.run.date
    write_text(conf.output(conf.run.day_file(a.summary_path)), json.dumps(summary, indent=1))
    return summary
