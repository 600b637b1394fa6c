"""The explain job: one session's events ranked by the report method, as a table and a picture
(:mod:`attribution.explain` finds and ranks them)."""

from __future__ import annotations

from pyspark.sql import SparkSession

from attribution import figures
from attribution.config import Config
from attribution.explain import format_table, session_events
from attribution.io import join, write_bytes
from attribution.stages.results import ExplainResult


def run(spark: SparkSession, conf: Config, session_id: str) -> ExplainResult:
    rows = session_events(spark, conf, session_id)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in session_id)
    location = join(conf.output(conf.report.output_path), f"explain/{safe}.png")
    write_bytes(location, figures.session_picture(rows))
    return ExplainResult(format_table(rows), location)
