"""Training the session transformer from the sessions table, through TorchDistributor.

Driver side (:func:`run`), in Spark:
1. vocabularies from the training split (:func:`attribution.features.build_vocabularies`);
2. the model input written once as shards: ``<shards_path>/split=<split>/shard=<k>/`` with only the
   columns the features need, ``k = hash(session_id, seed) mod (processes x shards_per_process)``;
3. ``TorchDistributor(...).run(train_worker, params)`` (:func:`distribute`): 1..N processes (local mode
   here, executor tasks with GPUs on a cluster), each running :mod:`attribution.train_worker`;
4. the artifact (safetensors + JSON, written by the driver from rank 0's result) and ``metrics.json``
   (attribution/stages/train.py).

Nothing collects the sessions to the driver: each process reads its own shards.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from attribution.config import Config
from attribution.features import Vocabularies, build_vocabularies
from attribution.io import join, read_table, run_days
from attribution.observed import metrics
from attribution.schema import INPUT_COLUMNS
from attribution.train_worker import SPLITS, TrainingError, TrainResult, WorkerParams, train_worker

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from attribution.config import TrainConf

log = logging.getLogger(__name__)


def prepare_shards(
    spark: SparkSession, conf: Config, sessions_path: str, shards_path: str, n_processes: int
) -> tuple[Vocabularies, dict, dict[str, int]]:
    """Build the vocabularies and write the sharded model input. Returns (vocab, vocab stats, sessions per
    split as written)."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    sessions = run_days(read_table(spark, sessions_path, "parquet", {}, "sessions"), conf.run)
    t = conf.train
    seed_col = F.lit(conf.run.seed)
    train = sessions.where(F.col("split") == "train")
    if t.max_train_sessions is not None:
        # A deterministic sample by hash: the same sessions for any partitioning.
        n_train = train.count()
        if n_train > t.max_train_sessions:
            bucket = F.pmod(F.xxhash64("session_id", seed_col), F.lit(1_000_000))
            threshold = int(1_000_000 * t.max_train_sessions / n_train)
            sessions = sessions.where((F.col("split") != "train") | (bucket < threshold))
            train = sessions.where(F.col("split") == "train")
    vocab, stats = build_vocabularies(train, conf.vocab.min_frequency, conf.vocab.max_size)
    if not vocab.fields or "event_names" not in vocab.fields:
        raise TrainingError(
            f"the training split of {sessions_path} has no event reaching vocab.min_frequency="
            f"{conf.vocab.min_frequency}; is the sessions table empty?"
        )
    n_shards = n_processes * t.shards_per_process
    columns = ["session_id", "label", "split", *INPUT_COLUMNS]
    sharded = sessions.select(*columns).withColumn(
        "shard", F.pmod(F.xxhash64("session_id", seed_col), F.lit(n_shards)).cast("int")
    )
    observation = Observation("shards")
    per_split = [
        *[F.sum(F.when(F.col("split") == s, 1).otherwise(0)).alias(s) for s in SPLITS],
        *[F.sum(F.when(F.col("split") == s, F.col("label")).otherwise(0)).alias(f"{s}_positive") for s in SPLITS],
    ]
    counted = sharded.observe(observation, *per_split)
    (
        counted.repartition("split", "shard")
        .sortWithinPartitions("session_id")
        .write.mode("overwrite")
        .partitionBy("split", "shard")
        .parquet(shards_path)
    )
    # where Spark Connect dropped the counts (attribution.observed), the shards just written are counted
    observed = metrics(
        observation,
        "the training input's sessions per split",
        lambda: spark.read.parquet(shards_path).agg(*per_split),
    )
    counts = {k: int(v or 0) for k, v in observed.items()}
    for s in SPLITS:
        if counts[s] == 0:
            raise TrainingError(f"the {s} split of {sessions_path} is empty; training needs sessions in every split")
    return vocab, stats, counts


def _threads(conf: Config) -> Optional[int]:
    t = conf.train
    if t.threads_per_process is not None:
        return t.threads_per_process
    if t.local_mode and not t.use_gpu:
        return max(1, (os.cpu_count() or 1) // t.num_processes)
    return None


# under the shards (a name starting with "_" is not read as data): the model's validation predictions
PREDICTIONS = "_validation_predictions"


def _qualified(path: str) -> str:
    """A local path made absolute (the training processes may run elsewhere); a URI as it is."""
    return os.path.abspath(path) if "://" not in path else path


def predictions_location(shards_path: str) -> str:
    """Where the training processes write the model's validation predictions (WorkerParams)."""
    return join(_qualified(shards_path), PREDICTIONS)


def worker_params(conf: Config, spec_dict: dict, vocab: Vocabularies, shards_path: str, epochs: int) -> WorkerParams:
    """The training processes' parameters; they write the validation predictions when the counts baseline
    is blended with them (``baseline.enabled`` and ``baseline.blend``)."""
    t = conf.train
    blended = conf.baseline.enabled and conf.baseline.blend
    return WorkerParams(
        shards_path=_qualified(shards_path),
        spec=spec_dict,
        vocab_json=vocab.to_json(),
        seed=conf.run.seed,
        batch_size=t.batch_size,
        epochs=epochs,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        context_lr_scale=t.context_lr_scale,
        context_full_sessions=t.context_full_sessions,
        context_ridge=t.context_ridge,
        embedding_ridge=t.embedding_ridge,
        pos_weight=t.pos_weight,
        grad_clip=t.grad_clip,
        patience=t.patience,
        min_improvement=t.min_improvement,
        schedule=t.schedule,
        decay_epochs=t.decay_epochs,
        average_epochs=t.average_epochs,
        warmup_steps=t.warmup_steps,
        use_gpu=t.use_gpu,
        threads=_threads(conf),
        members=t.ensemble_members,
        predictions_path=predictions_location(shards_path) if blended else None,
    )


def _code_paths() -> list[str]:
    """This process's import path, as absolute locations that exist (the working directory for '')."""
    paths = []
    for p in sys.path:
        p = os.path.abspath(p or os.getcwd())
        if os.path.exists(p) and p not in paths:
            paths.append(p)
    return paths


def _load_entry(home: str, module: str, name: str, local: bool, paths: list[str]) -> Any:
    # Pickled by value (see TrainEntry.__reduce__): it runs where the project may not be importable yet.
    # ``home`` is the module that defines TrainEntry; ``module``.``name`` the function it calls.
    import importlib
    import os as _os
    import sys as _sys

    missing = [p for p in paths if p not in _sys.path and _os.path.exists(p)]
    _sys.path[:0] = missing
    return importlib.import_module(home).TrainEntry(module, name, local)


class TrainEntry:
    """The training function as TorchDistributor hands it to torchrun: it carries the import path of the
    process that pickles it, so the training processes import the project's code from where that
    process found it.

    TorchDistributor pickles the function once more in the process that starts torchrun (the driver in
    local mode, the barrier task's Python worker on a cluster), and the training processes unpickle it
    before anything else runs. A plain function goes by reference there, and a training process fails
    with ``No module named 'attribution'`` when the code came with ``--py-files``: Spark puts those
    archives on the Python worker's ``sys.path``, not on the ``PYTHONPATH`` its children inherit.
    When pickled on a cluster's driver it carries nothing, so executors use only what ``--py-files`` or
    their environment brings, never the driver's disk.
    """

    def __init__(self, module: str, name: str, local: bool):
        self.module, self.name, self.local = module, name, local

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(self.module), self.name)(*args, **kwargs)

    def __reduce__(self) -> tuple[Callable, tuple]:
        from pyspark import TaskContext

        paths = _code_paths() if self.local or TaskContext.get() is not None else []
        loader = _by_value(_load_entry)
        return loader, (__name__, self.module, self.name, self.local, paths)


def _by_value(fn: Callable) -> Callable:
    """A copy of ``fn`` that cloudpickle serializes by value (its code travels, not its module's name)."""
    import types

    copy = types.FunctionType(fn.__code__, {"__builtins__": __builtins__}, fn.__name__, fn.__defaults__)
    copy.__module__ = "__main__"
    copy.__qualname__ = fn.__name__
    return copy


def distribute(conf: Config, params: WorkerParams) -> TrainResult:
    """Run :func:`train_worker` under TorchDistributor; returns rank 0's result (in local mode handed over in
    a file of its own, ``WorkerParams.result_path``).

    ``train.local_mode: true`` starts the processes on the driver, ``false`` one per barrier task on the
    executors (gloo on CPU, NCCL on GPU). A failed training (a rank that raised, an executor lost) is a
    :class:`TrainingError`; no model is written then.
    """
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    t = conf.train
    if params.threads is None and not t.local_mode and not t.use_gpu:
        # a barrier task owns spark.task.cpus cores; torch's default would take every core of the machine
        spark = SparkSession.getActiveSession()
        params = dataclasses.replace(params, threads=int(spark.conf.get("spark.task.cpus", "1") or 1) if spark else 1)
    distributor = TorchDistributor(num_processes=t.num_processes, local_mode=t.local_mode, use_gpu=t.use_gpu)
    entry = TrainEntry(train_worker.__module__, train_worker.__name__, t.local_mode)
    with tempfile.TemporaryDirectory(prefix="train-result-") as scratch:
        if t.local_mode:  # the processes run here: rank 0 hands its result over in a file of its own
            params = dataclasses.replace(params, result_path=os.path.join(scratch, "result.pickle"))
        result = _launch(distributor, entry, params, t)
        if params.result_path is not None and os.path.exists(params.result_path):
            with open(params.result_path, "rb") as f:
                result = pickle.load(f)
    if not isinstance(result, TrainResult):
        raise TrainingError("the training processes returned no model; see their output above")
    return result


def _launch(distributor: Any, entry: TrainEntry, params: WorkerParams, t: TrainConf) -> Any:
    """``distributor.run`` of the training, retried once when the rendezvous port was taken."""
    for attempt in (1, 2):
        try:
            return distributor.run(entry, dataclasses.asdict(params))
        except Exception as exc:  # noqa: BLE001 - TorchDistributor raises RuntimeError or a Py4J/Spark error
            # The rendezvous port is chosen free, then bound by the processes: another program can take it
            # in between. Training is deterministic, so the one retry trains the same model.
            if attempt == 1 and port_taken(str(exc)):
                log.warning("training: the rendezvous port was taken before it was bound (EADDRINUSE); retrying once")
                continue
            raise TrainingError(_training_failure(exc, t)) from exc
    return None


def port_taken(text: str) -> bool:
    """Whether a failed run's text says the rendezvous port was in use (a race, worth one retry)."""
    import re

    return bool(re.search(r"EADDRINUSE|[Aa]ddress already in use", text))


def _training_failure(exc: BaseException, t: TrainConf) -> str:
    """One line for a failed TorchDistributor run: where it ran and the most telling reason found."""
    import re

    text = str(exc)
    where = (
        f"{t.num_processes} process(es) on the driver (train.local_mode=true)"
        if t.local_mode
        else f"{t.num_processes} barrier task(s) on the executors (train.local_mode=false)"
    )
    reasons = [
        (
            r"No module named '([^']+)'",
            "the training processes can't import {0}: ship the code with --py-files "
            "and the dependencies with --archives (README, On a cluster)",
        ),
        (r"(ExecutorLostFailure[^\n]*|Executor \S+ (?:lost|exited)[^\n]*)", "an executor was lost: {0}"),
        (r"(rank \d+ of \d+ has no training sessions[^\n]*)", "{0}"),
        (
            r"(barrier (?:stage|ResultStage)[^\n]*?(?:requires|needs)[^\n]*slots[^\n]*)",
            "{0}: a barrier stage needs train.num_processes free task slots at once",
        ),
    ]
    for pattern, message in reasons:
        found = re.search(pattern, text)
        if found:
            return f"training failed on {where}: " + message.format(*found.groups()).strip()
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip() and not ln.startswith("\t")), "")
    return f"training failed on {where}: {type(exc).__name__}: {last[:300]}; the processes' output is above"


def check_classes(counts: dict, minimum: int, where: str) -> None:
    """Refuse to train, with one line, when the train or validation split has fewer than ``minimum``
    converted or non-converted sessions: a day with no conversions (or only conversions) has nothing to
    learn, and a validation split of one class has no ROC-AUC to choose the best epoch by."""
    for split in ("train", "validation"):
        positive = int(counts.get(f"{split}_positive") or 0)
        negative = int(counts.get(split) or 0) - positive
        if positive < minimum or negative < minimum:
            raise TrainingError(
                f"cannot train: the {split} split of {where} has {positive:,} converted and {negative:,} "
                f"non-converted sessions; training needs at least {minimum:,} of each (train.min_class_sessions)"
            )


# --------------------------------------------------------------------------------------------------
# Worker: runs in every training process (torchrun under TorchDistributor, or in-process for tests)
# --------------------------------------------------------------------------------------------------
