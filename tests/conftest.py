"""One local SparkSession for the whole test run (never per test, never at import time)."""

from __future__ import annotations

import os
import sys

import pytest

from attribution.config import Config
from attribution.config_loader import load_config

# Every JVM the tests start (this session's, the jobs' spark-submit drivers, a Connect server, the standalone
# cluster's daemons and executors) runs with the client JIT compiler alone (C1). The tests' JVMs live for
# seconds on small data, and the optimizing compiler (C2) spent much of the CPU of two cores the suite keeps
# busy: on tests/test_bad_input.py, C1 alone took the file from 65 s to 45 s (docs/benchmarks.md, the suite).
# These variables reach only the JVMs started from this process and its children, after a user's own options.
JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
for _variable, _value in (
    ("SPARK_SUBMIT_OPTS", f"{JVM_OPTIONS} '-Dspark.executor.extraJavaOptions={JVM_OPTIONS}'"),
    ("SPARK_DAEMON_JAVA_OPTS", JVM_OPTIONS),
):
    if JVM_OPTIONS not in os.environ.get(_variable, ""):  # once, also in the test processes xdist starts
        os.environ[_variable] = f"{_value} {os.environ.get(_variable, '')}".strip()


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
