"""The tables people act on, in Spark SQL, from the event-level attribution table.

Nothing event-level reaches the driver. Every table comes from one Spark job, :func:`lift_stats`: each
event is tagged with the keys it counts under (its event type, its position bin, its store, its event
type x position), then a two-level group-by (per session, then per key, both labels side by side by
conditional aggregation, so no join) gives one small row per (method, table, key). :func:`tables`
collects those rows as Arrow and cuts the four tables out of them on the driver (order, store rank).

**Lift** (the original analysis's ``attribution_lift``) = mean attribution of the key's events in converted sessions
minus the same in non-converted sessions. Events of one session are not independent (the normalized
scores of a session sum to 1), so the standard error treats **sessions as clusters**: for the ratio
mean m = sum_i s_i / sum_i n_i over sessions i (s_i = the session's attribution on the key, n_i its events
of the key), Var(m) = G / (G - 1) * sum_i (s_i - m n_i)^2 / (sum_i n_i)^2, with G sessions. The lift's SE is
sqrt(Var_conv + Var_not), and the 95% CI is lift +/- 1.96 SE. A CI that contains 0 is ``significant = false``:
not distinguishable from noise.

**Effect** (the headline of every table) = the mean **signed contribution** per event of the key, over
both labels, in log-odds units: how much, on average, one event of that key moves the model's logit
towards (+) or away from (-) conversion. Methods with a signed contribution have it (grad_x_input:
``contribution``; integrated_gradients: ``ig_contribution``); attention methods don't (null). Its 95% CI
is session-clustered as above, over the key's sessions pooled across labels; ``effect_verdict`` says
whether the CI lies above 0 (``drives conversion``), below it (``holds conversion back``), or crosses it
(``indistinguishable from noise``). ``mean_abs_effect_log_odds`` is how far the key's events move the
logit either way (the position table's reading of "which steps matter most").

**Store effect, net of type and position**: a store's events are mostly views and page loads, whose
type and position already explain much of their contribution. ``net_effect_log_odds`` is the mean of
(contribution - the mean contribution of store events of the same event type and position bin), with
its session-clustered CI; ``shrunk_net_effect_log_odds`` pulls it towards 0 by its support (empirical
Bayes: x tau^2 / (tau^2 + se^2 + b / sessions), where b / sessions is the noise of the model's estimate
for a store it saw rarely, fitted on the stores as if most had no effect of their own, and tau^2 the
spread of the true effects around 0, see :func:`shrink`), so a store seen in a few sessions can't top
the ranking by luck.
Stores are ranked by the shrunk effect, among those with at least ``min_sessions`` sessions.

**Removal effect** (``removal_effect_pp``): :mod:`attribution.removal_tables`.

**Length-adjusted attribution** = attribution x session_length, so 1.0 is an average share. The raw
normalized score is confounded by session length: an event in a 5-event session gets 5x the share of one
in a 25-event session, and converted sessions are longer or shorter than others for reasons of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from attribution import methods
from attribution.removal_tables import pair_table
from attribution.schema import (
    CONTEXT_KINDS,
    KEY_COLUMNS,
    LIFT_COLUMNS,
    OCCURRENCE,
    OCCURRENCES,
    PAIR_TABLE,
    PREVIOUS_EVENT_TYPE,
    RECENCIES,
    RECENCY,
    START,
    TABLE_KINDS,
)
from attribution.statistics import clustered_ratio_mean, normal_ci
from attribution.table_layouts import finish

# the effect verdicts: the CI above 0, below 0, or across it
DRIVES, HOLDS_BACK, NOISE = "drives conversion", "holds conversion back", "indistinguishable from noise"
SUPPORT_COLUMNS = ("events", "sessions", "mean_abs_effect_log_odds")


def long_format(events: DataFrame) -> DataFrame:
    """One row per (event, registered method present in the table): method, attribution, contribution
    (null for a method without a signed contribution)."""
    present = methods.present(events.columns)
    if not present:
        known = ", ".join(m.attribution for m in methods.REGISTRY.values())
        raise ValueError(f"the event table has no attribution column ({known})")
    per_method = F.array(
        *[
            F.struct(
                F.lit(m.name).alias("method"),
                F.col(m.attribution).cast("double").alias("attribution"),
                (
                    F.col(m.contribution).cast("double")
                    if m.contribution and m.contribution in events.columns
                    else F.lit(None).cast("double")
                ).alias("contribution"),
            )
            for m in present
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
            "session_date",
        )
        if c in events.columns
    ]
    # The context columns are computed in a projection of their own, one row per event, and the methods
    # exploded after it: in one projection with the explode, Spark ran the window over the exploded rows,
    # so an event's other-method copies counted as its predecessors.
    context = (OCCURRENCE, PREVIOUS_EVENT_TYPE, RECENCY)
    with_context = events.select(*keep, *context_columns(events), per_method.alias("_methods"))
    return with_context.select(*keep, *context, F.explode("_methods").alias("m")).select(*keep, *context, "m.*")


def context_columns(events: DataFrame) -> list[Column]:
    """Each event's context, for the context tables: its occurrence of its type in the session (``1st``,
    ``2nd``, ``3rd+``), the model-input event just before it (``<start>`` for the first), and its distance
    from the session's last event (``last``, ``2-3 from the end``, ``earlier``). One window over each
    session's events in order (one shuffle of the event table by session)."""
    in_order = Window.partitionBy("session_id").orderBy("event_position")
    before = F.collect_list("event_type").over(in_order.rowsBetween(Window.unboundedPreceding, -1))
    nth = F.size(F.filter(before, lambda t: t == F.col("event_type"))) + 1
    from_end = F.col("session_length") - F.col("event_position") - 1
    return [
        F.when(nth == 1, OCCURRENCES[0]).when(nth == 2, OCCURRENCES[1]).otherwise(OCCURRENCES[2]).alias(OCCURRENCE),
        F.coalesce(F.lag("event_type").over(in_order), F.lit(START)).alias(PREVIOUS_EVENT_TYPE),
        F.when(from_end <= 0, RECENCIES[0]).when(from_end <= 2, RECENCIES[1]).otherwise(RECENCIES[2]).alias(RECENCY),
    ]


# table -> its key columns (attribution/schema.py)
KINDS = {k.name: k.keys for k in TABLE_KINDS}
# context table -> its context column (the key beside the event type)
CONTEXT_KEYS = {name: KINDS[name][1] for name in CONTEXT_KINDS}
LABELS = ((1, "converted"), (0, "not_converted"))


def _tagged(long: DataFrame, kinds: Sequence[str], max_position: int) -> DataFrame:
    """One row per (event, method, table it counts in): ``kind`` and the key columns (null where unused).
    Stores count only events with a store; type x position only the first ``max_position`` positions."""
    if "store_name" not in long.columns:
        long = long.withColumn("store_name", F.lit(None).cast("string"))
    for column in CONTEXT_KEYS.values():  # a long format built without them (older callers) has no context
        if column not in long.columns:
            long = long.withColumn(column, F.lit(None).cast("string"))
    types = dict(long.dtypes)

    def key(kind: str, **cols: Column) -> Column:
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
        **{
            kind: (key(kind, event_type=F.col("event_type"), **{column: F.col(column)}), None)
            for kind, column in CONTEXT_KEYS.items()
        },
    }
    unknown = set(kinds) - set(options)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; known: {', '.join(options)}")
    tags = F.array(*[F.when(cond, k) if cond is not None else k for k, cond in (options[t] for t in kinds)])
    if "session_date" not in long.columns:
        long = long.withColumn("session_date", F.lit(None).cast("date"))
    cols = ["method", "label", "attribution", "contribution", "session_length", "session_date"]
    # The heatmap's cells need means and counts only, not session-clustered CIs: their rows carry no
    # session, so the per-session level folds each cell into one row per label (an event's (type,
    # position) is unique in its session: keeping sessions would not reduce those rows at all).
    session = F.when(F.col("k.kind") != "type_position", F.col("session_id")).alias("session_id")
    # a store event's (type, position bin) cell: its net effect is measured against the cell's mean
    is_store = F.col("k.kind") == "store"
    cells = [
        F.when(is_store, F.col("event_type")).alias("cell_type"),
        F.when(is_store, F.col("position_bin")).alias("cell_bin"),
    ]
    # explode then filter (not a higher-order filter on the array, which Spark interprets row by row)
    return (
        long.select(*cols, "session_id", "event_type", "position_bin", F.explode(tags).alias("k"))
        .where(F.col("k").isNotNull())
        .select(*cols, session, *cells, "k.*")
    )


def cell_sums(long: DataFrame) -> DataFrame:
    """Per (method, event type, position bin[, session_date]): the sum and count of the contributions of
    store events. Additive across days; their ratio is the cell mean a store's net effect is measured
    against."""
    stored = long.where(F.col("store_id").isNotNull() & F.col("contribution").isNotNull())
    day = ["session_date"] if "session_date" in long.columns else []
    return stored.groupBy("method", "event_type", "position_bin", *day).agg(
        F.sum("contribution").alias("cell_sum"), F.count(F.lit(1)).alias("cell_events")
    )


def session_rows(long: DataFrame, kinds: Sequence[str] = tuple(KINDS), max_position: int = 20) -> DataFrame:
    """The first level of :func:`lift_stats`, additive across days: per (method, kind, key, label, session,
    session_date), and for store rows per (type, position bin) cell of the store's events, the events
    ``n`` and the sums of attribution ``s``, contribution ``c``, |contribution| ``abs_c`` and attribution x
    session length ``adj``. A day's rows, stored, give with other days' the window's statistics exactly
    (:func:`statistics_from`)."""
    group = ["method", "kind", *KEY_COLUMNS, "label", "session_id", "session_date", "cell_type", "cell_bin"]
    return (
        _tagged(long, kinds, max_position)
        .groupBy(*group)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("attribution").alias("s"),
            F.sum("contribution").alias("c"),
            F.sum(F.abs("contribution")).alias("abs_c"),
            F.sum(F.col("attribution") * F.col("session_length")).alias("adj"),
        )
    )


def _per_session(rows: DataFrame, cells: DataFrame) -> DataFrame:
    """:func:`session_rows` (of any days) -> one row per (method, kind, key, label, session) with ``r``,
    the store's net contribution: sum over its cells of c - n x the cell's mean over all the days given
    (the cell means are few, methods x types x bins, and joined by broadcast)."""
    means = (
        cells.groupBy("method", "event_type", "position_bin")
        .agg((F.sum("cell_sum") / F.sum("cell_events")).alias("_mean"))
        .withColumnRenamed("event_type", "cell_type")
        .withColumnRenamed("position_bin", "cell_bin")
    )
    joined = rows.join(F.broadcast(means), ["method", "cell_type", "cell_bin"], "left")
    net = F.when(F.col("kind") == "store", F.col("c") - F.col("n") * F.col("_mean"))
    group = ["method", "kind", *KEY_COLUMNS, "label", "session_id", "session_date"]
    return joined.groupBy(*group).agg(
        F.sum("n").alias("n"),
        F.sum("s").alias("s"),
        F.sum("c").alias("c"),
        F.sum("abs_c").alias("abs_c"),
        F.sum(net).alias("r"),
        F.sum("adj").alias("adj"),
    )


def _verdict(low: F.Column, high: F.Column) -> F.Column:
    return (
        F.when(low.isNull() | high.isNull(), F.lit(None).cast("string"))
        .when(low > 0, F.lit(DRIVES))
        .when(high < 0, F.lit(HOLDS_BACK))
        .otherwise(F.lit(NOISE))
    )


def lift_stats(long: DataFrame, kinds: Sequence[str] = tuple(KINDS), max_position: int = 20) -> DataFrame:
    """One row per (method, kind, key): both labels' statistics, the lift with its session-clustered CI,
    the effect (mean signed contribution) with its CI, the store effect net of type and position, and
    the key's overall mean attribution, events and sessions. Two group-bys after a broadcast join of
    the type x position cell means. Type x position rows have means, lifts, effects and event counts,
    but no session counts and no CI."""
    return statistics_from(session_rows(long, kinds, max_position), cell_sums(long))


GROUP = ["method", "kind", *KEY_COLUMNS]


def _net_aggs() -> list:
    """The per-key sums over sessions of the store's net contribution r (needs the window's cell means)."""
    return [
        # net: only events with a store have one, so its own event count
        F.sum(F.when(F.col("r").isNotNull(), F.col("n"))).cast("double").alias("NR_all"),
        F.sum(F.when(F.col("r").isNotNull(), F.col("n") * F.col("n"))).cast("double").alias("NNR_all"),
        F.count(F.col("r")).alias("GR_all"),
        F.sum("r").alias("R_all"),
        F.sum(F.col("r") * F.col("r")).alias("RR_all"),
        F.sum(F.col("r") * F.col("n")).alias("RN_all"),
    ]


NET_SUMS = ("NR_all", "NNR_all", "GR_all", "R_all", "RR_all", "RN_all")


def statistics_from(rows: DataFrame, cells: DataFrame) -> DataFrame:
    """:func:`lift_stats` from :func:`session_rows` and :func:`cell_sums`: the second level and the
    formulas."""
    agg = _per_session(rows, cells).groupBy(*GROUP).agg(*_key_aggs(), *_net_aggs())
    return _formulas(agg)


def key_sums(rows: DataFrame, cells: DataFrame) -> DataFrame:
    """Per (method, kind, key, session_date): every per-key sum over sessions except the store's net terms.
    Sums and counts only, so the days' rows add up to the window's (:func:`window_statistics`)."""
    return _per_session(rows, cells).groupBy(*GROUP, "session_date").agg(*_key_aggs())


def window_statistics(days_key_sums: DataFrame, store_rows: DataFrame, cells: DataFrame) -> DataFrame:
    """:func:`lift_stats` of several days from what each day stored: its :func:`key_sums` (added up), its
    store rows of :func:`session_rows` and its :func:`cell_sums` (the store's net effect is measured
    against the window's cell means, so those are resolved here)."""
    sums = [c for c in days_key_sums.columns if c not in (*GROUP, "session_date")]
    keys = days_key_sums.groupBy(*GROUP).agg(*[F.sum(c).alias(c) for c in sums])
    nets = _per_session(store_rows, cells).groupBy(*GROUP).agg(*_net_aggs())
    on = [keys[c].eqNullSafe(nets[c]) for c in GROUP]
    joined = keys.join(nets, on, "left").select(
        *[keys[c] for c in GROUP], *[keys[c] for c in sums], *[nets[c] for c in NET_SUMS]
    )
    return _formulas(joined.withColumn("GR_all", F.coalesce(F.col("GR_all"), F.lit(0))))


def _key_aggs() -> list:
    """The per-key sums over sessions: events, sessions, and per label the sums behind the means, lifts,
    effects and their session-clustered variances."""
    aggs = [
        F.sum("s").alias("S_all"),
        F.sum("n").alias("event_count"),
        F.count(F.lit(1)).alias("sessions"),
        F.sum("n").cast("double").alias("N_all"),
        F.sum(F.col("n") * F.col("n")).cast("double").alias("NN_all"),
        F.sum("c").alias("C_all"),
        F.sum(F.col("c") * F.col("c")).alias("CC_all"),
        F.sum(F.col("c") * F.col("n")).alias("CN_all"),
        F.sum("abs_c").alias("A_all"),
    ]
    for value, suffix in LABELS:

        def on(x: Column, value: int = value) -> Column:
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
    return aggs


def _formulas(agg: DataFrame) -> DataFrame:
    """The per-key sums -> means, lifts, effects, CIs and verdicts."""
    group = GROUP
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
    effect, effect_se = clustered_ratio_mean(c, "C_all", "CC_all", "CN_all", "N_all", "NN_all", "sessions")
    net, net_se = clustered_ratio_mean(c, "R_all", "RR_all", "RN_all", "NR_all", "NNR_all", "GR_all")
    # a key seen under one label only: 0 for the other side's mean (the original analysis's pivot with fill 0), null CI
    lifts = variances.select(
        *group,
        effect.alias("effect_log_odds"),
        effect_se.alias("effect_se"),
        (c("A_all") / c("N_all")).alias("mean_abs_effect_log_odds"),
        net.alias("net_effect_log_odds"),
        net_se.alias("net_effect_se"),
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
    lift_ci = normal_ci(c("attribution_lift"), c("lift_se"))
    effect_ci = normal_ci(c("effect_log_odds"), c("effect_se"))
    net_ci = normal_ci(c("net_effect_log_odds"), c("net_effect_se"))
    bounds = (
        lifts.withColumns(
            {
                "lift_ci_low": lift_ci[0],
                "lift_ci_high": lift_ci[1],
                "length_adjusted_lift": F.coalesce(c("length_adjusted_converted"), F.lit(0.0))
                - F.coalesce(c("length_adjusted_not_converted"), F.lit(0.0)),
                "effect_ci_low": effect_ci[0],
                "effect_ci_high": effect_ci[1],
                "net_effect_ci_low": net_ci[0],
                "net_effect_ci_high": net_ci[1],
            }
        )
        .withColumns(
            {
                "effect_verdict": F.when(
                    c("kind") == "store", _verdict(c("net_effect_ci_low"), c("net_effect_ci_high"))
                ).otherwise(_verdict(c("effect_ci_low"), c("effect_ci_high")))
            }
        )
        .withColumn(
            "significant",
            F.when(c("lift_se").isNull(), F.lit(None)).otherwise((c("lift_ci_low") > 0) | (c("lift_ci_high") < 0)),
        )
    )
    no_sessions = {  # type x position: sessions were not kept (see _tagged), so no session counts or CI
        name: F.when(c("kind") != "type_position", c(name))
        for name in (
            "sessions",
            "sessions_converted",
            "sessions_not_converted",
            "effect_se",
            "effect_ci_low",
            "effect_ci_high",
            "effect_verdict",
        )
    }
    net_cols = ("net_effect_log_odds", "net_effect_se", "net_effect_ci_low", "net_effect_ci_high")
    only_stores = {name: F.when(c("kind") == "store", c(name)) for name in net_cols}
    return bounds.withColumns({**no_sessions, **only_stores}).select(
        *group,
        "mean_attribution",
        "event_count",
        "sessions",
        "effect_log_odds",
        "effect_ci_low",
        "effect_ci_high",
        "effect_se",
        "effect_verdict",
        "mean_abs_effect_log_odds",
        *net_cols,
        *LIFT_COLUMNS,
    )


def tables(
    long: DataFrame | None,
    min_events: int = 10,
    max_position: int = 20,
    kinds: Sequence[str] = tuple(KINDS),
    min_sessions: int = 1,
    removal: pa.Table | None = None,
    stats: pa.Table | None = None,
    context_min_sessions: int = 1,
    pair_min_interaction: float = 0.0,
) -> dict[str, pa.Table]:
    """Every table in ``kinds`` from one Spark job, as Arrow (small; Arrow keeps Spark's types, also for an
    empty table); ``removal`` (:func:`removal_stats`) adds the removal columns. ``stats``: the collected
    :func:`lift_stats` rows when they come from elsewhere (stored daily statistics); ``long`` is then
    not read."""
    if stats is None:
        assert long is not None, "the tables come from the long format or from collected statistics"
        stats = lift_stats(long, kinds, max_position).toArrow()
    out = {kind: finish(stats, kind, min_events, min_sessions, removal, context_min_sessions) for kind in kinds}
    out[PAIR_TABLE.name] = pair_table(removal, context_min_sessions, pair_min_interaction)
    return out
