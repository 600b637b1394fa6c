"""Building (or reusing) the SparkSession, with the checks a newcomer needs before Spark's own errors."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attribution.config import SparkConf
from attribution.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

    from attribution.config import Config

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


CONNECT_PACKAGES = "grpcio, grpcio-status, googleapis-common-protos and zstandard (pip install 'pyspark[connect]')"


def connect_url(conf: SparkConf) -> str | None:
    """The Spark Connect server the jobs are a client of (``spark.remote``, else ``SPARK_REMOTE``); None when
    the session is classic or a local Connect server the jobs start themselves."""
    return conf.remote or os.environ.get("SPARK_REMOTE") or None


def wants_connect(conf: SparkConf) -> bool:
    """True when the config asks for a Spark Connect session: a remote URL, or ``spark.api.mode: connect``."""
    return connect_url(conf) is not None or str(conf.conf.get("spark.api.mode", "")).lower() == "connect"


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (no SparkContext, no JVM handle in this process), whoever built it."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def is_local_server(url: str | None) -> bool:
    """True when the Connect server runs on this machine (then its files and this process's are the same)."""
    if url is None:
        return True
    try:
        host = host_port(url)[0]
    except ValueError:  # not an sc://host:port URL: no telling, so not this machine
        return False
    return host in ("localhost", "127.0.0.1", "::1")


# The warning a Connect session gives for a setting the server would not take (a static one).
_NOT_SET = re.compile(r"Failed to set (\S+) to")


def host_port(url: str) -> tuple[str, int]:
    """(host, port) of an ``sc://host[:port][/;params]`` URL; Spark Connect's port is 15002 by default."""
    netloc = url.removeprefix("sc://").split("/", 1)[0].split(";", 1)[0]
    if netloc.startswith("["):  # [IPv6]:port
        host, _, rest = netloc[1:].partition("]")
        return host, int(rest.lstrip(":") or 15002)
    host, _, port = netloc.partition(":")
    return host, int(port or 15002)


def check_reachable(url: str, timeout_s: float = 10.0) -> None:
    """Fail in one line when nothing listens at the Connect server's address (the client itself would
    retry for minutes before it says so)."""
    import socket

    try:
        host, port = host_port(url)
    except ValueError as exc:
        raise EnvironmentProblem(f"spark.remote: {url!r} is not an sc://host:port URL") from exc
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot reach the Spark Connect server at {url} ({host}:{port}): {exc.strerror or exc}"
        ) from exc


def _check_connect_packages() -> None:
    missing = []
    for module in ("grpc", "grpc_status", "google.rpc", "zstandard"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise EnvironmentProblem(f"Spark Connect needs the packages {CONNECT_PACKAGES}; missing: {', '.join(missing)}")


def build_spark(conf: SparkConf) -> SparkSession:
    """Get or create the SparkSession described by ``conf``: classic, or a Spark Connect client.

    Under spark-submit the master and resources come from the command line; ``conf.master`` is only
    for local runs. The session time zone is pinned to UTC because the sessionizer does its own,
    explicit conversion to the configured input time zone (see ``attribution.sessionize``).

    Spark Connect: ``conf.remote`` (``sc://host:port``) connects to that server; ``spark.api.mode:
    connect`` with a local ``master`` starts a Connect server on this machine with ``conf.conf`` and
    connects to it. A remote server keeps its own static settings (memory, plugins); those of
    ``conf.conf`` it can't take are named in one warning.
    """
    url = connect_url(conf)
    if url is None and find_java() is None:  # a remote Connect server needs no Java here
        raise EnvironmentProblem(JAVA_MISSING)
    # Python workers must run the same interpreter (and so the same venv) as the driver, unless the
    # cluster says otherwise (spark-submit --archives ...#environment with PYSPARK_PYTHON set).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    from pyspark.sql import SparkSession

    connect = wants_connect(conf)
    if connect:
        _check_connect_packages()
    builder = SparkSession.builder.appName(conf.app_name)
    if url is not None:
        check_reachable(url)
        builder = builder.remote(url)
    elif conf.master:
        builder = builder.master(conf.master)
    settings = {"spark.sql.session.timeZone": "UTC"}
    if connect and url is None:
        settings["spark.log.level"] = "WARN"  # the local server's log level, set as it starts
    settings.update(conf.conf)
    for key, value in settings.items():
        builder = builder.config(key, value)
    if not connect:
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        return spark
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spark = builder.getOrCreate()
        try:
            _ = spark.version  # the first call to the server: an unreachable one fails here, in one line
        except Exception as exc:  # noqa: BLE001 - gRPC and Spark Connect raise several types
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EnvironmentProblem(f"cannot reach the Spark Connect server at {url}: {reason}") from exc
    if url is not None and conf.ship_code:
        ship_code(spark)
    kept = sorted({m.group(1) for w in caught if (m := _NOT_SET.search(str(w.message)))})
    if kept and url is not None:
        # A local server took them as it started; a remote one keeps its own values.
        log.warning("the Spark Connect server keeps its own value of: %s", ", ".join(kept))
    for w in caught:
        if not _NOT_SET.search(str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return spark


# The project's packages: what a Connect server's Python workers need of this project to run its UDFs.
CODE_PACKAGES = ("attribution", "udfs", "jobs")
_SHIPPED: set[str] = set()  # the code archives this process has added to a Connect session


def code_files(roots: list[Path]) -> list[tuple[str, Path]]:
    """The ``.py`` files of the package directories ``roots``, as (name in the archive, path), sorted."""
    return sorted((f.relative_to(root.parent).as_posix(), f) for root in roots for f in root.rglob("*.py"))


def write_code_zip(target: Path, files: list[tuple[str, Path]]) -> Path:
    """``files`` (:func:`code_files`) zipped at ``target``, with fixed timestamps (the same code gives the
    same bytes), written under a temporary name and renamed into place."""
    import zipfile

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, f in files:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), f.read_bytes())
    tmp.replace(target)
    return target


def code_archive(out_dir: str | None = None) -> str:
    """A zip of the project's code as this process imports it (a checkout, an installed wheel), named by
    its content's sha256, so the same code is the same artifact. When the code is itself imported from a
    zip (spark-submit --py-files), that zip."""
    import hashlib
    import importlib
    import tempfile

    roots = [Path(str(importlib.import_module(p).__file__)).parent for p in CODE_PACKAGES]
    for root in roots:
        if not root.is_dir():  # imported from inside a zip: ship that zip
            return str(next(parent for parent in root.parents if parent.is_file()))
    files = code_files(roots)
    digest = hashlib.sha256()
    for name, f in files:
        digest.update(name.encode() + b"\0" + f.read_bytes())
    target = Path(out_dir or tempfile.gettempdir()) / f"session_attribution-{digest.hexdigest()[:16]}.zip"
    if not target.exists():
        write_code_zip(target, files)
    return str(target)


def ship_code(spark: SparkSession) -> None:
    """Add the project's code to a Spark Connect session as a Python artifact (``addArtifacts(...,
    pyfile=True)``): the server's Python workers import it for this session's UDFs, so they run the same
    code as this client without the project installed on the cluster. Its dependencies (torch, pyarrow,
    safetensors) are the server environment's (see docs/connect.md)."""
    archive = code_archive()
    if archive in _SHIPPED:
        return
    spark.addArtifacts(archive, pyfile=True)
    _SHIPPED.add(archive)
    log.info("shipped the project's code to the Spark Connect session: %s", os.path.basename(archive))


def default_filesystem(spark: SparkSession) -> str | None:
    """The cluster's default filesystem (Hadoop's ``fs.defaultFS``): where a path without a scheme lives.
    None when it can't be known here: a Spark Connect session to a server on another machine, which
    doesn't set it in its SQL conf."""
    value = spark.conf.get("spark.hadoop.fs.defaultFS", None)
    if value:
        return value
    if is_connect(spark):
        return "file:///" if is_local_server(_session_url(spark)) else None
    try:
        value = spark.sparkContext._jsc.hadoopConfiguration().get("fs.defaultFS")
    except Exception:  # noqa: BLE001 - a session without a JVM handle: Hadoop's default
        value = None
    return value or "file:///"


def default_parallelism(spark: SparkSession) -> int:
    """How many tasks the cluster runs at once by default (``SparkContext.defaultParallelism``). A Spark
    Connect session has no SparkContext: there it is ``spark.default.parallelism`` when set, else the
    number of partitions Spark gives a range without a partition count (one tiny job), which is the
    default parallelism."""
    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    value = spark.conf.get("spark.default.parallelism", None)
    if value:
        return int(value)
    from pyspark.sql import functions as F

    return int(single_row(spark.range(1 << 16).select(F.spark_partition_id().alias("p")).agg(F.max("p")))[0]) + 1


def single_row(df: DataFrame) -> Row:
    """The one row of an aggregate without grouping (``df.agg(...)``), which always has one."""
    row = df.first()
    if row is None:
        raise ValueError("an aggregate without grouping returned no row")
    return row


def _session_url(spark: SparkSession) -> str | None:
    """The ``sc://`` URL a Connect session talks to; None for a local server the jobs started."""
    if os.environ.get("SPARK_LOCAL_REMOTE"):
        return None
    client: Any = getattr(spark, "client", None)  # a Connect session's client
    try:
        return f"sc://{client._builder.host}"
    except AttributeError:  # a client without the builder's host: the URL it was given, if any
        return os.environ.get("SPARK_REMOTE")


def qualify_output_dir(spark: SparkSession, conf: Config) -> Config:
    """``conf`` with ``run.output_dir`` made absolute on the driver, so that the driver, Spark's writers
    and the executors' own readers (training reads its shards with pyarrow) name the same place: an
    executor runs in a working directory of its own, where a relative path means something else.

    A path without a scheme is qualified only when the default filesystem is the local one; on a
    cluster whose default filesystem is HDFS (or another store) such a path would mean one place to
    Spark and another to the Python readers, so it is refused: give a URI (``hdfs://...``, ``s3://...``).
    """
    import dataclasses

    out = conf.run.output_dir
    if "://" in out:
        return conf
    fs = default_filesystem(spark)
    if fs is None:
        raise ConfigError(
            f"run.output_dir: {out!r} has no scheme and the jobs are a Spark Connect client of a server on "
            "another machine: its Spark and the Python readers here would each resolve it on their own disk; "
            "give a URI both reach (s3://..., gs://..., abfss://..., hdfs://...)"
        )
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
