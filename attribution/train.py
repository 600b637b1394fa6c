"""Training the session transformer from the sessions table, through TorchDistributor.

Driver side (:func:`run`), in Spark:
1. vocabularies from the training split (:func:`attribution.features.build_vocabularies`);
2. the model input written once as shards: ``<shards_path>/split=<split>/shard=<k>/`` with only the
   columns the features need, ``k = hash(session_id, seed) mod (processes x shards_per_process)``;
3. ``TorchDistributor(...).run(train_worker, params)``: 1..N processes (local mode here, executor tasks
   with GPUs on a cluster), DistributedDataParallel when N > 1;
4. the artifact (safetensors + JSON, written by the driver from rank 0's result) and ``metrics.json``.

Each process reads only its own shards with pyarrow (shard ``k`` belongs to rank ``k mod N``); nothing
collects the sessions to the driver. Validation and test scores are gathered across ranks (one float and
one label per session) so every rank takes the same early-stopping decision.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from attribution.config import Config
from attribution.features import Vocabularies, build_vocabularies, encode_sessions, length_buckets
from attribution.io import join, read_table, run_days
from attribution.metrics import binary_metrics
from attribution.model import ModelSpec, SessionTransformer, to_tensors, weights_bytes
from attribution.schema import INPUT_COLUMNS

if TYPE_CHECKING:
    import pyarrow as pa
    import torch
    from pyspark.sql import SparkSession

    from attribution.config import TrainConf
    from attribution.model import SessionTransformer

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


class TrainingError(RuntimeError):
    """Training can't run on this input (e.g. an empty split); the message says why."""


# --------------------------------------------------------------------------------------------------
# Driver: shards and orchestration
# --------------------------------------------------------------------------------------------------


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
    counted = sharded.observe(
        observation,
        *[F.sum(F.when(F.col("split") == s, 1).otherwise(0)).alias(s) for s in SPLITS],
        *[F.sum(F.when(F.col("split") == s, F.col("label")).otherwise(0)).alias(f"{s}_positive") for s in SPLITS],
    )
    (
        counted.repartition("split", "shard")
        .sortWithinPartitions("session_id")
        .write.mode("overwrite")
        .partitionBy("split", "shard")
        .parquet(shards_path)
    )
    counts = {k: int(v or 0) for k, v in observation.get.items()}
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


@dataclasses.dataclass(frozen=True)
class WorkerParams:
    """What every training process needs. It crosses to the processes as a plain dict
    (:func:`dataclasses.asdict`), so unpickling it there needs no project code."""

    shards_path: str
    spec: dict  # ModelSpec.to_dict()
    vocab_json: str
    seed: int
    batch_size: int
    epochs: int
    learning_rate: float
    weight_decay: float
    embedding_ridge: float
    pos_weight: float | None
    grad_clip: float
    patience: int
    warmup_steps: int
    use_gpu: bool
    threads: int | None  # torch threads per process; None: torch's default
    members: int = 1  # models trained one after another: the model, then members-1 bootstrap members


def worker_params(conf: Config, spec_dict: dict, vocab: Vocabularies, shards_path: str, epochs: int) -> WorkerParams:
    t = conf.train
    return WorkerParams(
        shards_path=os.path.abspath(shards_path) if "://" not in shards_path else shards_path,
        spec=spec_dict,
        vocab_json=vocab.to_json(),
        seed=conf.run.seed,
        batch_size=t.batch_size,
        epochs=epochs,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        embedding_ridge=t.embedding_ridge,
        pos_weight=t.pos_weight,
        grad_clip=t.grad_clip,
        patience=t.patience,
        warmup_steps=t.warmup_steps,
        use_gpu=t.use_gpu,
        threads=_threads(conf),
        members=t.ensemble_members,
    )


def _code_paths() -> list[str]:
    """This process's import path, as absolute locations that exist (the working directory for '')."""
    paths = []
    for p in sys.path:
        p = os.path.abspath(p or os.getcwd())
        if os.path.exists(p) and p not in paths:
            paths.append(p)
    return paths


def _load_entry(module: str, name: str, local: bool, paths: list[str]) -> Any:
    # Pickled by value (see TrainEntry.__reduce__): it runs where the project may not be importable yet.
    import importlib
    import os as _os
    import sys as _sys

    missing = [p for p in paths if p not in _sys.path and _os.path.exists(p)]
    _sys.path[:0] = missing
    return importlib.import_module(module).TrainEntry(module, name, local)


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
        return loader, (self.module, self.name, self.local, paths)


def _by_value(fn: Callable) -> Callable:
    """A copy of ``fn`` that cloudpickle serializes by value (its code travels, not its module's name)."""
    import types

    copy = types.FunctionType(fn.__code__, {"__builtins__": __builtins__}, fn.__name__, fn.__defaults__)
    copy.__module__ = "__main__"
    copy.__qualname__ = fn.__name__
    return copy


def distribute(conf: Config, params: WorkerParams) -> dict:
    """Run :func:`train_worker` under TorchDistributor; returns the result every rank returns.

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
    entry = TrainEntry(__name__, "train_worker", t.local_mode)
    for attempt in (1, 2):
        try:
            result = distributor.run(entry, dataclasses.asdict(params))
            break
        except Exception as exc:  # noqa: BLE001 - TorchDistributor raises RuntimeError or a Py4J/Spark error
            # The rendezvous port is chosen free, then bound by the processes: another program can take it
            # in between. Training is deterministic, so the one retry trains the same model.
            if attempt == 1 and port_taken(str(exc)):
                log.warning("training: the rendezvous port was taken before it was bound (EADDRINUSE); retrying once")
                continue
            raise TrainingError(_training_failure(exc, t)) from exc
    if not isinstance(result, dict) or "weights" not in result:
        raise TrainingError("the training processes returned no model; see their output above")
    return result


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


def _read_shards(root: str, split: str, rank: int, world: int) -> pa.Table | None:
    """This rank's shards of ``split`` as one Arrow table (sorted by session_id: deterministic)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    base = join(root, f"split={split}")
    try:
        dataset = ds.dataset(base, format="parquet", partitioning="hive")
    except FileNotFoundError:
        return None
    mine = [f for f in dataset.files if int(f.rsplit("shard=", 1)[1].split("/", 1)[0]) % world == rank]
    if not mine:
        return None
    table = ds.dataset(sorted(mine), format="parquet", filesystem=dataset.filesystem).to_table(
        columns=["session_id", "label", *INPUT_COLUMNS]
    )
    return table.sort_by("session_id") if table.num_rows else pa.Table.from_batches([], schema=table.schema)


class _Split:
    """One rank's encoded sessions of a split plus their labels."""

    def __init__(self, table: pa.Table | None, vocab: Vocabularies, continuous: tuple[str, ...]):
        if table is None or table.num_rows == 0:
            self.encoded, self.labels = None, np.zeros(0, dtype=np.float32)
        else:
            self.encoded = encode_sessions(table, vocab, continuous)
            self.labels = table.column("label").to_numpy(zero_copy_only=False).astype(np.float32)

    def __len__(self) -> int:
        return len(self.labels)


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _score(
    model: SessionTransformer, data: _Split, fields: tuple[str, ...], device: torch.device, batch_size: int
) -> np.ndarray:
    import torch

    if data.encoded is None:
        return np.zeros(0, dtype=np.float64)
    out = np.zeros(len(data), dtype=np.float64)
    model.eval()
    with torch.no_grad():
        for rows in length_buckets(data.encoded.lengths, batch_size * 4):
            tokens, cont, mask = to_tensors(data.encoded.batch(rows), fields, device)
            out[rows] = model(tokens, cont, mask).double().cpu().numpy()
    return out


def train_worker(given: WorkerParams | dict[str, Any]) -> Optional[dict]:
    """One training process. Reads RANK/WORLD_SIZE/LOCAL_RANK set by torchrun (absent: one process).

    Returns rank 0's result on every rank: weights as safetensors bytes, history, validation and test
    metrics.
    """
    import torch
    import torch.distributed as dist

    params = given if isinstance(given, WorkerParams) else WorkerParams(**given)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_gpu = params.use_gpu and torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_gpu else "cpu")
    if use_gpu:
        torch.cuda.set_device(device)
    distributed = world > 1
    if distributed:
        dist.init_process_group("nccl" if use_gpu else "gloo")
    saved_threads = torch.get_num_threads()
    if params.threads:
        torch.set_num_threads(params.threads)
    try:
        result = _train(params, rank, world, device, distributed)
        if distributed:
            # Every rank returns rank 0's result. TorchDistributor's local mode has all processes write
            # their return value to one file (the last writer wins), and on a cluster it keeps the
            # value of the task of partition 0 and fails a task whose process wrote none; the same
            # value on every rank is right for both.
            box = [result]
            dist.broadcast_object_list(box, src=0)
            result = box[0]
            dist.barrier()  # every rank leaves together
    finally:
        torch.set_num_threads(saved_threads)
        if distributed:
            dist.destroy_process_group()
    return result


def _train(params: WorkerParams, rank: int, world: int, device: torch.device, distributed: bool) -> Optional[dict]:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    seed = params.seed
    vocab = Vocabularies.from_json(params.vocab_json)
    spec = ModelSpec.from_dict(params.spec)
    fields = spec.fields
    data = {s: _Split(_read_shards(params.shards_path, s, rank, world), vocab, spec.continuous) for s in SPLITS}

    def all_gather(obj: Any) -> list:
        if not distributed:
            return [obj]
        out = [None] * world
        dist.all_gather_object(out, obj)
        return out

    def gathered_metrics(split: str, net: SessionTransformer) -> tuple[dict, np.ndarray, np.ndarray]:
        scores = _score(net, data[split], fields, device, params.batch_size)
        parts = all_gather((scores, data[split].labels))
        s = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        return binary_metrics(y, s), s, y

    # Values outside the vocabulary, in this rank's validation and test shards (train: by construction,
    # the values under vocab.min_frequency).
    unknown = {
        split: {f: (d.encoded.unknown[f] if d.encoded is not None else 0) for f in fields} for split, d in data.items()
    }
    train = data["train"]
    n_batches = math.ceil(len(train) / params.batch_size) if len(train) else 0
    counts = torch.tensor([n_batches, len(train)], dtype=torch.int64)
    if distributed:
        lo = counts.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        total = counts.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        steps, n_train_total = int(lo[0]), int(total[1])
    else:
        steps, n_train_total = n_batches, len(train)
    if steps == 0:
        raise RuntimeError(
            f"rank {rank} of {world} has no training sessions; use fewer processes (train.num_processes) or more data"
        )
    assert train.encoded is not None  # a rank with training steps has training sessions
    encoded = train.encoded

    # The ridge is a penalty on the whole training set's loss; the batch loss is a mean over sessions, so
    # its share per batch is the penalty over the training sessions. The shards are dealt to the ranks
    # evenly, so this rank's sessions times the ranks stands for them.
    ridge = params.embedding_ridge / max(1, len(train.labels) * world)
    started = time.time()
    seen = 0

    def fit(member: int) -> tuple[SessionTransformer, int, list[dict]]:
        """One model: member 0 is the model every table reads; member m > 0 starts from seed + m and
        weighs each training session by a Poisson(1) draw (a bootstrap resample of the training sessions,
        drawn per rank without communication), so the members differ as models trained on another sample
        of sessions would (the removal effects' model SE, attribution/removal.py)."""
        nonlocal seen
        member_seed = seed + member
        torch.manual_seed(member_seed)
        np.random.seed(member_seed)
        model = SessionTransformer(spec).to(device)
        net = DistributedDataParallel(model) if distributed else model
        torch.manual_seed(member_seed * 1000 + rank)  # dropout differs per rank; the initial weights do not
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(params.warmup_steps, steps * params.epochs))
        pos_weight = torch.tensor(params.pos_weight, device=device) if params.pos_weight else None
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="mean" if member == 0 else "none")
        weights = (
            None
            if member == 0
            else np.random.default_rng([seed, member, rank, 20_261_203]).poisson(1.0, len(train)).astype(np.float32)
        )
        best_auc, best_epoch, best_state, bad = -1.0, 0, None, 0
        history: list[dict] = []
        member_started = time.time()
        for epoch in range(1, params.epochs + 1):
            t0 = time.time()
            rng = np.random.default_rng([member_seed, epoch, rank])
            batches = length_buckets(encoded.lengths, params.batch_size, rng)[:steps]
            net.train()
            loss_sum = torch.zeros(2, dtype=torch.float64)
            for rows in batches:
                tokens, cont, mask = to_tensors(encoded.batch(rows), fields, device)
                y = torch.from_numpy(train.labels[rows]).to(device)
                loss = loss_fn(net(tokens, cont, mask), y)
                if weights is not None:  # the bootstrap's weights, over the batch's sessions
                    loss = (loss * torch.from_numpy(weights[rows]).to(device)).mean()
                if params.embedding_ridge:
                    loss = loss + ridge * model.embedding_penalty()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
                optimizer.step()
                schedule.step()
                loss_sum += torch.tensor([loss.item() * len(rows), len(rows)], dtype=torch.float64)
            if distributed:
                dist.all_reduce(loss_sum)
            train_seconds = time.time() - t0
            seen_epoch = int(loss_sum[1])
            if member == 0:  # the rate reported is the model's own (the members' epochs cost the same)
                seen += seen_epoch
            val, _, _ = gathered_metrics("validation", model)
            elapsed = time.time() - t0
            improved = val["roc_auc"] > best_auc
            if improved:
                best_auc, best_epoch, bad = val["roc_auc"], epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
            entry = {
                "epoch": epoch,
                "loss": float(loss_sum[0]) / max(1.0, float(loss_sum[1])),
                "validation_roc_auc": val["roc_auc"],
                "validation_log_loss": val["log_loss"],
                "sessions_per_second": seen_epoch / train_seconds,
                "train_seconds": round(train_seconds, 3),
                "seconds": round(elapsed, 2),
            }
            history.append(entry)
            if rank == 0:
                left = (params.epochs - epoch) * (time.time() - member_started) / epoch
                print(
                    f"[train] {f'member {member + 1}/{params.members} ' if params.members > 1 else ''}"
                    f"epoch {epoch}/{params.epochs} loss {entry['loss']:.4f} "
                    f"val_auc {val['roc_auc']:.4f}{' (best)' if improved else ''} "
                    f"{entry['sessions_per_second']:,.0f} sessions/s, at most {left:.0f}s left",
                    flush=True,
                )
            if bad >= params.patience:
                if rank == 0:
                    print(
                        f"[train] early stop: no better validation AUC for {bad} epochs; best epoch {best_epoch}",
                        flush=True,
                    )
                break

        if best_state is None:  # every validation AUC was undefined (NaN): check_classes keeps this from happening
            raise TrainingError(
                "the validation ROC-AUC was undefined in every epoch: the validation split has one class"
            )
        model.load_state_dict(best_state)
        return model, best_epoch, history

    model, best_epoch, history = fit(0)
    members = []
    for member in range(1, params.members):
        other, other_epoch, _ = fit(member)
        other_test, _, _ = gathered_metrics("test", other)
        members.append(
            {"weights": weights_bytes(other) if rank == 0 else b"", "best_epoch": other_epoch, "test": other_test}
        )
    validation, _, _ = gathered_metrics("validation", model)
    test, _, _ = gathered_metrics("test", model)
    unknown_all = all_gather(unknown)
    if rank != 0:
        return None  # train_worker replaces it with rank 0's
    return {
        "weights": weights_bytes(model),
        "history": history,
        "best_epoch": best_epoch,
        "validation": validation,
        "test": test,
        "train_sessions_per_second": seen / max(1e-9, sum(h["train_seconds"] for h in history)),
        "seconds": time.time() - started,
        "n_train": n_train_total,
        "members": members,
        "unknown": {split: {f: sum(u[split][f] for u in unknown_all) for f in fields} for split in SPLITS},
    }
