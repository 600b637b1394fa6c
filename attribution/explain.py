"""One session explained by the report's method (``report.default_method``): its events ranked by that
method's signed contribution (log-odds, as the tables' effect; a method without one, by its normalized
attribution), every method's score, the prediction; a table and a small PNG. Positions are 1-based, as
in the tables' position bins and heatmap."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from pyspark.sql import functions as F

from attribution import methods
from attribution.config import Config
from attribution.errors import InputError
from attribution.io import read_table

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def ranking_column(rows: pd.DataFrame, method: str) -> str:
    """The column ``method``'s ranking reads: its signed contribution when it has one, else its attribution."""
    m = methods.get(method)
    if m.contribution and m.contribution in rows.columns:
        return m.contribution
    if m.attribution in rows.columns:
        return m.attribution
    raise InputError(f"the event table has no {m.attribution} column: attribute with {method} (attribution.methods)")


def score_columns(rows: pd.DataFrame) -> list[str]:
    """Every registered method's per-event columns in ``rows``."""
    return [c for m in methods.present(rows.columns) for c in m.event_columns]


def session_events(spark: SparkSession, conf: Config, session_id: str) -> pd.DataFrame:
    """The session's rows of the event-level table (one session: small), ranked by the report method's
    signed contribution (highest first), with ``position`` 1-based."""
    events = read_table(spark, conf.output(conf.attribution.output_path), "parquet", {}, "attribution")
    rows: pd.DataFrame = events.where(F.col("session_id") == session_id).toPandas()
    if rows.empty:
        raise InputError(
            f"session {session_id!r} is not in {conf.output(conf.attribution.output_path)} "
            f"(it attributes the {conf.attribution.split} split; run jobs/attribute.py --split all for every session)"
        )
    rows = rows.sort_values("event_position")
    by = ranking_column(rows, conf.report.default_method)
    rows.insert(0, "rank", rows[by].rank(ascending=False, method="first").astype(int))
    rows.insert(1, "position", rows["event_position"] + 1)
    rows.attrs["ranked_by"] = by
    rows.attrs["method"] = conf.report.default_method
    rows.attrs["signed"] = by == methods.get(conf.report.default_method).contribution
    return rows.sort_values("rank")


def format_table(rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    head = (
        f"session {first['session_id']}: label {int(first['label'])} "
        f"({'converted' if first['label'] else 'not converted'}), predicted P(convert) {first['prediction']:.3f}, "
        f"{int(first['session_length'])} events; ranked by {rows.attrs.get('method')} ({rows.attrs.get('ranked_by')}"
        f"{', log-odds: + towards conversion' if rows.attrs.get('signed') else ''})"
    )
    cols = ["rank", "position", "event_type", "store_name", *score_columns(rows)]
    return head + "\n" + rows[cols].to_string(index=False, float_format=lambda v: f"{v:+.4f}")
