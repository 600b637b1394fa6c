"""The report's tables: effect tables from the event-level table, their model and data status, and how
they are staged as CSV (the seed analysis's file names), Delta and parquet. The stage itself is
:mod:`attribution.stages.report`; the picture is :mod:`attribution.figures`, the insights
:mod:`attribution.report_text`, the page :mod:`attribution.page`.

The headline everywhere is the **effect**: the mean signed contribution per event, in log-odds, with a
session-clustered 95% CI (``attribution.aggregate``). The seed's lift columns stay in the tables for
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

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from attribution import aggregate, schema, sinks
from attribution.config import Config
from attribution.errors import InputError
from attribution.io import join, read_bytes
from attribution.model import model_location
from attribution.schema import TABLE_KINDS
from attribution.statistics import roc_auc_ci

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# table name -> the original analysis's file name (CSV) / Delta and parquet directory name
TABLES = {k.name: k.stem for k in TABLE_KINDS}
PICTURE = "attention_attribution_analysis.png"


def build_tables(
    events: DataFrame | None, conf: Config, status: str = "unknown", statistics: tuple | None = None
) -> dict[str, pa.Table]:
    """Every table, for every method in the event table, from one Spark job, as Arrow (they are small),
    each with the run_id and the status (``ok``, ``at_chance``, ``insufficient_data``, ``unknown``) first.
    ``statistics``: (lift statistics, removal statistics) already collected, from stored days."""
    r = conf.report
    if statistics is None:
        assert events is not None, "the tables come from the events or from stored statistics"
        long = aggregate.long_format(events)
        stats, removal = None, aggregate.removal_stats(events)
    else:
        long, (stats, removal) = None, statistics
    out = aggregate.tables(
        long,
        r.store_min_events,
        r.heatmap_positions,
        min_sessions=r.store_min_sessions,
        removal=removal,
        stats=stats,
    )
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


def _no_verdict(table: pa.Table, verdict: str = AT_CHANCE_VERDICT) -> pa.Table:
    """``table`` with every effect verdict replaced by ``verdict`` (where there is one)."""
    if "effect_verdict" not in table.column_names:
        return table
    column = table["effect_verdict"]
    replaced = pc.if_else(pc.is_null(column), column, pa.scalar(verdict, pa.string()))
    return table.set_column(table.column_names.index("effect_verdict"), "effect_verdict", replaced)


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

    location = join(model_location(conf.output(conf.train.model_path), conf.train.model_version), "metrics.json")
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
    }
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
    """Every output of ``tables`` staged, nothing visible yet: CSV (the default method under the seed's
    names, and every method in ``*_by_method.csv``), Delta, parquet, then each of ``extra``."""
    base = conf.output(conf.report.output_path)

    def lift_table(name: str, table: pa.Table) -> tuple[list[sinks.Staged], dict[str, str]]:
        stem = TABLES[name]
        ordered = _seed_columns(name, table)
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
# the verdicts that give a direction (the others: indistinguishable from noise)
DIRECTIONS = (aggregate.DRIVES, aggregate.HOLDS_BACK)


def is_signed(table: pd.DataFrame) -> bool:
    """Whether a table's rows have an effect (their method has a signed contribution)."""
    return "effect_log_odds" in table and table["effect_log_odds"].notna().any()
