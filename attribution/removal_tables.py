"""The removal columns of the tables and the pair table, from the event table's removal effects
(attribution/removal.py computes them per session; this module aggregates them in Spark and lays them out).

**Removal effect** (``removal_effect_pp``, see attribution/removal.py): the mean, over the sampled sessions
that have the key, of the model's P(convert) minus its P(convert) with every event of the key removed, in
percentage points, averaged over the ensemble's members (``removal_models`` of them). Its 95% CI has three
parts (:func:`attribution.statistics.removal_ci`): session sampling (``removal_sampling_se_pp``: the
sessions as independent draws, one value per session), the model's own variance
(``removal_model_se_pp``: the spread of the members' means / sqrt(members); null with one member; in a
blend the k-th member pairs the transformer's k-th member with the baseline's k-th fit, so both models'
estimation error is in it) and the
model choice (``removal_choice_se_pp``). The last compares the model with another model family: the counts
baseline (attribution/baseline.py) answers the same question on the same sessions
(``removal_baseline_pp``: its P(convert) minus its P(convert) without the key's events, the session
shorter by them), and the distance between the two answers counts as one standard error. The members of
an ensemble share the transformer's way of splitting credit between steps that occur together, so their
spread cannot show it; a model of another form splits it its own way, and where the two disagree the data
does not settle the answer (docs/scenarios.md measures how often the intervals hold the planted truth).
Null without a baseline beside the model, and for the pairs (a sum over events has no interaction).
Beside it: ``removal_relative_lift`` = that mean / the mean P(convert) without the key (how much higher the
predicted conversion is with the key's events than without), and ``attributable_conversions`` = the
effect x the key's sessions in the table (predicted conversions owed to the key). It needs no attribution
method, so every method's row of a key has the same removal columns. Null when the attribute stage ran
with ``attribution.removal_sessions`` 0 or no sampled session has the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from attribution import baseline_removal
from attribution.baseline import transformer_weight
from attribution.schema import (
    EVENT_TYPE,
    FIRST_EVENT_TYPE,
    PAIR_COLUMN,
    PAIR_INTERACTION_COLUMNS,
    PAIR_TABLE,
    REMOVAL_COLUMNS,
    REMOVAL_DIMENSIONS,
    SECOND_EVENT_TYPE,
    SESSION_ID,
    STORE_ID,
    TABLE_KINDS,
)
from attribution.statistics import removal_ci

# table -> (its key column in the event table, the event table's removal column)
REMOVAL_SOURCES = {k.name: (d.key, d.column) for k in TABLE_KINDS for d in REMOVAL_DIMENSIONS if d.name == k.removal}


def removal_stats(events: DataFrame, baseline: dict | None = None) -> pa.Table | None:
    """Per (table, key): the sampled sessions with the key, the mean and sample variance of their removal
    effects and their mean P(convert) without the key, and with ``baseline`` (the counts baseline's
    summary, :func:`attribution.baseline.read_summary`) its removal effect on the same sessions. One Spark
    query over the sampled sessions' events (the baseline's part in a ``mapInArrow``,
    attribution/baseline_removal.py); None when the event table has no removal columns."""
    rows = removal_rows(events, baseline)
    return None if rows is None else removal_from(rows)


def baseline_fits(baseline: dict) -> list[dict]:
    """The baseline's fits whose removal effects the blend's members use: the removal model first (with
    order terms, the summary's ``removal_model``; else the counts fit, the summary's own intercept and
    coefficients), then its bootstrap fits (``members``, attribution/baseline.py's
    :func:`~attribution.baseline.member_fits`; none in a summary written before them)."""
    source = baseline.get("removal_model") or {}
    if "coefficients" not in source:  # the counts alone
        source = baseline
    main = {"intercept": float(source.get("intercept", 0.0)), "coefficients": source.get("coefficients") or {}}
    return [main, *(baseline.get("members") or [])]


def _baseline_removals(sampled: DataFrame, fits: list[dict], present: list[tuple[str, str, str]]) -> DataFrame:
    """Per (table kind, key, sampled session): the baseline's removal effects ``db`` (the main fit's) and
    ``dbm`` (every fit's, centred on the main fit's) and its P(convert) ``pb``, computed by
    attribution/baseline_removal.py in a ``mapInArrow`` over the sampled events, partitioned by session
    and sorted by position. The fits' weights travel with the function."""
    weights = baseline_removal.BaselineWeights.of(fits)
    dimensions = [(kind, key) for kind, key, _ in present]
    columns = sorted({EVENT_TYPE, STORE_ID, *(key for _, key, _ in present)})

    def removals(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for t in baseline_removal.SessionChunks()(batches):
            yield from baseline_removal.session_removals(t, weights, dimensions).to_batches()

    return (
        sampled.select(
            F.col(SESSION_ID).cast("string").alias(SESSION_ID),
            baseline_removal.POSITION,
            *[F.col(c).cast("string").alias(c) for c in columns],
        )
        .repartition(SESSION_ID)
        .sortWithinPartitions(SESSION_ID, baseline_removal.POSITION)
        .mapInArrow(removals, baseline_removal.OUTPUT_DDL)
    )


def removal_rows(events: DataFrame, baseline: dict | None = None) -> DataFrame | None:
    """One row per (table, key, sampled session): its removal effect ``d`` (the ensemble's mean), each
    ensemble member's ``dm`` (an array) and P(convert) ``p`` (every event of a key carries the same
    removal effects), with the session_date: additive across days. With ``baseline`` (the counts
    baseline's summary), ``db``: the baseline's removal effect of the key on the session, computed from
    its coefficients (a logistic regression on counts is a sum over the session's events, each weighted at
    the bin of its position, so removing a key takes its events away and moves the later ones up)."""
    present = [(kind, key, col) for kind, (key, col) in REMOVAL_SOURCES.items() if col in events.columns]
    if not present:
        return None
    no_members = F.lit(None).cast("array<double>")

    def members(col: str) -> Column:
        name = f"{col}_members"
        return F.col(name) if name in events.columns else no_members

    tags = F.array(
        *[
            F.when(
                F.col(col).isNotNull(),
                F.struct(
                    F.lit(kind).alias("kind"),
                    F.col(key).cast("string").alias("key"),
                    F.col(col).alias("d"),
                    members(col).alias("dm"),
                ),
            )
            for kind, key, col in present
        ]
    )
    any_sampled = F.col(present[0][2]).isNotNull()  # every dimension samples the same sessions
    day = F.col("session_date") if "session_date" in events.columns else F.lit(None).cast("date")
    sampled = events.where(any_sampled)
    rows = (
        sampled.select("session_id", day.alias("session_date"), "prediction", F.explode(tags).alias("t"))
        .where(F.col("t").isNotNull())
        .groupBy("t.kind", "t.key", "session_id", "session_date")
        .agg(F.max("t.d").alias("d"), F.max("t.dm").alias("dm"), F.max("prediction").alias("p"))
    )
    weight = transformer_weight(baseline)
    if baseline is not None:
        # db: the main fit's; dbm: each fit's, centred on the main fit's, so the members' mean stays the
        # published value and their spread is the fits'; pb: the main fit's P(convert) of the session
        removals = _baseline_removals(sampled, baseline_fits(baseline), present)
        rows = rows.join(removals, ["kind", "key", "session_id"], "left")
        if weight is not None:
            rows = _blended(rows, weight, F.col("pb"))
        rows = rows.drop("dbm", "pb")
    if PAIR_COLUMN not in events.columns:
        return rows
    # the pair interactions, on each sampled session's first event: one row per (scale, pair, session)
    key = F.concat_ws(PAIR_KEY_SEPARATOR, "x.first_event_type", "x.second_event_type")
    scales = F.array(
        *[
            F.struct(F.lit(kind).alias("kind"), F.col(f"x.{value}").alias("d"), F.col(f"x.{value}_members").alias("dm"))
            for kind, value in PAIR_SCALES.items()
        ]
    )
    pairs = (
        events.where(F.col(PAIR_COLUMN).isNotNull())
        .select("session_id", day.alias("session_date"), "prediction", F.explode(PAIR_COLUMN).alias("x"))
        .select("session_id", "session_date", "prediction", key.alias("key"), F.explode(scales).alias("t"))
        .select("t.kind", "key", "session_id", "session_date", "t.d", "t.dm", F.col("prediction").alias("p"))
    )
    if baseline is not None:  # a sum over events has no interaction of its own: the pairs have no db
        pairs = pairs.withColumn("db", F.lit(None).cast("double"))
    if weight is not None:  # the pairs are the transformer's interactions, not blended
        pairs = pairs.withColumn("dt", F.lit(None).cast("double"))
    return rows.unionByName(pairs)


def _blended(rows: DataFrame, w: float, pb: Column) -> DataFrame:
    """The rows of the blended model ``w x transformer + (1 - w) x baseline`` (attribution/baseline.py's
    :func:`~attribution.baseline.blend_weight`): its removal effect ``d`` and P(convert) ``p`` are the same
    blend of the two models' (``db`` and ``pb``: the baseline's main fit's removal effect and P(convert)
    of the session); the k-th member's ``dm`` blends the transformer's k-th member with the baseline's k-th
    fit (``dbm``, centred on the main fit's; the fits taken in turn when there are fewer of them than
    members), so the members' spread holds both models' estimation error; ``dt`` keeps the transformer's
    own."""
    a, b = F.lit(w), F.lit(1.0 - w)
    return rows.select(
        *[c for c in rows.columns if c not in ("d", "dm", "p")],
        (a * F.col("d") + b * F.col("db")).alias("d"),
        F.transform("dm", lambda x, k: a * x + b * F.element_at("dbm", k % F.size("dbm") + 1)).alias("dm"),
        (a * F.col("p") + b * pb).alias("p"),
        F.col("d").alias("dt"),
    )


# the pair table's two scales: the kind of their rows in the removal statistics -> the struct's value
PAIR_SCALES = {"pair": "interaction", "pair_log_odds": "interaction_log_odds"}
PAIR_KEY_SEPARATOR = "\t"  # between the two event types of a pair's key in the removal statistics
# the pair verdicts: the log-odds interaction's CI below 0, above 0, or across it
WORK_TOGETHER, STAND_IN, PAIR_NOISE = (
    "work together",
    "stand in for each other",
    "indistinguishable from noise",
)


class Estimates(NamedTuple):
    """Per key of :func:`removal_from`'s rows: the mean (the blend's where the models are blended), its
    95% CI, the session-sampling, model and model-choice SEs (the model SE null with one member, the
    choice SE null without a baseline), the transformer's and the counts baseline's means, the members
    and the sessions."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    se: np.ndarray
    model_se: np.ndarray
    choice_se: np.ndarray
    transformer: np.ndarray
    baseline: np.ndarray
    models: np.ndarray
    n: np.ndarray


def estimates(rows: pd.DataFrame, choice: bool = True) -> Estimates:
    """:class:`Estimates` of :func:`removal_from`'s rows (``n``, ``mean``, ``var``, ``models`` and
    ``model_var`` where there is an ensemble, ``baseline_mean`` where the counts baseline was evaluated):
    the CI of :func:`attribution.statistics.removal_ci`. The model-choice SE is the distance between the
    transformer's and the baseline's removal effects (``transformer_mean``; a blend of the two lies
    between them, and the distance stays the measure of how much the two model families disagree;
    ``choice``: False leaves it out, as for the pairs, which a sum over events has none of)."""
    n = rows["n"].to_numpy(float)
    mean = rows["mean"].to_numpy(float)
    se = np.sqrt(rows["var"].to_numpy(float) / n)
    models = rows["models"].to_numpy(float) if "models" in rows else np.ones(len(rows))
    models = np.where(np.isfinite(models), models, 1.0)
    model_var = rows["model_var"].to_numpy(float) if "model_var" in rows else np.full(len(rows), np.nan)
    model_se = np.where(models > 1, np.sqrt(model_var / models), np.nan)
    nothing = np.full(len(rows), np.nan)
    baseline = rows["baseline_mean"].to_numpy(float) if choice and "baseline_mean" in rows else nothing
    transformer = rows["transformer_mean"].to_numpy(float) if "transformer_mean" in rows else mean
    choice_se = np.abs(transformer - baseline)
    low, high = removal_ci(mean, se, model_se, models, choice_se)
    return Estimates(mean, low, high, se, model_se, choice_se, transformer, baseline, models, n)


def pair_table(removal: pa.Table | None, min_sessions: int = 1, min_interaction: float = 0.0) -> pa.Table:
    """The pair table (``attribution.schema.PAIR_TABLE``) from :func:`removal_stats`' pair rows: per
    ordered pair (a, b) seen in at least ``min_sessions`` sampled sessions, the mean over those sessions
    of the interaction R(a and b) - R(a) - R(b), on the logit and in percentage points, each with the
    CI of the removal effects' sampling and model parts (session sampling and the ensemble's spread; the
    counts baseline has no interactions, so no model-choice part). The verdict reads
    the logit: ``work together`` (CI below -``min_interaction``: removing both costs less than the two
    removals apart, so each one's effect depends on the other), ``stand in for each other`` (CI above
    ``min_interaction``: either one alone keeps most of the effect), or indistinguishable from noise (no
    interaction of that size). Ranked by |interaction_log_odds|."""
    columns: dict[str, list] = {c: [] for c in ("rank", *PAIR_TABLE.keys, *PAIR_INTERACTION_COLUMNS)}
    if removal is not None and removal.num_rows:
        by_kind = {
            kind: removal.filter(pc.equal(removal["kind"], kind)).to_pandas().set_index("key") for kind in PAIR_SCALES
        }
        lo, pp = by_kind["pair_log_odds"], by_kind["pair"].reindex(by_kind["pair_log_odds"].index)
        lo = lo[lo["n"] >= min_sessions]
        pp = pp.reindex(lo.index)
        e = estimates(lo, choice=False)
        mean, low, high, se, model_se, models, n = e.mean, e.low, e.high, e.se, e.model_se, e.models, e.n
        verdict = np.where(
            high < -min_interaction, WORK_TOGETHER, np.where(low > min_interaction, STAND_IN, PAIR_NOISE)
        )
        firsts, seconds = zip(*(k.split(PAIR_KEY_SEPARATOR, 1) for k in lo.index), strict=True) if len(lo) else ((), ())
        order = sorted(range(len(lo)), key=lambda i: (-abs(mean[i]), firsts[i], seconds[i]))
        pmean, plow, phigh = (100 * v for v in estimates(pp, choice=False)[:3])
        for rank, i in enumerate(order, start=1):
            values = {
                "rank": rank,
                FIRST_EVENT_TYPE: firsts[i],
                SECOND_EVENT_TYPE: seconds[i],
                "interaction_log_odds": mean[i],
                "interaction_ci_low": low[i],
                "interaction_ci_high": high[i],
                "interaction_sampling_se": se[i],
                "interaction_model_se": model_se[i],
                "interaction_verdict": str(verdict[i]),
                "interaction_pp": pmean[i],
                "interaction_ci_low_pp": plow[i],
                "interaction_ci_high_pp": phigh[i],
                "sessions": int(n[i]),
                "interaction_models": int(models[i]),
            }
            for c, v in values.items():
                columns[c].append(None if isinstance(v, float) and not np.isfinite(v) else v)
    types = {
        "rank": pa.int32(),
        FIRST_EVENT_TYPE: pa.string(),
        SECOND_EVENT_TYPE: pa.string(),
        "interaction_verdict": pa.string(),
        "sessions": pa.int64(),
        "interaction_models": pa.int64(),
    }
    return pa.table({c: pa.array(v, types.get(c, pa.float64())) for c, v in columns.items()})


def removal_from(rows: DataFrame) -> pa.Table:
    """:func:`removal_stats` from :func:`removal_rows` of one day or of many: per (table, key) ``n``,
    ``mean`` and ``var`` of the sessions' removal effects, ``p_without``, and over the ensemble's members
    the count ``models`` and ``model_var``, the sample variance of the members' means (null with one
    member), and with the counts baseline's rows ``baseline_mean``, its mean removal effect over the same
    sessions."""
    baseline = [F.avg("db").alias("baseline_mean")] if "db" in rows.columns else []
    own = F.coalesce(F.col("dt"), F.col("d")) if "dt" in rows.columns else F.col("d")
    stats = rows.groupBy("kind", "key").agg(
        F.count(F.lit(1)).alias("n"),
        F.avg("d").alias("mean"),
        F.avg(own).alias("transformer_mean"),
        F.var_samp("d").alias("var"),
        F.avg(F.col("p") - F.col("d")).alias("p_without"),
        *baseline,
    )
    if "dm" in rows.columns:  # rows stored before the ensemble have no members
        per_member = (
            rows.where(F.col("dm").isNotNull())
            .select("kind", "key", F.posexplode("dm").alias("member", "dv"))
            .groupBy("kind", "key", "member")
            .agg(F.avg("dv").alias("member_mean"))
            .groupBy("kind", "key")
            .agg(F.count(F.lit(1)).alias("models"), F.var_samp("member_mean").alias("model_var"))
        )
        stats = stats.join(per_member, ["kind", "key"], "left")
    return stats.toArrow()


def with_removal(table: pa.Table, kind: str, key: str, removal: pa.Table | None, after: str) -> pa.Table:
    """``table`` with the removal columns (module docstring) of its keys, inserted after column ``after``."""
    n = table.num_rows
    values = {c: np.full(n, np.nan) for c in REMOVAL_COLUMNS}
    if removal is not None and n:
        rows = removal.filter(pc.equal(removal["kind"], kind)).to_pandas().set_index("key")
        keys = pc.cast(table[key], pa.string()).to_pylist()
        found = rows.reindex(keys)
        e = estimates(found)
        values["removal_effect_pp"] = 100 * e.mean
        values["removal_ci_low_pp"], values["removal_ci_high_pp"] = 100 * e.low, 100 * e.high
        values["removal_sampling_se_pp"], values["removal_model_se_pp"] = 100 * e.se, 100 * e.model_se
        values["removal_transformer_pp"] = 100 * e.transformer
        values["removal_baseline_pp"], values["removal_choice_se_pp"] = 100 * e.baseline, 100 * e.choice_se
        values["removal_models"] = np.where(np.isfinite(e.mean), e.models, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            values["removal_relative_lift"] = e.mean / found["p_without"].to_numpy(float)
        values["attributable_conversions"] = e.mean * table["sessions"].to_numpy(zero_copy_only=False).astype(float)
        values["removal_sessions"] = e.n
    at = table.column_names.index(after) + 1
    for offset, c in enumerate(REMOVAL_COLUMNS):
        v = values[c]
        missing = ~np.isfinite(v)
        if c in ("removal_sessions", "removal_models"):
            arr = pa.array(np.where(missing, 0, v).astype(np.int64), pa.int64(), mask=missing)
        else:
            arr = pa.array(np.where(missing, 0.0, v), pa.float64(), mask=missing)
        table = table.add_column(at + offset, c, arr)
    return table
