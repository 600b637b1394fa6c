"""The event-level attribution table: one row per (session, event), from the per-session score arrays.

Pure DataFrame transforms (testable with chispa). ``event_position`` is 0-based as in the seed's examples;
``position_bin`` is on the 1-based position (``1-5``, ``6-10``, ``11-20``, ``21-50``, ``50+``) so the first
event is in ``1-5`` (the seed's code lost position 0 from its bins).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

POSITION_BINS = ("1-5", "6-10", "11-20", "21-50", "50+")

# Per-event score arrays of the scored sessions -> event-table column, when the method ran.
SCORE_COLUMNS = (
    "gradient_attribution",
    "contribution",
    "attention_attribution",
    "rollout_attribution",
    "ig_attribution",
    "ig_contribution",
    # the removal effect of the event's type, position bin and store in its session (attribution/removal.py)
    "removal_effect_type",
    "removal_effect_position",
    "removal_effect_store",
)
# Per-event arrays of the sessions table carried into the event table.
EVENT_COLUMNS = {
    "event_type": "event_types",
    "event_name": "event_names",
    "store_id": "store_ids",
    "store_name": "store_names",
    "event_ts": "event_ts",
}


def position_bin(position_1based: Column) -> Column:
    p = position_1based
    return F.when(p <= 5, "1-5").when(p <= 10, "6-10").when(p <= 20, "11-20").when(p <= 50, "21-50").otherwise("50+")


def event_table(scored: DataFrame, run_id: str, model_sha256: str) -> DataFrame:
    """Explode scored sessions into the event-level table (columns in the seed's order first)."""
    scores = [c for c in SCORE_COLUMNS if c in scored.columns]
    arrays = {**{k: v for k, v in EVENT_COLUMNS.items()}, **{c: c for c in scores}}
    zipped = F.arrays_zip(*[F.col(src).alias(dst) for dst, src in arrays.items()])
    exploded = scored.select(
        "session_id",
        "label",
        "session_length",
        "session_date",
        "prediction",
        *([F.col("ig_completeness_gap")] if "ig_completeness_gap" in scored.columns else []),
        F.posexplode(zipped).alias("event_position", "e"),
    )
    seed_columns = ["session_id", "label", "event_position", "gradient_attribution", "event_type", "store_id"]
    extra = [
        "store_name",
        "event_name",
        "prediction",
        "contribution",
        "attention_attribution",
        "rollout_attribution",
        "ig_attribution",
        "ig_contribution",
        "ig_completeness_gap",
        "removal_effect_type",
        "removal_effect_position",
        "removal_effect_store",
        "session_length",
        "position_bin",
        "event_ts",
        "run_id",
        "model_sha256",
        "session_date",
    ]
    flat = (
        exploded.select("*", *[F.col(f"e.{name}").alias(name) for name in arrays])
        .drop("e")
        .withColumn("position_bin", position_bin(F.col("event_position") + 1))
        .withColumn("run_id", F.lit(run_id))
        .withColumn("model_sha256", F.lit(model_sha256))
    )
    ordered = [c for c in seed_columns + extra if c in flat.columns]
    return flat.select(*ordered)
