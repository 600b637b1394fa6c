"""Writing the report's tables: CSV (the seed's file names), Delta and parquet, idempotent per run_id.

- **CSV**: one file per table, written whole to a temporary name and renamed into place, so a reader never
  sees half a file and a failed run leaves the previous file as it was.
- **Delta**: through Spark's Delta writer where Delta Lake for Spark is configured (clusters); otherwise
  (this machine: no Maven for the Delta jars) through the ``deltalake`` package. Each write is one
  commit that replaces the rows of this ``run_id`` (``predicate run_id = '...'``): rerunning a run gives
  the same table, other runs' rows stay. A failure before the commit leaves the table at its previous
  version. Protocol reader 1 / writer 2, so any Delta reader opens it.
- **Parquet**: partitioned by ``run_id`` with dynamic partition overwrite: rerunning replaces only that
  run's partition, and Spark's commit protocol moves files into place only when the job succeeds.
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


def write_parquet(spark, table: pa.Table, location: str, run_id: str) -> None:
    """Partitioned by run_id; only this run's partition is replaced. An empty table removes this run's
    partition (Spark writes no partition for no rows, which would leave an earlier attempt's rows)."""
    if table.num_rows == 0:
        from attribution.io import _filesystem

        filesystem, path = _filesystem(f"{location.rstrip('/')}/run_id={run_id}")
        if filesystem is None:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        else:
            from pyarrow import fs

            if filesystem.get_file_info(path).type != fs.FileType.NotFound:
                filesystem.delete_dir(path)
        return
    (
        spark.createDataFrame(table)
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy("run_id")
        .parquet(location)
    )


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
