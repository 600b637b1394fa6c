"""MLflow tracking (attribution/tracking.py): the run's metrics, the failed-run marking, an unreachable
server, and what the config refuses. The model logged by a whole pipeline, loaded back through MLflow, is
tested in test_train.py; the registry's alias in a day run in test_daily.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from attribution.config_loader import load_config
from attribution.errors import ConfigError
from attribution.tracking import FAILED_STAGE_TAG, RUN_TAG, flat_metrics, flat_params, tracking_uri

ROOT = Path(__file__).resolve().parents[1]


def _conf(*sets: str):
    return load_config(None, list(sets))


def test_a_summary_becomes_metrics_by_stage_without_lists_flags_or_large_maps():
    summary = {
        "sessions": 12,
        "test": {"roc_auc": 0.75, "ci": [0.7, 0.8], "reliability": {"bin": {"deep": 1.0}}},
        "still_improving": True,
        "run_id": "r1",
        "nan": float("nan"),
        "coefficients": {f"k{i}": float(i) for i in range(41)},
        "weights": {f"k{i}": float(i) for i in range(40)},
    }
    got = flat_metrics(summary, "train")
    expected = {
        "train.sessions": 12.0,
        "train.test.roc_auc": 0.75,
        **{f"train.weights.k{i}": float(i) for i in range(40)},
    }
    assert got == expected  # a list, a flag, a string, NaN, a map of 41 keys and a 4th level are left out


def test_the_config_becomes_parameters_with_lists_as_json():
    params = flat_params({"train": {"epochs": 3, "methods": ["a", "b"]}, "run": {"run_id": None}})
    assert params == {"train.epochs": "3", "train.methods": '["a", "b"]', "run.run_id": "None"}


def test_the_default_store_is_sqlite_in_the_output_directory(tmp_path, monkeypatch):
    from attribution import tracking

    monkeypatch.setattr(tracking, "USER_TRACKING_URI", None)
    assert tracking_uri(_conf(f"run.output_dir={tmp_path}/out")) == f"sqlite:///{tmp_path}/out/mlflow.db"
    assert tracking_uri(_conf(f"run.output_dir=file://{tmp_path}/o")) == f"sqlite:///{tmp_path}/o/mlflow.db"
    with pytest.raises(ConfigError, match="tracking.uri: not set, and run.output_dir .s3://b/out. is not on"):
        tracking_uri(_conf("run.output_dir=s3://b/out"))
    # a job's run in this process (MLflow sets $MLFLOW_TRACKING_URI to its store) does not move the next
    # job's store: each output directory keeps its own
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking.session(_conf(f"run.output_dir={tmp_path}/a", "run.run_id=a")):
        pass
    assert tracking_uri(_conf(f"run.output_dir={tmp_path}/b")) == f"sqlite:///{tmp_path}/b/mlflow.db"
    # nor the store of a process it starts (spark-submit inherits the environment)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    # the variable as the user set it when the process started; the config wins over it
    monkeypatch.setattr(tracking, "USER_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri(_conf(f"run.output_dir={tmp_path}")) == "http://mlflow.example:5000"
    assert tracking_uri(_conf("tracking.uri=databricks")) == "databricks"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["tracking.model_alias=champion", "tracking.registered_model=null"], "needs tracking.enabled: true and a"),
        (["tracking.model_alias=champion", "tracking.enabled=false"], "needs tracking.enabled: true and a"),
        (["tracking.model_alias=champion", "train.model_version=2025-01-01"], "each choose the model: set one"),
        (["tracking.model_alias=v2"], "reads as a version number"),
        (["tracking.registered_model=my model"], "must be letters, digits"),
        (["tracking.experiment=' '"], "tracking.experiment: a name is required"),
        (["tracking.timeout_seconds=0"], "must be >= 1"),
    ],
)
def test_the_config_refuses_what_tracking_cannot_do(sets, message):
    with pytest.raises(ConfigError, match=message):
        _conf(*sets)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_is_one_line_and_exit_2_before_spark_starts(tmp_path):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    argv = [sys.executable, "-m", "jobs.attribute", "--conf", "conf/local.yaml", "--set", f"run.output_dir={tmp_path}"]
    res = subprocess.run([*argv, "--set", f"tracking.uri={uri}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    err = [line for line in res.stderr.splitlines() if line.startswith(("error", "Traceback"))]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith(f"error: tracking.uri {uri}: MLflow does not answer"), err
    assert "tracking.enabled: false" in err[0]
    assert "SparkContext" not in res.stderr  # refused before Spark started
    # with tracking off, the same job goes on to the stage (which has no model here: its own one line)
    res = subprocess.run(
        [*argv, "--set", f"tracking.uri={uri}", "--set", "tracking.enabled=false"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and "error: no model at" in res.stderr, res.stderr[-2000:]


def _runs(out: Path, run_id: str):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name("session-attribution")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'")


def test_a_failing_stage_marks_its_run_failed_and_a_good_rerun_finishes_it(spark, tmp_path, capsys):
    """The attribute job without a model fails in one line; its MLflow run is FAILED, tagged with the stage.
    The report job of the same run id then reopens that run (one run per run id)."""
    from jobs import attribute

    out = tmp_path / "out"
    base = ["--conf", "conf/local.yaml", "--set", f"run.output_dir={out}", "--set", "run.run_id=r-fail"]
    assert attribute.main(base) == 2
    assert "error: no model at" in capsys.readouterr().err
    (run,) = _runs(out, "r-fail")
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILED_STAGE_TAG] == "attribute"
    assert run.info.run_name == "r-fail"
    assert run.data.params["run.run_id"] == "r-fail"  # the config, as parameters

    # the same run id again, ending well this time (a stage that ends well clears the failure)
    from attribution import tracking

    conf = load_config(None, [f"run.output_dir={out}", "run.run_id=r-fail"])
    with tracking.session(conf) as tracker:
        assert tracker is not None and tracker.run_id == run.info.run_id
        tracking.starting("report")
    (again,) = _runs(out, "r-fail")
    assert again.info.status == "FINISHED" and FAILED_STAGE_TAG not in again.data.tags


def test_a_store_that_fails_mid_run_is_one_error_naming_it_and_leaves_no_active_run(tmp_path):
    """The SQLite store replaced by a file that is no database after the run opened: the next log is a
    TrackingError naming the store and the driver's own reason, and the run leaves MLflow's stack."""
    import os

    import mlflow

    from attribution import tracking

    out = tmp_path / "out"
    conf = load_config(None, [f"run.output_dir={out}", "run.run_id=r-mid"])
    with pytest.raises(tracking.TrackingError) as caught, tracking.session(conf) as tracker:
        assert tracker is not None and mlflow.active_run() is not None
        (tmp_path / "junk").write_bytes(b"no database" * 100)
        os.replace(tmp_path / "junk", out / "mlflow.db")
        tracking.starting("report")
        tracker.log_stage("report", {"rows": 3}, 1.0, conf)
    message = str(caught.value)
    assert message.startswith(f"tracking.uri sqlite:///{out}/mlflow.db: logging to MLflow failed (")
    assert "\n" not in message and "database" in message and "tracking.enabled: false" in message
    assert mlflow.active_run() is None and tracking.active() is None


@pytest.mark.slow
def test_a_tracking_server_over_http_gets_the_run_its_metrics_and_files(tmp_path):
    """A real MLflow server (``mlflow server``, its own SQLite store and artifact directory): the reachability
    check passes, and a job's run, metrics and files reach it over HTTP."""
    import time
    import urllib.request

    import mlflow

    from attribution import tracking

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):  # the server starts in a few seconds
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        out = tmp_path / "out"
        conf = _conf(f"run.output_dir={out}", "run.run_id=r-http", f"tracking.uri={uri}")
        tracking.check_reachable(conf)  # answers: no error
        (tmp_path / "table.csv").write_text("a,b\n1,2\n")
        with tracking.session(conf) as tracker:
            assert tracker is not None
            tracking.starting("report")
            tracker.log_stage("report", {"rows": 3, "test": {"roc_auc": 0.75}}, 1.5, conf)
            assert tracker.log_files({"table.csv": str(tmp_path / "table.csv")}, "report") == 1
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name("session-attribution")
        (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_TAG}` = 'r-http'")
        assert run.info.status == "FINISHED"
        assert run.data.metrics["report.rows"] == 3 and run.data.metrics["report.test.roc_auc"] == 0.75
        assert run.data.metrics["report.seconds"] == 1.5 and run.data.params["run.run_id"] == "r-http"
        assert [a.path for a in client.list_artifacts(run.info.run_id, "report")] == ["report/table.csv"]
        assert not out.exists() or not (out / "mlflow.db").exists()  # nothing went to the default store
    finally:
        server.terminate()
        server.wait(timeout=30)
