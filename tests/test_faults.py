"""Faults injected into real runs: a driver killed (SIGKILL) while it writes the outputs. Each killed stage
runs as its own process, as spark-submit would run it. (A task retried after its executor is lost, with
the same event table: tests/test_cluster.py, on a real cluster.)"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.helpers import save_random_model, synthetic_sessions, vocab_of

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Sessions in three files (three tasks) and a model, as the train stage would leave them."""
    root = tmp_path_factory.mktemp("faults")
    table = synthetic_sessions(150, seed=11, max_len=25, full=True)
    (root / "sessions").mkdir()
    for i, start in enumerate(range(0, 150, 50)):
        pq.write_table(table.slice(start, 50), root / "sessions" / f"part-{i}.parquet")
    vocab = vocab_of(table)
    save_random_model(root / "model", vocab, max_length=30, seed=2)
    return root


def _settings(root: Path, out: Path, *extra: str) -> list[str]:
    pairs = [
        f"run.output_dir={out}",
        "run.run_id=r1",
        f"sessions.sessions_path={root / 'sessions'}",
        f"train.model_path={root / 'model'}",
        "attribution.split=all",
        "attribution.methods=[grad_x_input, attention, attention_rollout]",
        "report.default_method=grad_x_input",
        *extra,
    ]
    return [a for p in pairs for a in ("--set", p)]


def _in_process(module: str, *args: str) -> int:
    """A job's exit code, run in this process with the suite's Spark session (no JVM to start): for the
    runs a test only needs done, not killed or run with Spark settings of their own."""
    import importlib

    return importlib.import_module(module).main(["--conf", "conf/local.yaml", *args])


KILLER = """
import os, signal, sys
import pyarrow.parquet as pq
from attribution.config_loader import load_config
from attribution.spark import build_spark
from attribution.stages import attribute as attribute_stage
from attribution.stages import report as report_stage

stage, marker = sys.argv[1], sys.argv[2]
conf = load_config("conf/local.yaml", sys.argv[3:])
spark = build_spark(conf.spark)
if stage == "report":
    real = pq.write_table
    def write_then_die(table, where, **kw):
        real(table, where, **kw)
        if marker in str(where):  # the new partition is on disk, not yet swapped in
            os.kill(os.getpid(), signal.SIGKILL)
    pq.write_table = write_then_die
    report_stage.run(spark, conf)
else:
    from deltalake import DeltaTable
    def die(*a, **k):  # the executors' files are written; the driver dies before the commit
        os.kill(os.getpid(), signal.SIGKILL)
    DeltaTable.create_write_transaction = die
    attribute_stage.run(spark, conf)
"""


def _killed(stage: str, marker: str, overrides: list[str]) -> None:
    """Run ``stage`` in a process that kills itself at ``marker``; asserts that it died by SIGKILL."""
    sets = [overrides[i + 1] for i in range(0, len(overrides), 2)]
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, stage, marker, *sets], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def _snapshot(out: Path) -> dict[str, pd.DataFrame]:
    """Every output of the report and the event-level Delta table, read as a user would."""
    from deltalake import DeltaTable

    report = out / "report"
    snap = {}
    for csv in sorted(report.glob("*.csv")):
        snap[csv.name] = pd.read_csv(csv)
    for table in sorted((report / "delta").iterdir()):
        df = DeltaTable(str(table)).to_pandas()
        snap[f"delta/{table.name}"] = df.sort_values(list(df.columns[:4])).reset_index(drop=True)
    for table in sorted((report / "parquet").iterdir()):
        df = pd.read_parquet(table)
        snap[f"parquet/{table.name}"] = df.sort_values(list(df.columns[:4])).reset_index(drop=True)
    return snap


def test_a_driver_killed_while_writing_leaves_the_previous_outputs_readable_and_unchanged(inputs, tmp_path, spark):
    from deltalake import DeltaTable

    out = tmp_path / "out"
    base = _settings(inputs, out)
    assert _in_process("jobs.attribute", *base) == 0
    assert _in_process("jobs.report", *base, "--set", "report.store_min_events=1") == 0
    before = _snapshot(out)
    stores_before = before["parquet/store_attribution_no_funnel"]

    assert len(stores_before) == 3 * 12  # 12 stores, 3 methods
    # the report again with a store support no store reaches (an empty store table), killed while the
    # store table's new files are being staged: the report stages every output before it publishes any
    _killed("report", "store_attribution", [*base, "--set", "report.store_min_events=1000000"])
    after = _snapshot(out)  # everything still reads, and nothing changed: no table of the killed run
    assert set(after) == set(before)
    for name, table in before.items():
        pd.testing.assert_frame_equal(after[name], table, obj=name)
    assert spark.read.parquet(str(out / "report/parquet/store_attribution_no_funnel")).count() == len(stores_before)
    # the same run, not killed, publishes every table
    assert _in_process("jobs.report", *base, "--set", "report.store_min_events=1000000") == 0
    assert len(_snapshot(out)["store_attribution_no_funnel.csv"]) == 0

    # the attribute stage killed after the executors wrote the event table's files, before the commit
    events = out / "report/delta/gradient_attribution_no_funnel"
    version, rows = DeltaTable(str(events)).version(), DeltaTable(str(events)).to_pandas()
    _killed("attribute", "-", base)
    table = DeltaTable(str(events))
    assert table.version() == version
    pd.testing.assert_frame_equal(
        table.to_pandas().sort_values(["session_id", "event_position"]).reset_index(drop=True),
        rows.sort_values(["session_id", "event_position"]).reset_index(drop=True),
    )
