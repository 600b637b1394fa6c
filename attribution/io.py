"""Reading the warehouse's tables in any of the supported formats."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from attribution.errors import ConfigError, InputError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pyarrow.fs import FileSystem
    from pyspark.sql import DataFrame, SparkSession

    from attribution.config import RunConf

log = logging.getLogger(__name__)


# CSV and JSON inputs carry a row's raw line here when Spark can't parse it (PERMISSIVE mode), so the
# sessionizer quarantines it as ``malformed_row`` instead of guessing at its fields.
CORRUPT_RECORD = "_corrupt_record"

_UNREADABLE_MARKERS = (
    "FAILED_READ_FILE",
    "CANNOT_READ_FILE_FOOTER",
    "is not a Parquet file",
    "Could not read footer",
    "CANNOT_READ_FOOTER",
)


def unreadable_input(exc: BaseException, what: str) -> InputError | None:
    """An :class:`InputError` naming the file, when ``exc`` is Spark failing to read a corrupt input file
    (a truncated or overwritten parquet file, say); None for any other error."""
    import re

    text = str(exc)
    if not any(m in text for m in _UNREADABLE_MARKERS):
        return None
    found = re.search(r"((?:file|hdfs|s3a?|gs|abfss?|wasbs?)://?[^\s'\"]+)", text)
    name = found.group(1).rstrip(".") if found else "a file"
    return InputError(
        f"{what}: {name} can't be read: it is corrupt or not in the configured format. Remove or "
        "replace it (nothing was skipped silently; no output was written)"
    )


@contextlib.contextmanager
def naming_unreadable(what: str) -> Iterator[None]:
    """Inside the block, Spark failing on a corrupt file becomes an :class:`InputError` naming the file
    and ``what`` (the config key); every other error passes through as it is."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file surfaces deep in a Java trace
        error = unreadable_input(exc, what)
        if error is None:
            raise
        raise error from exc


def spark_has_delta(spark: SparkSession) -> bool:
    """True when Delta Lake for Spark is configured on this session (clusters); else we use deltalake."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    return "DeltaSparkSessionExtension" in extensions


def _delta_files(path: str, storage_options: dict[str, str] | None = None) -> list[str]:
    """The parquet files of a Delta table's current version, read with the ``deltalake`` package."""
    try:
        from deltalake import DeltaTable
    except ImportError as exc:  # pragma: no cover - deltalake is a dependency
        raise InputError("reading Delta without Delta Lake for Spark needs the 'deltalake' package") from exc
    try:
        table = DeltaTable(path, storage_options=storage_options or None)
    except Exception as exc:  # noqa: BLE001 - deltalake raises several types for "not a table"
        raise InputError(f"{path}: not a readable Delta table ({exc})") from exc
    protocol = table.protocol()
    if protocol.min_reader_version > 1:
        features = sorted(protocol.reader_features or [])
        raise InputError(
            f"{path}: Delta reader version {protocol.min_reader_version} (features: {features or 'none'}) is not "
            "supported without Delta Lake for Spark; install delta-spark on the cluster, or vacuum/rewrite "
            "the table without deletion vectors and column mapping"
        )
    return table.file_uris()


def read_table(spark: SparkSession, path: str | None, fmt: str, options: dict[str, str], what: str) -> DataFrame:
    """Read ``path`` as ``fmt`` ('parquet', 'csv', 'json', 'delta' or 'table' for a catalog table).

    A path or table that does not exist is an :class:`InputError` naming it, not a JVM stack trace.
    """
    if not path:
        raise ConfigError(f"{what}.path: a value is required for this stage")
    from pyspark.errors import AnalysisException

    try:
        df = _read(spark, path, fmt, options)
        _ = df.schema  # a Spark Connect session reads lazily: a missing path or table fails here, not later
        return df
    except AnalysisException as exc:
        condition = exc.getCondition() if hasattr(exc, "getCondition") else ""
        if condition in ("PATH_NOT_FOUND", "TABLE_OR_VIEW_NOT_FOUND"):
            raise InputError(f"{what}.path: {path} ({fmt}) not found") from exc
        if condition == "UNABLE_TO_INFER_SCHEMA":
            raise InputError(f"{what}.path: {path} has no {fmt} data files") from exc
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file can fail the schema inference already
        error = unreadable_input(exc, f"{what}.path")
        if error is None:
            raise
        raise error from exc


def _read(spark: SparkSession, path: str, fmt: str, options: dict[str, str]) -> DataFrame:
    if fmt == "table":
        return spark.table(path)
    if fmt == "delta":
        if spark_has_delta(spark):
            return spark.read.format("delta").options(**options).load(path)
        files = _delta_files(path)
        if not files:
            raise InputError(f"{path}: the Delta table has no data files")
        return spark.read.options(**options).parquet(*files)
    reader = spark.read.options(**options)
    if fmt == "csv":
        # Strings as written: typed parsing (timestamps, ids) is the sessionizer's job, with quarantine.
        # A line that doesn't split into the header's columns keeps its raw text in CORRUPT_RECORD.
        from pyspark.sql.types import StringType

        reader = reader.option("header", options.get("header", "true"))
        schema = reader.csv(path).schema.add(CORRUPT_RECORD, StringType())
        return (
            reader.schema(schema)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_RECORD)
            .csv(path)
        )
    if fmt == "json":
        return reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT_RECORD).json(path)
    return reader.parquet(path)


def uri_filesystem(location: str) -> tuple[FileSystem | None, str]:
    """(pyarrow filesystem, path) for URIs (s3://, gs://, hdfs://); (None, local path) otherwise."""
    if "://" in location and not location.startswith("file://"):
        from pyarrow import fs

        return fs.FileSystem.from_uri(location)
    return None, location.removeprefix("file://")


def write_bytes(location: str, data: bytes) -> None:
    """Write a small file (summary, manifest, model artifact) to a local path or a URI.

    Locally the bytes go to a temporary name first and are renamed into place, so readers never see
    half a file.
    """
    filesystem, path = uri_filesystem(location)
    if filesystem is not None:
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as out:
            out.write(data)
        return
    from pathlib import Path

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(p)


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode())


def read_bytes(location: str) -> bytes:
    """Read a file from a local path or a URI; a missing file is an InputError naming it."""
    filesystem, path = uri_filesystem(location)
    try:
        if filesystem is not None:
            with filesystem.open_input_stream(path) as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise InputError(f"{location}: file not found") from exc


def join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name


def run_days(df: DataFrame, run: RunConf) -> DataFrame:
    """``df`` (with a ``session_date`` column) limited to the run's days: ``run.date`` (to ``run.date_to``
    for a training window), or all of it outside day mode. On a table partitioned by session_date, Spark
    reads only those days' directories."""
    if run.date is None:
        return df
    from pyspark.sql import functions as F

    first, last = F.lit(run.date).cast("date"), F.lit(run.date_to or run.date).cast("date")
    return df.where(F.col("session_date").between(first, last))
