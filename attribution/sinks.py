"""Writing the report's tables: CSV (the original analysis's file names), Delta and parquet, idempotent per run_id.

Every sink works in two steps, so a run publishes all its tables or none of them, short of a crash
inside the few milliseconds of the second step:

1. ``stage_*`` writes the new data where no reader looks (a temporary file name, a ``_staging-*``
   directory, parquet files that no Delta log references yet) and returns a :class:`Staged`;
2. ``Staged.publish()`` makes it visible: a rename, two renames, or one Delta commit.
``Staged.abort()`` removes what was staged. ``write_*`` do both steps at once.

- **CSV**: one file per table, renamed into place: a reader never sees half a file.
- **Delta**: through Spark's Delta writer where Delta Lake for Spark is configured (clusters; one step,
  at publish time); otherwise (this machine: no Maven for the Delta jars) through ``deltalake``: the
  table is partitioned by ``run_id``, the new files are written first, and one commit adds them and
  removes this run's previous files. Rerunning a run gives the same table, other runs' rows stay; a
  failure before the commit leaves the table at its previous version. Protocol reader 1 / writer 2.
- **Parquet**: partitioned by ``run_id`` (Hive style, as Spark writes it); this run's partition is
  written aside and swapped in by two renames. Spark, pyarrow and pandas read it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs
from pyspark.sql import DataFrameWriter
from pyspark.sql.pandas.types import to_arrow_schema

from attribution.config import RUN_ID
from attribution.errors import ConfigError
from attribution.io import spark_has_delta, uri_filesystem

if TYPE_CHECKING:
    from deltalake import DeltaTable
    from pyarrow.fs import FileSystem
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import types as T


@dataclass
class Staged:
    """New data written where no reader looks; ``publish`` makes it visible, ``abort`` removes it."""

    publish: Callable[[], object]
    abort: Callable[[], None] = lambda: None


def filesystem_for(location: str) -> tuple[FileSystem, str]:
    """(pyarrow filesystem, path) of a local path or a URI: the local filesystem for a plain path."""
    filesystem, path = uri_filesystem(location)
    return filesystem or fs.LocalFileSystem(), path.rstrip("/")


def remove_tree(location: str) -> None:
    """Delete a directory Spark wrote (or a file), if it exists: through pyarrow's filesystems, so it works
    the same from a classic session and from a Spark Connect client."""
    remove_path(*filesystem_for(location))


def remove_path(filesystem: FileSystem, path: str) -> None:
    """Delete a directory or a file on ``filesystem``, if it exists."""
    kind = filesystem.get_file_info(path).type
    if kind == fs.FileType.Directory:
        filesystem.delete_dir(path)
    elif kind == fs.FileType.File:
        filesystem.delete_file(path)


def _exists(filesystem: FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type != fs.FileType.NotFound


def _token() -> str:
    return uuid.uuid4().hex[:12]


def _check_run_id(run_id: str) -> None:
    if not run_id:
        raise ConfigError(
            "run.run_id: the outputs are keyed by a run id and none is set; give one (--set run.run_id=..., or "
            "run.run_id in the overrides of load_config); the jobs' command line makes one when none is given"
        )
    if not RUN_ID.fullmatch(run_id):
        raise ConfigError(
            f"run.run_id: {run_id!r} must be 1-128 letters, digits, '.', '_' or '-' (it names partitions)"
        )


def stage_bytes(location: str, data: bytes) -> Staged:
    filesystem, path = filesystem_for(location)
    parent = path.rsplit("/", 1)[0]
    filesystem.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.tmp-{_token()}"  # hidden: readers of the folder skip it
    with filesystem.open_output_stream(tmp) as out:
        out.write(data)
    return Staged(publish=lambda: filesystem.move(tmp, path), abort=lambda: filesystem.delete_file(tmp))


def stage_csv(table: pa.Table, location: str) -> Staged:
    return stage_bytes(location, table.to_pandas().to_csv(index=False).encode())


def write_csv(table: pa.Table, location: str) -> None:
    stage_csv(table, location).publish()


def _delta_table(location: str) -> DeltaTable | None:
    from deltalake import DeltaTable

    try:
        return DeltaTable(location)
    except Exception:  # noqa: BLE001 - deltalake raises TableNotFoundError and friends
        return None


def _commit_run(location: str, files: list[tuple[str, int, int]], arrow_schema: pa.Schema, run_id: str) -> int:
    """One Delta commit: add ``files`` ((path relative to the table, bytes, rows), all in this run's
    partition) and remove this run's previous files. Creates the table (partitioned by run_id) if need be."""

    from deltalake import Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    now = int(time.time() * 1000)
    actions: list = [  # deltalake types the list as of adds and removes
        AddAction(
            path=path,
            size=size,
            partition_values={"run_id": run_id},
            modification_time=now,
            data_change=True,
            stats=json.dumps({"numRecords": rows}),
        )
        for path, size, rows in files
    ]
    schema = Schema.from_arrow(arrow_schema.append(pa.field("run_id", pa.string())))
    table = _delta_table(location)
    if table is None:
        create_table_with_add_actions(location, schema, actions, mode="append", partition_by=["run_id"])
    else:
        table.create_write_transaction(
            actions,
            mode="overwrite",
            schema=schema,
            partition_by=["run_id"],
            partition_filters=[("run_id", "=", run_id)],
        )
    committed = _delta_table(location)
    if committed is None:
        raise RuntimeError(f"{location}: no Delta table after the commit")
    return committed.version()


def stage_delta(spark: SparkSession, table: pa.Table, location: str, run_id: str) -> Staged:
    """A small table as Delta, this run's rows replaced: Spark's Delta writer when installed (one step, at
    publish), else a parquet file written now into the run's partition and committed at publish."""
    if spark is not None and spark_has_delta(spark):

        def spark_write() -> None:
            (
                spark.createDataFrame(table)
                .write.format("delta")
                .mode("overwrite")
                .option("replaceWhere", f"run_id = '{run_id}'")
                .option("mergeSchema", "true")
                .save(location)
            )

        return Staged(publish=spark_write)
    _check_run_id(run_id)
    existing = _delta_table(location)
    if existing is not None and existing.metadata().partition_columns != ["run_id"]:
        # A table in an earlier layout (not partitioned by run_id, e.g. from an earlier version of this
        # job): keep it, and replace this run's rows in one predicate commit at publish time.
        from deltalake import write_deltalake

        literal = run_id.replace("'", "''")
        return Staged(
            publish=lambda: write_deltalake(
                location, table, mode="overwrite", predicate=f"run_id = '{literal}'", schema_mode="merge"
            )
        )
    filesystem, root = filesystem_for(location)
    relative = f"run_id={run_id}/part-{_token()}.parquet"
    data = table.drop_columns(["run_id"]) if "run_id" in table.column_names else table
    filesystem.create_dir(f"{root}/run_id={run_id}", recursive=True)
    pq.write_table(data, f"{root}/{relative}", filesystem=filesystem)
    size = filesystem.get_file_info(f"{root}/{relative}").size
    return Staged(
        publish=lambda: _commit_run(location, [(relative, size, data.num_rows)], data.schema, run_id),
        abort=lambda: filesystem.delete_file(f"{root}/{relative}"),
    )


def write_delta(spark: SparkSession, table: pa.Table, location: str, run_id: str) -> int | None:
    """A small table as Delta in one go; returns the new version (None through Spark's writer)."""
    version = stage_delta(spark, table, location, run_id).publish()
    return version if isinstance(version, int) else None


# Characters Spark escapes (as %XX) in a partition directory's value, so Spark reads the value back as written.
_PARTITION_ESCAPES = set("\"#%'*/:=?\\\x7f{[]^") | {chr(i) for i in range(0x20)}


def partition_dir(column: str, value: str) -> str:
    return f"{column}=" + "".join(f"%{ord(ch):02X}" if ch in _PARTITION_ESCAPES else ch for ch in value)


def stage_parquet(table: pa.Table, location: str, run_id: str) -> Staged:
    """A small table as Hive-partitioned parquet (``location/run_id=<id>/part-00000.parquet``), written
    from the driver with pyarrow (no Spark job for a few hundred rows) into ``_staging-*`` (readers skip
    names starting with '_'). Publishing swaps it for this run's previous partition by two renames;
    other runs' partitions are never touched. An empty table gives an empty file with the schema."""
    filesystem, root = filesystem_for(location)
    token = _token()
    staging, old = f"{root}/_staging-{token}", f"{root}/_replaced-{token}"
    target = f"{root}/{partition_dir('run_id', run_id)}"
    filesystem.create_dir(staging, recursive=True)
    data = table.drop_columns(["run_id"]) if "run_id" in table.column_names else table
    try:
        pq.write_table(data, f"{staging}/part-00000.parquet", filesystem=filesystem)
    except BaseException:
        filesystem.delete_dir(staging)
        raise

    def swap() -> None:
        if _exists(filesystem, target):
            filesystem.move(target, old)
        filesystem.move(staging, target)
        if _exists(filesystem, old):
            filesystem.delete_dir(old)

    return Staged(publish=swap, abort=lambda: filesystem.delete_dir(staging))


def write_parquet(table: pa.Table, location: str, run_id: str) -> None:
    stage_parquet(table, location, run_id).publish()


def write_csv_single_file(df: DataFrame, location: str) -> None:
    """A large Spark DataFrame as one CSV file, written by one executor task (never collected to the
    driver): Spark writes a temporary directory, its one part file is then renamed to ``location``."""
    tmp = f"{location}.tmp-{uuid.uuid4().hex[:8]}"
    # a quote inside a value is doubled (RFC 4180), as pandas, spreadsheets and warehouses read it, not
    # backslash-escaped (Spark's default)
    df.coalesce(1).write.mode("overwrite").option("header", "true").option("escape", '"').csv(tmp)
    filesystem, tmp_path = uri_filesystem(tmp)
    _, target = uri_filesystem(location)
    if filesystem is None:
        import glob
        import os
        import shutil

        (part,) = glob.glob(os.path.join(tmp_path, "part-*.csv"))
        os.replace(part, target)
        shutil.rmtree(tmp_path, ignore_errors=True)
        return
    parts = [f.path for f in filesystem.get_file_info(fs.FileSelector(tmp_path)) if f.base_name.startswith("part-")]
    filesystem.move(parts[0], target)
    filesystem.delete_dir(tmp_path)


def write_delta_events(spark: SparkSession, events: DataFrame, location: str, run_id: str) -> int | None:
    """The (large) event-level table as Delta, partitioned by run_id, this run's rows replaced in one commit.

    With Delta Lake for Spark: Spark's writer with ``replaceWhere``. Without it (this machine): the
    executors write the parquet files into a fresh directory inside the table, the driver reads only
    their footers (row counts) and commits them with ``deltalake`` in one transaction that also removes
    this run's previous files. A failure before that commit leaves the table at its previous version
    (the new files are unreferenced). Returns the new version (None through Spark's writer).
    """
    if spark_has_delta(spark):
        (
            events.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"run_id = '{run_id}'")
            .partitionBy("run_id")
            .save(location)
        )
        return None
    _check_run_id(run_id)
    relative_dir = f"run_id={run_id}/{uuid.uuid4().hex}"
    staging = f"{location.rstrip('/')}/{relative_dir}"
    events.drop("run_id").write.mode("error").parquet(staging)
    filesystem, path = filesystem_for(staging)
    infos = [i for i in filesystem.get_file_info(fs.FileSelector(path)) if i.base_name.endswith(".parquet")]
    files, arrow_schema = [], None
    for info in sorted(infos, key=lambda i: i.path):
        with filesystem.open_input_file(info.path) as f:
            meta = pq.ParquetFile(f).metadata
            arrow_schema = arrow_schema or meta.schema.to_arrow_schema()
        files.append((f"{relative_dir}/{info.base_name}", info.size, meta.num_rows))
    if arrow_schema is None:  # no rows at all: the schema from Spark
        arrow_schema = pa.Schema.from_pandas(events.drop("run_id").limit(0).toPandas())
    return _commit_run(location, files, arrow_schema, run_id)


# A staging step: stages some outputs, nothing visible yet; returns them and where each will appear.
Step = Callable[[], tuple[list[Staged], dict[str, str]]]


def stage_all(steps: Iterable[Step]) -> tuple[list[Staged], dict[str, str]]:
    """Run every step; if one fails, what the earlier ones staged is removed and the error raised."""
    staged: list[Staged] = []
    where: dict[str, str] = {}
    try:
        for step in steps:
            more, places = step()
            staged += more
            where.update(places)
    except BaseException:
        for s in staged:
            s.abort()
        raise
    return staged, where


# --- partitioned tables: day partitions, and an empty table that still reads ------------------------

EMPTY_MARKER = "part-00000-empty.parquet"


def readable_when_empty(schema: T.StructType, location: str) -> None:
    """A partitioned write of no rows leaves no data file, and neither Spark nor pyarrow can read a table
    without one (they infer the schema from the files). Then write one empty file with the whole schema
    at the table's root, so the empty table reads as empty. A day's run removes it before it writes a
    partition (:func:`drop_empty_marker`): a root file beside partition directories would not read."""
    filesystem, path = filesystem_for(location)
    infos = filesystem.get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True))
    if any(i.base_name.endswith(".parquet") for i in infos):
        return
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(f"{path}/{EMPTY_MARKER}") as out:
        pq.write_table(to_arrow_schema(schema).empty_table(), out)


def drop_empty_marker(location: str) -> None:
    """Remove the file :func:`readable_when_empty` left in an empty table, if there is one."""
    filesystem, path = filesystem_for(location)
    marker = f"{path}/{EMPTY_MARKER}"
    if filesystem.get_file_info(marker).type == fs.FileType.File:
        filesystem.delete_file(marker)


def day_partition(table: str, day: str, column: str = "session_date") -> str:
    """The directory of one day's partition of a table partitioned by ``column``."""
    return f"{table.rstrip('/')}/{column}={day}"


def partitioned_write(writer: DataFrameWriter, day: str | None, column: str = "session_date") -> DataFrameWriter:
    """A writer partitioned by ``column``: in day mode replacing only the partitions it writes (dynamic
    partition overwrite), else the whole table."""
    writer = writer.mode("overwrite").partitionBy(column)
    return writer.option("partitionOverwriteMode", "dynamic") if day is not None else writer
