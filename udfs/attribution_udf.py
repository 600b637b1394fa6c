"""The attribution UDF: Arrow batches of sessions in, per-session score arrays out, on GPU or CPU.

It is the iterator form of Spark's Arrow-based Python UDFs, ``DataFrame.mapInArrow``: every task gets an
iterator of Arrow record batches (``spark.sql.execution.arrow.maxRecordsPerBatch`` sessions each) and
yields batches with the same rows plus the score columns of every chosen method
(:mod:`attribution.methods`). Arrow all the way: the nested event arrays are never converted to pandas
objects, which on a CPU executor would cost more than the model itself. Memory per worker is bounded by
the Arrow batch and ``attribution.batch_size``, never by the partition: batches stream through and are
not accumulated. The model cache, the device choice and the counters are :mod:`udfs.worker`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from attribution.attribute import AttributionOptions, attribute_sessions
from attribution.features import UNK, Vocabularies, encode_sessions
from attribution.methods import Method, resolve
from attribution.removal import (
    PairInteraction,
    ensemble_mean,
    key_codes,
    key_values,
    position_codes,
    removal_effects,
    sampled,
)
from attribution.schema import INPUT_COLUMNS, PAIR_COLUMN, PAIR_FIELDS, REMOVAL_EVENT_COLUMNS, REMOVAL_MEMBER_COLUMNS
from udfs.worker import (
    ModelPayload,
    cached_model,
    choose_device,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    ship,
    spark_fields,
    stats_field,
    task_gpu_addresses,
    with_fields,
    with_stats,
)

if TYPE_CHECKING:
    import torch
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from attribution.config import Config
    from attribution.features import EncodedSessions
    from attribution.model import SessionTransformer

log = logging.getLogger(__name__)


ARROW_TYPES = {"string": pa.string(), "double": pa.float64(), "array<double>": pa.list_(pa.float64())}
PAIR_TYPE = pa.list_(pa.struct([pa.field(name, ARROW_TYPES[kind]) for name, kind in PAIR_FIELDS]))


def output_fields(
    methods: Sequence[str | Method], vocab_fields: tuple[str, ...], removal: bool = False, pairs: bool = False
) -> list[pa.Field]:
    """The columns the UDF appends to each input batch: per method, its per-event score arrays, then every
    method's per-session values; the removal effects, and the pair interactions per session."""
    chosen = resolve(methods)
    fields = [pa.field("prediction", pa.float64()), pa.field("logit", pa.float64())]
    fields += [pa.field(col, pa.list_(pa.float64())) for m in chosen for col in m.event_columns]
    fields += [pa.field(col, pa.float64()) for m in chosen for col, _ in m.session_columns]
    if removal:
        fields += [pa.field(col, pa.list_(pa.float64())) for col in REMOVAL_EVENT_COLUMNS.values()]
        fields += [pa.field(col, pa.list_(pa.list_(pa.float64()))) for col in REMOVAL_MEMBER_COLUMNS.values()]
    if removal and pairs:
        fields.append(pa.field(PAIR_COLUMN, PAIR_TYPE))
    fields += [pa.field(f"unknown_{f}", pa.int64()) for f in vocab_fields]
    return fields


def _per_session_unknown(encoded: EncodedSessions, field_tokens: np.ndarray) -> np.ndarray:
    cumulative = np.r_[0, np.cumsum(field_tokens == UNK, dtype=np.int64)]
    return cumulative[encoded.offsets[1:]] - cumulative[encoded.offsets[:-1]]


def attribute_batches(
    batches: Iterable[pa.RecordBatch],
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
    pairs: Sequence[tuple[str, str]] = (),
) -> Iterator[pa.RecordBatch]:
    """The body of the UDF: each input batch comes back with the score columns appended, and, with
    ``removal_sample`` > 0, the removal effects of each event's type, position bin and store for that
    share of the sessions (null elsewhere), and the interactions of the ordered ``pairs`` of event types
    present in those sessions (a list per sampled session, null elsewhere).

    ``on_stats`` gets, per Arrow batch, the model batches run, OOM splits, computed (padded) positions,
    real events and this worker's peak resident memory in MiB since the task began (where Linux lets the
    peak be reset; otherwise the resident memory after the batch)."""

    peak_is_this_tasks = reset_peak_rss()
    device = choose_device(threads_per_task)
    given_gpu = bool(task_gpu_addresses())
    loaded = cached_model(payload, device)
    chosen = resolve(methods)
    options = AttributionOptions(
        methods=chosen, attention_layer=attention_layer, ig_steps=ig_steps, ig_baseline=ig_baseline
    )
    removal = removal_sample > 0
    fields = output_fields(chosen, loaded.spec.fields, removal, bool(pairs))
    for batch in _timed_input(batches, on_stats):
        started = time.perf_counter()
        if batch.num_rows == 0:
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, *[pa.array([], f.type) for f in fields]],
                schema=with_fields(batch.schema, fields),
            )
            continue
        encoded = encode_sessions(batch, loaded.vocab, loaded.spec.continuous)
        stats: dict = {}
        encoded_at = time.perf_counter()
        scores = attribute_sessions(
            loaded.model,
            encoded,
            options,
            batch_size=batch_size,
            device=device,
            stats_out=stats,
            max_positions=max_positions,
        )
        scored_at = time.perf_counter()
        if removal:
            found: list[PairInteraction] = []
            removed, selected = _removal_effects(
                batch, encoded, loaded.ensemble, removal_sample, device, max_positions, stats, pairs, found
            )
        removed_at = time.perf_counter()
        stats.update(
            {
                "seconds_encode": encoded_at - started,
                "seconds_model": scored_at - encoded_at,
                "seconds_removal": removed_at - scored_at,
            }
        )
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
            for dim in REMOVAL_EVENT_COLUMNS:
                values = pa.array(ensemble_mean(removed[dim]), pa.float64(), from_pandas=True)  # NaN -> null
                columns.append(pa.ListArray.from_arrays(offsets, values))
            for dim in REMOVAL_MEMBER_COLUMNS:
                columns.append(pa.ListArray.from_arrays(offsets, _members_per_event(removed[dim])))
            if pairs:
                columns.append(_pairs_per_session(found, pairs, selected))
        for f in loaded.spec.fields:
            columns.append(pa.array(_per_session_unknown(encoded, encoded.tokens[f]), pa.int64()))
        out = pa.RecordBatch.from_arrays([*batch.columns, *columns], schema=with_fields(batch.schema, fields))
        if on_stats is not None:
            on_stats({"seconds_output": time.perf_counter() - removed_at})
        yield out


def _timed_input(
    batches: Iterable[pa.RecordBatch], on_stats: Callable[[dict], None] | None
) -> Iterator[pa.RecordBatch]:
    """``batches``, with the time spent waiting for each (Spark turning the sessions into Arrow and
    sending them) reported as ``seconds_input``."""
    iterator = iter(batches)
    while True:
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        if on_stats is not None:
            on_stats({"seconds_input": time.perf_counter() - started})
        yield batch


def _members_per_event(effects: np.ndarray) -> pa.Array:
    """(members, events) removal effects -> one list of the members' values per event; null for an event
    with no removal effect (its session not sampled, or no key)."""
    k = effects.shape[0]
    flat = pa.array(effects.T.ravel(), pa.float64())
    lists = pa.FixedSizeListArray.from_arrays(flat, k).cast(pa.list_(pa.float64()))
    missing = pa.array(np.isnan(effects[0]))
    return pc.if_else(missing, pa.scalar(None, pa.list_(pa.float64())), lists)


def _pairs_per_session(
    found: list[PairInteraction], pairs: Sequence[tuple[str, str]], selected: np.ndarray
) -> pa.Array:
    """One list of pair interactions per session of the batch: the pairs present in a sampled session
    (an empty list when it has none), null for a session not sampled."""
    per_session: list[list[dict] | None] = [[] if s else None for s in selected]
    for f in found:
        first, second = pairs[f.pair]
        entry = per_session[f.row]
        assert entry is not None, "pair interactions come from sampled sessions only"
        entry.append(
            {
                "first_event_type": first,
                "second_event_type": second,
                "interaction": float(f.probability.mean()),
                "interaction_log_odds": float(f.log_odds.mean()),
                "interaction_members": f.probability.tolist(),
                "interaction_log_odds_members": f.log_odds.tolist(),
            }
        )
    return pa.array(per_session, PAIR_TYPE)


def _removal_effects(
    batch: pa.RecordBatch,
    encoded: EncodedSessions,
    models: list[SessionTransformer],
    fraction: float,
    device: torch.device,
    max_positions: int | None,
    stats: dict,
    pairs: Sequence[tuple[str, str]] = (),
    pairs_out: list[PairInteraction] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The removal effects of the batch's sampled sessions under each of ``models``, per dimension:
    (members, events) arrays (see attribution/removal.py), and which sessions are sampled. The
    interactions of ``pairs`` (event type names) go to ``pairs_out``."""

    selected = sampled(batch.column("session_id").to_pylist(), fraction)
    if not selected.any():  # no sampled session in this batch: nothing to encode or run
        total = int(encoded.offsets[-1])
        stats.update({"removal_sessions": 0, "removal_variants": 0, "removal_positions": 0})
        return {dim: np.full((len(models), total), np.nan) for dim in REMOVAL_EVENT_COLUMNS}, selected
    types, type_names = key_values(batch.column("event_types"))
    keys = {
        "event_type": types,
        "position_bin": position_codes(encoded.offsets),
        "store": key_codes(batch.column("store_ids")),
    }
    code = {name: i for i, name in enumerate(type_names)}
    # a pair whose types are not in this batch has no session here; -2 matches no event
    coded = [(code.get(a, -2), code.get(b, -2)) for a, b in pairs]
    effects = removal_effects(models, encoded, keys, selected, device, max_positions or 65536, stats, coded, pairs_out)
    return effects, selected


# --------------------------------------------------------------------------------------------------
# The UDF over a DataFrame of sessions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scoring:
    """The scoring UDF over a DataFrame of sessions, not yet applied: ``selected`` (the columns it reads
    or passes through), the function, and ``schema``, what it returns: ``selected``'s columns, the score
    columns and :data:`STATS_COLUMN`."""

    selected: DataFrame
    udf: Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]
    schema: StructType
    vocab_fields: tuple[str, ...]

    def apply(self) -> DataFrame:
        return self.selected.mapInArrow(self.udf, self.schema)


def scoring_udf(
    sessions: DataFrame,
    payload: ModelPayload,
    conf: Config,
    spark: SparkSession,
    removal_sample: float = 0.0,
    pairs: Sequence[tuple[str, str]] = (),
) -> Scoring:
    """The UDF that appends the score columns to ``sessions`` (a DataFrame of the sessions table); with
    ``removal_sample`` > 0 also the removal effects of that share of the sessions, and the interactions
    of the ordered ``pairs`` of event types in them. The UDF's counters come in :data:`STATS_COLUMN` (see
    :func:`with_stats`). Not yet applied (:meth:`Scoring.apply`), so a caller can run it inside another
    function of the same Python worker (the worker-side event table writer, udfs/event_files.py)."""

    a = conf.attribution
    vocab_fields = Vocabularies.from_json(payload.vocab_json).fields
    # Method objects, resolved here: the closure carries them, so a method registered at run time works too
    methods = resolve(a.methods)
    batch_size, max_positions = a.batch_size, a.max_batch_positions
    layer, steps, baseline, threads = a.attention_layer, a.ig_steps, a.ig_baseline, a.threads_per_task
    shipped = ship(spark, payload)
    pairs = tuple(pairs) if removal_sample > 0 else ()

    def udf(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
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
            pairs=pairs,
        )
        scored = with_stats(scored, pending, PEAKS)
        return scored

    selected, schema = scoring_input(sessions, methods, vocab_fields, removal_sample > 0, bool(pairs))
    if a.partitions is not None:  # every core gets its share, however the split's sessions sit in files
        selected = selected.repartition(a.partitions, "session_id")
    return Scoring(selected, udf, schema.add(stats_field()), vocab_fields)


# The UDF's counters that are peaks, not sums.
PEAKS = ("rss_mb",)


def scoring_input(
    sessions: DataFrame,
    methods: Sequence[str | Method],
    vocab_fields: tuple[str, ...],
    removal: bool = False,
    pairs: bool = False,
) -> tuple[DataFrame, StructType]:
    """The sessions' columns the UDF reads or passes through, and the schema of what it returns."""
    from pyspark.sql.types import StructType

    keep = ["session_id", "label", "session_date", "event_types", "event_ts"]
    selected = sessions.select(*dict.fromkeys([*keep, *INPUT_COLUMNS]))
    returned = spark_fields(output_fields(methods, vocab_fields, removal, pairs))
    return selected, StructType([*selected.schema.fields, *returned])
