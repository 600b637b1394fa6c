"""The jobs as a Spark Connect client: the session, the UDFs' counters as data, the code shipped to the
server, and the same answers and exit codes as a classic session.

The whole pipeline through a local Connect server against a classic run is in ``test_determinism.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from attribution.config import SparkConf
from attribution.errors import ConfigError
from attribution.spark import EnvironmentProblem, build_spark, code_archive, host_port, is_local_server
from tests.conftest import make_conf
from tests.standalone import ConnectServer, free_port, python_without_project
from udfs.worker import STATS_COLUMN, observed_stats, with_stats

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "url, expected",
    [
        ("sc://spark.example.com:443/;token=abc", ("spark.example.com", 443)),
        ("sc://10.0.0.5", ("10.0.0.5", 15002)),
        ("sc://[::1]:15010", ("::1", 15010)),
    ],
)
def test_connect_urls_give_host_and_port(url, expected):
    assert host_port(url) == expected


def test_only_a_loopback_server_shares_this_machines_files():
    assert is_local_server(None) and is_local_server("sc://localhost:15002") and is_local_server("sc://127.0.0.1")
    assert not is_local_server("sc://spark.example.com:15002")


def test_spark_remote_and_api_mode_are_checked():
    with pytest.raises(ConfigError, match=r"spark.remote: 'http://x:1' is not a Spark Connect URL"):
        make_conf("spark.remote=http://x:1")
    with pytest.raises(ConfigError, match="spark.conf.spark.api.mode: 'remote' is not 'classic' or 'connect'"):
        make_conf("spark.conf.spark.api.mode=remote")


def test_an_unreachable_server_is_one_line_and_exit_2(tmp_path, capsys):
    port = free_port()  # nothing listens there
    with pytest.raises(EnvironmentProblem, match=rf"cannot reach the Spark Connect server at sc://127.0.0.1:{port}"):
        build_spark(SparkConf(remote=f"sc://127.0.0.1:{port}"))
    from jobs import sessionize

    code = sessionize.main(["--set", f"spark.remote=sc://127.0.0.1:{port}", "--set", f"run.output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: cannot reach the Spark Connect server at sc://127.0.0.1:{port}")


def test_a_module_missing_on_the_executors_is_named_with_its_fix():
    from jobs._cli import executor_environment_problem

    trace = (
        "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'torch.nn'\n\tat org.apache"
    )
    assert executor_environment_problem(RuntimeError(trace)) == (
        "the executors' Python has no module 'torch.nn': install torch in the executors' Python environment "
        "(make package builds one for spark-submit --archives; a Spark Connect server's environment is the "
        "server's)"
    )
    assert executor_environment_problem(RuntimeError("Job aborted: stage failure")) is None


def test_counters_ride_on_the_first_row_of_the_next_batch_that_has_one():
    pending: list[dict] = []

    def batch(n: int) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict({"x": list(range(n))})

    def udf():
        pending.append({"batches": 1, "rss_mb": 5})
        yield batch(3)
        pending.append({"batches": 2, "rss_mb": 9})
        yield batch(0)  # no row to carry them: they go with the next batch
        pending.append({"batches": 4, "rss_mb": 7})
        yield batch(2)

    out = list(with_stats(udf(), pending, maxima=("rss_mb",)))
    columns = [b.column(STATS_COLUMN).to_pylist() for b in out]
    assert columns[0] == [[("batches", 1.0), ("rss_mb", 5.0)], None, None]
    assert columns[1] == []
    assert columns[2] == [[("batches", 6.0), ("rss_mb", 9.0)], None]
    assert [b.column("x").to_pylist() for b in out] == [[0, 1, 2], [], [0, 1]]
    # what the Observation gathers (one map per batch that has one), merged: sums, and the peak's maximum
    gathered = {STATS_COLUMN: [dict(c[0]) for c in columns if c]}
    assert observed_stats(gathered, maxima=("rss_mb",)) == {"batches": 7.0, "rss_mb": 9.0}


def test_the_code_archive_holds_the_three_packages_and_is_named_by_its_content(tmp_path):
    first = code_archive(str(tmp_path))
    assert code_archive(str(tmp_path)) == first  # the same code: the same artifact
    names = set(zipfile.ZipFile(first).namelist())
    for module in (
        "attribution/__init__.py",
        "attribution/session_rules.py",
        "udfs/attribution_udf.py",
        "jobs/_cli.py",
    ):
        assert module in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def _sessionize_args(root: Path, url: str) -> list[str]:
    """The sessionize job on the connect cases' clean input, with spark.ship_code off."""
    sets = [
        f"spark.remote={url}",
        "spark.ship_code=false",
        f"input.path={root}/good",
        f"run.output_dir={root}/unshipped",
        "stores.path=null",
        *[f"input.columns.{c}=null" for c in ("store_id", "discovery_feature", "event_rank")],
    ]
    return ["--conf", "conf/local.yaml", *[a for s in sets for a in ("--set", s)]]


@pytest.mark.slow
def test_a_connect_server_gives_the_classic_exit_codes_messages_counts_and_scores(tmp_path, spark):
    """Bad inputs, a run that quarantines rows, and the attribution UDF, through a Spark Connect server
    whose Python lacks the project (the client ships its code) and in this process's classic session."""
    from tests import connect_cases

    python = python_without_project(tmp_path / "server_env")
    with ConnectServer(tmp_path / "server", python) as server:
        res = subprocess.run(
            [sys.executable, "-m", "tests.connect_cases", server.url, str(tmp_path / "remote")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        unshipped = subprocess.run(
            [sys.executable, "-m", "jobs.sessionize", *_sessionize_args(tmp_path / "remote", server.url)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        log = server.log_tail()
    # Without the code the UDF can't be unpickled on the server: one line naming the module and the fix.
    assert unshipped.returncode == 2, unshipped.stderr[-3000:]
    assert unshipped.stderr.strip().splitlines()[-1] == (
        "error: the executors' Python has no module 'attribution': the project's code did not reach them: give "
        "spark-submit --py-files dist/session_attribution.zip (make package), or, as a Spark Connect client, "
        "leave spark.ship_code on"
    )
    line = next((x for x in res.stdout.splitlines() if x.startswith("CASES ")), None)
    assert line is not None, res.stderr[-3000:] + "\n--- server ---\n" + log
    remote = json.loads(line.removeprefix("CASES "))
    classic = connect_cases.run("classic", tmp_path / "classic")

    assert set(remote) == set(classic)
    for name in classic:
        a, b = dict(classic[name]), dict(remote[name])
        scores_a, scores_b = a.pop("scores", None), b.pop("scores", None)
        removal_a, removal_b = a.pop("baseline_removal", None), b.pop("baseline_removal", None)
        assert a == b, name
        if removal_a is not None:  # the report's baseline removal effects, a mapInArrow shipped to the server
            assert [r[:3] for r in removal_a] == [r[:3] for r in removal_b] and len(removal_a) >= 4, removal_b
            np.testing.assert_allclose(
                [[*r[3:5], *r[5]] for r in removal_a], [[*r[3:5], *r[5]] for r in removal_b], rtol=0, atol=1e-12
            )
            assert any(abs(r[4]) > 1e-3 for r in removal_a)
        if scores_a is not None:
            assert len(scores_a) == len(scores_b) == b["counts"]["events"]
            # prediction, contribution, removal effect (null outside the removal sample) per event
            np.testing.assert_allclose(np.array(scores_a, float), np.array(scores_b, float), rtol=0, atol=1e-9)
    expected_exits = {"bad_rows_quarantined": 0, "attribute": 0}  # every other case is a user error
    assert {n: r["exit"] for n, r in classic.items()} == {n: expected_exits.get(n, 2) for n in classic}
    assert classic["attribute"]["counts"]["sessions"] == 2 and classic["attribute"]["counts"]["events"] == 6
    # The server's Python workers lack the project: the UDFs ran (exit 0, the same rows) on the code the
    # client shipped.
