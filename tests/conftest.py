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
# They also map a class-data-sharing archive of Spark's classes (below), so a JVM does not load and verify
# them again from the jars. A JVM with C1 alone reserves a 48 MB code cache, the client VM's; the session's
# JVM, which runs one test file's jobs after another, fills it within minutes, and then stops compiling
# until it has thrown compiled code away (or fails with "Out of space in CodeCache"), so it gets the
# 240 MB the JVM reserves with both compilers, of which it uses about 60. These variables reach only the
# JVMs started from this process and its children, after a user's own options.
JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"

# What the archive is made from: a local session that runs the kinds of work the tests' jobs do (CSV and
# parquet, a shuffle, a window, a join, an Arrow UDF), so the classes those load are in it.
_ARCHIVE_WORKLOAD = """
import pandas as pd
from pyspark.sql import SparkSession, Window, functions as F
spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
df = spark.range(2000).select((F.col("id") % 7).alias("k"), F.col("id").alias("v"), F.current_timestamp().alias("t"))
df.write.mode("overwrite").parquet(OUT + "/p")
df.write.mode("overwrite").option("header", True).csv(OUT + "/c")
p = spark.read.parquet(OUT + "/p")
c = spark.read.option("header", True).option("inferSchema", True).csv(OUT + "/c")
w = Window.partitionBy("k").orderBy("v")
j = p.withColumn("r", F.row_number().over(w)).join(c.groupBy("k").agg(F.sum("v").alias("s")), "k")
j.mapInArrow(lambda batches: batches, j.schema).collect()
j.groupBy("k").applyInPandas(lambda d: d.head(1), j.schema).toPandas()
spark.stop()
"""


def _class_archive() -> str | None:
    """The path of a class-data-sharing archive (``-XX:SharedArchiveFile``) of the classes a Spark JVM of
    this virtualenv loads, made once by a JVM that runs :data:`_ARCHIVE_WORKLOAD` and dumps them as it
    exits (``-XX:ArchiveClassesAtExit``), and kept in the virtualenv, named by the Java and pyspark
    versions. A JVM whose class path or Java differs finds the archive does not match and loads its
    classes from the jars as before. None where it cannot be made (no Java: the tests say so themselves)."""
    import fcntl
    import hashlib
    import subprocess
    import tempfile
    from pathlib import Path

    import pyspark

    from attribution.spark import find_java

    java = find_java()  # the one Spark will use
    if not java:
        return None
    try:
        version = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256(f"{java}|{version}|{pyspark.__version__}|{pyspark.__file__}".encode()).hexdigest()[:16]
    folder = Path(sys.prefix) / "spark-class-archive"
    archive = folder / f"{key}.jsa"
    if " " in str(archive):  # the path travels inside SPARK_SUBMIT_OPTS, which splits on spaces
        return None
    folder.mkdir(exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the xdist processes start together: one makes it, the others wait
        if not archive.exists():
            with tempfile.TemporaryDirectory() as tmp:
                dumped = Path(tmp) / "classes.jsa"
                env = {
                    **os.environ,
                    "PYSPARK_PYTHON": sys.executable,
                    "SPARK_SUBMIT_OPTS": f"{JVM_OPTIONS} -XX:ArchiveClassesAtExit={dumped}",
                }
                script = f"OUT = {tmp!r}\n{_ARCHIVE_WORKLOAD}"
                try:
                    subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
                except (OSError, subprocess.SubprocessError):
                    return None
                if not dumped.exists():
                    return None
                os.replace(dumped, archive)
    return str(archive)


if JVM_OPTIONS not in os.environ.get("SPARK_DAEMON_JAVA_OPTS", ""):  # once, also in the processes xdist starts
    _archive = _class_archive()
    if _archive:
        # -Xlog: a JVM whose class path does not match the archive says so on stdout, where the tests read
        # the jobs' output; it then runs as without one
        JVM_OPTIONS += f" -XX:SharedArchiveFile={_archive} -Xlog:cds=off -Xlog:cds+dynamic=off"
    for _variable, _value in (
        ("SPARK_SUBMIT_OPTS", f"{JVM_OPTIONS} '-Dspark.executor.extraJavaOptions={JVM_OPTIONS}'"),
        ("SPARK_DAEMON_JAVA_OPTS", JVM_OPTIONS),
    ):
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
