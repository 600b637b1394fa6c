"""The report's tables: effect tables from the event-level table, their model and data status, and how
they are staged as CSV (the original analysis's file names), Delta and parquet. The stage itself is
:mod:`attribution.stages.report`; the picture is :mod:`attribution.figures`, the insights
:mod:`attribution.report_text`, the page :mod:`attribution.page`.

The headline everywhere is the **effect**: the mean signed contribution per event, in log-odds, with a
session-clustered 95% CI (``attribution.aggregate``). The original analysis's lift columns stay in the tables for
compatibility, after the effect columns. Before anything else the report states whether the model
predicts better than chance: if it doesn't, no driver can be read from the tables, and every table
carries ``model_status = at_chance``.

Only the aggregated tables (event types, position bins, stores, type x position) reach the driver.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from attribution import aggregate, baseline, removal_tables, schema, sinks
from attribution.config import Config
from attribution.errors import InputError
from attribution.io import join, read_bytes, read_table
from attribution.metrics import average_precision, log_loss
from attribution.schema import TABLES as TABLE_SPECS
from attribution.statistics import roc_auc_ci
from attribution.tracking import chosen_model

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# table name -> the original analysis's file name (CSV) / Delta and parquet directory name
TABLES = {name: k.stem for name, k in TABLE_SPECS.items()}
PICTURE = "attention_attribution_analysis.png"


def build_tables(
    events: DataFrame | None,
    conf: Config,
    status: str = "unknown",
    statistics: tuple | None = None,
    counts_model: dict | None = None,
) -> dict[str, pa.Table]:
    """Every table, for every method in the event table, from one Spark job, as Arrow (they are small),
    each with the run_id and the status (``ok``, ``at_chance``, ``insufficient_data``, ``unknown``) first.
    ``statistics``: (lift statistics, removal statistics) already collected, from stored days;
    ``counts_model``: the counts baseline's summary (:func:`attribution.baseline.read_summary`): its
    log-odds per event go beside the tables whose kind names a baseline prefix (``baseline_log_odds``), and its
    removal effects beside the model's (``removal_baseline_pp``, the model-choice part of their CI); null
    without a baseline."""
    r = conf.report
    if statistics is None:
        assert events is not None, "the tables come from the events or from stored statistics"
        long = aggregate.long_format(events)
        stats, removal = None, removal_tables.removal_stats(events, counts_model)
    else:
        long, (stats, removal) = None, statistics
    out = aggregate.tables(
        long,
        r.store_min_events,
        r.heatmap_positions,
        min_sessions=r.store_min_sessions,
        removal=removal,
        stats=stats,
        context_min_sessions=r.context_min_sessions,
        pair_min_interaction=r.pair_min_interaction,
    )
    coefficients = baseline.log_odds_per_key(counts_model)
    out = {
        name: baseline.with_coefficients(t, kind.baseline, coefficients) if (kind := schema.table(name)).baseline else t
        for name, t in out.items()
    }
    run_id = conf.run.run_id or ""
    if status in NO_VERDICT:  # a model at chance, or too little data, supports no verdict
        out = {name: _no_verdict(t, NO_VERDICT[status]) for name, t in out.items()}
    return {
        name: t.add_column(0, "run_id", pa.array([run_id] * t.num_rows, pa.string())).add_column(
            1, "model_status", pa.array([status] * t.num_rows, pa.string())
        )
        for name, t in out.items()
    }


AT_CHANCE_VERDICT = "indistinguishable from noise (the model is at chance)"
INSUFFICIENT_VERDICT = "indistinguishable from noise (insufficient data)"
# status -> the verdict every effect gets under it
NO_VERDICT = {"at_chance": AT_CHANCE_VERDICT, "insufficient_data": INSUFFICIENT_VERDICT}


VERDICT_COLUMNS = ("effect_verdict", "interaction_verdict")


def _no_verdict(table: pa.Table, verdict: str = AT_CHANCE_VERDICT) -> pa.Table:
    """``table`` with every effect or interaction verdict replaced by ``verdict`` (where there is one)."""
    for name in VERDICT_COLUMNS:
        if name in table.column_names:
            column = table[name]
            replaced = pc.if_else(pc.is_null(column), column, pa.scalar(verdict, pa.string()))
            table = table.set_column(table.column_names.index(name), name, replaced)
    return table


# the pair verdict where the sequence model predicts no better than the counts baseline (gate_pairs)
NO_ORDER_EVIDENCE_VERDICT = (
    "indistinguishable from noise (the sequence model predicts no better than the counts baseline)"
)


def gate_pairs(tables: dict[str, pa.Table], comparison: dict | None, status: str) -> dict[str, pa.Table]:
    """The tables with the pair table's verdicts gated on the model comparison (``report.pair_needs_better_model``).
    A logistic regression on counts has no interactions on the logit, so a pair interaction is a claim
    that the data hold something the counts baseline cannot fit. Unless the transformer predicts the test
    sessions better than the baseline (the comparison's verdict ``beats``: the paired AUC difference's CI
    above 0), the data give no evidence of any interaction, and every pair's verdict becomes
    :data:`NO_ORDER_EVIDENCE_VERDICT`; the interactions and their CIs stay. It is a gatekeeping test in the
    manner of Fisher's protected LSD: the pairs are tested one by one only once the test of all of them
    together (does a model with interactions predict better?) has passed. Without a comparison (no
    baseline) or under a status that already withholds every verdict, the tables are returned as they are."""
    name = schema.PAIR_TABLE.name
    if comparison is None or status in NO_VERDICT or name not in tables or comparison.get("verdict") == baseline.BEATS:
        return tables
    return {**tables, name: _no_verdict(tables[name], NO_ORDER_EVIDENCE_VERDICT)}


def frames(tables: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    """pandas views of the tables, for the picture and the insights."""
    return {name: t.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get) for name, t in tables.items()}


def _seed_columns(name: str, table: pa.Table) -> pa.Table:
    """The table's first columns (its key and effect columns, then the original analysis's, which its
    readers select by name: ``attribution.schema.TableKind.first``), then the rest."""
    first = list(schema.table(name).first)
    return table.select(first + [c for c in table.column_names if c not in first])


def model_status(conf: Config, shas: list[str]) -> dict:
    """Does the model that scored the event table predict better than chance? From its metrics.json: the
    test ROC-AUC with a 95% CI (Hanley-McNeil). ``at_chance`` when the CI includes 0.5 or the AUC is
    below ``report.min_test_auc``; ``unknown`` without metrics for the model that scored the table."""

    location = join(model_dir(conf), "metrics.json")
    try:
        metrics = json.loads(read_bytes(location))
    except (InputError, FileNotFoundError, ValueError):
        return {"status": "unknown", "reason": f"no model metrics at {location}"}
    if shas != [metrics.get("model_sha256")]:
        return {"status": "unknown", "reason": f"the event table was scored by another model than {location}"}
    test = metrics["test"]
    auc, n = float(test["roc_auc"]), int(test["sessions"])
    positives = int(round(float(test["positive_rate"]) * n)) if n else 0
    low, high = roc_auc_ci(auc, positives, n - positives)
    floor = conf.report.min_test_auc
    at_chance = not math.isfinite(auc) or not low > 0.5 or auc < floor
    out = {
        "status": "at_chance" if at_chance else "ok",
        "test_roc_auc": auc,
        "test_roc_auc_ci": [low, high],
        "test_sessions": n,
        "test_positives": positives,
        "min_test_auc": floor,
        "sessions": metrics.get("sessions", {}),
        # calibration in the large: the mean predicted P(convert) against the rate, on the test split
        "test_positive_rate": float(test["positive_rate"]),
    }
    if test.get("mean_prediction") is not None:
        out["test_mean_prediction"] = float(test["mean_prediction"])
    if test.get("reliability"):  # the reliability curve (attribution.metrics.reliability)
        out["test_reliability"] = test["reliability"]
    leak = metrics.get("leakage_check")
    if leak:
        out["leakage_check_roc_auc"] = leak["test"]["roc_auc"]
    return out


def data_status(status: dict, sessions: int, converted: int, minimum: int, day: str | None = None) -> dict:
    """``status`` turned ``insufficient_data`` when the event table holds fewer than ``minimum`` sessions,
    or no converted or no non-converted session: too little to read drivers from. A model at chance stays
    ``at_chance`` (the more basic reason), with the data's problem recorded beside it."""
    where = f" of {day}" if day else ""
    reason = None
    if sessions < minimum:
        reason = f"{sessions:,} sessions{where}, fewer than report.min_sessions ({minimum:,})"
    elif converted == 0 or converted == sessions:
        reason = f"{'none' if converted == 0 else 'all'} of the {sessions:,} sessions{where} converted"
    out = {**status, "data_sessions": sessions, "data_converted": converted}
    if reason and status["status"] == "at_chance":
        out["insufficient_data"] = reason
    elif reason:
        out.update({"status": "insufficient_data", "model_status": status["status"], "reason": reason})
    return out


def stage_tables(
    spark: SparkSession, tables: dict[str, pa.Table], conf: Config, extra: tuple[sinks.Step, ...] = ()
) -> tuple[list[sinks.Staged], dict[str, str]]:
    """Every output of ``tables`` staged, nothing visible yet: CSV (the default method under the original analysis's
    names, and every method in ``*_by_method.csv``), Delta, parquet, then each of ``extra``."""
    base = conf.output(conf.report.output_path)

    def lift_table(name: str, table: pa.Table) -> tuple[list[sinks.Staged], dict[str, str]]:
        stem = TABLES[name]
        ordered = _seed_columns(name, table)
        if "method" not in ordered.column_names:  # one row per key whatever the method (the pair table)
            return stage_table(spark, ordered, stem, conf)
        steps: list[sinks.Step] = []
        if "csv" in conf.report.formats:
            default = ordered.filter(pc.equal(ordered["method"], conf.report.default_method))
            location = join(base, f"{stem}.csv")
            steps.append(lambda: ([sinks.stage_csv(default, location)], {f"{stem}.csv": location}))
        by_method = f"{stem}_by_method.csv"
        steps.append(lambda: stage_table(spark, ordered, stem, conf, csv_name=by_method))
        staged, where = sinks.stage_all(steps)
        return staged, {k: v for k, v in where.items() if k != by_method}

    steps = [lambda name=name, table=table: lift_table(name, table) for name, table in tables.items()]
    return sinks.stage_all([*steps, *extra])


def stage_table(
    spark: SparkSession, table: pa.Table, stem: str, conf: Config, csv_name: str | None = None
) -> tuple[list[sinks.Staged], dict[str, str]]:
    """One table staged in each of ``report.formats`` under the report directory: ``csv_name`` (default
    ``{stem}.csv``), ``delta/{stem}`` and ``parquet/{stem}`` (both partitioned by run_id)."""
    base = conf.output(conf.report.output_path)
    run_id = conf.run.run_id or ""
    name = csv_name or f"{stem}.csv"
    formats: dict[str, tuple[str, Callable[[], sinks.Staged]]] = {
        "csv": (name, lambda: sinks.stage_csv(table, join(base, name))),
        "delta": (f"delta/{stem}", lambda: sinks.stage_delta(spark, table, join(base, f"delta/{stem}"), run_id)),
        "parquet": (f"parquet/{stem}", lambda: sinks.stage_parquet(table, join(base, f"parquet/{stem}"), run_id)),
    }
    steps: list[sinks.Step] = [
        lambda key=key, stage=stage: ([stage()], {key: join(base, key)})  # type: ignore[misc]
        for fmt, (key, stage) in formats.items()
        if fmt in conf.report.formats
    ]
    return sinks.stage_all(steps)


def write_tables(spark: SparkSession, tables: dict[str, pa.Table], conf: Config) -> dict[str, str]:
    """Stage every output, then publish them all (renames and Delta commits: milliseconds)."""
    staged, where = stage_tables(spark, tables, conf)
    for s in staged:
        s.publish()
    return where


EFFECT_UNIT = "mean signed contribution per event (log-odds)"
PP_UNIT = "≈ pp of P(convert) per event, for an average session"


def pp_scale(status: dict) -> float | None:
    """Percentage points per log-odds at the test sessions' conversion rate p: 100 p (1 - p), the slope of
    the logistic curve there (None without a rate strictly between 0 and 1)."""
    n, pos = status.get("test_sessions"), status.get("test_positives")
    if not n or pos is None:
        return None
    p = pos / n
    return 100.0 * p * (1 - p) if 0 < p < 1 else None


# the verdicts that give a direction (the others: indistinguishable from noise)
DIRECTIONS = (aggregate.DRIVES, aggregate.HOLDS_BACK)


def is_signed(table: pd.DataFrame) -> bool:
    """Whether a table's rows have an effect (their method has a signed contribution)."""
    return "effect_log_odds" in table and table["effect_log_odds"].notna().any()


def model_dir(conf: Config) -> str:
    """The directory of the model the model stages use (its version in day mode)."""
    return chosen_model(conf).location


COMPARISON_COLUMNS = (
    "run_id",
    "model",
    "test_sessions",
    "positive_rate",
    "roc_auc",
    "roc_auc_ci_low",
    "roc_auc_ci_high",
    "pr_auc",
    "log_loss",
    "mean_prediction",
    "auc_difference",
    "auc_difference_ci_low",
    "auc_difference_ci_high",
    "comparison_verdict",
    "event_type_order_spearman",
    "position_order_spearman",
    "store_order_spearman",
)
TRANSFORMER, COUNTS_BASELINE = "transformer", "counts_baseline"


def _effects_by_key(table: pd.DataFrame, method: str, key: str, value: str) -> dict[str, float]:
    rows = table[table["method"] == method] if "method" in table else table
    if value not in rows or rows[value].isna().all():
        return {}
    return {str(k): float(v) for k, v in zip(rows[key], rows[value], strict=True) if pd.notna(v)}


def model_comparison(
    spark: SparkSession, events: DataFrame, conf: Config, views: dict[str, pd.DataFrame], summary: dict
) -> tuple[pa.Table, dict]:
    """The transformer against the counts baseline on the same test sessions (those of the event table
    with a baseline prediction; a hash sample of ``baseline.comparison_max_sessions`` when there are more):
    each model's ROC-AUC (95% CI), PR-AUC and log loss, the paired AUC difference (DeLong) with its CI and
    verdict, and how the baseline's log-odds per event order event types, positions and stores against the
    report method's effects (Spearman). Returns the table and a summary for the page and the insights."""
    location = model_dir(conf)
    predictions = read_table(spark, baseline.predictions_location(location), "parquet", {}, "baseline predictions")
    sessions = events.where(F.col("event_position") == 0).select("session_id", "label", "prediction")
    paired = sessions.join(predictions.select("session_id", "baseline_prediction"), "session_id")
    n = int(paired.count())
    cap = conf.baseline.comparison_max_sessions
    if n > cap:
        bucket = F.pmod(F.xxhash64("session_id"), F.lit(1_000_000))
        paired = paired.where(bucket < int(1_000_000 * cap / n))
    arrow = paired.select("label", "prediction", "baseline_prediction").toArrow()
    y = np.asarray(arrow["label"].to_numpy(zero_copy_only=False), dtype=int)
    scores = {
        TRANSFORMER: np.asarray(arrow["prediction"].to_numpy(zero_copy_only=False), dtype=float),
        COUNTS_BASELINE: np.asarray(arrow["baseline_prediction"].to_numpy(zero_copy_only=False), dtype=float),
    }
    paired_auc = baseline.delong(y, scores[TRANSFORMER], scores[COUNTS_BASELINE])
    verdict = baseline.verdict(paired_auc["ci_low"], paired_auc["ci_high"])
    method = conf.report.default_method
    coefficients = baseline.log_odds_per_key(summary) or {}
    orders = {
        "event_type_order_spearman": ("event_type", "event_type", "effect_log_odds", "event_type"),
        "position_order_spearman": ("position", "position_bin", "effect_log_odds", "position_bin"),
        "store_order_spearman": ("store", "store_id", "shrunk_net_effect_log_odds", "store"),
    }
    agreement = {}
    for column, (table, key, value, prefix) in orders.items():
        model = _effects_by_key(views[table], method, key, value) if table in views else {}
        rho, _ = baseline.rank_agreement(model, coefficients.get(prefix, {}))
        agreement[column] = rho
    positives = int(y.sum())
    rows = []
    for name, s in scores.items():
        both = len(y) > 0 and 0 < positives < len(y)
        auc = paired_auc["auc_a" if name == TRANSFORMER else "auc_b"] if both else float("nan")
        low, high = roc_auc_ci(auc, positives, len(y) - positives)
        mine = name == TRANSFORMER
        rows.append(
            {
                "run_id": conf.run.run_id or "",
                "model": name,
                "test_sessions": len(y),
                "positive_rate": positives / len(y) if len(y) else float("nan"),
                "roc_auc": auc,
                "roc_auc_ci_low": low,
                "roc_auc_ci_high": high,
                "pr_auc": average_precision(y, s) if both else float("nan"),
                "log_loss": log_loss(y, s) if len(y) else float("nan"),
                "mean_prediction": float(s.mean()) if len(y) else float("nan"),
                "auc_difference": paired_auc["difference"] if mine else None,
                "auc_difference_ci_low": paired_auc["ci_low"] if mine else None,
                "auc_difference_ci_high": paired_auc["ci_high"] if mine else None,
                "comparison_verdict": verdict if mine else None,
                **{c: (None if mine else v) for c, v in agreement.items()},
            }
        )
    types = {
        "run_id": pa.string(),
        "model": pa.string(),
        "comparison_verdict": pa.string(),
        "test_sessions": pa.int64(),
    }
    table = pa.Table.from_pylist(rows, schema=pa.schema([(c, types.get(c, pa.float64())) for c in COMPARISON_COLUMNS]))
    result = {
        "verdict": verdict,
        "sessions": len(y),
        "transformer_roc_auc": rows[0]["roc_auc"],
        "baseline_roc_auc": rows[1]["roc_auc"],
        "difference": paired_auc["difference"],
        "difference_ci": [paired_auc["ci_low"], paired_auc["ci_high"]],
        "agreement": agreement,
        "sampled_of": n if n > cap else None,
        "transformer_weight": baseline.transformer_weight(summary),
        "removal_order_terms": baseline.removal_order_terms(summary),
    }
    return table, result
