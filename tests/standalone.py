"""A Spark standalone cluster on loopback (one master, N workers), started from the installed pyspark.

Local mode runs the driver and the executors in one JVM and one Python environment; a standalone cluster
has separate executor JVMs that the workers launch, so it is where the cluster path is tested: barrier
tasks on executors, code that arrives only through ``--py-files``, an executor that dies mid-stage.

    with StandaloneCluster(tmp_path, workers=2) as cluster:
        subprocess.run(["spark-submit", "--master", cluster.url, ...])

Nothing is downloaded: ``bin/spark-class`` and the jars come with pyspark. Every daemon runs in its own
process group (its executors and their Python workers inherit it), so :meth:`stop` ends everything the
cluster started, also when a test fails. The daemons' logs and every executor's stdout/stderr stay under
``<root>/logs`` and ``<root>/work``; :meth:`log_tail` quotes them for an assertion message.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cmd: list[str], log: Path, env: dict, cwd: Path) -> subprocess.Popen:
    """Start a daemon in a process group of its own (so that one signal ends it and what it started),
    its stdout and stderr going to ``log``."""
    out = open(log, "wb")  # noqa: SIM115 - owned by the process for its life
    return subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True
    )


class ClusterError(RuntimeError):
    """The cluster did not come up; the message quotes the daemons' logs."""


class StandaloneCluster:
    def __init__(self, root: Path, workers: int = 2, cores: int = 1, memory: str = "2g", resources: dict | None = None):
        """``resources``: worker resource settings, e.g. ``{"gpu": (1, "/path/discovery.sh")}`` (amount,
        discovery script), passed as ``spark.worker.resource.<name>.*``."""
        self.root = Path(root)
        self.n_workers, self.cores, self.memory = workers, cores, memory
        self.resources = resources or {}
        self.port, self.ui_port = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.logs = self.root / "logs"
        self.work = self.root / "work"
        self.procs: list[subprocess.Popen] = []

    # -- lifecycle ----------------------------------------------------------------------------------

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update(
            SPARK_HOME=str(SPARK_HOME),
            SPARK_LOCAL_IP="127.0.0.1",
            SPARK_LOG_DIR=str(self.logs),
            SPARK_DAEMON_MEMORY="256m",
            SPARK_NO_DAEMONIZE="1",
        )
        env.pop("PYTHONPATH", None)  # executors see only what --py-files brings
        return env

    def _daemon(self, name: str, args: list[str], extra_env: dict | None = None) -> subprocess.Popen:
        env = self._env()
        env.update(extra_env or {})
        proc = launch([str(SPARK_HOME / "bin" / "spark-class"), *args], self.logs / f"{name}.log", env, self.root)
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 90) -> StandaloneCluster:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self._daemon(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--webui-port",
                str(self.ui_port),
            ],
        )
        for i in range(self.n_workers):
            opts = [
                f"-Dspark.worker.resource.{n}.amount={a} -Dspark.worker.resource.{n}.discoveryScript={s}"
                for n, (a, s) in self.resources.items()
            ]
            self._daemon(
                f"worker{i}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    "--host",
                    "127.0.0.1",
                    "--webui-port",
                    str(free_port()),
                    "--cores",
                    str(self.cores),
                    "--memory",
                    self.memory,
                    "--work-dir",
                    str(self.work / f"worker{i}"),
                    self.url,
                ],
                {"SPARK_WORKER_OPTS": " ".join(opts)} if opts else None,
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.procs):
                break
            if len(self.alive_workers()) == self.n_workers:
                return self
            time.sleep(0.5)
        self.stop()
        raise ClusterError(f"the standalone cluster did not come up in {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in self.procs:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 10
            while time.time() < deadline and any(p.poll() is None for p in self.procs):
                time.sleep(0.2)
        # executors run in their worker's group; anything that left it is found by its work directory
        for pid in self._pids_under(self.work):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state --------------------------------------------------------------------------------------

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
            return json.load(r)

    def alive_workers(self) -> list[dict]:
        try:
            return [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]
        except OSError:
            return []

    @staticmethod
    def _pids_under(directory: Path) -> list[int]:
        """Processes running in ``directory`` or below it (executors run in ``<work>/<app>/<executor id>``)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cwd = os.readlink(proc / "cwd")
            except OSError:
                continue
            if cwd == str(directory) or cwd.startswith(str(directory) + "/"):
                found.append(int(proc.name))
        return found

    def executor_pids(self, worker: int | None = None) -> list[int]:
        """The executor JVMs (CoarseGrainedExecutorBackend) running now, of one worker or of all."""
        pids = []
        for pid in self._pids_under(self.work / f"worker{worker}" if worker is not None else self.work):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "CoarseGrainedExecutorBackend" in cmd:
                pids.append(pid)
        return pids

    def log_tail(self, chars: int = 4000) -> str:
        """For an assertion message: the error lines of every daemon and executor log (an executor's
        stdout holds the output of TorchDistributor's training processes), then each log's end."""
        files = sorted(self.logs.glob("*.log")) + sorted(self.work.rglob("stderr")) + sorted(self.work.rglob("stdout"))
        errors, parts = [], []
        for f in files:
            text = f.read_text(errors="replace")
            if not text:
                continue
            errors += [
                f"{f.parent.parent.name}/{f.parent.name}/{f.name}: {line[:300]}"
                for line in text.splitlines()
                if ("Error" in line or "Exception" in line) and not line.lstrip().startswith("at ")
            ]
            parts.append(f"--- {f} ---\n{text[-chars:]}")
        head = "error lines:\n" + "\n".join(errors[:60]) + "\n" if errors else ""
        return head + "\n".join(parts)[-4 * chars :]


def python_without_project(root: Path) -> Path:
    """A Python environment with the dependencies and without the project: a venv under ``root`` whose only
    packages are this venv's site-packages, added by a .pth line (so that the editable install's own .pth,
    which puts the checkout on the path, is not processed). What a cluster's Python looks like before
    the project's code arrives."""
    import site
    import sys
    import sysconfig

    env = Path(root) / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()] or [sysconfig.get_paths()["purelib"]]
    (Path(purelib) / "dependencies.pth").write_text("\n".join(deps) + "\n")
    probe = subprocess.run(
        [str(python), "-c", "import torch, pyspark, attribution"],
        capture_output=True,
        text=True,
        cwd=env,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert "No module named 'attribution'" in probe.stderr, "the stand-in environment must lack the project"
    return python


class ConnectServer:
    """A Spark Connect server (``SparkConnectServer`` through spark-submit, ``local[N]``) on loopback, whose
    Python workers run ``python``; clients reach it at :attr:`url`. Its log stays at ``<root>/server.log``.

        with ConnectServer(tmp_path, python) as server:
            SparkSession.builder.remote(server.url).getOrCreate()
    """

    def __init__(self, root: Path, python: Path, cores: int = 2):
        self.root, self.python, self.cores = Path(root), Path(python), cores
        self.port = free_port()
        self.url = f"sc://127.0.0.1:{self.port}"
        self.log = self.root / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> ConnectServer:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")
        }
        env.update(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=str(self.python))
        cmd = [
            str(SPARK_HOME / "bin" / "spark-submit"),
            "--class",
            "org.apache.spark.sql.connect.service.SparkConnectServer",
            "--master",
            f"local[{self.cores}]",
            "--driver-memory",
            "2g",
            "--conf",
            f"spark.connect.grpc.binding.port={self.port}",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.log.level=WARN",
            "spark-internal",
        ]
        self.proc = launch(cmd, self.log, env, self.root)
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise ClusterError(f"the Spark Connect server did not come up in {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def __enter__(self) -> ConnectServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
