"""The sessions read by the scoring UDF's own Python worker (``attribution.reader: arrow``).

Spark's way in to the scoring UDF is to read the sessions' parquet files in the JVM, make rows of them
and convert the rows to Arrow for the Python worker. Here the worker reads the files itself with
pyarrow: the driver lists the sessions table's files (only the run's days' ``session_date=...``
directories in day mode), deals them out to tasks by size, and each task of a one-row-per-task
DataFrame reads its files, keeps the split's rows (and the run's days), and hands the UDF Arrow batches
of the columns and types Spark would have handed it (``spark.sql.execution.arrow.maxRecordsPerBatch``
rows each). The rows are the same; which task scores a session, and so the batch it shares, can differ
from Spark's read.

The files are dealt out largest first to the task with the fewest bytes so far; a file is never split,
so a table of fewer files than tasks leaves tasks idle (``attribution.partitions`` with Spark's reader
spreads the sessions by a shuffle instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs

from attribution.errors import InputError
from attribution.sinks import filesystem_for

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

PARTITION = "session_date"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class SessionFiles:
    """What each task reads: ``tasks[i]`` the files (local paths or URIs) of task ``i``; the columns and
    Arrow types Spark's read would give (``target``); the split's rows (None: all), the days' (None:
    all; ``first``/``last`` as ISO dates) and the rows per Arrow batch."""

    tasks: tuple[tuple[str, ...], ...]
    target: pa.Schema
    split: str | None
    days: tuple[str, str] | None
    batch_rows: int

    def read(self, task_ids: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The sessions of the tasks whose ids come in ``task_ids`` (a mapInArrow input: one column of
        task ids), as Arrow batches of ``target``."""
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in task_ids:
            for task in batch.column(0).to_pylist():
                for path in self.tasks[task]:
                    for piece in self._file(path):
                        pending.append(piece)
                        rows += piece.num_rows
                        while rows >= self.batch_rows:
                            table = pa.Table.from_batches(pending, self.target)
                            yield from table.slice(0, self.batch_rows).combine_chunks().to_batches()
                            rest = table.slice(self.batch_rows)
                            pending, rows = rest.combine_chunks().to_batches(), rest.num_rows
        if rows:
            yield from pa.Table.from_batches(pending, self.target).combine_chunks().to_batches()

    def _file(self, path: str) -> Iterator[pa.RecordBatch]:
        """One file's rows of the split and the days, as batches of ``target``."""
        filesystem, located = filesystem_for(path)
        day = _partition_value(path)
        with filesystem.open_input_file(located) as handle:
            parquet = pq.ParquetFile(handle)
            present = set(parquet.schema_arrow.names)
            wanted = [f.name for f in self.target if f.name in present]
            if self.split is not None and "split" not in present:
                raise InputError(f"{path} lacks column split; re-run the sessionize stage")
            read = wanted + (["split"] if self.split is not None and "split" not in wanted else [])
            for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=read):
                table = pa.Table.from_batches([batch])
                keep = None
                if self.split is not None:
                    keep = pc.equal(table.column("split"), self.split)
                if self.days is not None and PARTITION in present:
                    dates = table.column(PARTITION).cast(pa.string())
                    within = pc.and_(pc.greater_equal(dates, self.days[0]), pc.less_equal(dates, self.days[1]))
                    keep = within if keep is None else pc.and_(keep, within)
                if keep is not None:
                    table = table.filter(pc.fill_null(keep, False))
                if table.num_rows == 0:
                    continue
                yield from self._shaped(table, day).to_batches()

    def _shaped(self, table: pa.Table, day: str | None) -> pa.Table:
        """``table`` with ``target``'s columns in its order and types: the partition value from the
        directory where the file has no such column, nulls for a column the file lacks (as Spark reads a
        file written before the column existed)."""
        columns = []
        for field in self.target:
            if field.name in table.column_names:
                columns.append(table.column(field.name).cast(field.type))
            elif field.name == PARTITION and day is not None:
                columns.append(pa.array([day] * table.num_rows, pa.string()).cast(field.type))
            else:
                columns.append(pa.nulls(table.num_rows, field.type))
        return pa.Table.from_arrays(columns, schema=self.target)


def _partition_value(path: str) -> str | None:
    """The ``session_date=...`` directory's value in ``path`` (None where there is none, or Spark's null)."""
    for part in path.split("/"):
        if part.startswith(f"{PARTITION}="):
            value = part.split("=", 1)[1]
            return None if value == NULL_PARTITION else value
    return None


def list_files(location: str, days: tuple[str, str] | None) -> list[tuple[str, int]]:
    """The data files of the parquet table at ``location`` (local path or URI) and their sizes, as Spark
    would read them: names and directories starting with ``_`` or ``.`` skipped; in day mode (``days``)
    only the ``session_date=...`` directories within them (all files of an unpartitioned table)."""
    filesystem, root = filesystem_for(location)
    prefix = location.rstrip("/")
    found = []
    for info in filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type != fs.FileType.File:
            continue
        relative = info.path[len(root) :].lstrip("/")
        if any(part.startswith(("_", ".")) for part in relative.split("/")):
            continue
        value = _partition_value(relative)
        if days is not None and f"{PARTITION}=" in relative and (value is None or not days[0] <= value <= days[1]):
            continue
        found.append((f"{prefix}/{relative}", int(info.size or 0)))
    return sorted(found)


def deal(files: Sequence[tuple[str, int]], tasks: int) -> tuple[tuple[str, ...], ...]:
    """``files`` (path, bytes) dealt out to at most ``tasks`` tasks: largest first, each to the task with
    the fewest bytes so far (ties: the lowest task); empty tasks are dropped."""
    bins: list[list[str]] = [[] for _ in range(max(1, min(tasks, len(files))))]
    sizes = [0] * len(bins)
    for path, size in sorted(files, key=lambda f: (-f[1], f[0])):
        i = min(range(len(bins)), key=lambda k: (sizes[k], k))
        bins[i].append(path)
        sizes[i] += size
    return tuple(tuple(b) for b in bins if b)


def reading(
    spark: SparkSession,
    location: str,
    selected: DataFrame,
    split: str,
    days: tuple[str, str] | None,
    tasks: int | None,
    udf: Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]],
) -> tuple[DataFrame, Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]]:
    """(a DataFrame of one task id per partition, the function mapInArrow runs over it: the sessions
    read by :class:`SessionFiles` and scored by ``udf``). ``selected`` is the DataFrame Spark's read
    would hand ``udf``: its schema is the target. ``tasks``: how many (None: one per file)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    files = list_files(location, days)
    dealt = deal(files, tasks or len(files))
    batch_rows = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000") or 10000)
    reader = SessionFiles(
        tasks=dealt,
        target=to_arrow_schema(selected.schema),
        split=None if split == "all" else split,
        days=days,
        batch_rows=batch_rows if batch_rows > 0 else 1 << 30,
    )
    task_ids = spark.range(0, len(dealt), 1, numPartitions=max(1, len(dealt))).selectExpr("cast(id as int) as task")

    def read_and_score(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return udf(reader.read(batches))

    return task_ids, read_and_score
