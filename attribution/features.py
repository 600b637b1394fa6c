"""From the sessions table to model input: vocabularies (built in Spark) and Arrow -> tensor encoding.

The encoding is plain pyarrow/numpy so training, the attribution UDF, the benchmarks and ``explain`` all
turn the same Arrow columns into the same token ids. Sessions stay ragged (flat values + offsets) until a
batch is padded, so memory follows the number of real events, never ``sessions x max_length``.

Token ids per field: 0 = ``<PAD>`` (also an absent value, e.g. an event without a store: its embedding is
zero), 1 = ``<UNK>`` (a value the vocabulary does not hold: rare in training, or new at scoring time),
2.. = the vocabulary, most frequent first.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from attribution.schema import MODEL_FIELDS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

PAD, UNK = 0, 1
PAD_TOKEN, UNK_TOKEN = "<PAD>", "<UNK>"
# Continuous per-event features of a new model, in this order. The time is the event's own dwell: the
# seconds until the next model-input event (0 for the last; the funnel events are not model input, so
# it never measures the wait for one). The seconds since the previous event would describe the previous
# event's dwell, so it would hand that event's effect to its successor.
CONTINUOUS = ("log_seconds_to_next", "log_event_rank", "has_event_rank", "is_new_vertical")
# The features of models saved before the dwell existed: the seconds since the previous event instead.
CONTINUOUS_BEFORE_DWELL = ("log_seconds_from_prev", *CONTINUOUS[1:])
# Every feature the encoding knows, so a model of either kind is encoded with its own.
KNOWN_CONTINUOUS = (*CONTINUOUS, *CONTINUOUS_BEFORE_DWELL[:1])
GAP_CAP_SECONDS = 3600.0
RANK_SCALE = math.log1p(50.0)


class FeatureMismatch(ValueError):
    """The data and the model disagree on their features (a missing column, a different vocabulary)."""


# --------------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabularies:
    """One vocabulary per categorical field: ``tokens[field]`` lists the values of ids 2, 3, ..."""

    tokens: dict[str, list[str]]
    min_frequency: int

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.tokens)

    def size(self, field: str) -> int:
        return len(self.tokens[field]) + 2

    def to_json(self) -> str:
        doc = {
            "special": [PAD_TOKEN, UNK_TOKEN],
            "min_frequency": self.min_frequency,
            "fields": {f: [PAD_TOKEN, UNK_TOKEN, *toks] for f, toks in self.tokens.items()},
        }
        return json.dumps(doc, indent=1, ensure_ascii=False)

    @staticmethod
    def from_json(text: str) -> Vocabularies:
        doc = json.loads(text)
        tokens = {}
        for f, toks in doc["fields"].items():
            if toks[:2] != [PAD_TOKEN, UNK_TOKEN]:
                raise FeatureMismatch(f"vocabulary {f}: ids 0 and 1 must be {PAD_TOKEN} and {UNK_TOKEN}")
            tokens[f] = list(toks[2:])
        return Vocabularies(tokens=tokens, min_frequency=int(doc["min_frequency"]))

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def build_vocabularies(
    sessions: DataFrame, min_frequency: int, max_size: int, fields: tuple[str, ...] = MODEL_FIELDS
) -> tuple[Vocabularies, dict[str, dict[str, int]]]:
    """Count each field's values over ``sessions`` (the training split) in Spark, in one pass.

    Keeps values seen at least ``min_frequency`` times, at most ``max_size`` per field (most frequent
    first, ties by value so the result is deterministic). A field with no values at all (the input
    contract lacks it, e.g. no stores dimension) is left out, so the model has no embedding for it.
    Returns the vocabularies and, per field, the distinct/kept/dropped counts for the run summary.
    Only the per-value counts above the threshold reach the driver, never the events.
    """
    from pyspark.sql import functions as F  # here, so the encoding and attribution run without Spark
    from pyspark.sql.window import Window

    missing = [f for f in fields if f not in sessions.columns]
    if missing:
        raise FeatureMismatch(f"sessions table lacks column(s) {', '.join(missing)}")

    def tagged(name: str) -> Column:
        # (field, value) pairs; a one-argument lambda, since Spark passes the index to a second one
        return F.transform(F.col(name), lambda v: F.struct(F.lit(name).alias("field"), v.alias("value")))

    stacked = sessions.select(F.explode(F.array(*[tagged(f) for f in fields])).alias("per_field")).select(
        F.explode("per_field").alias("x")
    )
    counts = stacked.where(F.col("x.value").isNotNull()).groupBy("x.field", "x.value").count()
    ranked = counts.withColumn(
        "rank",
        F.row_number().over(Window.partitionBy("field").orderBy(F.desc("count"), F.asc("value"))),
    )
    stats_rows = (
        counts.groupBy("field")
        .agg(
            F.count("*").alias("distinct"),
            F.sum(F.when(F.col("count") >= min_frequency, 1).otherwise(0)).alias("frequent"),
        )
        .collect()
    )
    kept_rows = (
        ranked.where((F.col("count") >= min_frequency) & (F.col("rank") <= max_size))
        .select("field", "value", "rank")
        .collect()
    )
    by_field: dict[str, list[tuple[int, str]]] = {}
    for r in kept_rows:
        by_field.setdefault(r["field"], []).append((r["rank"], r["value"]))
    tokens = {f: [v for _, v in sorted(by_field[f])] for f in fields if by_field.get(f)}
    stats = {}
    for r in stats_rows:
        kept = len(tokens.get(r["field"], []))
        stats[r["field"]] = {"distinct": int(r["distinct"]), "kept": kept, "to_unk": int(r["distinct"]) - kept}
    return Vocabularies(tokens=tokens, min_frequency=min_frequency), stats


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


@dataclass
class EncodedSessions:
    """Ragged encoded sessions: per-event arrays of length ``offsets[-1]``, session i is
    ``offsets[i]:offsets[i+1]``."""

    offsets: np.ndarray  # int64 (n+1,)
    tokens: dict[str, np.ndarray]  # field -> int64 (total,)
    continuous: np.ndarray  # float32 (total, len(CONTINUOUS))
    unknown: dict[str, int]  # field -> events whose value mapped to <UNK>

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def batch(self, rows: np.ndarray | list[int], min_length: int = 1) -> dict[str, np.ndarray]:
        """Pad sessions ``rows`` to the longest among them: tokens (B, L) int64, continuous (B, L, C),
        mask (B, L) bool (True = a real event)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lens = self.offsets[rows], self.lengths[rows]
        width = max(int(lens.max()) if len(rows) else 0, min_length)
        pos = np.arange(width)
        mask = pos[None, :] < lens[:, None]
        src = (starts[:, None] + pos[None, :])[mask]
        out = {"mask": mask}
        for f, arr in self.tokens.items():
            t = np.zeros((len(rows), width), dtype=np.int64)
            t[mask] = arr[src]
            out[f] = t
        c = np.zeros((len(rows), width, self.continuous.shape[1]), dtype=np.float32)
        c[mask] = self.continuous[src]
        out["continuous"] = c
        return out


def flatten_lists(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A list column -> (its values, flattened, respecting slices) and per-row lengths (nulls as 0)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pc.list_flatten(arr), lengths


def encode_sessions(
    table: pa.Table | pa.RecordBatch, vocab: Vocabularies, continuous: tuple[str, ...] = CONTINUOUS
) -> EncodedSessions:
    """Encode the sessions in ``table`` (columns of the sessions table) with ``vocab``, and the
    ``continuous`` features (a model's ``spec.continuous``; any of ``KNOWN_CONTINUOUS``) in that order.

    Every list column must have ``session_length`` entries per row; a row whose arrays disagree is a
    corrupt sessions table and raises rather than silently misaligning features and events.
    """
    unknown_features = [c for c in continuous if c not in KNOWN_CONTINUOUS]
    if unknown_features:
        raise FeatureMismatch(
            f"the model uses continuous feature(s) {', '.join(unknown_features)} that this code does not compute"
        )
    names = set(table.schema.names)
    needed = [*vocab.fields, "seconds_from_prev", "event_ranks", "is_new_vertical"]
    missing = [c for c in needed if c not in names]
    if missing:
        raise FeatureMismatch(f"the sessions lack column(s) {', '.join(missing)} that the model's features need")
    ref_values, lengths = flatten_lists(table.column("seconds_from_prev"))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens, unknown = {}, {}
    for f in vocab.fields:
        values, lens = flatten_lists(table.column(f))
        if not np.array_equal(lens, lengths):
            raise FeatureMismatch(f"column {f}: array lengths differ from seconds_from_prev in some sessions")
        value_set = pa.array(vocab.tokens[f], type=pa.string())
        if values.type != pa.string():
            values = pc.cast(values, pa.string())
        idx = pc.index_in(values, value_set=value_set)
        present = pc.is_valid(values).to_numpy(zero_copy_only=False)
        found = pc.is_valid(idx).to_numpy(zero_copy_only=False)
        ids = pc.fill_null(idx, -2).to_numpy(zero_copy_only=False).astype(np.int64) + 2
        ids[present & ~found] = UNK
        ids[~present] = PAD
        tokens[f] = ids
        unknown[f] = int((present & ~found).sum())
    gaps = np.nan_to_num(ref_values.to_numpy(zero_copy_only=False).astype(np.float64), nan=0.0)
    rank_values, rank_lens = flatten_lists(table.column("event_ranks"))
    nv_values, nv_lens = flatten_lists(table.column("is_new_vertical"))
    for name, lens in (("event_ranks", rank_lens), ("is_new_vertical", nv_lens)):
        if not np.array_equal(lens, lengths):
            raise FeatureMismatch(f"column {name}: array lengths differ from seconds_from_prev in some sessions")
    ranks = pc.fill_null(pc.cast(rank_values, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    has_rank = ~np.isnan(ranks)
    new_vertical = pc.fill_null(pc.cast(nv_values, pa.float32()), 0.0).to_numpy(zero_copy_only=False)
    since_prev = np.log1p(np.clip(gaps, 0.0, GAP_CAP_SECONDS)) / math.log1p(GAP_CAP_SECONDS)
    # An event's wait until the next is the next event's wait since the previous; the last event of a
    # session has none.
    to_next = np.zeros_like(since_prev)
    to_next[:-1] = since_prev[1:]
    to_next[(offsets[1:] - 1)[lengths > 0]] = 0.0
    values = {
        "log_seconds_to_next": to_next,
        "log_seconds_from_prev": since_prev,
        "log_event_rank": np.where(has_rank, np.log1p(np.clip(np.nan_to_num(ranks), 0.0, None)) / RANK_SCALE, 0.0),
        "has_event_rank": has_rank,
        "is_new_vertical": new_vertical,
    }
    cont = np.zeros((len(gaps), len(continuous)), dtype=np.float32)
    for i, name in enumerate(continuous):
        cont[:, i] = values[name]
    return EncodedSessions(offsets=offsets, tokens=tokens, continuous=cont, unknown=unknown)


def length_buckets(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    pool: int = 50,
    max_positions: int | None = None,
    min_efficiency: float = 0.9,
) -> list[np.ndarray]:
    """Group session indices into batches of similar length so little compute goes to padding.

    With ``rng`` (training): shuffle, sort within pools of ``pool`` batches, shuffle the batches.
    Without (scoring): sort everything by length and cut batches of at most ``batch_size`` sessions and
    at most ``max_positions`` padded positions (sessions x the longest), so long sessions come in smaller
    batches and memory stays bounded; a batch also stops growing when less than ``min_efficiency`` of its
    positions would be real events. The caller restores the order.
    """
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        if max_positions is None:
            return [order[i : i + batch_size] for i in range(0, n, batch_size)]
        sorted_lengths = np.maximum(lengths[order], 1)
        batches, start = [], 0
        while start < n:
            limit = min(batch_size, n - start)
            lens = sorted_lengths[start : start + limit]
            t = np.arange(1, limit + 1)
            cost = t * lens  # t sessions padded to the t-th (the longest so far)
            efficiency = np.cumsum(lens) / cost
            # grow while the batch fits the position budget and stays >= min_efficiency real events
            # (a few sessions are always allowed, so a long tail does not become batches of one)
            ok = (cost <= max_positions) & ((efficiency >= min_efficiency) | (t <= 8))
            take = max(1, int(np.argmin(ok)) if not ok.all() else limit)
            batches.append(order[start : start + take])
            start += take
        return batches
    order = rng.permutation(n)
    chunk = batch_size * pool
    batches = []
    for i in range(0, n, chunk):
        part = order[i : i + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches
