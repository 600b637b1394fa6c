"""Building (or reusing) the SparkSession, with the checks a newcomer needs before Spark's own errors."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from attribution.config import SparkConf

log = logging.getLogger(__name__)

JAVA_MISSING = (
    "Java not found: Spark needs a Java 17 runtime. Install one (Debian/Ubuntu: "
    "'apt-get install openjdk-17-jre-headless'; macOS: 'brew install openjdk@17') or set JAVA_HOME."
)


class EnvironmentProblem(RuntimeError):
    """Something outside the project (Java, a package) is missing; the message says what to install."""


def find_java() -> str | None:
    """The java binary Spark will use: $JAVA_HOME/bin/java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def build_spark(conf: SparkConf):
    """Get or create the SparkSession described by ``conf``.

    Under spark-submit the master and resources come from the command line; ``conf.master`` is only
    for local runs. The session time zone is pinned to UTC because the sessionizer does its own,
    explicit conversion to the configured input time zone (see ``attribution.sessionize``).
    """
    if find_java() is None:
        raise EnvironmentProblem(JAVA_MISSING)
    # Python workers must run the same interpreter (and so the same venv) as the driver, unless the
    # cluster says otherwise (spark-submit --archives ...#environment with PYSPARK_PYTHON set).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(conf.app_name)
    if conf.master:
        builder = builder.master(conf.master)
    settings = {"spark.sql.session.timeZone": "UTC"}
    settings.update(conf.conf)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def default_filesystem(spark) -> str:
    """The cluster's default filesystem (Hadoop's ``fs.defaultFS``): where a path without a scheme lives."""
    value = spark.conf.get("spark.hadoop.fs.defaultFS", None)
    if value is None:
        try:
            value = spark.sparkContext._jsc.hadoopConfiguration().get("fs.defaultFS")
        except Exception:  # noqa: BLE001 - a session without a JVM handle: Hadoop's default
            value = None
    return value or "file:///"


def qualify_output_dir(spark, conf):
    """``conf`` with ``run.output_dir`` made absolute on the driver, so that the driver, Spark's writers
    and the executors' own readers (training reads its shards with pyarrow) name the same place: an
    executor runs in a working directory of its own, where a relative path means something else.

    A path without a scheme is qualified only when the default filesystem is the local one; on a
    cluster whose default filesystem is HDFS (or another store) such a path would mean one place to
    Spark and another to the Python readers, so it is refused: give a URI (``hdfs://...``, ``s3://...``).
    """
    import dataclasses

    from attribution.config import ConfigError

    out = conf.run.output_dir
    if "://" in out:
        return conf
    fs = default_filesystem(spark)
    if not fs.startswith("file:"):
        raise ConfigError(
            f"run.output_dir: {out!r} has no scheme and the default filesystem is {fs}: Spark would write it "
            "there and the Python readers on this disk; give a full URI (e.g. "
            + fs.rstrip("/")
            + "/"
            + out.lstrip("/")
            + ")"
        )
    if os.path.isabs(out):
        return conf
    return dataclasses.replace(conf, run=dataclasses.replace(conf.run, output_dir=os.path.abspath(out)))
