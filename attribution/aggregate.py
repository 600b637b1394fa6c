"""The tables people act on, in Spark SQL, from the event-level attribution table.

Nothing event-level reaches the driver: each table is a two-level group-by (per session, then per key)
whose result is small (event types, position bins, stores).

**Lift** (the seed's ``attribution_lift``) = mean attribution of the key's events in converted sessions
minus the same in non-converted sessions. Events of one session are not independent (the normalized
scores of a session sum to 1), so the standard error treats **sessions as clusters**: for the ratio
mean m = sum_i s_i / sum_i n_i over sessions i (s_i = the session's attribution on the key, n_i its events
of the key), Var(m) = G / (G - 1) * sum_i (s_i - m n_i)^2 / (sum_i n_i)^2, with G sessions. The lift's SE is
sqrt(Var_conv + Var_not), and the 95% CI is lift +/- 1.96 SE. A CI that contains 0 is ``significant = false``:
not distinguishable from noise.

**Length-adjusted attribution** = attribution x session_length, so 1.0 is an average share. The raw
normalized score is confounded by session length: an event in a 5-event session gets 5x the share of one
in a 25-event session, and converted sessions are longer or shorter than others for reasons of their own.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from attribution.events import POSITION_BINS

Z95 = 1.959963984540054
# method -> (normalized attribution column, signed contribution column or None)
METHOD_SCORES = {
    "grad_x_input": ("gradient_attribution", "contribution"),
    "attention": ("attention_attribution", None),
    "attention_rollout": ("rollout_attribution", None),
    "integrated_gradients": ("ig_attribution", "ig_contribution"),
}
DEFAULT_METHOD = "grad_x_input"


def long_format(events: DataFrame) -> DataFrame:
    """One row per (event, method present in the table): method, attribution, contribution."""
    present = [m for m, (a, _) in METHOD_SCORES.items() if a in events.columns]
    if not present:
        raise ValueError("the event table has no attribution column (gradient_attribution, ...)")
    per_method = F.array(
        *[
            F.struct(
                F.lit(m).alias("method"),
                F.col(a).cast("double").alias("attribution"),
                (F.col(c).cast("double") if c and c in events.columns else F.lit(None).cast("double")).alias(
                    "contribution"
                ),
            )
            for m, (a, c) in METHOD_SCORES.items()
            if m in present
        ]
    )
    keep = [
        c
        for c in (
            "session_id",
            "label",
            "event_position",
            "event_type",
            "store_id",
            "store_name",
            "session_length",
            "position_bin",
            "run_id",
        )
        if c in events.columns
    ]
    return events.select(*keep, F.explode(per_method).alias("m")).select(*keep, "m.*")


def _per_session(long: DataFrame, keys: list[str]) -> DataFrame:
    """Level 1: per (method, keys, label, session)."""
    return long.groupBy("method", *keys, "label", "session_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum("attribution").alias("s"),
        F.sum("contribution").alias("c"),
        F.sum(F.col("attribution") * F.col("session_length")).alias("adj"),
    )


def _per_label(per_session: DataFrame, keys: list[str]) -> DataFrame:
    """Level 2: per (method, keys, label): means and their session-clustered variance."""
    agg = per_session.groupBy("method", *keys, "label").agg(
        F.sum("n").alias("events"),
        F.count(F.lit(1)).alias("sessions"),
        F.sum("s").alias("S"),
        F.sum(F.col("s") * F.col("s")).alias("SS"),
        F.sum(F.col("s") * F.col("n")).alias("SN"),
        F.sum(F.col("n") * F.col("n")).alias("NN"),
        F.sum("c").alias("C"),
        F.sum("adj").alias("ADJ"),
    )
    mean = F.col("S") / F.col("events")
    g = F.col("sessions")
    resid = F.col("SS") - 2 * mean * F.col("SN") + mean * mean * F.col("NN")
    var = F.when(g > 1, (g / (g - 1)) * F.greatest(resid, F.lit(0.0)) / (F.col("events") * F.col("events")))
    return agg.select(
        "method",
        *keys,
        "label",
        "events",
        "sessions",
        mean.alias("mean"),
        var.alias("var"),
        (F.col("C") / F.col("events")).alias("contribution"),
        (F.col("ADJ") / F.col("events")).alias("length_adjusted"),
    )


def _side(df: DataFrame, label: int, keys: list[str]) -> DataFrame:
    suffix = "converted" if label == 1 else "not_converted"
    return df.where(F.col("label") == label).select(
        "method",
        *keys,
        F.col("mean").alias(suffix),
        F.col("var").alias(f"var_{suffix}"),
        F.col("events").alias(f"events_{suffix}"),
        F.col("sessions").alias(f"sessions_{suffix}"),
        F.col("contribution").alias(f"contribution_{suffix}"),
        F.col("length_adjusted").alias(f"length_adjusted_{suffix}"),
    )


def lift_table(long: DataFrame, keys: list[str]) -> DataFrame:
    """The lift table for ``keys``: one row per (method, keys) with both labels' statistics.

    A key seen under one label only gets 0 for the other side's mean (no events: no attribution), the
    seed's pivot with fill 0, and a null CI (nothing to compare against).
    """
    per_label = _per_label(_per_session(long, keys), keys)
    joined = _side(per_label, 1, keys).join(_side(per_label, 0, keys), ["method", *keys], "full_outer")
    conv = F.coalesce(F.col("converted"), F.lit(0.0))
    notc = F.coalesce(F.col("not_converted"), F.lit(0.0))
    se = F.sqrt(F.col("var_converted") + F.col("var_not_converted"))
    lift = conv - notc
    out = joined.select(
        "method",
        *keys,
        notc.alias("not_converted"),
        conv.alias("converted"),
        lift.alias("attribution_lift"),
        se.alias("lift_se"),
        (lift - Z95 * se).alias("lift_ci_low"),
        (lift + Z95 * se).alias("lift_ci_high"),
        *[
            F.coalesce(F.col(f"{c}_{s}"), F.lit(0)).alias(f"{c}_{s}")
            for c in ("events", "sessions")
            for s in ("converted", "not_converted")
        ],
        "contribution_converted",
        "contribution_not_converted",
        "length_adjusted_converted",
        "length_adjusted_not_converted",
        (
            F.coalesce(F.col("length_adjusted_converted"), F.lit(0.0))
            - F.coalesce(F.col("length_adjusted_not_converted"), F.lit(0.0))
        ).alias("length_adjusted_lift"),
    )
    return out.withColumn(
        "significant",
        F.when(F.col("lift_se").isNull(), F.lit(None)).otherwise(
            (F.col("lift_ci_low") > 0) | (F.col("lift_ci_high") < 0)
        ),
    )


def event_type_table(long: DataFrame) -> DataFrame:
    return lift_table(long, ["event_type"]).orderBy("method", F.desc("attribution_lift"), "event_type")


def _bin_order() -> Column:
    expr = F.lit(len(POSITION_BINS))
    for i, b in reversed(list(enumerate(POSITION_BINS))):
        expr = F.when(F.col("position_bin") == b, i).otherwise(expr)
    return expr


def position_table(long: DataFrame) -> DataFrame:
    return lift_table(long, ["position_bin"]).orderBy("method", _bin_order())


def store_table(long: DataFrame, min_events: int = 10) -> DataFrame:
    """Stores with at least ``min_events`` events: mean attribution over all their events, lift, rank
    (1 = highest mean attribution) within each method."""
    from pyspark.sql.window import Window

    with_store = long.where(F.col("store_id").isNotNull())
    overall = with_store.groupBy("method", "store_id").agg(
        F.first("store_name", ignorenulls=True).alias("store_name"),
        F.avg("attribution").alias("mean_attribution"),
        F.count(F.lit(1)).alias("event_count"),
        F.countDistinct("session_id").alias("sessions"),
    )
    lifts = lift_table(with_store, ["store_id"])
    table = overall.where(F.col("event_count") >= min_events).join(lifts, ["method", "store_id"], "left")
    rank = F.row_number().over(Window.partitionBy("method").orderBy(F.desc("mean_attribution"), "store_id"))
    return table.withColumn("rank", rank).orderBy("method", "rank")


def type_position_table(long: DataFrame, max_position: int = 20) -> DataFrame:
    """Mean attribution per event type and 1-based position (first ``max_position``), for the heatmap."""
    return (
        long.where(F.col("event_position") < max_position)
        .groupBy("method", "event_type", (F.col("event_position") + 1).alias("position"))
        .agg(F.avg("attribution").alias("mean_attribution"), F.count(F.lit(1)).alias("events"))
        .orderBy("method", "event_type", "position")
    )
