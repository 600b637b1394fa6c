"""Writing the outputs (attribution/sinks.py): Delta commits per run, staged writes that a failure leaves
unpublished, one CSV file, parquet partitioned by run id."""

from __future__ import annotations

import pandas as pd
import pytest

from attribution import sinks
from tests.helpers import EVENT_ROWS


def test_event_table_as_delta_one_commit_per_run_and_idempotent(spark, events, tmp_path):
    from deltalake import DeltaTable
    from pyspark.sql import functions as F

    location = str(tmp_path / "delta_events")
    v0 = sinks.write_delta_events(spark, events, location, "r1")
    v1 = sinks.write_delta_events(spark, events, location, "r1")  # the same run again: replaced, not added
    v2 = sinks.write_delta_events(spark, events.limit(3).withColumn("run_id", F.lit("r2")), location, "r2")
    assert (v0, v1, v2) == (0, 1, 2)
    table = DeltaTable(location)
    assert table.protocol().min_reader_version == 1 and table.protocol().min_writer_version == 2
    rows = table.to_pandas()
    assert rows.groupby("run_id").size().to_dict() == {"r1": len(EVENT_ROWS), "r2": 3}
    r1 = rows[rows.run_id == "r1"].sort_values(["session_id", "event_position"])
    assert r1.gradient_attribution.tolist() == pytest.approx(
        [e[6] for e in sorted(EVENT_ROWS, key=lambda e: (e[0], e[2]))]
    )
    # time travel: version 0 is the first write, intact
    assert len(DeltaTable(location, version=0).to_pandas()) == len(EVENT_ROWS)


def test_a_failure_during_the_write_leaves_the_previous_table_unchanged(spark, events, tmp_path):
    """A task that fails while the executors write: no commit, the table stays at its last version."""
    from deltalake import DeltaTable
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    location = str(tmp_path / "delta_events")
    sinks.write_delta_events(spark, events, location, "r1")
    before = DeltaTable(location).to_pandas().sort_values(["session_id", "event_position"]).reset_index(drop=True)

    @F.udf(DoubleType())
    def fails_on_s3(session_id, value):
        if session_id == "s3":
            raise RuntimeError("injected failure while writing")
        return value

    broken = events.withColumn("gradient_attribution", fails_on_s3("session_id", "gradient_attribution"))
    with pytest.raises(Exception, match="injected failure"):
        sinks.write_delta_events(spark, broken, location, "r1")
    table = DeltaTable(location)
    assert table.version() == 0
    after = table.to_pandas().sort_values(["session_id", "event_position"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_event_level_csv_is_one_file_written_by_the_executors(spark, events, tmp_path):

    target = tmp_path / "gradient_attribution_no_funnel.csv"
    sinks.write_csv_single_file(events, str(target))
    back = pd.read_csv(target)
    assert len(back) == len(EVENT_ROWS) and "gradient_attribution" in back.columns
    assert sorted(back.gradient_attribution) == pytest.approx(sorted(e[6] for e in EVENT_ROWS))
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary directory left behind


def test_small_parquet_tables_partitioned_by_run_id_as_spark_reads_them(spark, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    location = str(tmp_path / "parquet_table")
    odd = "2026-11-28T07:00/a=b c"  # characters Spark escapes in a partition directory's name
    first = pa.table({"run_id": ["r1", "r1"], "event_type": ["A", "B"], "lift": [0.5, -0.25]})
    sinks.write_parquet(first, location, "r1")
    sinks.write_parquet(pa.table({"run_id": [odd], "event_type": ["C"], "lift": [1.0]}), location, odd)
    sinks.write_parquet(first.slice(0, 1), location, "r1")  # the same run again: replaced, one row left
    back = spark.read.parquet(location).toPandas().sort_values("event_type")
    assert back.run_id.tolist() == ["r1", odd] and back.lift.tolist() == [0.5, 1.0]
    # an empty table leaves the run's partition empty but typed
    sinks.write_parquet(first.slice(0, 0), location, "r1")
    assert spark.read.parquet(location).where("run_id = 'r1'").count() == 0
    assert spark.read.parquet(location).count() == 1
    # a failure while the new partition is written: the previous one stays whole, nothing half-visible
    sinks.write_parquet(first, location, "r1")

    def broken(*args, **kwargs):
        raise OSError("injected failure while writing")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="injected failure"):
        sinks.write_parquet(first.slice(0, 1), location, "r1")
    assert spark.read.parquet(location).where("run_id = 'r1'").count() == 2
    assert not [p.name for p in (tmp_path / "parquet_table").iterdir() if p.name.startswith("_")]


def test_a_delta_table_in_the_earlier_unpartitioned_layout_keeps_working(tmp_path):
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    location = str(tmp_path / "legacy")
    old = pa.table({"run_id": ["r0", "r1"], "event_type": ["A", "A"], "lift": [0.1, 0.2]})
    write_deltalake(location, old)  # as the report wrote it before tables were partitioned by run_id
    sinks.write_delta(
        None, pa.table({"run_id": ["r1", "r1"], "event_type": ["A", "B"], "lift": [0.3, 0.4]}), location, "r1"
    )
    rows = DeltaTable(location).to_pandas().sort_values(["run_id", "event_type"])
    assert rows.values.tolist() == [["r0", "A", 0.1], ["r1", "A", 0.3], ["r1", "B", 0.4]]
