"""The train stage: the sessions table sharded per rank, the transformer trained with TorchDistributor,
the artifact and metrics written, and the leakage check (:mod:`attribution.train` holds the parts)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from pyspark.sql import SparkSession

from attribution import baseline
from attribution.config import Config
from attribution.io import join, read_table, run_days, write_text
from attribution.model import ModelSpec, mark_latest, save_artifact, version_location, version_of
from attribution.spark import is_connect
from attribution.stages import sessionize
from attribution.stages.results import TrainStageResult
from attribution.train import check_classes, distribute, predictions_location, prepare_shards, worker_params
from attribution.train_worker import SPLITS, context_rate_multiple

log = logging.getLogger(__name__)


def still_improving(schedule: str, history: list[dict], best_epoch: int, epochs: int) -> bool:
    """Did training end while the validation AUC was still rising? ``cosine``: the last allowed epoch is
    the best and reset the patience (``rising``: a gain of train.min_improvement), and so for ``average``;
    ``plateau``: the annealing started because the epochs ran out (``decay`` ``epochs``), not because the
    AUC levelled off."""
    if schedule == "plateau":
        return any(e.get("decay") == "epochs" for e in history)
    return best_epoch == len(history) == epochs and bool(history[-1]["rising"])


def run(spark: SparkSession, conf: Config) -> TrainStageResult:
    """Train on ``conf.sessions.sessions_path``; write the model directory and metrics.json (the result's
    ``summary``)."""

    t = conf.train
    sessions_path = conf.output(conf.sessions.sessions_path)
    shards_path = conf.output(t.shards_path)

    base_path = conf.output(t.model_path)
    version = version_of(conf.run.date, conf.run.date_to) if conf.run.date else None
    model_path = version_location(base_path, version) if version else base_path
    started = time.time()
    vocab, vocab_stats, counts = prepare_shards(spark, conf, sessions_path, shards_path, t.num_processes)
    check_classes(counts, t.min_class_sessions, sessions_path)
    spec = ModelSpec.of(conf.model, vocab, conf.session.max_length)
    prepared = time.time()
    print(
        f"[train] {counts['train']:,} train / {counts['validation']:,} validation / {counts['test']:,} test sessions; "
        f"vocabularies: " + ", ".join(f"{f} {vocab.size(f):,}" for f in vocab.fields),
        flush=True,
    )
    result = distribute(conf, worker_params(conf, spec.to_dict(), vocab, shards_path, t.epochs))
    trained = time.time()
    metrics: dict[str, Any] = {
        "run_id": conf.run.run_id,
        "test": result.test,
        "validation": result.validation,
        "sessions": {s: counts[s] for s in SPLITS},
        "positives": {s: counts[f"{s}_positive"] for s in SPLITS},
        "schedule": t.schedule,  # train.schedule: what the history's rates and the stop mean
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "history": result.history,
        "train_sessions_per_second": result.train_sessions_per_second,
        "training_seconds": round(trained - prepared, 2),
        "prepare_seconds": round(prepared - started, 2),
        "num_processes": t.num_processes,
        "unknown_tokens": result.unknown,
        "vocabulary": vocab_stats,
        "funnel_excluded": conf.funnel.exclude,
        # the ensemble's other members (train.ensemble_members): their best epoch, epochs run and test metrics
        "members": [{"best_epoch": m.best_epoch, "epochs_run": m.epochs_run, "test": m.test} for m in result.members],
    }
    if spec.context:  # the context path's learning rate, as a multiple of the model's (train.context_full_sessions)
        metrics["context_rate"] = {
            "multiple": context_rate_multiple(t.context_lr_scale, t.context_full_sessions, result.n_train),
            "scale": t.context_lr_scale,
            "full_sessions": t.context_full_sessions,
            "train_sessions": result.n_train,
        }
    sha = save_artifact(
        model_path,
        result.weights,
        spec,
        vocab,
        extra={
            "run_id": conf.run.run_id,
            "seed": conf.run.seed,
            "funnel_excluded": conf.funnel.exclude,
            "test_roc_auc": result.test["roc_auc"],
            # the training window and data (day mode), so a model says what it was trained on
            "version": version,
            "training_window": [conf.run.date, conf.run.date_to or conf.run.date] if version else None,
            "sessions": {s: counts[s] for s in SPLITS},
            "positives": {s: counts[f"{s}_positive"] for s in SPLITS},
        },
        members=[m.weights for m in result.members],
    )
    metrics["model_sha256"] = sha
    if still_improving(t.schedule, result.history, result.best_epoch, t.epochs):
        metrics["still_improving"] = True
        print(f"[train] validation AUC still rising at the last epoch ({t.epochs}): raise train.epochs", flush=True)
    else:
        metrics["still_improving"] = False
    if conf.baseline.enabled and is_connect(spark):
        metrics["baseline"] = {"skipped": baseline.CONNECT_SKIP}
        print(f"[train] counts baseline {baseline.CONNECT_SKIP}", flush=True)
    elif conf.baseline.enabled:
        started_baseline = time.time()
        sessions = run_days(read_table(spark, sessions_path, "parquet", {}, "sessions"), conf.run)
        validation = spark.read.parquet(predictions_location(shards_path)) if conf.baseline.blend else None
        metrics["baseline"] = baseline.train_and_write(
            spark,
            sessions,
            conf.baseline,
            model_path,
            validation,
            members=conf.baseline.fits(t.ensemble_members),
            seed=conf.run.seed,
        )
        metrics["baseline"]["seconds"] = round(time.time() - started_baseline, 2)
    if t.leakage_check:
        metrics["leakage_check"] = leakage_check(spark, conf)
    write_text(join(model_path, "metrics.json"), json.dumps(metrics, indent=1))
    if version:
        metrics["version"] = version
        metrics["latest"] = mark_latest(base_path, version)
    metrics["model_path"] = model_path
    return TrainStageResult(metrics, model_path, sha, result.test["roc_auc"], version)


def leakage_check(spark: SparkSession, conf: Config) -> dict:
    """Sessionize again keeping the funnel events and train a model on that: the test AUC it reaches is
    the leakage the original analysis warns about (the funnel gives the answer away). Nothing of it is published
    except these numbers."""

    sub = "leakage_check"
    leaky = dataclasses.replace(
        conf,
        funnel=dataclasses.replace(conf.funnel, exclude=False),
        sessions=dataclasses.replace(
            conf.sessions,
            sessions_path=f"{sub}/sessions",
            quarantine_path=f"{sub}/quarantine",
            summary_path=f"{sub}/sessionize_summary.json",
        ),
        train=dataclasses.replace(
            conf.train, shards_path=f"{sub}/train_shards", leakage_check=False, ensemble_members=1
        ),
    )
    print(
        "[train] leakage check: the same model trained with the funnel events kept (funnel.exclude=false)", flush=True
    )
    sessionize.run(spark, leaky)
    vocab, _, counts = prepare_shards(
        spark,
        leaky,
        leaky.output(leaky.sessions.sessions_path),
        leaky.output(leaky.train.shards_path),
        leaky.train.num_processes,
    )
    spec = ModelSpec.of(conf.model, vocab, conf.session.max_length)
    params = worker_params(
        leaky, spec.to_dict(), vocab, leaky.output(leaky.train.shards_path), conf.train.leakage_check_epochs
    )
    result = distribute(leaky, params)
    return {
        "funnel_excluded": False,
        "epochs": conf.train.leakage_check_epochs,
        "test": result.test,
        "sessions": {s: counts[s] for s in SPLITS},
    }
