"""The attribution UDF and stage on real Spark: same numbers as in-process, the event table's shape."""

from __future__ import annotations

import json
import weakref

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from chispa import assert_df_equality

from attribution.attribute import METHODS, AttributionOptions, attribute_sessions
from attribution.events import event_table
from attribution.features import FeatureMismatch, Vocabularies, encode_sessions
from attribution.model import to_tensors
from attribution.schema import INPUT_COLUMNS
from attribution.stages import attribute as attribute_stage
from tests.conftest import make_conf
from tests.helpers import ordered_pairs_by_sessions, save_random_model, synthetic_sessions, vocab_of
from udfs import attribution_udf, worker


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("attr")
    table = synthetic_sessions(120, seed=6, max_len=25, full=True)
    # the model's vocabulary lacks store s1: its events are unknown at scoring time
    vocab = vocab_of(table)
    vocab = Vocabularies({**vocab.tokens, "store_ids": [s for s in vocab.tokens["store_ids"] if s != "s1"]}, 1)
    (root / "out" / "sessions").mkdir(parents=True)
    pq.write_table(table, root / "out" / "sessions" / "part-0.parquet")
    loaded = save_random_model(root / "out" / "model", vocab)
    return root, table, vocab, loaded


def _conf(root, *extra):
    return make_conf(
        f"run.output_dir={root}/out",
        "run.run_id=r1",
        f"attribution.methods={json.dumps(list(METHODS))}",
        "attribution.ig_steps=8",
        "attribution.batch_size=16",
        *extra,
    )


def test_udf_path_equals_the_in_process_path(spark, stage):
    root, table, vocab, loaded = stage
    conf = _conf(root, "attribution.split=all")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")  # many small Arrow batches
    try:
        summary = attribute_stage.run(spark, conf).summary
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    events = spark.read.parquet(f"{root}/out/gradient_attribution_no_funnel").toPandas()
    total = int(pc.sum(table.column("session_length")).as_py())
    assert summary["sessions"] == table.num_rows and summary["events"] == total == len(events)
    assert summary["model_batches"] >= table.num_rows / 7 and summary["oom_splits"] == 0
    assert 0.5 < summary["padding_efficiency"] <= 1.0 and summary["python_worker_peak_rss_mb"] > 50
    # the reference: the same model, in this process, all sessions at once
    enc = encode_sessions(table, loaded.vocab)
    ref = attribute_sessions(loaded.model, enc, AttributionOptions(methods=METHODS, ig_steps=8), batch_size=64)
    index = {s: i for i, s in enumerate(table.column("session_id").to_pylist())}
    rows = np.array([enc.offsets[index[s]] + p for s, p in zip(events.session_id, events.event_position, strict=True)])
    for col in [
        "gradient_attribution",
        "contribution",
        "attention_attribution",
        "rollout_attribution",
        "ig_attribution",
        "ig_contribution",
    ]:
        np.testing.assert_allclose(events[col].to_numpy(), ref[col][rows], atol=1e-6, err_msg=col)
    sess = np.array([index[s] for s in events.session_id])
    np.testing.assert_allclose(events.prediction.to_numpy(), ref["prediction"][sess], atol=1e-6)
    # every session's normalized scores sum to 1
    sums = events.groupby("session_id")[["gradient_attribution", "attention_attribution", "ig_attribution"]].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-6)
    # unknown stores are counted: every s1 event
    s1 = sum(row.count("s1") for row in table.column("store_ids").to_pylist())
    assert summary["unknown_tokens"]["store_ids"] == s1 > 0
    assert set(events.run_id) == {"r1"} and set(events.model_sha256) == {loaded.sha256}
    assert (events.event_type.to_numpy() == np.concatenate(table.column("event_types").to_pylist())[rows]).all()
    # attribution.removal_sessions (2000) is more than the sessions: every session is sampled
    assert events.groupby("session_id").removal_effect_type.count().min() > 0
    check_removal_against_brute_force(events, table, enc, loaded.model, index)


def check_removal_against_brute_force(events, table, enc, model, index, every: int = 7, least: int = 30) -> None:
    """Every ``every``-th session of the removal sample (the sessions whose events carry removal effects):
    for each key of each dimension, P(convert) of the session minus P(convert) with that key's events
    removed, one model call per variant, the other events in order at positions 1..k (the gap closed:
    attribution/removal.py's meaning). Each event of the key carries that value in its column, and in its
    members column as the one model's value; an event without a store has none. At least ``least`` keys
    are checked."""
    types, stores = table.column("event_types").to_pylist(), table.column("store_ids").to_pylist()
    by_session = {sid: g.sort_values("event_position") for sid, g in events.groupby("session_id")}
    sampled = {sid for sid, g in by_session.items() if g.removal_effect_type.notna().any()}
    uppers = np.array([5, 10, 20, 50])
    checked = 0
    for sid, i in sorted((s, i) for s, i in index.items() if s in sampled)[::every]:
        tokens, cont, mask = to_tensors(enc.batch(np.array([i])), model.spec.fields, "cpu")
        with torch.no_grad():
            x = model.represent(tokens, cont)
            full = torch.sigmoid(model.forward_from_representation(x, mask)[0])[0].item()
        n = int(enc.lengths[i])
        keys = {
            "removal_effect_type": types[i],
            "removal_effect_position": list(np.searchsorted(uppers, np.arange(1, n + 1), side="left")),
            "removal_effect_store": stores[i],
        }
        got = by_session[sid]
        for column, values in keys.items():
            for value in {v for v in values if v is not None}:
                keep = [j for j in range(n) if values[j] != value]
                with torch.no_grad():
                    if keep:
                        logit = model.forward_from_representation(
                            x[:, keep], torch.ones(1, len(keep), dtype=torch.bool)
                        )[0]
                    else:
                        logit = model.forward_from_representation(x[:, :0], torch.zeros(1, 0, dtype=torch.bool))[0]
                expected = full - torch.sigmoid(logit)[0].item()
                where = [j for j in range(n) if values[j] == value]
                np.testing.assert_allclose(got[column].to_numpy()[where], expected, atol=1e-6, err_msg=column)
                members = np.stack(got[f"{column}_members"].to_numpy()[where])
                np.testing.assert_allclose(members, expected, atol=1e-6, err_msg=column)
                assert members.shape == (len(where), 1)
                checked += 1
        no_store = [j for j in range(n) if stores[i][j] is None]
        assert got["removal_effect_store"].isna().to_numpy()[no_store].all()
    assert checked > least, checked


def test_default_split_is_test_and_empty_partitions_are_fine(spark, stage, tmp_path):
    root, table, vocab, loaded = stage
    conf = _conf(
        root,
        "attribution.methods=[grad_x_input]",
        f"attribution.output_path={tmp_path}/ev",
        f"attribution.summary_path={tmp_path}/s.json",
    )
    n_test = table.column("split").to_pylist().count("test")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "2000")  # many tiny input partitions, some empty
    try:
        summary = attribute_stage.run(spark, conf).summary
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert summary["sessions"] == n_test
    ev = spark.read.parquet(f"{tmp_path}/ev")
    assert "ig_attribution" not in ev.columns and "attention_attribution" not in ev.columns
    assert ev.select("session_id").distinct().count() == n_test


def test_the_event_table_as_one_csv_keeps_the_members_and_pairs_as_json(spark, stage, tmp_path):
    """attribution.csv_path: CSV holds no arrays or structs, so the ensemble members' values and the pair
    interactions are JSON text there; every event row is in the file, its pairs on the first event."""
    import pandas as pd

    root, table, vocab, loaded = stage
    conf = _conf(
        root,
        "attribution.methods=[grad_x_input]",
        f"attribution.output_path={tmp_path}/ev",
        f"attribution.summary_path={tmp_path}/s.json",
        f"attribution.csv_path={tmp_path}/events.csv",
        "attribution.delta_path=null",
        "attribution.removal_pairs=3",
    )
    summary = attribute_stage.run(spark, conf).summary
    csv = pd.read_csv(tmp_path / "events.csv")
    assert len(csv) == summary["events"] and len(summary["removal_pairs"]) == 3
    members = csv.removal_effect_type_members.dropna().map(json.loads)
    assert len(members) and {len(m) for m in members} == {1}
    firsts = csv[csv.event_position == 0].removal_pair_interactions.dropna().map(json.loads)
    assert csv[csv.event_position > 0].removal_pair_interactions.isna().all()
    found = [(e["first_event_type"], e["second_event_type"]) for entries in firsts for e in entries]
    assert found and set(found) <= {tuple(p) for p in summary["removal_pairs"]}


def test_event_table_positions_and_bins(spark):
    from pyspark.sql import Row

    scored = spark.createDataFrame(
        [
            Row(
                session_id="a",
                label=1,
                session_length=55,
                session_date="2025-01-15",
                prediction=0.5,
                event_types=[f"e{i}" for i in range(55)],
                event_names=[f"e{i}" for i in range(55)],
                store_ids=[None] * 55,
                store_names=[None] * 55,
                event_ts=[None] * 55,
                gradient_attribution=[1 / 55] * 55,
                contribution=[0.1] * 55,
            ),
        ],
        "session_id string, label int, session_length int, session_date string, prediction double, "
        "event_types array<string>, event_names array<string>, store_ids array<string>, store_names array<string>, "
        "event_ts array<timestamp>, gradient_attribution array<double>, contribution array<double>",
    )
    out = event_table(scored, "r", "sha").select("event_position", "position_bin", "event_type")
    expected = [
        (p, "1-5" if p < 5 else "6-10" if p < 10 else "11-20" if p < 20 else "21-50" if p < 50 else "50+", f"e{p}")
        for p in range(55)
    ]
    assert_df_equality(out, spark.createDataFrame(expected, out.schema), ignore_row_order=True, ignore_nullable=True)


def test_sessions_longer_than_the_model_are_refused_before_scoring(spark, tmp_path):
    table = synthetic_sessions(20, seed=9, max_len=25, full=True)
    (tmp_path / "out" / "sessions").mkdir(parents=True)
    pq.write_table(table, tmp_path / "out" / "sessions" / "p.parquet")
    save_random_model(tmp_path / "out" / "model", vocab_of(table), max_length=10)
    with pytest.raises(FeatureMismatch, match="max_length 10"):
        attribute_stage.run(spark, _conf(tmp_path, "attribution.split=all"))


def test_gpu_out_of_memory_splits_the_batch_and_gives_the_same_numbers(stage, monkeypatch):
    """A CUDA OOM can't be produced on a CPU machine, so the batch function raises it above 5 sessions.
    bench/gpu_check.py produces a real one on a GPU."""
    import attribution.attribute as A

    root, table, vocab, loaded = stage
    enc = encode_sessions(table, loaded.vocab)
    opts = AttributionOptions(methods=("grad_x_input",))
    clean = attribute_sessions(loaded.model, enc, opts, batch_size=64)
    real = A.attribute_batch

    failed = []

    def small_memory(model, tokens, cont, mask, options):
        # A retry must not start while a failed batch's tensors are alive (on a GPU they hold its memory).
        assert all(ref() is None for ref in failed), "a failed batch's tensors outlived it into the retry"
        if mask.shape[0] > 5:
            failed.append(weakref.ref(mask))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, tokens, cont, mask, options)

    monkeypatch.setattr(A, "attribute_batch", small_memory)
    stats = {}
    split = attribute_sessions(loaded.model, enc, opts, batch_size=64, stats_out=stats)
    assert stats["oom_splits"] > 0 and stats["batches"] >= len(enc) // 5
    for key in clean:
        np.testing.assert_allclose(split[key], clean[key], atol=1e-6)


def test_worker_memory_follows_the_arrow_batch_not_the_partition(stage):
    """The UDF body streams: 4x the Arrow batches in a partition must not raise the peak of what Python
    holds (tracemalloc sees numpy and Arrow buffers; torch's batches are bounded by max_positions)."""
    import tracemalloc

    import pyarrow as pa

    root, table, vocab, loaded = stage
    payload = worker.ModelPayload.read(str(root / "out" / "model"))
    columns = list(dict.fromkeys(["session_id", "label", "session_date", "event_types", "event_ts", *INPUT_COLUMNS]))
    batch = pa.Table.from_batches(table.select(columns).to_batches()).combine_chunks().to_batches()[0]

    def peak(n_batches: int) -> int:
        tracemalloc.start()
        for out in attribution_udf.attribute_batches(
            (batch for _ in range(n_batches)), payload, ["grad_x_input"], 32, max_positions=512
        ):
            assert out.num_rows == batch.num_rows
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    peak(2)  # warm: the model is built and cached once per worker
    small, large = peak(5), peak(20)
    assert large < 1.3 * small, (small, large)


def test_frequent_pairs_are_the_ordered_pairs_in_most_sessions(spark, stage):
    """The pairs the pair table evaluates, against a count in plain Python: for each session, every
    (a, b) of distinct types with a's first event before b's last; most sessions first, ties by name."""
    root, table, vocab, loaded = stage
    expected = ordered_pairs_by_sessions(table.column("event_types").to_pylist())
    rows = zip(table.column("session_id").to_pylist(), table.column("event_types").to_pylist(), strict=True)
    sessions = spark.createDataFrame(list(rows), "session_id string, event_types array<string>")
    assert attribute_stage.frequent_pairs(sessions, 7) == expected[:7]
    assert attribute_stage.frequent_pairs(sessions, 0) == []
    assert len(attribute_stage.frequent_pairs(sessions, 10_000)) == len(expected)
