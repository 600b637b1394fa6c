"""Writing the report's tables: CSV (the seed's file names), Delta and parquet, idempotent per run_id.

- **CSV**: one file per table, written whole to a temporary name and renamed into place, so a reader never
  sees half a file and a failed run leaves the previous file as it was.
- **Delta**: through Spark's Delta writer where Delta Lake for Spark is configured (clusters); otherwise
  (this machine: no Maven for the Delta jars) through the ``deltalake`` package. Each write is one
  commit that replaces the rows of this ``run_id`` (``predicate run_id = '...'``): rerunning a run gives
  the same table, other runs' rows stay. A failure before the commit leaves the table at its previous
  version. Protocol reader 1 / writer 2, so any Delta reader opens it.
- **Parquet**: partitioned by ``run_id`` (Hive style, as Spark writes it); rerunning replaces only that
  run's partition, written aside first and swapped in by renames. Spark, pyarrow and pandas read it.
"""

from __future__ import annotations

import pyarrow as pa

from attribution.io import spark_has_delta, write_bytes


def write_csv(table: pa.Table, location: str) -> None:
    write_bytes(location, table.to_pandas().to_csv(index=False).encode())


def write_delta_small(arrow: pa.Table, location: str, run_id: str) -> int:
    """Replace this run's rows of a (small, driver-side) table in one Delta commit; returns the version."""
    from deltalake import DeltaTable, write_deltalake

    try:
        DeltaTable(location)
        exists = True
    except Exception:  # noqa: BLE001 - deltalake raises TableNotFoundError and friends
        exists = False
    if exists:
        literal = run_id.replace("'", "''")
        write_deltalake(location, arrow, mode="overwrite", predicate=f"run_id = '{literal}'", schema_mode="merge")
    else:
        write_deltalake(location, arrow, mode="append")
    return DeltaTable(location).version()


def write_delta(spark, table: pa.Table, location: str, run_id: str) -> int | None:
    """A small table as Delta: Spark's Delta writer when installed, else deltalake."""
    if spark_has_delta(spark):
        sdf = spark.createDataFrame(table)
        (
            sdf.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"run_id = '{run_id}'")
            .option("mergeSchema", "true")
            .save(location)
        )
        return None
    return write_delta_small(table, location, run_id)


# Characters Spark escapes (as %XX) in a partition directory's value, so Spark reads the value back as written.
_PARTITION_ESCAPES = set("\"#%'*/:=?\\\x7f{[]^") | {chr(i) for i in range(0x20)}


def partition_dir(column: str, value: str) -> str:
    return f"{column}=" + "".join(f"%{ord(ch):02X}" if ch in _PARTITION_ESCAPES else ch for ch in value)


def write_parquet(table: pa.Table, location: str, run_id: str) -> None:
    """A small table as Hive-partitioned parquet (``location/run_id=<id>/part-00000.parquet``), written
    from the driver with pyarrow (no Spark job for a few hundred rows). This run's partition is written
    under a name readers skip (``_staging-*``), then swapped for the previous one by two renames, so
    other runs' partitions are never touched and a failure before the swap leaves the old one whole.
    An empty table writes an empty file with the schema: the run's partition then holds no rows."""
    import uuid

    import pyarrow.parquet as pq
    from pyarrow import fs

    from attribution.io import _filesystem

    filesystem, root = _filesystem(location)
    filesystem = filesystem or fs.LocalFileSystem()
    root = root.rstrip("/")
    token = uuid.uuid4().hex[:12]
    staging, old = f"{root}/_staging-{token}", f"{root}/_replaced-{token}"
    target = f"{root}/{partition_dir('run_id', run_id)}"
    filesystem.create_dir(staging, recursive=True)
    data = table.drop_columns(["run_id"]) if "run_id" in table.column_names else table
    try:
        pq.write_table(data, f"{staging}/part-00000.parquet", filesystem=filesystem)
    except BaseException:
        filesystem.delete_dir(staging)
        raise
    if filesystem.get_file_info(target).type != fs.FileType.NotFound:
        filesystem.move(target, old)
    filesystem.move(staging, target)
    if filesystem.get_file_info(old).type != fs.FileType.NotFound:
        filesystem.delete_dir(old)


def write_csv_single_file(df, location: str) -> None:
    """A large Spark DataFrame as one CSV file, written by one executor task (never collected to the
    driver): Spark writes a temporary directory, its one part file is then renamed to ``location``."""
    import uuid

    from attribution.io import _filesystem

    tmp = f"{location}.tmp-{uuid.uuid4().hex[:8]}"
    df.coalesce(1).write.mode("overwrite").option("header", "true").csv(tmp)
    filesystem, tmp_path = _filesystem(tmp)
    _, target = _filesystem(location)
    if filesystem is None:
        import glob
        import os
        import shutil

        (part,) = glob.glob(os.path.join(tmp_path, "part-*.csv"))
        os.replace(part, target)
        shutil.rmtree(tmp_path, ignore_errors=True)
        return
    from pyarrow import fs

    parts = [f.path for f in filesystem.get_file_info(fs.FileSelector(tmp_path)) if f.base_name.startswith("part-")]
    filesystem.move(parts[0], target)
    filesystem.delete_dir(tmp_path)


def write_delta_events(spark, events, location: str, run_id: str) -> int | None:
    """The (large) event-level table as Delta, partitioned by run_id, this run's rows replaced in one commit.

    With Delta Lake for Spark: Spark's writer with ``replaceWhere``. Without it (this machine): the
    executors write the parquet files into a fresh directory inside the table, the driver reads only
    their footers (row counts) and commits them with ``deltalake`` in one transaction that also removes
    this run's previous files. A failure before that commit leaves the table at its previous version
    (the new files are unreferenced). Returns the new version (None through Spark's writer).
    """
    import json
    import time
    import uuid

    import pyarrow.parquet as pq
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions
    from pyarrow import fs

    from attribution.io import _filesystem

    if spark_has_delta(spark):
        (
            events.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"run_id = '{run_id}'")
            .partitionBy("run_id")
            .save(location)
        )
        return None
    relative_dir = f"run_id={run_id}/{uuid.uuid4().hex}"
    staging = f"{location.rstrip('/')}/{relative_dir}"
    events.drop("run_id").write.mode("errorifexists").parquet(staging)
    filesystem, path = _filesystem(staging)
    filesystem = filesystem or fs.LocalFileSystem()
    infos = [i for i in filesystem.get_file_info(fs.FileSelector(path)) if i.base_name.endswith(".parquet")]
    now = int(time.time() * 1000)
    actions, arrow_schema = [], None
    for info in sorted(infos, key=lambda i: i.path):
        with filesystem.open_input_file(info.path) as f:
            meta = pq.ParquetFile(f).metadata
            arrow_schema = arrow_schema or meta.schema.to_arrow_schema()
        actions.append(
            AddAction(
                path=f"{relative_dir}/{info.base_name}",
                size=info.size,
                partition_values={"run_id": run_id},
                modification_time=now,
                data_change=True,
                stats=json.dumps({"numRecords": meta.num_rows}),
            )
        )
    if arrow_schema is None:  # no rows at all: the schema from Spark
        import pyarrow as pa_

        arrow_schema = pa_.Schema.from_pandas(events.drop("run_id").limit(0).toPandas())
    schema = Schema.from_arrow(arrow_schema.append(pa.field("run_id", pa.string())))
    try:
        table = DeltaTable(location)
    except Exception:  # noqa: BLE001 - not a table yet
        table = None
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
    return DeltaTable(location).version()
