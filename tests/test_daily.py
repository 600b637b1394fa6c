"""Day mode: a run for one local day reads only that day (pushed down), replaces only that day's partitions,
reruns identically, and a backfill equals the days run one by one and the run over the whole input."""

from __future__ import annotations

import os

import pyarrow.dataset as ds
import pytest

from attribution import sessionize
from attribution.stages import generate as generate_stage
from tests.conftest import make_conf
from tests.helpers import small_model_sets

DAYS = ("2025-01-15", "2025-01-16", "2025-01-17")


@pytest.fixture(scope="module")
def raw(spark, tmp_path_factory):
    """Three days of generated events (no bots), as the generator writes them (no date column) and as a
    warehouse table partitioned by the local date."""
    from pyspark.sql import functions as F

    root = tmp_path_factory.mktemp("daily")
    conf = make_conf(
        "generate.n_users=300",
        "generate.n_days=3",
        "generate.n_bot_users=0",
        f"generate.start_date={DAYS[0]}",
        f"generate.output_path={root / 'raw'}",
        f"generate.stores_path={root / 'stores'}",
        f"generate.ground_truth_path={root / 'truth.json'}",
    )
    generate_stage.run(spark, conf)
    flat = spark.read.parquet(str(root / "raw"))
    # the generator writes local wall-clock text in UTC: its date is the local date
    # (a dirty row whose time is not a time has no date: the null partition, which no day reads)
    flat.withColumn("event_date", F.substring("event_timestamp", 1, 10).try_cast("date")).write.partitionBy(
        "event_date"
    ).parquet(str(root / "by_date"))
    return root


def _sessionize(argv_sets: list[str], *days: str) -> int:
    from jobs import sessionize as job

    argv = [*sum((["--set", s] for s in argv_sets), [])]
    if len(days) == 1:
        argv += ["--date", days[0]]
    elif days:
        argv += ["--from", days[0], "--to", days[-1]]
    return job.main(["--conf", "conf/local.yaml", *argv])


def _sets(root, out, date_column: bool = True) -> list[str]:
    sets = [f"input.path={root / ('by_date' if date_column else 'raw')}", f"stores.path={root / 'stores'}"]
    sets += [f"run.output_dir={out}"]
    return sets + (["input.date_column=event_date"] if date_column else [])


def _rows(path) -> list[tuple]:
    t = ds.dataset(str(path), format="parquet", partitioning="hive").to_table(
        columns=["session_id", "label", "split", "session_length", "session_date"]
    )
    return sorted(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True))


def _files(path) -> dict[str, float]:
    out = {}
    for d, _, names in os.walk(path):
        for n in names:
            if n.endswith(".parquet"):
                out[os.path.join(d, n)] = os.stat(os.path.join(d, n)).st_mtime_ns
    return out


def test_a_day_reads_only_its_partition(spark, raw):
    """The day's filter reaches the scan as a partition filter: other days' directories are not listed or
    read, and every row read is that day's."""
    conf = make_conf(
        f"input.path={raw / 'by_date'}", "input.date_column=event_date", f"run.date={DAYS[1]}", path="conf/local.yaml"
    )
    df = sessionize.day_scope(spark.read.parquet(str(raw / "by_date")), conf)
    plan = df._jdf.queryExecution().executedPlan().toString()
    assert "PartitionFilters: [" in plan and DAYS[1] in plan.split("PartitionFilters: [", 1)[1].split("]", 1)[0]
    days = {str(r[0]) for r in df.select("event_date").distinct().collect()}
    assert days == {DAYS[1]}


def test_backfill_equals_single_days_and_the_whole_input(spark, raw, day_sessions, tmp_path):
    """--from/--to over three days (the day_sessions fixture's backfill) = three --date runs = the run
    without --date; each day's summary is its own, and every row read is accounted for."""
    whole, backfill, single = tmp_path / "whole", day_sessions, tmp_path / "single"
    assert _sessionize(_sets(raw, whole, date_column=False)) == 0
    for day in DAYS:
        assert _sessionize(_sets(raw, single), day) == 0
    # (sessions that run past midnight of the last day start a fourth: not in the backfill)
    expected = [r for r in _rows(whole / "sessions") if str(r[4]) in DAYS]
    assert len(expected) > 300
    assert _rows(backfill / "sessions") == expected
    assert _rows(single / "sessions") == expected
    import json

    from pyspark.sql import functions as F

    by_day = spark.read.parquet(str(raw / "by_date")).groupBy(F.col("event_date").cast("string")).count().collect()
    rows_of = {d: n for d, n in by_day}
    for day in DAYS:
        summary = json.loads((backfill / f"sessionize_summary_{day}.json").read_text())
        assert summary["date"] == day and summary["rows_accounted"] == summary["rows_read"] == rows_of[day]
    # the run over the whole input reads every row, those of no day (unreadable or out-of-range times) too
    assert json.loads((whole / "sessionize_summary.json").read_text())["rows_read"] == sum(rows_of.values())


def test_rerunning_a_day_replaces_it_and_leaves_other_days_untouched(spark, raw, day_sessions, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(day_sessions / "sessions", out / "sessions")  # the fixture's backfill of the three days
    before_rows = _rows(out / "sessions")
    before_files = _files(out / "sessions")
    others = {p: m for p, m in before_files.items() if f"session_date={DAYS[1]}" not in p}
    assert _sessionize(_sets(raw, out), DAYS[1]) == 0
    after_files = _files(out / "sessions")
    assert {p: m for p, m in after_files.items() if f"session_date={DAYS[1]}" not in p} == others
    assert set(after_files) != set(before_files)  # the day's own files were replaced
    assert _rows(out / "sessions") == before_rows


def test_rows_in_the_days_partition_timed_on_another_day_are_quarantined(spark, raw, tmp_path):
    """A late row: in 2025-01-16's partition, but timed on the 15th. It is quarantined as outside_run_date,
    not sessionized into another day's partition, and the counts reconcile."""
    from pyspark.sql import functions as F

    src = spark.read.parquet(str(raw / "by_date")).where(F.col("event_date") == DAYS[1])
    late = src.limit(3).withColumn("event_timestamp", F.lit(f"{DAYS[0]} 12:00:00.000"))
    mixed = tmp_path / "mixed"
    src.unionByName(late).write.partitionBy("event_date").parquet(str(mixed))
    out = tmp_path / "out"
    sets = [f"input.path={mixed}", "input.date_column=event_date", f"stores.path={raw / 'stores'}"]
    assert _sessionize([*sets, f"run.output_dir={out}"], DAYS[1]) == 0
    import json

    summary = json.loads((out / f"sessionize_summary_{DAYS[1]}.json").read_text())
    assert summary["rows"]["quarantined_outside_run_date"] == 3
    assert summary["rows_accounted"] == summary["rows_read"] == src.count() + 3
    assert {str(r[4]) for r in _rows(out / "sessions")} == {DAYS[1]}
    q = ds.dataset(str(out / "quarantine"), format="parquet", partitioning="hive").to_table()
    assert q.column("reject_reason").to_pylist().count("outside_run_date") == 3


def test_a_day_without_events_is_one_line_and_exit_2(spark, raw, tmp_path, capsys):
    out = tmp_path / "out"
    code = _sessionize(_sets(raw, out), "2025-02-01")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "has no rows for 2025-02-01" in err[0], err
    assert not (out / "sessions" / "session_date=2025-02-01").exists()


def test_bad_dates_are_one_line_errors(capsys):
    from jobs import sessionize as job

    for argv, message in (
        (["--date", "2025-13-01"], "is not a YYYY-MM-DD date"),
        (["--from", "2025-01-03"], "--from and --to go together"),
        (["--from", "2025-01-03", "--to", "2025-01-01"], "is before --from"),
        (["--date", "2025-01-01", "--from", "2025-01-01", "--to", "2025-01-02"], "not both"),
    ):
        assert job.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


@pytest.fixture(scope="module")
def day_sessions(spark, raw, tmp_path_factory):
    """The three days sessionized (a backfill) and an untrained model with their vocabularies."""
    from tests.helpers import save_random_model, vocab_of

    out = tmp_path_factory.mktemp("day_sessions")
    assert _sessionize(_sets(raw, out), *DAYS) == 0
    table = ds.dataset(str(out / "sessions"), format="parquet", partitioning="hive").to_table()
    save_random_model(out / "model", vocab_of(table), max_length=100)
    return out


def _attribute(out, *days: str, sets: tuple[str, ...] = ()) -> int:
    from jobs import attribute as job

    argv = [
        "--conf",
        "conf/local.yaml",
        "--set",
        f"run.output_dir={out}",
        "--set",
        "attribution.methods=[grad_x_input]",
    ]
    argv += ["--set", "report.default_method=grad_x_input", "--set", "attribution.removal_sessions=50"]
    for s in sets:
        argv += ["--set", s]
    if len(days) == 1:
        argv += ["--date", days[0]]
    elif days:
        argv += ["--from", days[0], "--to", days[-1]]
    return job.main(argv)


def _events(path) -> list[tuple]:
    t = ds.dataset(str(path), format="parquet", partitioning="hive").to_table(
        columns=["session_id", "event_position", "contribution", "removal_effect_type", "session_date", "run_id"]
    )
    return sorted(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True), key=lambda r: r[:2])


@pytest.mark.slow
def test_attributing_days_equals_the_whole_and_a_rerun_replaces_only_its_day(spark, day_sessions, tmp_path):
    """The event table of a 3-day backfill has the rows of the run over every day (run ids aside); each day
    carries its own run id (day-YYYY-MM-DD), also in the Delta table; rerunning one day rewrites that
    day's files and no other day's, with identical rows."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(day_sessions, out)
    assert _attribute(out) == 0
    whole = _events(out / "gradient_attribution_no_funnel")
    assert _attribute(out, *DAYS) == 0
    days = _events(out / "gradient_attribution_no_funnel")
    assert len(days) == len(whole) > 1000
    # the same events and scores (to float noise: sessions meet in other batches); the removal sample is
    # about removal_sessions per run, so it differs and is not compared
    assert [(*r[:2], r[4]) for r in days] == [(*r[:2], r[4]) for r in whole]
    assert max(abs(a[2] - b[2]) for a, b in zip(days, whole, strict=True)) < 1e-6
    assert {(str(r[4]), r[5]) for r in days} == {(d, f"day-{d}") for d in DAYS}
    # each day's removal sample against the in-process brute force: the removal columns through Spark,
    # one day at a time
    _removal_against_brute_force(out)

    files = _files(out / "gradient_attribution_no_funnel")
    assert _attribute(out, DAYS[1]) == 0
    after = _files(out / "gradient_attribution_no_funnel")
    assert {p: m for p, m in after.items() if DAYS[1] not in p} == {p: m for p, m in files.items() if DAYS[1] not in p}
    assert _events(out / "gradient_attribution_no_funnel") == days

    from deltalake import DeltaTable

    delta = DeltaTable(str(out / "report" / "delta" / "gradient_attribution_no_funnel")).to_pyarrow_table()
    runs = delta.group_by("run_id").aggregate([("session_id", "count")]).to_pylist()
    per_day = {r["run_id"]: r["session_id_count"] for r in runs}
    for d in DAYS:  # one copy of each day, after the rerun too
        assert per_day[f"day-{d}"] == sum(1 for r in days if str(r[4]) == d)
    _read_as_a_consumer(out, DAYS[1], tmp_path)


def _read_as_a_consumer(out, day: str, tmp_path) -> None:
    """docs/outputs.md's reads from other engines, run as written (Polars on the Delta table and on a report
    table's parquet, DuckDB on the event table's parquet) on the day just rerun, checked against pyarrow
    and deltalake: the same rows and types; the Delta version before the rerun's commit holds the same rows
    and differs from the table now only in that day's files; and the filter on session_date reads that
    day's files alone: with every other day's files overwritten with garbage, the filtered read still
    gives the same answer, and an unfiltered one fails."""
    import re
    import shutil
    from pathlib import Path

    import duckdb
    import polars as pl
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from jobs import report as job

    sets = ["attribution.methods=[grad_x_input]", "report.default_method=grad_x_input"]
    argv = ["--conf", "conf/local.yaml", "--set", f"run.output_dir={out}", *sum((["--set", s] for s in sets), [])]
    assert job.main([*argv, "--date", day]) == 0
    doc = (Path(__file__).resolve().parent.parent / "docs" / "outputs.md").read_text()
    section = doc.split("### Reading the tables from another engine", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert block is not None
    names: dict = {"OUT": str(out), "DAY": day}
    exec(block.group(1), names)

    # 1. the Delta table's day: deltalake's rows, the same types; the version before the rerun's commit
    delta = str(out / "report" / "delta" / "gradient_attribution_no_funnel")
    table = DeltaTable(delta)
    mine = table.to_pyarrow_table(filters=[("run_id", "=", f"day-{day}")])
    one_day = names["one_day"]
    assert one_day.height == mine.num_rows > 100
    assert one_day.schema == pl.from_arrow(mine).schema
    assert sorted(one_day["session_id"].to_list()) == sorted(mine.column("session_id").to_pylist())
    before = DeltaTable(delta, version=table.version() - 1)
    assert names["before_last_commit"].height == before.to_pyarrow_table().num_rows == table.to_pyarrow_table().num_rows
    changed = set(before.file_uris()) ^ set(table.file_uris())
    assert changed and all(f"run_id=day-{day}/" in uri for uri in changed)

    # 2. DuckDB's day from the parquet event table, against pyarrow's count of that day's partition
    events = out / "gradient_attribution_no_funnel"
    partition = ds.dataset(str(events / f"session_date={day}"), format="parquet").to_table()
    expected = partition.group_by("event_type").aggregate([("event_type", "count"), ("contribution", "mean")])
    by_type = names["by_type"]
    got = dict(zip(by_type["event_type"], by_type["events"], strict=True))
    assert got == dict(zip(expected["event_type"].to_pylist(), expected["event_type_count"].to_pylist(), strict=True))
    means = dict(zip(expected["event_type"].to_pylist(), expected["contribution_mean"].to_pylist(), strict=True))
    for event_type, mean in zip(by_type["event_type"], by_type["mean_contribution"], strict=True):
        assert mean == pytest.approx(means[event_type], rel=1e-9)
    assert by_type.schema == pl.Schema({"event_type": pl.String, "events": pl.Int64, "mean_contribution": pl.Float64})
    # the same query on a copy where the other days' files are garbage: only that day's files are read. (The
    # first file in the glob's order stays whole: DuckDB reads its footer for the table's schema.)
    garbled = tmp_path / "garbled" / "gradient_attribution_no_funnel"
    shutil.copytree(events, garbled)
    files = sorted(garbled.glob("*/*.parquet"))
    others = [f for f in files[1:] if f"session_date={day}" not in str(f)]
    assert others and f"session_date={day}" not in str(files[0])
    for f in others:
        f.write_bytes(b"not parquet" * 100)
    query = block.group(1).split('duckdb.sql(f"""', 1)[1].split('""")', 1)[0]
    pruned = duckdb.sql(query.replace("{OUT}", str(garbled.parent)).replace("{DAY}", day)).pl()
    assert pruned.sort("event_type").equals(by_type.sort("event_type"))
    everything = query.replace("{OUT}", str(garbled.parent)).split("WHERE", 1)[0]
    with pytest.raises(duckdb.Error):
        duckdb.sql(everything).fetchall()

    # 3. the report table's parquet for the day: pyarrow's rows and types
    report = names["report"]
    location = out / "report" / "parquet" / "event_type_attribution_no_funnel" / f"run_id=day-{day}"
    written = ds.dataset(str(location), format="parquet").to_table()
    assert report.height == written.num_rows > 0
    assert report.drop("run_id").schema == pl.from_arrow(written).schema
    assert set(report["run_id"]) == {f"day-{day}"}
    assert pc.all(pc.is_valid(written.column("event_type"))).as_py()
    # why the read says try_parse_hive_dates=False: a run id in the default form reads as a time without it
    stamped = tmp_path / "stamped"
    shutil.copytree(location, stamped / "run_id=20261204T140000Z")
    files = f"{stamped}/*/*.parquet"
    as_text = pl.scan_parquet(files, hive_partitioning=True, try_parse_hive_dates=False).collect()
    assert as_text["run_id"].unique().to_list() == ["20261204T140000Z"] and as_text.height == written.num_rows
    with pytest.raises(pl.exceptions.ComputeError):
        pl.scan_parquet(files, hive_partitioning=True).collect()


def _removal_against_brute_force(out) -> None:
    from attribution.features import encode_sessions
    from attribution.model import load_artifact
    from tests.test_attribute_stage import check_removal_against_brute_force

    events = ds.dataset(str(out / "gradient_attribution_no_funnel"), format="parquet", partitioning="hive")
    events = events.to_table().to_pandas()
    sessions = ds.dataset(str(out / "sessions"), format="parquet", partitioning="hive").to_table()
    loaded = load_artifact(str(out / "model"))
    index = {s: i for i, s in enumerate(sessions.column("session_id").to_pylist())}
    # about attribution.removal_sessions (50) sessions a day
    per_day = events[events.removal_effect_type.notna()].groupby("session_date").session_id.nunique()
    assert len(per_day) == len(DAYS) and per_day.min() >= 25, per_day
    check_removal_against_brute_force(events, sessions, encode_sessions(sessions, loaded.vocab), loaded.model, index, 5)


def test_attributing_a_day_without_sessions_is_one_line_and_exit_2(spark, day_sessions, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(day_sessions, out)
    code = _attribute(out, "2025-03-01")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no sessions of 2025-03-01 in the test split" in err[0], err
    assert not (out / "gradient_attribution_no_funnel").exists()


def test_reporting_a_day_without_events_is_one_line_and_exit_2(spark, day_sessions, tmp_path, capsys):
    import shutil

    from jobs import report as job

    out = tmp_path / "out"
    shutil.copytree(day_sessions, out)
    assert _attribute(out, DAYS[0]) == 0
    capsys.readouterr()
    sets = ["--set", "attribution.methods=[grad_x_input]", "--set", "report.default_method=grad_x_input"]
    code = job.main(["--conf", "conf/local.yaml", "--set", f"run.output_dir={out}", *sets, "--date", DAYS[2]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"has no rows of {DAYS[2]}" in err[0], err


TRAIN_SMALL = [
    *small_model_sets(n_layers=1, ff_dim=48),
    "train.epochs=2",
    "train.num_processes=1",
    "train.threads_per_process=1",
    "train.leakage_check=false",
    "train.ensemble_members=1",
    "train.min_class_sessions=2",
    "baseline.enabled=false",  # the baseline is tested end to end in test_train, test_cluster, test_determinism
]


def _train(out, *days: str) -> int:
    from jobs import train as job

    argv = [
        "--conf",
        "conf/local.yaml",
        "--set",
        f"run.output_dir={out}",
        *sum((["--set", s] for s in TRAIN_SMALL), []),
    ]
    argv += ["--date", days[0]] if len(days) == 1 else ["--from", days[0], "--to", days[-1]]
    return job.main(argv)


@pytest.mark.slow
def test_versioned_models_the_latest_by_default_and_the_drift_check(spark, day_sessions, tmp_path, capsys):
    """Training on a window writes a version named by it, with its window and data in its config; LATEST
    names the version whose window ends last (an older window trained later does not replace it); the
    attribute stage uses the latest unless told a version, and reports the day's ROC-AUC against the
    model's test AUC."""
    import json
    import shutil

    from attribution.model import read_artifact

    out = tmp_path / "out"
    shutil.copytree(day_sessions, out, ignore=shutil.ignore_patterns("model"))
    window = f"{DAYS[0]}_to_{DAYS[1]}"
    assert _train(out, DAYS[0], DAYS[1]) == 0
    _, config, _ = read_artifact(str(out / "model" / "versions" / window))
    assert config["version"] == window and config["training_window"] == [DAYS[0], DAYS[1]]
    assert config["sessions"]["train"] > 300  # two days' sessions
    assert (out / "model" / "LATEST").read_text().strip() == window
    assert _train(out, DAYS[2]) == 0
    assert (out / "model" / "LATEST").read_text().strip() == DAYS[2]
    assert _train(out, DAYS[0]) == 0  # an older window, trained later
    assert (out / "model" / "LATEST").read_text().strip() == DAYS[2]

    assert _attribute(out, DAYS[2]) == 0
    summary = json.loads((out / f"attribute_summary_{DAYS[2]}.json").read_text())
    assert summary["model_path"].endswith(f"versions/{DAYS[2]}")
    _, latest, _ = read_artifact(str(out / "model" / "versions" / DAYS[2]))
    drift = summary["drift"]
    assert drift["model_test_roc_auc"] == latest["test_roc_auc"]
    # the day attributed is the model's own test split: its AUC is the model's test AUC
    assert drift["roc_auc"] == pytest.approx(latest["test_roc_auc"], abs=1e-6) and drift["flagged"] is False

    assert _attribute(out, DAYS[2], sets=(f"train.model_version={window}",)) == 0
    summary = json.loads((out / f"attribute_summary_{DAYS[2]}.json").read_text())
    assert summary["model_path"].endswith(f"versions/{window}")
    assert summary["drift"]["model_test_roc_auc"] == config["test_roc_auc"]
    _the_registry_alias_chooses_the_model(out, window, config, capsys)


def _the_registry_alias_chooses_the_model(out, window: str, config: dict, capsys) -> None:
    """Each training registered a version in MLflow, tagged with its window; with tracking.model_alias the
    day run uses the version at that alias (not the latest by window), and the drift check reads that
    version's run's test ROC-AUC. A missing alias, or a directory overwritten since, is one line, exit 2."""
    import json

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    versions = {v.tags["training_window"]: v for v in client.search_model_versions("name='session-conversion'")}
    assert set(versions) == {window, DAYS[2], DAYS[0]}  # one per training, the older window retrained apart
    chosen = versions[window]
    assert chosen.tags["model_location"] == str(out / "model" / "versions" / window)
    assert chosen.tags["model_sha256"] == config["weights_sha256"]
    champion = ("tracking.model_alias=champion",)
    capsys.readouterr()
    assert _attribute(out, DAYS[2], sets=champion) == 2  # no version has the alias yet
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: tracking.model_alias: no version of registered model"), err
    client.set_registered_model_alias("session-conversion", "champion", chosen.version)
    assert _attribute(out, DAYS[2], sets=champion) == 0
    summary = json.loads((out / f"attribute_summary_{DAYS[2]}.json").read_text())
    assert summary["model_path"] == str(out / "model" / "versions" / window)  # not LATEST's DAYS[2]
    assert summary["model_sha256"] == config["weights_sha256"]
    assert summary["model_registered_version"] == str(chosen.version)
    registered_auc = client.get_run(chosen.run_id).data.metrics["test_roc_auc"]
    assert summary["drift"]["model_test_roc_auc"] == pytest.approx(registered_auc) == config["test_roc_auc"]
    (run,) = client.search_runs(
        [client.get_experiment_by_name("session-attribution").experiment_id],
        filter_string=f"tags.`attribution.run_id` = 'day-{DAYS[2]}'",
    )
    assert run.data.tags["scored_with_registered_version"] == f"session-conversion/{chosen.version}"
    # the alias's directory replaced by another model since it was registered: refused
    import shutil

    shutil.rmtree(out / "model" / "versions" / window)
    shutil.copytree(out / "model" / "versions" / DAYS[2], out / "model" / "versions" / window)
    capsys.readouterr()
    assert _attribute(out, DAYS[2], sets=champion) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to use it" in err[0] and f"registered version {chosen.version}" in err[0], err


def test_attributing_a_day_before_any_model_is_one_line_and_exit_2(spark, day_sessions, tmp_path, capsys):
    """The runbook's first mistake: a day run before `scripts/daily.sh init` trained a model."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(day_sessions, out, ignore=shutil.ignore_patterns("model"))
    capsys.readouterr()
    assert _attribute(out, DAYS[2]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no model at {out / 'model'}: train one first"), err
    assert "scripts/daily.sh init" in err[0]
    assert not (out / "gradient_attribution_no_funnel").exists()


def test_a_day_with_too_few_sessions_is_published_as_insufficient_data(spark, day_sessions, tmp_path, capsys):
    """Fewer sessions than report.min_sessions: the tables are published with status insufficient_data and
    no verdicts, and the insights and the page say so first."""
    import shutil

    import pandas as pd

    from jobs import report as job

    out = tmp_path / "out"
    shutil.copytree(day_sessions, out)
    assert _attribute(out, DAYS[0]) == 0
    capsys.readouterr()
    sets = ["--set", "attribution.methods=[grad_x_input]", "--set", "report.default_method=grad_x_input"]
    sets += ["--set", "report.min_sessions=1000"]
    assert job.main(["--conf", "conf/local.yaml", "--set", f"run.output_dir={out}", *sets, "--date", DAYS[0]]) == 0
    printed = capsys.readouterr().out
    insights = printed[printed.index("KEY INSIGHTS") :].splitlines()
    assert insights[1].startswith("INSUFFICIENT DATA (") and "fewer than report.min_sessions (1,000)" in insights[1]
    table = pd.read_csv(out / "report" / "event_type_attribution_no_funnel.csv")
    assert set(table["model_status"]) == {"insufficient_data"}
    assert set(table["effect_verdict"].dropna()) == {"indistinguishable from noise (insufficient data)"}
    assert set(table["run_id"]) == {f"day-{DAYS[0]}"}
    assert "INSUFFICIENT DATA" in (out / "report" / "index.html").read_text()


@pytest.mark.slow
def test_a_rolling_window_from_stored_days_equals_the_direct_computation(spark, day_sessions, tmp_path, capsys):
    """The report over the last 3 days, computed from the 3 days' stored statistics, gives the numbers the
    tables built directly from the 3 days' events give (to 1e-9), and carries its own run id; a window
    reaching a day that was not reported is one line naming the days, exit 2."""
    import shutil

    import numpy as np
    import pandas as pd

    from attribution import report
    from attribution.io import read_table
    from jobs import report as job

    out = tmp_path / "out"
    shutil.copytree(day_sessions, out)
    assert _attribute(out, *DAYS) == 0
    sets = ["--set", "attribution.methods=[grad_x_input]", "--set", "report.default_method=grad_x_input"]
    sets += ["--set", "report.store_min_sessions=2", "--set", "report.store_min_events=2"]
    base = ["--conf", "conf/local.yaml", "--set", f"run.output_dir={out}", *sets]
    assert job.main([*base, "--from", DAYS[0], "--to", DAYS[2]]) == 0
    assert job.main([*base, "--set", "report.window_days=3", "--date", DAYS[2]]) == 0

    conf = make_conf(
        f"run.output_dir={out}",
        "attribution.methods=[grad_x_input]",
        "report.default_method=grad_x_input",
        "report.store_min_sessions=2",
        "report.store_min_events=2",
        path="conf/local.yaml",
    )
    events = read_table(spark, str(out / "gradient_attribution_no_funnel"), "parquet", {}, "attribution")
    direct = report.frames(report.build_tables(events, conf))
    for name, key in (("event_type", "event_type"), ("position", "position_bin"), ("store", "store_id")):
        window = pd.read_csv(out / "report" / f"{report.TABLES[name]}_by_method.csv")
        assert set(window["run_id"]) == {f"day-{DAYS[2]}-last3d"}
        d = direct[name].assign(**{key: direct[name][key].astype(str)}).set_index(["method", key]).sort_index()
        w = window.assign(**{key: window[key].astype(str)}).set_index(["method", key]).sort_index()
        assert list(w.index) == list(d.index) and len(d) >= 5
        numeric = [
            c
            for c in ("effect_log_odds", "effect_ci_low", "attribution_lift", "lift_se", "removal_effect_pp")
            + (("shrunk_net_effect_log_odds", "net_effect_se") if name == "store" else ())
            if c in d.columns
        ]
        for c in numeric:
            a, b = d[c].to_numpy(float), w[c].to_numpy(float)
            assert np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True), (name, c)
        assert (d["sessions"].to_numpy() == w["sessions"].to_numpy()).all()

    capsys.readouterr()
    assert job.main([*base, "--set", "report.window_days=4", "--date", DAYS[2]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no statistics for 2025-01-14 under" in err[0], err
