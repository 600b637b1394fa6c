"""One local SparkSession for the whole test run (never per test, never at import time)."""

from __future__ import annotations

import os
import sys

import pytest

from attribution.config import Config
from attribution.config_loader import load_config


@pytest.fixture(scope="session")
def spark():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def make_conf(*overrides: str, path: str | None = None) -> Config:
    """Defaults (the original analysis's rules) plus ``dotted.key=value`` overrides, validated like the CLI's."""
    return load_config(path, list(overrides))


@pytest.fixture(scope="module")
def events(spark):
    """The hand-written event table of tests/helpers.py (EVENT_ROWS), for the report's and sinks' tests."""
    from tests.helpers import report_events

    return report_events(spark)
