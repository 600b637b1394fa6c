"""The event table written by the UDF's own worker (attribution.writer: arrow) against Spark's writer:
the same rows, columns, types and files; the commit replaces what it should and nothing else."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StructField, StructType

from attribution.attribute import METHODS
from attribution.events import position_bin
from attribution.stages import attribute as attribute_stage
from tests.conftest import make_conf
from tests.helpers import save_random_model, synthetic_sessions, vocab_of
from udfs import event_files

DAYS = [dt.date(2025, 1, 15), dt.date(2025, 1, 16), dt.date(2025, 1, 17)]


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("event_files")
    table = synthetic_sessions(150, seed=11, max_len=60, full=True)
    # three days, so the files go to three partitions
    days = pa.array([DAYS[i % 3] for i in range(table.num_rows)], pa.date32())
    table = table.set_column(table.schema.get_field_index("session_date"), "session_date", days)
    (root / "out" / "sessions").mkdir(parents=True)
    pq.write_table(table, root / "out" / "sessions" / "part-0.parquet")
    save_random_model(root / "out" / "model", vocab_of(table), max_length=60)
    return root, table


def _conf(root, writer: str, output: str, *extra: str):
    return make_conf(
        f"run.output_dir={root}/out",
        "run.run_id=r1",
        "attribution.split=all",
        f"attribution.methods={json.dumps(list(METHODS))}",
        "attribution.ig_steps=4",
        "attribution.batch_size=16",
        "attribution.removal_sessions=100000",  # every session: removal effects and pairs on all of them
        "attribution.removal_pairs=4",
        "attribution.delta_path=null",
        f"attribution.writer={writer}",
        f"attribution.output_path={output}",
        f"attribution.summary_path={output}.json",
        *extra,
    )


def _run(spark, conf):
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "9")  # many batches per task
    try:
        return attribute_stage.run(spark, conf).summary
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")


def with_prediction(schema: StructType) -> StructType:
    """The columns a scoring UDF returns at least (StructType.add would change the DataFrame's own)."""
    return StructType([*schema.fields, StructField("prediction", DoubleType())])


def _unscored(spark, root):
    """The sessions with the columns the event table takes from them, for a stand-in scoring UDF."""
    columns = ["session_id", "label", "session_length", "session_date", "event_types", "event_names"]
    return spark.read.parquet(f"{root}/out/sessions").select(*columns, "store_ids", "store_names", "event_ts")


def _files(table: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(d.glob("*.parquet")) for d in sorted(table.glob("session_date=*"))}


@pytest.fixture(scope="module")
def both(spark, stage):
    root, table = stage
    summaries = {w: _run(spark, _conf(root, w, f"events_{w}")) for w in ("spark", "arrow")}
    return root, table, summaries


def test_the_same_table_as_sparks_writer(spark, both):
    root, table, summaries = both
    by_spark = spark.read.parquet(f"{root}/out/events_spark")
    by_arrow = spark.read.parquet(f"{root}/out/events_arrow")
    assert by_arrow.schema == by_spark.schema
    total = int(pc.sum(table.column("session_length")).as_py())
    assert by_arrow.count() == by_spark.count() == total
    # every column, the nested ones included: the same rows, as a multiset
    assert by_arrow.exceptAll(by_spark).count() == 0 and by_spark.exceptAll(by_arrow).count() == 0
    # the removal effects, the members and the pairs are there (not all null on both sides)
    rows = by_arrow.where("event_position = 0").select("removal_pair_interactions", "removal_effect_type_members")
    assert rows.where("size(removal_pair_interactions) > 0").count() > 0
    assert rows.where("removal_effect_type_members is not null").count() == len(table)
    assert by_arrow.where("event_position > 0 and removal_pair_interactions is not null").count() == 0


def test_the_same_files_as_sparks_writer(both):
    root, _, _ = both
    spark_files, arrow_files = _files(root / "out" / "events_spark"), _files(root / "out" / "events_arrow")
    assert list(arrow_files) == list(spark_files) == [f"session_date={d}" for d in DAYS]
    for day, files in arrow_files.items():
        reference = pq.read_metadata(spark_files[day][0])
        for f in files:
            meta = pq.read_metadata(f)
            # the parquet schema (physical types, logical types, required/optional, list layout)
            assert meta.schema.equals(reference.schema), f
            key = event_files.SPARK_SCHEMA_KEY
            assert json.loads(meta.metadata[key]) == json.loads(reference.metadata[key])
            assert b"ARROW:schema" not in meta.metadata
    out = root / "out" / "events_arrow"
    assert (out / "_SUCCESS").exists() and not list(out.glob(f"{event_files.STAGING_PREFIX}*"))


def test_the_same_summary(both):
    _, table, summaries = both
    by_spark, by_arrow = summaries["spark"], summaries["arrow"]
    differ = {
        "seconds",
        "output",
        "mean_prediction",
        "ig_completeness_gap",
        "python_worker_peak_rss_mb",
        "worker_seconds",
    }
    for key in by_spark:
        if key not in differ:
            assert by_arrow[key] == by_spark[key], key
    assert by_arrow["sessions"] == table.num_rows
    assert by_arrow["mean_prediction"] == pytest.approx(by_spark["mean_prediction"], rel=1e-12)
    # where the workers' time went: every part ran (removal on), and only the worker's writer writes
    for summary in (by_spark, by_arrow):
        parts = summary["worker_seconds"]
        assert set(parts) == {"input", "encode", "model", "removal", "output", "write"}
        assert all(parts[p] > 0 for p in ("input", "encode", "model", "removal", "output")), parts
    assert by_arrow["worker_seconds"]["write"] > 0 and by_spark["worker_seconds"]["write"] == 0
    for stat in ("max_abs", "mean_abs"):
        expected = by_spark["ig_completeness_gap"][stat]
        assert by_arrow["ig_completeness_gap"][stat] == pytest.approx(expected, rel=1e-9)


def test_a_day_replaces_its_partition_only(spark, stage, both):
    root, table, _ = both
    output = "events_days"
    _run(spark, _conf(root, "arrow", output))
    before = _files(root / "out" / output)
    day = str(DAYS[1])
    summary = _run(spark, _conf(root, "arrow", output, f"run.date={day}", "run.run_id=r2"))
    after = _files(root / "out" / output)
    # the other days: the very same files; the day: new files, the new run's rows only
    assert {k: v for k, v in after.items() if day not in k} == {k: v for k, v in before.items() if day not in k}
    assert set(after[f"session_date={day}"]).isdisjoint(before[f"session_date={day}"])
    events = spark.read.parquet(f"{root}/out/{output}")
    runs = {(str(r.session_date), r.run_id) for r in events.select("session_date", "run_id").distinct().collect()}
    assert runs == {(str(DAYS[0]), "r1"), (day, "r2"), (str(DAYS[2]), "r1")}
    expected = sum(n for i, n in enumerate(table.column("session_length").to_pylist()) if i % 3 == 1)
    assert summary["events"] == expected == events.where(f"session_date = '{day}'").count()


def test_a_stray_attempt_is_not_committed(spark, stage):
    """A failed or speculative attempt's file under the staging directory never reaches the table."""
    root, _ = stage
    output = str(root / "out" / "events_stray")
    sessions = _unscored(spark, root)
    schema = with_prediction(sessions.schema)

    def udf(batches):
        for b in batches:
            yield b.append_column("prediction", pa.array(np.full(b.num_rows, 0.5)))

    files = event_files.event_files(spark, schema, output, "r1", "sha")
    assert Path(files.staging).is_absolute() and Path(files.staging).parent == Path(output)
    stray = Path(files.staging) / f"session_date={DAYS[0]}" / "part-00000-stray-a1.c000.snappy.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not parquet")
    committed = event_files.write_event_table(sessions, udf, files, output)
    written = [p for ps in _files(Path(output)).values() for p in ps]
    assert written and not any("stray" in p.name for p in written)
    assert not Path(files.staging).exists()
    assert (
        committed.events == spark.read.parquet(output).count() == sessions.selectExpr("sum(session_length)").first()[0]
    )


def test_a_failed_job_leaves_the_previous_table(spark, stage, both):
    root, _, _ = both
    output = root / "out" / "events_arrow"
    before = _files(output)
    sessions = _unscored(spark, root)

    def udf(batches):
        for b in batches:
            raise RuntimeError("the model broke")
            yield b

    files = event_files.event_files(spark, with_prediction(sessions.schema), str(output), "r9", "sha")
    with pytest.raises(Exception, match="the model broke"):
        event_files.write_event_table(sessions, udf, files, str(output))
    assert _files(output) == before and not Path(files.staging).exists()


def test_position_bins_as_spark_gives_them(spark):
    positions = np.arange(0, 120, dtype=np.int32)
    frame = spark.createDataFrame([(int(p),) for p in positions], "p int")
    by_spark = [r.b for r in frame.select(position_bin(F.col("p") + 1).alias("b")).collect()]
    assert event_files.position_bins(positions).to_pylist() == by_spark


def test_spread_over_partitions_the_same_table(spark, both):
    """attribution.partitions: the sessions hash-partitioned before scoring give the same rows. The
    scores within float32 noise: other sessions share an Arrow batch, so the model's batches pad
    differently."""
    root, _, _ = both
    _run(spark, _conf(root, "arrow", "events_spread", "attribution.partitions=3"))
    key = ["session_id", "event_position"]
    spread = spark.read.parquet(f"{root}/out/events_spread").toPandas().sort_values(key).reset_index(drop=True)
    reference = spark.read.parquet(f"{root}/out/events_arrow").toPandas().sort_values(key).reset_index(drop=True)
    assert list(spread.columns) == list(reference.columns) and len(spread) == len(reference)
    for c in spread.columns:
        if spread[c].dtype == float:
            np.testing.assert_allclose(spread[c], reference[c], atol=1e-6, err_msg=c)
        elif c.endswith("_members"):
            got = [np.asarray(v) if v is not None else None for v in spread[c]]
            want = [np.asarray(v) if v is not None else None for v in reference[c]]
            assert [g is None for g in got] == [w is None for w in want], c
            for g, w in zip(got, want, strict=True):
                if g is not None:
                    np.testing.assert_allclose(g.astype(float), w.astype(float), atol=1e-6, err_msg=c)
        elif c != "removal_pair_interactions":
            assert spread[c].astype(str).tolist() == reference[c].astype(str).tolist(), c
    pairs = [
        [(p["first_event_type"], p["second_event_type"]) for p in v] if v is not None else None
        for v in spread["removal_pair_interactions"]
    ]
    assert pairs == [
        [(p["first_event_type"], p["second_event_type"]) for p in v] if v is not None else None
        for v in reference["removal_pair_interactions"]
    ]
    # three tasks, each with sessions of every day: three files a day (the input is one file, one task)
    assert {d: len(f) for d, f in _files(root / "out" / "events_spread").items()} == {
        f"session_date={d}": 3 for d in DAYS
    }


def test_the_same_report_tables_as_sparks_writer(spark, both):
    """Every table the report makes from the event table (lifts, removal effects and their CIs, pairs),
    from each writer's table: equal, value for value."""
    from attribution import aggregate, removal_tables

    root, _, _ = both
    made = {}
    for writer in ("spark", "arrow"):
        events = spark.read.parquet(f"{root}/out/events_{writer}")
        removal = removal_tables.removal_stats(events)
        assert removal is not None and removal.num_rows > 0
        made[writer] = aggregate.tables(aggregate.long_format(events), min_events=1, removal=removal)
    assert set(made["arrow"]) == set(made["spark"]) and len(made["arrow"]) > 3
    for name, table in made["spark"].items():
        got, want = made["arrow"][name].to_pandas(), table.to_pandas()
        assert len(want) > 0, name
        keys = [c for c in want.columns if want[c].dtype == object and c not in ("verdict",)]
        pd.testing.assert_frame_equal(
            got.sort_values(keys).reset_index(drop=True),
            want.sort_values(keys).reset_index(drop=True),
            obj=name,
            rtol=1e-12,
            atol=1e-15,
        )


def test_a_relative_output_is_staged_at_an_absolute_path(spark, stage, monkeypatch, tmp_path):
    """A Spark executor's working directory is not the driver's: the staging directory, which the
    executors write, is made absolute on the driver."""
    schema = with_prediction(_unscored(spark, stage[0]).schema)
    monkeypatch.chdir(tmp_path)
    files = event_files.event_files(spark, schema, "out/events", "r1", "sha")
    assert files.staging.startswith(f"{tmp_path}/out/events/{event_files.STAGING_PREFIX}")


def test_the_sessions_parquet_codec_or_one_line_naming_it(spark):
    """The worker writes with the session's spark.sql.parquet.compression.codec; one pyarrow cannot
    write is a config error naming the setting and the way out."""
    from attribution.errors import ConfigError

    try:
        spark.conf.set("spark.sql.parquet.compression.codec", "zstd")
        assert event_files.compression_codec(spark) == "ZSTD"
        spark.conf.set("spark.sql.parquet.compression.codec", "lzo")
        with pytest.raises(ConfigError, match=r"compression.codec=lzo.*attribution.writer=spark"):
            event_files.compression_codec(spark)
    finally:
        spark.conf.unset("spark.sql.parquet.compression.codec")
    assert event_files.compression_codec(spark) == "SNAPPY"


def test_spark_writers_counts_that_connect_drops_come_from_the_table_written(spark, both, monkeypatch, caplog):
    """Spark Connect 4.1 can drop an Observation's metrics (attribution.observed): Spark's writer then
    counts the sessions, events, conversions, mean prediction and completeness gaps again from the event
    table it wrote, equal to what it observed; the unknown tokens and the UDF's counters, held nowhere
    else, are null."""
    from attribution import observed

    root, _, summaries = both
    monkeypatch.setattr(observed, "delivered", lambda observation: ({}, False))
    with caplog.at_level("WARNING", logger="attribution.observed"):
        dropped = _run(spark, _conf(root, "spark", "events_dropped"))
    assert "the attribute stage's event rows: the Spark Connect server sent no observed metrics" in caplog.text
    kept = summaries["spark"]
    for key in ("sessions", "converted_sessions", "events"):
        assert dropped[key] == kept[key]
    assert dropped["mean_prediction"] == pytest.approx(kept["mean_prediction"], rel=1e-12)
    gaps = [k for k in kept if isinstance(kept[k], dict) and set(kept[k]) == {"max_abs", "mean_abs"}]
    assert gaps  # integrated gradients' completeness gap is among the methods
    for key in gaps:
        assert dropped[key] == pytest.approx(kept[key], rel=1e-9)
    assert set(dropped["unknown_tokens"].values()) == {None}
    assert kept["model_batches"] > 0 and dropped["model_batches"] is None and dropped["worker_seconds"] is None
    assert dropped["drift"]["roc_auc"] == kept["drift"]["roc_auc"]
