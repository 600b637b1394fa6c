"""A stage run under the job's MLflow run (:mod:`attribution.tracking`): what each stage logs there.

Every stage logs its summary's numbers, seconds, summary and config; the train stage its headline metrics,
validation curve and the model (logged and registered); the attribute stage the model it used; the
faithfulness and report stages their files. Nothing is logged when tracking is off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from attribution import tracking
from attribution.config import Config
from attribution.stages.results import (
    AttributeResult,
    FaithfulnessResult,
    ReportResult,
    StageResult,
    TrainStageResult,
)

R = TypeVar("R")


def run(name: str, stage: Callable[[], R], conf: Config) -> R:
    """Run ``stage`` (the stage's ``run`` with its arguments bound) as stage ``name`` of the active MLflow
    run, and log what it returns."""
    started = tracking.starting(name)
    result = stage()
    if isinstance(result, StageResult):
        record(name, result, time.time() - started, conf)
    return result


def record(name: str, result: StageResult, seconds: float, conf: Config) -> None:
    """Log ``result`` to the active MLflow run (nothing when tracking is off)."""
    tracker = tracking.active()
    if tracker is None:
        return
    tracker.log_stage(name, result.manifest_entry(), seconds, conf)
    if isinstance(result, TrainStageResult):
        tracker.log_training(result.summary)
        if conf.tracking.log_model:
            tracker.log_model(result.model_path, result.sha256, result.version)
    elif isinstance(result, AttributeResult):
        tracker.tag_model(result.summary.get("model_sha256"), result.summary.get("model_registered_version"))
    elif isinstance(result, FaithfulnessResult):
        tracker.log_files(result.outputs, name)
    elif isinstance(result, ReportResult):  # every file of the report's directory: tables, pictures, page
        tracker.log_directory_files(result.output_dir, name)
