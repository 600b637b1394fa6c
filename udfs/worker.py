"""What the UDFs share on a Python worker: the model payload and its per-worker cache, the device
choice, the worker's memory probes, the counters the UDFs report as data, and the Arrow-to-Spark
schema mapping of what they return.

- The model travels once per executor, as the verified artifact bytes (safetensors + JSON, no pickle):
  a broadcast from a classic session; under Spark Connect (no SparkContext, so no broadcast) inside the
  UDF's function, which the server ships with the stage's task binary (see :func:`ship`). Each Python
  worker builds the model on first use and caches it across tasks, keyed by its sha256
  (``spark.python.worker.reuse``, on by default, keeps the worker and so the cache).
- Device: the GPU Spark assigned to the task (``spark.task.resource.gpu.amount``, read from
  ``TaskContext.resources()``), else a local CUDA device, else the CPU with torch threads set to the
  task's cores.
- Counters (model batches, OOM splits, positions, peak memory) come back as data: a map column on the
  first row of each output batch (:func:`with_stats`), gathered by an ``Observation`` and dropped before
  the write. No accumulators, so a stage runs the same from a classic session and a Spark Connect client.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from attribution.features import Vocabularies
from attribution.model import ArtifactError, build_model, read_artifact, read_members
from attribution.spark import is_connect

if TYPE_CHECKING:
    import torch
    from pyspark.sql import Column, SparkSession
    from pyspark.sql.types import StructField

    from attribution.model import LoadedModel

_CACHE: dict[str, LoadedModel] = {}  # "sha256@device" -> the model on that device; one per Python worker


@dataclass(frozen=True)
class ModelPayload:
    """What travels to the executors: the artifact's verified bytes. Small (MBs) and pickle-free in content."""

    weights: bytes
    config: dict
    vocab_json: str
    members: tuple[bytes, ...] = ()  # the ensemble's other members (model config "members"), same order

    @property
    def sha256(self) -> str:
        return self.config["weights_sha256"]

    @staticmethod
    def read(location: str, members: bool = True) -> ModelPayload:
        """The model directory's verified bytes; with ``members`` False, the model alone (a stage that
        needs no removal effects ships one model, not the ensemble)."""
        weights, config, vocab = read_artifact(location)
        if not members:
            config = {**config, "members": []}
        return ModelPayload(
            weights=weights,
            config=config,
            vocab_json=vocab.to_json(),
            members=read_members(location, config),
        )


@dataclass(frozen=True)
class Inline:
    """A value the UDF's function carries itself; read like a broadcast (``.value``)."""

    value: object


def ship(spark: SparkSession, value: Any) -> Any:
    """``value`` for the executors, read as ``.value`` in the UDF: a broadcast from a classic session (sent
    once per executor, outside the task binary); the value itself under Spark Connect, which has no
    broadcast: the function carries it, in the plan, and the server ships it with the task binary (a Spark
    log line says so when that is over 1 MiB)."""

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


def choose_device(threads_per_task: int | None = None) -> torch.device:
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


def cached_model(payload: ModelPayload, device: torch.device) -> LoadedModel:
    """Build the model once per Python worker and device; reuse it for every later task."""
    from hashlib import sha256

    key = f"{payload.sha256}+{len(payload.members)}@{device}"
    if key not in _CACHE:
        recorded = [m["weights_sha256"] for m in payload.config.get("members") or []]
        if (
            sha256(payload.weights).hexdigest() != payload.sha256
            or [sha256(m).hexdigest() for m in payload.members] != recorded
        ):
            raise ArtifactError("the model weights shipped to the executor do not match their recorded sha256")
        loaded = build_model(
            payload.weights, payload.config, Vocabularies.from_json(payload.vocab_json), payload.members
        )
        for network in loaded.ensemble:
            network.to(device)
        _CACHE.clear()  # a new model replaces the old one: one model's memory per worker
        _CACHE[key] = loaded
    return _CACHE[key]


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


def with_fields(schema: pa.Schema, fields: list[pa.Field]) -> pa.Schema:
    """``schema`` with ``fields`` appended."""
    for f in fields:
        schema = schema.append(f)
    return schema


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


def with_stats(
    batches: Iterable[pa.RecordBatch], pending: list[dict], maxima: tuple[str, ...] = ()
) -> Iterator[pa.RecordBatch]:
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


def stats_metric() -> Column:
    """The Observation metric that gathers :data:`STATS_COLUMN`: one map per output batch, few enough to
    collect (a batch holds ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows)."""
    from pyspark.sql import functions as F

    return F.collect_list(STATS_COLUMN).alias(STATS_COLUMN)


def stats_field() -> StructField:
    """The Spark field of :data:`STATS_COLUMN`."""
    from pyspark.sql.types import DoubleType, MapType, StringType, StructField

    return StructField(STATS_COLUMN, MapType(StringType(), DoubleType(), True), True)


def observed_stats(metrics: dict, maxima: tuple[str, ...] = ()) -> dict:
    """The counters of a stage, from its Observation's :func:`stats_metric`."""
    return merge_stats([dict(m) for m in metrics.get(STATS_COLUMN) or []], maxima)


def spark_fields(fields: list[pa.Field]) -> list[Any]:
    """Spark's StructFields for Arrow fields a UDF returns (pyspark's own Arrow-to-Spark type mapping)."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField

    return [StructField(f.name, from_arrow_type(f.type), f.nullable) for f in fields]
