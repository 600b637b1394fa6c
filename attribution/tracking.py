"""MLflow tracking: one MLflow run per run id, the trained model registered, the registry's alias for the
model stages.

- **The run.** Every job of a run id (the pipeline, or each stage's own spark-submit, each day of a
  backfill its own) logs to one MLflow run in ``tracking.experiment``, found again by its tag
  ``attribution.run_id``: the config as parameters (when the run is created), each stage's numbers as
  metrics named ``<stage>.<key>`` with its seconds, and its config as ``config/<stage>.json``. A job that
  fails marks the run ``FAILED`` and tags the stage (``attribution.failed_stage``); a job that ends well
  marks it ``FINISHED``.
- **The model.** The train stage logs the model directory as a pyfunc model (:mod:`attribution.mlflow_model`,
  which scores a sessions DataFrame) and registers it as a version of ``tracking.registered_model``,
  tagged with its sha256, its training window and the model directory it came from.
- **The alias.** With ``tracking.model_alias`` the model stages use the registered version at that alias:
  its model directory, checked against the sha256 it was registered with, and its run's test ROC-AUC for
  the drift check (:func:`chosen_model`).

The default store is SQLite in the output directory (``mlflow.db``, artifacts under ``mlruns/``); a
server that does not answer stops the job in one line (:class:`TrackingError`, exit 2).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

from attribution.config import Config, redacted
from attribution.errors import ConfigError, InputError
from attribution.io import join, read_bytes, uri_filesystem
from attribution.model import (
    CONFIG_FILE,
    SHA_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    model_location,
    read_artifact,
    read_members,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

RUN_TAG = "attribution.run_id"  # the project's run id: every job of it logs to the same MLflow run
FAILED_STAGE_TAG = "attribution.failed_stage"
MODEL_SHA_TAG = "model_sha256"
MODEL_LOCATION_TAG = "model_location"  # the model directory a registered version was logged from
MODEL_WINDOW_TAG = "training_window"
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")  # the pyfunc model's code (models from code)
MODEL_ARTIFACT = "model_dir"  # the pyfunc model's artifact: the model directory, as the train stage wrote it
# Nested numbers deeper than this, or in a mapping of more entries than this (the baseline's coefficients),
# are not logged as metrics: the stage's summary JSON, logged beside them, holds them.
METRIC_DEPTH, METRIC_FAN_OUT = 3, 40


# The user's $MLFLOW_TRACKING_URI, as the process started (Tracker.open leaves the variable as it found it,
# though mlflow.set_tracking_uri exports it).
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI") or None


class TrackingError(RuntimeError):
    """The MLflow tracking server or store can't be used; the message names it and what to do."""


def tracking_uri(conf: Config) -> str:
    """``tracking.uri``; else ``$MLFLOW_TRACKING_URI``; else SQLite in the output directory, which must be on
    the driver's disk then."""
    if conf.tracking.uri:
        return conf.tracking.uri
    if USER_TRACKING_URI:
        return USER_TRACKING_URI
    out = conf.run.output_dir
    if "://" in out and not out.startswith("file:"):
        raise ConfigError(
            f"tracking.uri: not set, and run.output_dir ({out}) is not on the driver's disk, where the default "
            "SQLite store would go; give tracking.uri (an MLflow server, or databricks) or set "
            "tracking.enabled: false"
        )
    path = Path(out.removeprefix("file://").removeprefix("file:")).resolve()
    return f"sqlite:///{path}/mlflow.db"


def _sqlite_dir(uri: str) -> Optional[Path]:
    return Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None


def _first_line(exc: BaseException, limit: int = 240) -> str:
    """The first line of the innermost cause of ``exc`` (SQLAlchemy's driver error, say, not its wrapper)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


@contextmanager
def _environ_restored(*keys: str) -> Iterator[None]:
    """The environment variables ``keys`` as they were before the block, whatever it set."""
    before = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _fail_fast(timeout: int) -> Iterator[None]:
    """MLflow's HTTP client without retries and with ``timeout`` seconds per request: by default it retries
    for minutes, and a job waiting on a dead server should say so at once."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    with _environ_restored(*keys):
        os.environ.update(keys)
        yield


def flat_metrics(tree: Any, prefix: str, depth: int = METRIC_DEPTH) -> dict[str, float]:
    """The numbers of a stage's summary as metrics ``prefix.key.subkey``: lists, strings and booleans are
    left out, and so are mappings nested deeper than ``depth`` or with more than ``METRIC_FAN_OUT`` keys."""
    out: dict[str, float] = {}
    if isinstance(tree, bool) or tree is None:
        return out
    if isinstance(tree, (int, float)):
        if tree == tree and abs(tree) != float("inf"):  # MLflow refuses NaN in some stores; inf reads badly
            out[prefix] = float(tree)
        return out
    if isinstance(tree, dict) and depth > 0 and len(tree) <= METRIC_FAN_OUT:
        for k, v in tree.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if all(c.isalnum() or c in "_-. /" for c in key):
                out.update(flat_metrics(v, key, depth - 1))
    return out


def flat_params(tree: Any, prefix: str = "") -> dict[str, str]:
    """A config tree as MLflow parameters ``section.key``: values as text (lists as JSON)."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for k, v in tree.items():
            out.update(flat_params(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(tree) if isinstance(tree, (list, dict)) else str(tree)}


def _timed(method: Callable[..., T]) -> Callable[..., T]:
    """Count a :class:`Tracker` method's seconds in ``spent``: what tracking adds to the run, logged as the
    metric ``tracking.seconds`` when the run ends."""

    @functools.wraps(method)
    def timed(self: Tracker, *args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        except (ArtifactError, ConfigError, InputError):
            raise
        except Exception as exc:  # noqa: BLE001 - the store failed mid-run: one line, not MLflow's traceback
            raise TrackingError(
                f"tracking.uri {self.uri}: logging to MLflow failed ({_first_line(exc)}); the stage's outputs are "
                "written; rerun it once the store answers, or with tracking.enabled: false"
            ) from exc
        finally:
            self.spent += time.perf_counter() - started

    return timed


def check_reachable(conf: Config) -> None:
    """Before anything else runs: a tracking server that does not answer is one line (:class:`TrackingError`),
    not a failure after the stage's work. A local store (SQLite, files) needs no check."""
    if not conf.tracking.enabled:
        return
    uri = tracking_uri(conf)  # a ConfigError when the default store has nowhere to go
    if uri.startswith(("sqlite:", "file:", "/")):
        return
    import mlflow

    try:
        with _fail_fast(conf.tracking.timeout_seconds):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MLflow, requests and the Databricks SDK each raise their own kinds
        raise TrackingError(_unreachable(uri, exc)) from exc


def _unreachable(uri: str, exc: BaseException) -> str:
    return (
        f"tracking.uri {uri}: MLflow does not answer ({_first_line(exc)}); start the tracking server, correct "
        "tracking.uri, or set tracking.enabled: false"
    )


@dataclass
class Tracker:
    """The MLflow run of one run id, active in this process while its job runs (:func:`session`)."""

    conf: Config
    uri: str
    run_id: str  # MLflow's id of the run
    stage: Optional[str] = None  # the stage running now: the one a failure is tagged with
    failed: bool = False  # set by :meth:`fail`: the job ends with an error code, not an exception
    spent: float = 0.0  # seconds in MLflow calls, opening the run included

    @staticmethod
    def open(conf: Config) -> Tracker:
        """Find the run id's MLflow run (or create it) and make it the active run."""
        started = time.perf_counter()
        # a progress bar per model logged is noise in a job's log (a user's own setting stands)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow  # heavy (about a second): imported when tracking is on, not by every module

        # MLflow's own INFO lines (creating a store's tables, ...) go to stderr, where a failing job's one
        # line must stand alone; its warnings and errors still show
        if logging.getLogger("mlflow").getEffectiveLevel() < logging.WARNING:
            logging.getLogger("mlflow").setLevel(logging.WARNING)

        uri = tracking_uri(conf)
        local = _sqlite_dir(uri)
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
        t = conf.tracking
        try:
            with _fail_fast(t.timeout_seconds):
                # set_tracking_uri exports $MLFLOW_TRACKING_URI too, which every process this one starts
                # (spark-submit, a test's next job) would inherit as the user's choice
                with _environ_restored("MLFLOW_TRACKING_URI"):
                    mlflow.set_tracking_uri(uri)
                client = mlflow.MlflowClient(uri)
                experiment = client.get_experiment_by_name(t.experiment)
                if experiment is None:
                    artifacts = (local / "mlruns").as_uri() if local is not None else None
                    experiment_id = client.create_experiment(t.experiment, artifact_location=artifacts)
                else:
                    experiment_id = experiment.experiment_id
                found = client.search_runs(
                    [experiment_id],
                    filter_string=f"tags.`{RUN_TAG}` = '{conf.run.run_id}'",
                    order_by=["attributes.start_time DESC"],
                    max_results=1,
                )
        except Exception as exc:  # noqa: BLE001 - MLflow, requests and SQLAlchemy each raise their own kinds
            raise TrackingError(_unreachable(uri, exc)) from exc
        if mlflow.active_run() is not None:  # left over from a job of this process that did not end
            mlflow.end_run("KILLED")
        if found:
            run = mlflow.start_run(run_id=found[0].info.run_id)
        else:
            run = mlflow.start_run(
                experiment_id=experiment_id, run_name=conf.run.run_id, tags={RUN_TAG: conf.run.run_id}
            )
            params = flat_params(redacted(conf.to_dict()))
            mlflow.log_params({k: v[:6000] for k, v in params.items()})
        log.info("MLflow run %s (%s) in experiment %r at %s", run.info.run_id, conf.run.run_id, t.experiment, uri)
        return Tracker(conf, uri, run.info.run_id, spent=time.perf_counter() - started)

    def fail(self) -> None:
        """Mark the run failed when it ends (a job that returns an error code instead of raising)."""
        self.failed = True

    def close(self, failed: bool) -> None:
        """End the run: ``FAILED``, tagged with the stage that was running, or ``FINISHED`` (a rerun that
        ends well clears an earlier failure's tag)."""
        import mlflow

        started = time.perf_counter()
        try:
            if failed:
                mlflow.set_tag(FAILED_STAGE_TAG, self.stage or "start")
            elif FAILED_STAGE_TAG in mlflow.MlflowClient(self.uri).get_run(self.run_id).data.tags:
                mlflow.MlflowClient(self.uri).delete_tag(self.run_id, FAILED_STAGE_TAG)
            mlflow.log_metric("tracking.seconds", round(self.spent + time.perf_counter() - started, 2))
        finally:  # the run leaves this process's stack even when the store fails
            mlflow.end_run("FAILED" if failed else "FINISHED")

    @_timed
    def log_stage(self, name: str, summary: dict, seconds: float, conf: Config) -> None:
        """A stage's numbers as ``<name>.*`` metrics, its seconds, its summary and config as JSON files."""
        import mlflow

        metrics = flat_metrics(summary, name)
        metrics[f"{name}.seconds"] = round(seconds, 2)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(json.loads(json.dumps(summary, default=str)), f"summaries/{name}.json")
        mlflow.log_dict(redacted(conf.to_dict()), f"config/{name}.json")

    @_timed
    def log_training(self, summary: dict) -> None:
        """The headline numbers a person compares runs by, unprefixed, and the validation curve by epoch."""
        import mlflow

        test = summary.get("test") or {}
        headline = {f"test_{k}": v for k, v in test.items() if k in ("roc_auc", "pr_auc", "log_loss")}
        baseline = summary.get("baseline") or {}
        if isinstance(baseline.get("test"), dict):
            headline["baseline_test_roc_auc"] = baseline["test"].get("roc_auc")
        blend = baseline.get("blend") or {}
        if isinstance(blend, dict) and blend.get("transformer_weight") is not None:
            headline["blend_weight"] = blend["transformer_weight"]
        removal = baseline.get("removal_model") or {}
        if isinstance(removal, dict) and "order_penalty" in removal:  # 0: the counts alone
            headline["baseline_order_penalty"] = removal["order_penalty"] or 0.0
        mlflow.log_metrics({k: float(v) for k, v in headline.items() if isinstance(v, (int, float))})
        for row in summary.get("history") or []:
            step = int(row.get("epoch", 0))
            mlflow.log_metrics(
                {f"epoch_{k}": float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))},
                step=step,
            )
        mlflow.set_tag(MODEL_SHA_TAG, summary.get("model_sha256", ""))

    @_timed
    def tag_model(self, sha256: Optional[str], registered_version: Optional[str]) -> None:
        """Which model scored the run's tables: its sha256 and, when the registry chose it, its version."""
        import mlflow

        tags = {"scored_with_model_sha256": sha256 or ""}
        if registered_version:
            tags["scored_with_registered_version"] = f"{self.conf.tracking.registered_model}/{registered_version}"
        mlflow.set_tags(tags)

    @_timed
    def log_model(self, location: str, sha256: str, window: Optional[str]) -> Optional[str]:
        """Log the model directory at ``location`` as a pyfunc model and register it; returns the registered
        version (None when ``tracking.registered_model`` is null)."""
        import mlflow

        t = self.conf.tracking
        with tempfile.TemporaryDirectory(prefix="model-") as tmp:
            local = Path(tmp) / "model"
            _copy_model_directory(location, local)
            code = _package_copy(Path(tmp) / "code")
            # No signature: the input is the sessions table's rows (attribution/mlflow_model.py), whose list
            # columns MLflow's schema enforcement would re-type; its warning that it inferred none is muted.
            quiet = logging.getLogger("mlflow.pyfunc")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(code / MODEL_CODE.name),
                    artifacts={MODEL_ARTIFACT: str(local)},
                    code_paths=[str(code)],
                    pip_requirements=_requirements(),
                    registered_model_name=t.registered_model,
                    tags={MODEL_SHA_TAG: sha256, MODEL_LOCATION_TAG: location},
                )
            finally:
                quiet.setLevel(level)
        version = info.registered_model_version
        if version is not None and t.registered_model:
            client = mlflow.MlflowClient(self.uri)
            tags = {MODEL_SHA_TAG: sha256, MODEL_LOCATION_TAG: location, RUN_TAG: self.conf.run.run_id}
            if window:
                tags[MODEL_WINDOW_TAG] = window
            for k, v in tags.items():
                client.set_model_version_tag(t.registered_model, str(version), k, v)
            mlflow.set_tag("registered_model_version", f"{t.registered_model}/{version}")
        return None if version is None else str(version)

    @_timed
    def log_directory_files(self, location: str, artifact_path: str) -> int:
        """Log the files directly in directory ``location`` (a path or a URI; its subdirectories, the Delta
        and parquet tables, are left out) under ``artifact_path``; returns how many."""
        from pyarrow import fs

        filesystem, path = uri_filesystem(location)
        if filesystem is None:
            filesystem = fs.LocalFileSystem()
        infos = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
        files = {Path(i.path).name: join(location, Path(i.path).name) for i in infos if i.type == fs.FileType.File}
        return self._log_files(files, artifact_path)

    @_timed
    def log_files(self, locations: dict[str, str], artifact_path: str) -> int:
        """Log the files among ``locations`` (name -> location; directories such as Delta tables are left
        out) under ``artifact_path``; returns how many."""
        return self._log_files(locations, artifact_path)

    def _log_files(self, locations: dict[str, str], artifact_path: str) -> int:
        import mlflow

        logged = 0
        with tempfile.TemporaryDirectory(prefix="artifacts-") as tmp:
            for name, where in locations.items():
                if not Path(name).suffix or not Path(str(where)).suffix:
                    continue
                try:
                    data = read_bytes(str(where))
                except (OSError, ValueError):
                    continue  # a directory with a suffix, or a file a later stage replaced
                (Path(tmp) / Path(name).name).write_bytes(data)
                logged += 1
            if logged:
                mlflow.log_artifacts(tmp, artifact_path)
        return logged


def _package_copy(dest: Path) -> Path:
    """This package's modules under ``dest/attribution``, read through importlib.resources: on a cluster
    the code is imported from the ``--py-files`` zip, where no module is a file MLflow could log."""
    from importlib.resources import files

    def copy(node: Any, to: Path) -> None:
        to.mkdir(parents=True, exist_ok=True)
        for child in node.iterdir():
            if child.is_dir() and child.name != "__pycache__":
                copy(child, to / child.name)
            elif child.name.endswith(".py"):
                (to / child.name).write_bytes(child.read_bytes())

    copy(files(__package__ or "attribution"), dest / "attribution")
    return dest / "attribution"


def _copy_model_directory(location: str, local: Path) -> None:
    """The files a model directory needs to load (weights, config, vocabularies, ensemble members), copied
    from wherever it is (a URI or a path) to ``local``, verified."""
    weights, config, _ = read_artifact(location)
    listed = config.get("members") or []
    files = {
        WEIGHTS_FILE: weights,
        **{m["file"]: b for m, b in zip(listed, read_members(location, config), strict=True)},
    }
    files.update({name: read_bytes(join(location, name)) for name in (CONFIG_FILE, VOCAB_FILE, SHA_FILE)})
    for name, data in files.items():
        target = local / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _requirements() -> list[str]:
    """The pyfunc model's pip requirements: the versions this process runs (MLflow would otherwise infer
    them by loading the model in a subprocess, seconds per run)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("torch", "numpy", "pandas", "pyarrow", "safetensors", "mlflow-skinny"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            out.append(package)
    return out


# --------------------------------------------------------------------------------------------------
# The active run: one per process at a time, as MLflow's own
# --------------------------------------------------------------------------------------------------

_ACTIVE: list[Tracker] = []


def active() -> Optional[Tracker]:
    """The tracker of the job running in this process, or None (tracking off, or no job)."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextmanager
def session(conf: Config) -> Iterator[Optional[Tracker]]:
    """The run id's MLflow run, active while the block runs (None when tracking is off): ``FAILED`` with
    the failing stage tagged when the block raises or :meth:`Tracker.fail` was called, else ``FINISHED``."""
    if not conf.tracking.enabled:
        yield None
        return
    tracker = Tracker.open(conf)
    _ACTIVE.append(tracker)
    failed = True
    try:
        yield tracker
        failed = tracker.failed
    finally:
        _ACTIVE.remove(tracker)
        _CHOSEN.clear()  # the next job resolves the alias again: it may have moved
        try:
            tracker.close(failed)
        except Exception as exc:  # noqa: BLE001 - as in _timed
            if not failed:  # else the job's own error is the one to show
                raise TrackingError(
                    f"tracking.uri {tracker.uri}: ending the MLflow run failed ({_first_line(exc)})"
                ) from exc
            log.warning("could not mark MLflow run %s failed: %s", tracker.run_id, _first_line(exc))


def starting(name: str) -> float:
    """Note that stage ``name`` starts (a failure from here on is tagged with it); returns the time."""
    tracker = active()
    if tracker is not None:
        tracker.stage = name
    return time.time()


# --------------------------------------------------------------------------------------------------
# The model the model stages use
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChosenModel:
    """The model directory the model stages use, and, when it came from the registry's alias, the version
    and its run's test ROC-AUC."""

    location: str
    registered_version: Optional[str] = None
    sha256: Optional[str] = None
    test_roc_auc: Optional[float] = None


_CHOSEN: dict[tuple, ChosenModel] = {}  # one resolution per run id, so a run's stages use one version


def chosen_model(conf: Config, model_path: Optional[str] = None) -> ChosenModel:
    """``model_path`` when given; the registered version at ``tracking.model_alias`` when set; else the
    model directory of ``train.model_version`` (the latest by training window when null)."""
    if model_path:
        return ChosenModel(model_path)
    t = conf.tracking
    if not (t.enabled and t.model_alias):
        return ChosenModel(model_location(conf.output(conf.train.model_path), conf.train.model_version))
    uri = tracking_uri(conf)
    key = (uri, t.registered_model, t.model_alias, conf.run.run_id)
    if key not in _CHOSEN:
        _CHOSEN[key] = _resolve_alias(uri, str(t.registered_model), t.model_alias, t.timeout_seconds)
    return _CHOSEN[key]


_MISSING_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def _resolve_alias(uri: str, name: str, alias: str, timeout: int) -> ChosenModel:
    import mlflow
    from mlflow.exceptions import MlflowException, RestException

    client = mlflow.MlflowClient(uri)
    try:
        with _fail_fast(timeout):
            version = client.get_model_version_by_alias(name, alias)
            run = client.get_run(version.run_id) if version.run_id else None
    except (RestException, MlflowException) as exc:
        # a missing model is RESOURCE_DOES_NOT_EXIST; a missing alias on a model that exists is
        # INVALID_PARAMETER_VALUE (SQLite store) or NOT_FOUND; anything else is the store failing
        if getattr(exc, "error_code", "") not in _MISSING_CODES:
            raise TrackingError(_unreachable(uri, exc)) from exc
        raise ArtifactError(
            f"tracking.model_alias: no version of registered model {name!r} has alias {alias!r} "
            f"({_first_line(exc)}); set it in MLflow (client.set_registered_model_alias) or unset tracking.model_alias"
        ) from exc
    location = version.tags.get(MODEL_LOCATION_TAG)
    if not location:
        raise ArtifactError(
            f"registered model {name!r} version {version.version} (alias {alias!r}) has no {MODEL_LOCATION_TAG} "
            "tag: it was not registered by this project's train stage"
        )
    auc = run.data.metrics.get("test_roc_auc") if run is not None else None
    log.info("model: %s version %s (alias %s) at %s", name, version.version, alias, location)
    return ChosenModel(location, str(version.version), version.tags.get(MODEL_SHA_TAG), auc)


def check_chosen(chosen: ChosenModel, sha256: str) -> None:
    """Refuse a model directory whose weights are not the registered version's."""
    if chosen.sha256 and chosen.sha256 != sha256:
        raise ArtifactError(
            f"{chosen.location}: weights sha256 {sha256[:12]}... but registered version {chosen.registered_version} "
            f"was logged with {chosen.sha256[:12]}...: the directory was overwritten since; refusing to use it"
        )
