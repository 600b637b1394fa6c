"""Counts a Spark Connect server drops (Spark 4.1 sends an Observation's metrics only when they come
within 100 ms of the action's end): the stages count them again and reconcile as they do when the
metrics arrive. The drop is made by replacing :func:`attribution.observed.delivered` with what a
Connect client sees then, an empty observation; everything else is the real stage on real Spark."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from pyspark.sql import Observation
from pyspark.sql import functions as F

from attribution import catalogue, observed, train
from attribution.stages import generate as generate_stage
from attribution.stages import sessionize as sessionize_stage
from tests.conftest import make_conf
from tests.helpers import synthetic_sessions


def _dropped(monkeypatch) -> None:
    monkeypatch.setattr(observed, "delivered", lambda observation: ({}, False))


def test_a_classic_observation_is_complete_with_rows_and_without(spark):
    rows = Observation("rows")
    spark.range(7).observe(rows, F.count(F.lit(1)).alias("n")).collect()
    assert observed.delivered(rows) == ({"n": 7}, True)
    none = Observation("none")
    spark.range(7).where("id > 100").observe(none, F.count(F.lit(1)).alias("n")).collect()
    got, complete = observed.delivered(none)
    assert complete and got.get("n", 0) == 0


def test_sessionize_counts_again_what_connect_dropped_and_reconciles_the_same(spark, tmp_path, monkeypatch, caplog):
    """Independent expectation: the same input gives the same summary, row for row and session for
    session, whether the counts ride on the writes or are counted again; and the generator's planted
    dirty rows are each found."""

    def conf(out: str):
        return make_conf(
            "generate.n_users=300",
            "generate.dirty_fraction=0.02",
            f"generate.output_path={tmp_path}/raw",
            f"generate.stores_path={tmp_path}/stores",
            f"generate.ground_truth_path={tmp_path}/truth.json",
            f"input.path={tmp_path}/raw",
            f"stores.path={tmp_path}/stores",
            f"run.output_dir={tmp_path}/{out}",
            "input.timestamp_format=yyyy-MM-dd HH:mm:ss.SSS",
            f"events.known_events={json.dumps(list(catalogue.BROWSE_EVENTS))}",
        )

    counts = generate_stage.run(spark, conf("observed"))
    summary = sessionize_stage.run(spark, conf("observed")).summary
    _dropped(monkeypatch)
    with caplog.at_level("WARNING", logger="attribution.observed"):
        recounted = sessionize_stage.run(spark, conf("recounted")).summary
    for what in ("quarantine counts", "valid rows", "session counts"):
        assert f"sessionize's {what}: the Spark Connect server sent no observed metrics" in caplog.text
    assert recounted["rows_read"] == summary["rows_read"] == counts.rows
    same = ("rows", "rows_accounted", "sessions", "kept_sessions_by_split", "kept_sessions_converted")
    assert {k: recounted[k] for k in same} == {k: summary[k] for k in same}
    assert recounted["rows"]["quarantined_unknown_event_name"] == counts.planted_dirty_rows["unknown_event"] > 0
    assert recounted["sessions"] == summary["sessions"] and recounted["sessions"]["kept"] > 0
    kept = spark.read.parquet(f"{tmp_path}/recounted/sessions")
    assert kept.count() == recounted["sessions"]["kept"]


def test_the_training_inputs_split_counts_come_from_the_shards_when_connect_dropped_them(spark, tmp_path, monkeypatch):
    table = synthetic_sessions(120, seed=4, full=True)
    (tmp_path / "sessions").mkdir()
    pq.write_table(table, tmp_path / "sessions" / "p.parquet")
    conf = make_conf("vocab.min_frequency=1")
    _dropped(monkeypatch)
    _, _, counts = train.prepare_shards(spark, conf, str(tmp_path / "sessions"), str(tmp_path / "shards"), 2)
    splits = table.column("split").to_pylist()
    labels = table.column("label").to_pylist()
    for s in ("train", "validation", "test"):
        assert counts[s] == splits.count(s) > 0
        assert counts[f"{s}_positive"] == sum(y for y, k in zip(labels, splits, strict=True) if k == s)


def test_an_empty_split_is_still_an_error_when_the_counts_are_recounted(spark, tmp_path, monkeypatch):
    import pyarrow.compute as pc

    table = synthetic_sessions(60, seed=5, full=True)
    table = table.filter(pc.not_equal(table["split"], "test"))
    (tmp_path / "sessions").mkdir()
    pq.write_table(table, tmp_path / "sessions" / "p.parquet")
    _dropped(monkeypatch)
    with pytest.raises(train.TrainingError, match="the test split .* is empty"):
        train.prepare_shards(
            spark, make_conf("vocab.min_frequency=1"), str(tmp_path / "sessions"), str(tmp_path / "shards"), 1
        )
