"""The tables people act on, in Spark SQL, from the event-level attribution table.

Nothing event-level reaches the driver. Every table comes from one Spark job, :func:`lift_stats`: each
event is tagged with the keys it counts under (its event type, its position bin, its store, its event
type x position), then a two-level group-by (per session, then per key, both labels side by side by
conditional aggregation, so no join) gives one small row per (method, table, key). :func:`tables`
collects those rows as Arrow and cuts the four tables out of them on the driver (order, store rank).

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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
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


# table -> its key columns; a key column of another table is null in that table's rows of lift_stats
KINDS = {
    "event_type": ("event_type",),
    "position": ("position_bin",),
    "store": ("store_id",),
    "type_position": ("event_type", "position"),
}
# store_name is a key beside store_id (sessionize refuses a stores dimension with duplicate ids, so it
# adds no groups): an aggregate over a string (first(store_name)) would force Spark's sort-based
# aggregation, which took 5 of the 7 seconds at 307k events.
KEY_COLUMNS = ("event_type", "position_bin", "store_id", "store_name", "position")
LABELS = ((1, "converted"), (0, "not_converted"))
LIFT_COLUMNS = (
    "not_converted",
    "converted",
    "attribution_lift",
    "lift_se",
    "lift_ci_low",
    "lift_ci_high",
    "events_converted",
    "events_not_converted",
    "sessions_converted",
    "sessions_not_converted",
    "contribution_converted",
    "contribution_not_converted",
    "length_adjusted_converted",
    "length_adjusted_not_converted",
    "length_adjusted_lift",
    "significant",
)


def _tagged(long: DataFrame, kinds, max_position: int) -> DataFrame:
    """One row per (event, method, table it counts in): ``kind`` and the key columns (null where unused).
    Stores count only events with a store; type x position only the first ``max_position`` positions."""
    if "store_name" not in long.columns:
        long = long.withColumn("store_name", F.lit(None).cast("string"))
    types = dict(long.dtypes)

    def key(kind: str, **cols) -> F.Column:
        fields = [F.lit(kind).alias("kind")]
        for c in KEY_COLUMNS:
            fields.append((cols[c] if c in cols else F.lit(None).cast(types.get(c, "int"))).alias(c))
        return F.struct(*fields)

    options = {
        "event_type": (key("event_type", event_type=F.col("event_type")), None),
        "position": (key("position", position_bin=F.col("position_bin")), None),
        "store": (
            key("store", store_id=F.col("store_id"), store_name=F.col("store_name")),
            F.col("store_id").isNotNull(),
        ),
        "type_position": (
            key("type_position", event_type=F.col("event_type"), position=(F.col("event_position") + 1).cast("int")),
            F.col("event_position") < max_position,
        ),
    }
    unknown = set(kinds) - set(options)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; known: {', '.join(options)}")
    tags = F.array(*[F.when(cond, k) if cond is not None else k for k, cond in (options[t] for t in kinds)])
    cols = ["method", "label", "attribution", "contribution", "session_length"]
    # The heatmap's cells need means and counts only, not session-clustered CIs: their rows carry no
    # session, so the per-session level folds each cell into one row per label (an event's (type,
    # position) is unique in its session: keeping sessions would not reduce those rows at all).
    session = F.when(F.col("k.kind") != "type_position", F.col("session_id")).alias("session_id")
    # explode then filter (not a higher-order filter on the array, which Spark interprets row by row)
    return (
        long.select(*cols, "session_id", F.explode(tags).alias("k"))
        .where(F.col("k").isNotNull())
        .select(*cols, session, "k.*")
    )


def lift_stats(long: DataFrame, kinds=tuple(KINDS), max_position: int = 20) -> DataFrame:
    """One row per (method, kind, key): both labels' statistics, the lift with its session-clustered CI,
    and the key's overall mean attribution, events and sessions. One Spark job, two group-bys.
    Type x position rows have means, lifts and event counts, but no session counts and no CI."""
    group = ["method", "kind", *KEY_COLUMNS]
    per_session = (
        _tagged(long, kinds, max_position)
        .groupBy(*group, "label", "session_id")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("attribution").alias("s"),
            F.sum("contribution").alias("c"),
            F.sum(F.col("attribution") * F.col("session_length")).alias("adj"),
        )
    )
    aggs = [
        F.sum("s").alias("S_all"),
        F.sum("n").alias("event_count"),
        F.count(F.lit(1)).alias("sessions"),
    ]
    for value, suffix in LABELS:

        def on(x, value=value):
            return F.when(F.col("label") == value, x)

        aggs += [
            F.sum(on(F.col("n"))).alias(f"E_{suffix}"),
            F.count(on(F.lit(1))).alias(f"G_{suffix}"),
            F.sum(on(F.col("s"))).alias(f"S_{suffix}"),
            F.sum(on(F.col("s") * F.col("s"))).alias(f"SS_{suffix}"),
            F.sum(on(F.col("s") * F.col("n"))).alias(f"SN_{suffix}"),
            F.sum(on(F.col("n") * F.col("n"))).alias(f"NN_{suffix}"),
            F.sum(on(F.col("c"))).alias(f"C_{suffix}"),
            F.sum(on(F.col("adj"))).alias(f"ADJ_{suffix}"),
        ]
    agg = per_session.groupBy(*group).agg(*aggs)

    # Each step names its results and the next refers to them by name: written as one expression, the
    # means would be repeated inside the variances, the SE inside the CI and the CI inside ``significant``,
    # and planning and code generation of that tree took seconds per query.
    c = F.col
    means = agg.withColumns(
        {f"mean_{sfx}": c(f"S_{sfx}") / c(f"E_{sfx}") for _, sfx in LABELS}  # null: no events under this label
    )
    variances = means.withColumns(
        {
            f"var_{sfx}": F.when(
                c(f"G_{sfx}") > 1,
                (c(f"G_{sfx}") / (c(f"G_{sfx}") - 1))
                * F.greatest(
                    c(f"SS_{sfx}") - 2 * c(f"mean_{sfx}") * c(f"SN_{sfx}") + c(f"mean_{sfx}") ** 2 * c(f"NN_{sfx}"),
                    F.lit(0.0),
                )
                / (c(f"E_{sfx}") * c(f"E_{sfx}")),
            )
            for _, sfx in LABELS
        }
    )
    # a key seen under one label only: 0 for the other side's mean (the seed's pivot with fill 0), null CI
    lifts = variances.select(
        *group,
        (c("S_all") / c("event_count")).alias("mean_attribution"),
        "event_count",
        "sessions",
        F.coalesce(c("mean_not_converted"), F.lit(0.0)).alias("not_converted"),
        F.coalesce(c("mean_converted"), F.lit(0.0)).alias("converted"),
        F.sqrt(c("var_converted") + c("var_not_converted")).alias("lift_se"),
        *[F.coalesce(c(f"E_{sfx}"), F.lit(0)).alias(f"events_{sfx}") for _, sfx in LABELS],
        *[c(f"G_{sfx}").alias(f"sessions_{sfx}") for _, sfx in LABELS],
        *[(c(f"C_{sfx}") / c(f"E_{sfx}")).alias(f"contribution_{sfx}") for _, sfx in LABELS],
        *[(c(f"ADJ_{sfx}") / c(f"E_{sfx}")).alias(f"length_adjusted_{sfx}") for _, sfx in LABELS],
    ).withColumn("attribution_lift", c("converted") - c("not_converted"))
    bounds = lifts.withColumns(
        {
            "lift_ci_low": c("attribution_lift") - Z95 * c("lift_se"),
            "lift_ci_high": c("attribution_lift") + Z95 * c("lift_se"),
            "length_adjusted_lift": F.coalesce(c("length_adjusted_converted"), F.lit(0.0))
            - F.coalesce(c("length_adjusted_not_converted"), F.lit(0.0)),
        }
    ).withColumn(
        "significant",
        F.when(c("lift_se").isNull(), F.lit(None)).otherwise((c("lift_ci_low") > 0) | (c("lift_ci_high") < 0)),
    )
    no_sessions = {  # type x position: sessions were not kept (see _tagged), so no session counts or CI
        name: F.when(c("kind") != "type_position", c(name))
        for name in ("sessions", "sessions_converted", "sessions_not_converted")
    }
    return bounds.withColumns(no_sessions).select(*group, "mean_attribution", "event_count", "sessions", *LIFT_COLUMNS)


def _order(table: pa.Table, keys: list[tuple[str, str]]) -> pa.Table:
    return table.take(pc.sort_indices(table, sort_keys=keys, null_placement="at_end"))


def _bin_index(table: pa.Table) -> pa.Array:
    idx = pc.index_in(table["position_bin"], value_set=pa.array(POSITION_BINS, pa.string()))
    return pc.fill_null(idx, len(POSITION_BINS))


def finish(stats: pa.Table, kind: str, min_events: int = 10) -> pa.Table:
    """One table out of the collected :func:`lift_stats` rows: its columns, its order (event types by
    lift, descending; position bins in order; stores ranked by mean attribution, those with at least
    ``min_events`` events; type x position by type and position)."""
    rows = stats.filter(pc.equal(stats["kind"], kind))
    if kind == "event_type":
        out = rows.select(["method", "event_type", *LIFT_COLUMNS])
        return _order(out, [("method", "ascending"), ("attribution_lift", "descending"), ("event_type", "ascending")])
    if kind == "position":
        out = rows.select(["method", "position_bin", *LIFT_COLUMNS]).append_column("_bin", _bin_index(rows))
        return _order(out, [("method", "ascending"), ("_bin", "ascending")]).drop_columns(["_bin"])
    if kind == "store":
        rows = rows.filter(pc.greater_equal(rows["event_count"], min_events))
        cols = ["method", "store_id", "store_name", "mean_attribution", "event_count", "sessions", *LIFT_COLUMNS]
        out = _order(
            rows.select(cols), [("method", "ascending"), ("mean_attribution", "descending"), ("store_id", "ascending")]
        )
        method = out["method"].to_numpy(zero_copy_only=False)
        starts = np.r_[0, np.flatnonzero(method[1:] != method[:-1]) + 1] if len(method) else np.array([], int)
        first = np.zeros(len(method), dtype=np.int64)
        first[starts] = starts
        rank = np.arange(len(method)) - np.maximum.accumulate(first) + 1  # 1 = highest within each method
        return out.append_column("rank", pa.array(rank, pa.int32()))
    if kind == "type_position":
        out = rows.select(["method", "event_type", "position", "mean_attribution", "event_count"])
        out = out.rename_columns(["method", "event_type", "position", "mean_attribution", "events"])
        return _order(out, [("method", "ascending"), ("event_type", "ascending"), ("position", "ascending")])
    raise ValueError(f"unknown table {kind!r}; known: {', '.join(KINDS)}")


def tables(long: DataFrame, min_events: int = 10, max_position: int = 20, kinds=tuple(KINDS)) -> dict[str, pa.Table]:
    """Every table in ``kinds`` from one Spark job, as Arrow (small; Arrow keeps Spark's types, also for an
    empty table)."""
    stats = lift_stats(long, kinds, max_position).toArrow()
    return {kind: finish(stats, kind, min_events) for kind in kinds}
