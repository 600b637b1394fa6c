"""The sessionize stage end to end: real parquet in, sessions + quarantine + summary out, via the CLI too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attribution import catalogue
from attribution.stages import generate as generate_stage
from attribution.stages import sessionize as sessionize_stage
from tests.conftest import make_conf
from tests.helpers import raw_events

ROOT = Path(__file__).resolve().parent.parent


def test_run_on_hand_written_input_reconciles_exactly(spark, tmp_path):
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),  # duplicate
        ("u1", "d1", "2025-01-15 10:00:10", "m_card_click"),
        ("u1", "d1", "2025-01-15 10:00:20", "action_add_item"),  # funnel
        ("u1", "d1", "2025-01-15 10:00:30", "action_place_order"),  # after conversion (inclusive)
        ("u1", "d1", "2025-01-15 10:00:40", "home_page_load"),  # after conversion
        ("u2", "d2", "2025-01-15 10:00:00", "m_card_view"),  # short session
        ("u3", "d3", "2025-01-15 10:00:00", "x_error"),  # error, and then a short session
        ("u3", "d3", "2025-01-15 10:00:05", "m_card_view"),
        (None, "d3", "2025-01-15 10:00:05", "m_card_view"),  # quarantined
        ("u4", "d4", "bad", "m_card_view"),  # quarantined
    ]
    raw_path = tmp_path / "raw"
    raw_events(spark, rows).write.parquet(str(raw_path))
    conf = make_conf(f"input.path={raw_path}", f"run.output_dir={tmp_path}/out", "run.run_id=t1")
    summary = sessionize_stage.run(spark, conf).summary
    assert summary["rows_read"] == 11
    assert summary["rows"] == {
        "quarantined_malformed_row": 0,
        "quarantined_null_user_id": 1,
        "quarantined_null_device_id": 0,
        "quarantined_null_event_name": 0,
        "quarantined_null_event_ts": 0,
        "quarantined_unparseable_event_ts": 1,
        "quarantined_outside_run_date": 0,
        "quarantined_event_ts_out_of_range": 0,
        "quarantined_unknown_event_name": 0,
        "duplicate": 1,
        "bot_like_device_day": 0,
        "after_conversion": 2,
        "funnel": 1,
        "error": 1,
        "truncated": 0,
        "short_session": 2,
        "model_input": 2,
    }
    assert summary["sessions"] == {"total": 3, "kept": 1, "short_session": 2, "bot_like_device_day": 0}
    assert summary["kept_sessions_converted"] == 1
    assert json.loads((tmp_path / "out" / "sessionize_summary.json").read_text())["rows_read"] == 11
    sessions = spark.read.parquet(str(tmp_path / "out" / "sessions")).collect()
    assert [(s.session_id, s.event_names, s.label) for s in sessions] == [
        ("u1_d1_2025-01-15_1", ["m_card_view", "m_card_click"], 1)
    ]
    quarantine = spark.read.parquet(str(tmp_path / "out" / "quarantine"))
    assert sorted(r.reject_reason for r in quarantine.collect()) == ["null_user_id", "unparseable_event_ts"]


def test_json_delta_and_catalog_table_inputs_give_the_parquet_runs_sessions_and_counts(spark, tmp_path):
    """The same raw rows (clean, duplicate, funnel, quarantined) as parquet, JSON lines, a Delta table
    written by delta-rs, and a catalog table over the parquet files: every format gives the same sessions
    and the same reconciled counts as parquet, which test_run_on_hand_written_input_reconciles_exactly
    checks by hand."""
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view", 7, "carousel", 1),
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view", 7, "carousel", 1),  # duplicate
        ("u1", "d1", "2025-01-15 10:00:10", "m_card_click", 7, "carousel", 1),
        ("u1", "d1", "2025-01-15 10:00:20", "action_add_item", 7, None, None),  # funnel
        ("u1", "d1", "2025-01-15 10:00:30", "action_place_order", None, None, None),
        ("u2", "d2", "2025-01-15 11:00:00", "home_page_load", None, None, None),
        ("u2", "d2", "2025-01-15 11:00:05", "m_search_query", 9, "search", 2),
        ("u2", "d2", "2025-01-15 11:00:09", "store_page_load", 9, None, None),
        (None, "d3", "2025-01-15 10:00:05", "m_card_view", None, None, None),  # quarantined
        ("u4", "d4", "bad", "m_card_view", None, None, None),  # quarantined
    ]

    def run(fmt: str, path: str) -> tuple[dict, list]:
        out = tmp_path / f"out_{fmt}"
        conf = make_conf(f"input.path={path}", f"input.format={fmt}", f"run.output_dir={out}", "run.run_id=f")
        summary = sessionize_stage.run(spark, conf).summary
        got = spark.read.parquet(str(out / "sessions")).select("session_id", "event_names", "store_ids", "label")
        return summary["rows"], sorted(tuple(r) for r in got.collect())

    raw = raw_events(spark, rows)
    raw.write.parquet(str(tmp_path / "raw_parquet"))
    raw.write.json(str(tmp_path / "raw_json"))  # JSON lines; nulls are left out of a line, as writers do
    write_deltalake(str(tmp_path / "raw_delta"), pq.read_table(tmp_path / "raw_parquet"))
    spark.sql(f"CREATE TABLE raw_events_t USING parquet LOCATION '{tmp_path / 'raw_parquet'}'")
    try:
        expected = run("parquet", str(tmp_path / "raw_parquet"))
        counts, sessions = expected
        assert counts["model_input"] == 5 and counts["duplicate"] == 1 and counts["funnel"] == 1
        assert counts["quarantined_null_user_id"] == counts["quarantined_unparseable_event_ts"] == 1
        assert [s[0] for s in sessions] == ["u1_d1_2025-01-15_1", "u2_d2_2025-01-15_1"]
        assert [s[3] for s in sessions] == [1, 0]
        assert run("json", str(tmp_path / "raw_json")) == expected
        assert run("delta", str(tmp_path / "raw_delta")) == expected
        assert run("table", "raw_events_t") == expected
    finally:
        spark.sql("DROP TABLE IF EXISTS raw_events_t")


def test_the_generate_job_prints_what_it_wrote(spark, tmp_path, capsys):
    """``python -m jobs.generate`` as an entry point: exit 0 and one line whose count is the rows on disk."""
    from jobs import generate as job

    sets = [
        "generate.n_users=40",
        f"generate.output_path={tmp_path}/raw",
        f"generate.stores_path={tmp_path}/stores",
        f"generate.ground_truth_path={tmp_path}/truth.json",
        f"run.output_dir={tmp_path}/out",
    ]
    assert job.main([a for s in sets for a in ("--set", s)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    written = spark.read.parquet(f"{tmp_path}/raw").count()
    assert line.startswith(f"generated {written:,} raw events into {tmp_path}/raw (planted dirty rows: {{")
    assert json.loads((tmp_path / "truth.json").read_text())  # the truth beside it


@pytest.mark.slow
def test_generated_data_quarantine_matches_what_was_planted(spark, tmp_path):
    """Independent expectation: the generator records which rows it dirtied; the sessionizer must find each."""
    conf = make_conf(
        "generate.n_users=500",
        "generate.n_bot_users=1",
        "generate.bot_events_per_day=6000",
        "generate.dirty_fraction=0.01",
        f"generate.output_path={tmp_path}/raw",
        f"generate.stores_path={tmp_path}/stores",
        f"generate.ground_truth_path={tmp_path}/truth.json",
        f"input.path={tmp_path}/raw",
        f"stores.path={tmp_path}/stores",
        f"run.output_dir={tmp_path}/out",
        "input.timestamp_format=yyyy-MM-dd HH:mm:ss.SSS",
        "session.max_events_per_device_day=5000",
        f"events.known_events={json.dumps(list(catalogue.BROWSE_EVENTS))}",
    )
    counts = generate_stage.run(spark, conf)
    summary = sessionize_stage.run(spark, conf).summary
    planted = counts.planted_dirty_rows
    rows = summary["rows"]
    assert summary["rows_read"] == counts.rows
    assert rows["quarantined_null_user_id"] == planted["null_user_id"]
    assert rows["quarantined_null_device_id"] == planted["null_device_id"]
    assert rows["quarantined_null_event_name"] == planted["null_event_name"]
    assert rows["quarantined_unparseable_event_ts"] == planted["unparseable_ts"]
    assert rows["quarantined_unknown_event_name"] == planted["unknown_event"]
    assert rows["duplicate"] == planted["duplicate"]
    assert rows["bot_like_device_day"] >= 2 * 6000 * 0.8  # the bot's two days
    sessions = spark.read.parquet(f"{tmp_path}/out/sessions")
    assert sessions.where("user_id = 'user500'").count() == 0  # the bot is gone
    assert sessions.selectExpr("max(session_length)").first()[0] == 100
    assert sessions.where("original_length > 100").count() > 0
    names = {r[0] for r in sessions.selectExpr("explode(event_names)").distinct().collect()}
    assert names.isdisjoint(set(conf.events.funnel_events)) and not any("error" in n for n in names)
    store_names = {r[0] for r in sessions.selectExpr("explode(store_names)").distinct().collect()}
    assert "McDonald's" in store_names


def _run_job(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_config_error_is_one_clear_line_and_exit_2():
    res = _run_job("jobs.sessionize", "--conf", "conf/local.yaml", "--set", "session.max_lenght=5")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: unknown key session.max_lenght")


def test_cli_missing_input_column_exit_2(tmp_path):
    res = _run_job(
        "jobs.sessionize",
        "--conf",
        "conf/local.yaml",
        "--set",
        f"input.path={ROOT}/tests/data/no_event_name.csv",
        "--set",
        "input.format=csv",
        "--set",
        f"run.output_dir={tmp_path}",
        "--set",
        "stores.path=null",
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: input column 'event_name' (input.columns.event_name) not found" in res.stderr


@pytest.mark.parametrize("which", ["sessionize", "attribution"])
def test_counts_that_do_not_reconcile_are_one_line_and_exit_3(spark, tmp_path, capsys, which):
    """Both stages' reconciliation errors (a bug, never the user's) map to the documented exit 3 (README, Configuration), one line."""
    from attribution.sessionize import ReconciliationError
    from attribution.stages.attribute import AttributionReconciliationError
    from jobs._cli import main_of

    error = {"sessionize": ReconciliationError, "attribution": AttributionReconciliationError}[which]

    def body(spark, conf, args):
        raise error("10 events in but 9 event rows written")

    main = main_of("a stage", body)
    assert main(["--set", f"run.output_dir={tmp_path}"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "internal error (please report): 10 events in but 9 event rows written"


def test_missing_java_is_one_clear_line(monkeypatch):
    from attribution.config import SparkConf
    from attribution.spark import EnvironmentProblem, build_spark

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EnvironmentProblem, match="Java not found: Spark needs a Java 17 runtime"):
        build_spark(SparkConf())


def test_make_check_java_without_java():
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    res = subprocess.run(
        [make, "-s", "check-java"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/nonexistent", "JAVA_HOME": ""},
    )
    assert res.returncode != 0
    assert res.stderr.strip().startswith("error: Java not found: Spark needs a Java 17 runtime")


def test_missing_input_path_is_named(spark, tmp_path):
    from attribution.errors import InputError
    from attribution.io import read_table

    with pytest.raises(InputError, match=r"input\.path: .*/nowhere \(parquet\) not found"):
        read_table(spark, str(tmp_path / "nowhere"), "parquet", {}, "input")
    with pytest.raises(InputError, match=r"stores\.path: no_such_db\.stores \(table\) not found"):
        read_table(spark, "no_such_db.stores", "table", {}, "stores")


def test_credentials_in_config_never_reach_the_logs_or_outputs(spark, tmp_path):
    """Secrets given to Spark and to the reader: the run works, and no log line or output file holds them."""
    raw = tmp_path / "raw"
    raw_events(spark, [("u1", "d1", f"2025-01-15 10:00:{s:02d}", "m_card_view") for s in range(3)]).write.parquet(
        str(raw)
    )
    secrets = {
        "spark.conf.spark.hadoop.fs.s3a.secret.key": "S3CRET-abc123",
        "spark.conf.spark.hadoop.fs.s3a.access.key": "AKIA-XYZ789",
        "input.options.sas_token": "TOKEN-hunter2",
    }
    args = ["jobs.pipeline", "--conf", "conf/local.yaml", "--stages", "sessionize"]
    for pair in [f"input.path={raw}", "stores.path=null", f"run.output_dir={tmp_path}/out", "run.run_id=s1"] + [
        f"{k}={v}" for k, v in secrets.items()
    ]:
        args += ["--set", pair]
    res = _run_job(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    written = "".join(p.read_text() for p in (tmp_path / "out").glob("*.json"))
    assert "sessionize" in json.loads((tmp_path / "out" / "manifest.json").read_text())["timings_s"]
    for value in secrets.values():
        assert value not in res.stdout and value not in res.stderr and value not in written
