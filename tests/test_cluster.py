"""The cluster path on a real Spark standalone cluster (a master and two 1-core workers on loopback).

The cold start of docs/running.md, as ``scripts/daily.sh`` runs it: ``init`` on two days (sessionize, then
train the first model as barrier tasks on the executors), then ``day`` on the third (sessionize,
attribute and faithfulness with the README's GPU settings, report). Each stage is its own ``spark-submit
--master spark://... --py-files session_attribution.zip jobs/<stage>.py --conf <file>``, the config read
from the file ``CONF`` names, from a directory outside the checkout, with a Python environment that has
the dependencies but not the project (standing in for the ``--archives`` environment), so the driver,
the executors and the training processes import the project from the zip alone. ``run.output_dir`` is
relative: it must mean the driver's directory on the executors too.

Then the faults: an executor JVM killed while the attribution stage runs (the job completes with the
same event table), and while training runs (a clear one-line error, no model written).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from attribution.stages import generate as generate_stage
from tests.helpers import QUICK_BASELINE, small_model_sets
from tests.standalone import StandaloneCluster, python_without_project

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
STAGES = ("sessionize", "train", "attribute", "faithfulness", "report")

# The days of the cold start: the first model on the first two, the third attributed with it.
DAYS = ("2025-01-15", "2025-01-16", "2025-01-17")
VERSION = f"{DAYS[0]}_to_{DAYS[1]}"

# A small dataset and model: the point is where things run, not how well.
SETS = [
    "generate.n_users=250",
    f"generate.n_days={len(DAYS)}",
    f"generate.start_date={DAYS[0]}",
    "generate.n_bot_users=0",
    "generate.n_stores=60",
    "generate.partitions=2",
    "generate.output_path=data/raw",
    "generate.stores_path=data/stores",
    "generate.ground_truth_path=data/truth.json",
    "input.path=data/raw",
    "stores.path=data/stores",
    "run.output_dir=out",  # relative: qualified on the driver, never an executor's working directory
    "spark.master=null",  # the master comes from spark-submit
    "spark.conf.spark.sql.shuffle.partitions=4",
    *small_model_sets(n_layers=1),
    "train.epochs=3",
    "train.patience=3",
    # about 430 training sessions: small batches, a short warm-up and a high rate, so three epochs take
    # about 80 steps at the full rate (the defaults' 128 sessions a step and 100 warm-up steps take 10
    # steps, all in the warm-up, and leave the model at chance)
    "train.batch_size=16",
    "train.warmup_steps=10",
    "train.learning_rate=0.01",
    "train.leakage_check=false",
    "train.ensemble_members=2",  # the members train in the same barrier job and score on the executors
    "baseline.reg_params=[0.003]",  # one fit: the choice among several is tested in test_baseline
    *QUICK_BASELINE,
    "train.local_mode=false",  # barrier tasks on the executors
    "train.num_processes=2",
    "train.threads_per_process=1",
    "attribution.split=all",
    "attribution.methods=[grad_x_input,attention,attention_rollout,integrated_gradients]",
    "attribution.ig_steps=8",
    "attribution.removal_sessions=100",  # a sample, as on a day of traffic: the point is where it runs
    "faithfulness.max_sessions=150",
    "faithfulness.random_draws=2",
]

DISCOVERY = """#!/usr/bin/env bash
# a GPU that is not there: the address Spark hands to tasks, to test the code that reads it
echo '{"name": "gpu", "addresses": ["0"]}'
"""


# The README's settings for the attribution and faithfulness stages on GPU executors.
GPU_CONF = ("spark.executor.resource.gpu.amount=1", "spark.task.resource.gpu.amount=0.25")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("standalone")
    script = root / "fake_gpu.sh"
    script.write_text(DISCOVERY)
    script.chmod(0o755)
    with StandaloneCluster(root, workers=2, cores=1, memory="2g", resources={"gpu": (1, script)}) as c:
        yield c


@pytest.fixture(scope="module")
def deps_python(tmp_path_factory) -> Path:
    return python_without_project(tmp_path_factory.mktemp("deps_env"))


def _env(python: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = str(python)
    return env


def _yaml_with(conf: dict, sets: list[str]) -> dict:
    """``conf`` (a loaded YAML) with ``dotted.key=value`` overrides, their values read as YAML, as ``--set``
    reads them."""
    import yaml

    for item in sets:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = conf
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return conf


class Submitter:
    """spark-submit of the zipped jobs from a working directory outside the checkout, with the config
    file ``cluster.yaml`` there (conf/local.yaml with :data:`SETS`)."""

    def __init__(self, cluster: StandaloneCluster, python: Path, work: Path):
        import yaml

        from scripts.package import build_zip

        self.cluster, self.python, self.work = cluster, python, work
        self.zip = build_zip(work / "dist" / "session_attribution.zip")
        # the entry points and the schedule, away from the checkout: imports come from the zip
        (work / "jobs").mkdir()
        (work / "scripts").mkdir()
        for stage in STAGES:
            shutil.copy(ROOT / "jobs" / f"{stage}.py", work / "jobs" / f"{stage}.py")
        shutil.copy(ROOT / "scripts" / "daily.sh", work / "scripts" / "daily.sh")
        self.conf = work / "cluster.yaml"
        self.conf.write_text(
            yaml.safe_dump(_yaml_with(yaml.safe_load((ROOT / "conf" / "local.yaml").read_text()), SETS))
        )

    def submit(self) -> list[str]:
        """The spark-submit command up to the application: master, code zip, memory."""
        return [
            str(SPARK_SUBMIT),
            "--master",
            self.cluster.url,
            "--py-files",
            str(self.zip),
            "--driver-memory",
            "1g",
            "--executor-memory",
            "1g",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.ui.showConsoleProgress=false",
        ]

    def _logged(self, name: str, cmd: list[str], env: dict, during=None, timeout: float = 420) -> tuple[int, str]:
        """Run ``cmd`` to its end in the working directory, its output to a log; ``during(proc)`` runs beside
        it (a fault). Returns (exit code, log)."""
        log_path = self.work / f"{name}-{time.monotonic_ns()}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                cmd, cwd=self.work, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            helper = threading.Thread(target=during, args=(proc,), daemon=True) if during else None
            if helper:
                helper.start()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if helper:
                helper.join(timeout=60)
        return proc.returncode, log_path.read_text(errors="replace")

    def daily(self, *args: str, timeout: float = 900) -> tuple[int, str]:
        """``scripts/daily.sh`` as a scheduler calls it, SUBMIT this cluster's spark-submit, CONF the file."""
        env = {
            **_env(self.python),
            "SUBMIT": " ".join(self.submit()),
            "CONF": str(self.conf),
            "GPU": " ".join(f"--conf {c}" for c in GPU_CONF),
        }
        return self._logged(
            "daily-" + args[0], ["bash", str(self.work / "scripts" / "daily.sh"), *args], env, timeout=timeout
        )

    def run(self, stage: str, *extra: str, args: tuple[str, ...] = (), during=None, timeout: float = 420):
        """One stage's job with the config file, ``extra`` as ``--set``, to its end. Returns (exit code, log)."""
        cmd = [*self.submit(), str(self.work / "jobs" / f"{stage}.py"), *args, "--conf", str(self.conf)]
        for s in extra:
            cmd += ["--set", s]
        return self._logged(stage, cmd, _env(self.python), during, timeout)


@pytest.fixture(scope="module")
def submitted(cluster, deps_python, tmp_path_factory, spark):
    """The embedded dataset's three days generated here, then the cold start on the cluster: ``init`` on
    the first two days, ``day`` on the third; each command's exit code and log."""
    from tests.conftest import make_conf

    work = tmp_path_factory.mktemp("cluster_work")
    data = [s.replace("=data/", f"={work}/data/") for s in SETS if s.startswith("generate.")]
    generate_stage.run(spark, make_conf(*data))
    sub = Submitter(cluster, deps_python, work)
    results = {"init": sub.daily("init", DAYS[0], DAYS[1])}
    if results["init"][0] == 0:
        results["day"] = sub.daily("day", DAYS[2])
    return sub, results


def _failed(results, step, cluster) -> str:
    code, log = results.get(step, (None, "(not run: an earlier step failed)"))
    return f"daily.sh {step} exited {code}:\n{log[-6000:]}\n{cluster.log_tail()}"


def _events(path: Path):
    """The event table, sorted by its keys, with the run's own columns dropped."""
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table()
    return table.sort_by([("session_id", "ascending"), ("event_position", "ascending")])


def test_the_cold_start_runs_every_stage_on_the_cluster_with_the_code_from_the_zip_only(submitted, cluster):
    sub, results = submitted
    for step, stages in (
        ("init", ("sessionize", "train")),
        ("day", ("sessionize", "attribute", "faithfulness", "report")),
    ):
        code, log = results.get(step, (None, ""))
        assert code == 0, _failed(results, step, cluster)
        # each stage's driver took its code from the zip spark-submit shipped (the environment has no project)
        assert log.count(f"session-attribution code from {sub.zip}/attribution") == len(stages), step
    out = sub.work / "out"
    # init: the two days sessionized, the first model trained on them and named the latest
    assert (out / "model" / "LATEST").read_text().strip() == VERSION
    trained = json.loads((out / "model" / "versions" / VERSION / "model_config.json").read_text())
    assert trained["training_window"] == list(DAYS[:2])
    # day: the third day sessionized, attributed with that model, measured and reported, alone
    assert sorted(p.name for p in (out / "sessions").iterdir() if p.is_dir()) == [f"session_date={d}" for d in DAYS]
    assert [p.name for p in (out / "gradient_attribution_no_funnel").iterdir() if p.is_dir()] == [
        f"session_date={DAYS[2]}"
    ]
    summary = json.loads((out / f"attribute_summary_{DAYS[2]}.json").read_text())
    assert summary["model_sha256"] == trained["weights_sha256"] and summary["sessions"] > 0
    faith = json.loads((out / f"faithfulness_summary_{DAYS[2]}.json").read_text())
    assert faith["sessions"] > 0 and len(faith["methods"]) == 4
    # the model, logged to MLflow by a driver whose code is the zip: registered, with the code it needs
    import mlflow

    uri = f"sqlite:///{out.resolve()}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    (version,) = client.search_model_versions("name='session-conversion'")
    assert version.tags["model_sha256"] == trained["weights_sha256"]
    source = client.get_model_version_download_uri("session-conversion", version.version)
    logged = Path(mlflow.artifacts.download_artifacts(source, tracking_uri=uri))
    assert (logged / "mlflow_model.py").is_file() and (logged / "code" / "attribution" / "model.py").is_file()
    # the relative output directory is the driver's: nothing landed in an executor's working directory
    assert not [p for p in cluster.work.rglob("out") if p.is_dir()], "outputs written under an executor's cwd"
    import pandas as pd

    table = pd.read_csv(out / "report" / "event_type_attribution_no_funnel.csv")
    assert set(table.run_id) == {f"day-{DAYS[2]}"} and len(table) >= 5


def test_distributed_training_on_executors_returns_one_sane_model(submitted, cluster):
    sub, results = submitted
    assert results.get("init", (None,))[0] == 0, _failed(results, "init", cluster)
    out = sub.work / "out"
    metrics = json.loads((out / "model" / "versions" / VERSION / "metrics.json").read_text())
    kept = sum(json.loads((out / f"sessionize_summary_{d}.json").read_text())["sessions"]["kept"] for d in DAYS[:2])
    assert metrics["num_processes"] == 2 and metrics["epochs_run"] == 3 and len(metrics["members"]) == 1
    # conf/local.yaml's schedule, the moving average: the member trains the model's best epoch's number of
    # epochs and keeps the last, the same on both ranks (a rank that stopped apart would hang the job)
    assert metrics["schedule"] == "average", metrics.get("schedule")
    (member,) = metrics["members"]
    assert member["epochs_run"] == member["best_epoch"] == metrics["best_epoch"], (member, metrics["best_epoch"])
    # both ranks' test shards scored and gathered once: every test session of the window
    assert metrics["test"]["sessions"] == metrics["sessions"]["test"] > 0
    assert sum(metrics["sessions"][s] for s in ("train", "validation", "test")) == kept
    # planted drivers: better than chance (the embedded generator's own probabilities score about 0.82)
    assert metrics["test"]["roc_auc"] > 0.6 and metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    # the model the driver wrote loads, and its scores of the window's test sessions, computed here, give
    # the test AUC the training processes gathered
    from attribution.attribute import AttributionOptions, attribute_sessions
    from attribution.features import encode_sessions
    from attribution.metrics import roc_auc
    from attribution.model import load_artifact

    loaded = load_artifact(str(out / "model" / "versions" / VERSION))
    assert loaded.sha256 == metrics["model_sha256"]
    sessions = ds.dataset(out / "sessions", format="parquet", partitioning="hive").to_table()
    window = pc.and_(
        pc.equal(sessions["split"], "test"), pc.less_equal(pc.cast(sessions["session_date"], "string"), DAYS[1])
    )
    test = sessions.filter(window)
    assert test.num_rows == metrics["test"]["sessions"]
    scores = attribute_sessions(
        loaded.model, encode_sessions(test, loaded.vocab), AttributionOptions(methods=("grad_x_input",))
    )
    auc = roc_auc(test["label"].to_numpy(), scores["prediction"])
    assert auc == pytest.approx(metrics["test"]["roc_auc"], abs=1e-6)


def _kill_executor_when(cluster: StandaloneCluster, marker: str, proc, killed: list, settle: float = 1.0):
    """Wait until a process whose command line holds ``marker`` runs under an executor, then SIGKILL that
    executor's JVM (its Python workers go with it). Records the killed pid in ``killed``."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        for worker in range(cluster.n_workers):
            for pid in cluster._pids_under(cluster.work / f"worker{worker}"):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if marker in cmd:
                    time.sleep(settle)
                    for executor in cluster.executor_pids(worker):
                        os.kill(executor, signal.SIGKILL)
                        killed.append(executor)
                    return
        time.sleep(0.2)


def test_an_executor_lost_during_attribution_leaves_the_same_event_table(submitted, cluster):
    sub, results = submitted
    assert results.get("day", (None,))[0] == 0, _failed(results, "day", cluster)
    killed: list[int] = []
    code, log = sub.run(
        "attribute",
        "attribution.output_path=faulted/events",
        "attribution.delta_path=null",
        "attribution.summary_path=faulted/summary.json",
        args=("--date", DAYS[2]),
        # the Python worker that runs the UDF: it starts with the scoring stage
        during=lambda proc: _kill_executor_when(cluster, "pyspark.daemon", proc, killed),
    )
    assert code == 0, log[-6000:]
    assert killed, "no executor was running the attribution UDF to be killed"
    assert "Lost executor" in log or "ExecutorLostFailure" in log, log[-4000:]
    # this run asks for no GPU (no GPU_CONF, unlike the submission above): no task got one
    plain = json.loads((sub.work / "out" / "faulted" / f"summary_{DAYS[2]}.json").read_text())
    assert plain["events_in_gpu_tasks"] == 0 and plain["events_by_device"] == {"cpu": plain["events"]}
    clean = _events(sub.work / "out" / "gradient_attribution_no_funnel")
    faulted = _events(sub.work / "out" / "faulted" / "events")
    assert faulted.schema.names == clean.schema.names and faulted.num_rows == clean.num_rows
    for name in clean.schema.names:
        a, b = clean[name], faulted[name]
        if name == "run_id":
            continue
        if pc.all(pc.equal(a.is_null(), b.is_null())).as_py() and str(a.type) in ("double", "float"):
            np.testing.assert_allclose(
                a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False), rtol=0, atol=1e-12, err_msg=name
            )
        else:
            assert a.equals(b), name


def test_an_executor_lost_during_training_fails_clearly_and_writes_no_model(submitted, cluster):
    sub, results = submitted
    assert results.get("init", (None,))[0] == 0, _failed(results, "init", cluster)
    killed: list[int] = []
    code, log = sub.run(
        "train",
        "train.model_path=faulted/model",
        "train.shards_path=faulted/train_shards",
        "train.epochs=30",
        "train.patience=30",
        args=("--from", DAYS[0], "--to", DAYS[1]),
        during=lambda proc: _kill_executor_when(cluster, "torch.distributed.run", proc, killed, settle=3.0),
    )
    assert killed, "no training process was seen on an executor"
    assert code == 2, log[-6000:]
    errors = [ln for ln in log.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "training failed on 2 barrier task(s)" in errors[0] and "executor" in errors[0], errors
    assert "Traceback" not in log.split(errors[0])[-1]
    assert not (sub.work / "out" / "faulted" / "model").exists()


def test_tasks_given_a_gpu_address_read_it_and_score_on_the_cpu_without_cuda(submitted, cluster):
    """The workers' discovery script reports GPU "0"; the attribution stage ran with the README's GPU
    settings (executors ask for one GPU, tasks for a quarter). The UDF read the address Spark handed each
    task (the code path a GPU executor takes) and, with no CUDA device in the process, scored on the CPU.
    (The executor-lost run asks for no GPU: its own test checks that its tasks got none.)"""
    sub, results = submitted
    assert results.get("day", (None,))[0] == 0, _failed(results, "day", cluster)
    summary = json.loads((sub.work / "out" / f"attribute_summary_{DAYS[2]}.json").read_text())
    assert summary["events"] > 0
    assert summary["events_in_gpu_tasks"] == summary["events"]  # every task was given the address
    assert summary["events_by_device"] == {"cpu": summary["events"]}
