"""One training process: what :func:`attribution.train.distribute` runs under TorchDistributor on every
rank, and what it returns.

Each process reads only its own shards with pyarrow (shard ``k`` belongs to rank ``k mod N``), trains
the model (DistributedDataParallel when N > 1) and the ensemble's other members, stops early on the
validation ROC-AUC gathered across ranks (one float and one label per session, so every rank takes the
same decision), and returns rank 0's :class:`TrainResult` on every rank.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, cast

import numpy as np

from attribution.features import Vocabularies, encode_sessions, length_buckets
from attribution.io import join
from attribution.metrics import binary_metrics
from attribution.model import ModelSpec, SessionTransformer, to_tensors, weights_bytes
from attribution.schema import INPUT_COLUMNS

if TYPE_CHECKING:
    import pyarrow as pa
    import torch

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Member:
    """One more model of the ensemble (``train.ensemble_members``): its weights (safetensors bytes; empty
    on ranks other than 0), its best epoch (the one kept), the epochs it ran and its test metrics."""

    weights: bytes
    best_epoch: int
    test: dict
    epochs_run: int


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What training returns (rank 0's, on every rank): the model every table reads and the ensemble's
    other members.

    ``history`` has one entry per epoch run (loss, validation ROC-AUC, timings); ``validation`` and
    ``test`` are :func:`attribution.metrics.binary_metrics` of the best epoch's model on all ranks'
    sessions; ``unknown`` counts, per split and field, the values outside the vocabulary."""

    weights: bytes
    history: list[dict]
    best_epoch: int
    validation: dict
    test: dict
    train_sessions_per_second: float
    seconds: float
    n_train: int
    members: tuple[Member, ...]
    unknown: dict[str, dict[str, int]]


class TrainingError(RuntimeError):
    """Training can't run on this input (e.g. an empty split); the message says why."""


# --------------------------------------------------------------------------------------------------
# Driver: shards and orchestration
# --------------------------------------------------------------------------------------------------


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
    min_improvement: float = 0.0  # a validation AUC gain under this does not reset the patience
    # ``cosine``: anneal over ``epochs``, stop early after ``patience`` epochs without a gain; ``plateau``
    # (PlateauRate): the peak rate until ``patience`` epochs without a gain, then ``decay_epochs`` annealing
    schedule: str = "cosine"
    decay_epochs: int = 1
    average_epochs: float = 1.0  # average: the weights' moving average spans about this many epochs
    context_lr_scale: float = 1.0  # the context path's learning rate, a multiple of learning_rate (no decay)
    context_full_sessions: int = 1  # ... in full from this many training sessions (context_rate_multiple)
    context_ridge: float = 0.0  # the context path's ridge, as embedding_ridge is the values'
    members: int = 1  # models trained one after another: the model, then members-1 bootstrap members
    # Local mode: where rank 0 writes its result (a pickle, replaced atomically); every rank then returns
    # None. TorchDistributor's local mode has every process write its return value to one file, at the
    # same moment when they return together, which can leave a file that does not unpickle.
    result_path: str | None = None
    # Where each rank writes the model's validation predictions (``rank=<k>.parquet``: session_id and
    # P(convert)), which the train stage pairs with the counts baseline's to choose the removal effects'
    # blend (attribution/baseline.py); None writes none.
    predictions_path: str | None = None


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
            self.session_ids: pa.ChunkedArray | None = None
        else:
            self.encoded = encode_sessions(table, vocab, continuous)
            self.labels = table.column("label").to_numpy(zero_copy_only=False).astype(np.float32)
            self.session_ids = table.column("session_id")

    def __len__(self) -> int:
        return len(self.labels)


def context_rate_multiple(scale: float, full_sessions: int, sessions: int) -> float:
    """The context path's learning rate as a multiple of the model's: ``scale`` from ``full_sessions``
    training sessions, in proportion to ``sessions`` below that, and never below 1 (the model's own rate)."""
    return max(1.0, scale * min(1.0, sessions / full_sessions)) if scale > 1 else scale


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


class PlateauRate:
    """The ``plateau`` schedule's multiple of the peak learning rate at each optimizer step: a linear
    warm-up over ``warmup`` steps, then the peak rate until :meth:`decay` is called (the validation AUC has
    stopped rising, or the epochs left are the decay's), then a cosine from there to 0 over ``steps``.
    How long training runs is decided by the data, not by a length fixed in advance."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.decay_from: int | None = None
        self.decay_steps = 1

    def decay(self, step: int, steps: int) -> None:
        """Anneal to 0 over the ``steps`` optimizer steps from ``step``."""
        self.decay_from, self.decay_steps = step, max(1, steps)

    def __call__(self, step: int) -> float:
        ramp = (step + 1) / self.warmup if self.warmup and step < self.warmup else 1.0
        if self.decay_from is None:
            return ramp
        progress = (step - self.decay_from) / self.decay_steps
        return ramp * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


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


def _write_predictions(path: str, rank: int, data: _Split, logits: np.ndarray) -> None:
    """This rank's sessions of ``data`` and the model's P(convert) of each (from its ``logits``), as
    ``<path>/rank=<rank>.parquet`` (written whole under a temporary name, then moved: a reader never sees
    half a file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    ids = pa.array([], pa.string()) if data.session_ids is None else data.session_ids.cast(pa.string())
    table = pa.table({"session_id": ids, "prediction": 1.0 / (1.0 + np.exp(-logits))})
    filesystem, root = fs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))
    filesystem.create_dir(root, recursive=True)
    final = f"{root}/rank={rank}.parquet"
    pq.write_table(table, final + ".partial", filesystem=filesystem)
    filesystem.move(final + ".partial", final)


def train_worker(given: WorkerParams | dict[str, Any]) -> Optional[TrainResult]:
    """One training process. Reads RANK/WORLD_SIZE/LOCAL_RANK set by torchrun (absent: one process).

    Returns rank 0's result on every rank: weights as safetensors bytes, history, validation and test
    metrics; with ``params.result_path`` rank 0 writes it there instead and every rank returns None.
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
        result = train_process(params, rank, world, device, distributed)
        if params.result_path is not None:
            if rank == 0:
                partial = f"{params.result_path}.partial"
                with open(partial, "wb") as f:
                    pickle.dump(result, f)
                os.replace(partial, params.result_path)
            if distributed:
                dist.barrier()  # every rank leaves together, after the result is written
            result = None
        elif distributed:
            # Every rank returns rank 0's result: on a cluster TorchDistributor keeps the value of the
            # task of partition 0 and fails a task whose process wrote none.
            box = [result]
            dist.broadcast_object_list(box, src=0)
            result = box[0]
            dist.barrier()  # every rank leaves together
    finally:
        torch.set_num_threads(saved_threads)
        if distributed:
            dist.destroy_process_group()
    return result


def train_process(
    params: WorkerParams, rank: int, world: int, device: torch.device, distributed: bool
) -> Optional[TrainResult]:
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

    def gathered_metrics(
        split: str, net: SessionTransformer, scores: np.ndarray | None = None
    ) -> tuple[dict, np.ndarray, np.ndarray]:
        """The metrics over every rank's sessions of ``split``; ``scores``: this rank's, already computed."""
        if scores is None:
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
    context_ridge = params.context_ridge / max(1, len(train.labels) * world)
    context_multiple = context_rate_multiple(params.context_lr_scale, params.context_full_sessions, n_train_total)
    started = time.time()
    seen = 0

    def snapshot(m: SessionTransformer) -> dict[str, torch.Tensor]:
        """A copy of ``m``'s weights on the CPU, kept while training goes on."""
        return {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}

    def fit(member: int, follow: int | None = None) -> tuple[SessionTransformer, int, list[dict]]:
        """One model: member 0 is the model every table reads; member m > 0 starts from seed + m and
        weighs each training session by a Poisson(1) draw (a bootstrap resample of the training sessions,
        drawn per rank without communication), so the members differ as models trained on another sample
        of sessions would (the removal effects' model SE, attribution/removal.py).

        ``follow``: train exactly this many epochs and keep the weights (the average's) at the last, with
        no validation. The ``average`` schedule's members follow the model's best epoch, so the ensemble's
        spread is that of one training length on other samples, not that of where each member stopped."""
        nonlocal seen
        member_seed = seed + member
        torch.manual_seed(member_seed)
        np.random.seed(member_seed)
        model = SessionTransformer(spec).to(device)
        net = DistributedDataParallel(model) if distributed else model
        torch.manual_seed(member_seed * 1000 + rank)  # dropout differs per rank; the initial weights do not
        context = [p for name, p in model.named_parameters() if name.endswith("context_matrix")]
        others = [p for name, p in model.named_parameters() if not name.endswith("context_matrix")]
        groups: list[dict[str, Any]] = [{"params": others}]
        if context:
            groups.append({"params": context, "lr": params.learning_rate * context_multiple, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=params.learning_rate, weight_decay=params.weight_decay)
        plateau = PlateauRate(params.warmup_steps) if params.schedule == "plateau" else None
        rate = plateau or _lr_lambda(params.warmup_steps, steps * params.epochs)
        averaged = None
        if params.schedule == "average":
            # the peak rate throughout; the model scored and kept is the weights' exponential moving
            # average over about average_epochs epochs of steps (Polyak averaging)
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            rate = PlateauRate(params.warmup_steps)
            decay = 1.0 - 1.0 / max(1.0, params.average_epochs * steps)
            averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
        # plateau: the epochs of annealing left once it has started, and what started it
        decay_left: int | None = None
        decay_reason = ""
        pos_weight = torch.tensor(params.pos_weight, device=device) if params.pos_weight else None
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="mean" if member == 0 else "none")
        weights = (
            None
            if member == 0
            else np.random.default_rng([seed, member, rank, 20_261_203]).poisson(1.0, len(train)).astype(np.float32)
        )
        # best_auc picks the model kept; reference_auc (the AUC of the last epoch that beat the best by
        # min_improvement) decides patience, so a plateau that creeps up by noise still stops
        best_auc, reference_auc, best_epoch, best_state, bad = -1.0, -1.0, 0, None, 0
        history: list[dict] = []
        member_started = time.time()
        epochs = follow or params.epochs
        for epoch in range(1, epochs + 1):
            t0 = time.time()
            left_epochs = params.epochs - epoch + 1
            if plateau is not None and decay_left is None and left_epochs <= params.decay_epochs:
                # no plateau yet, and only the decay's epochs are left: anneal over them
                decay_left, decay_reason = left_epochs, "epochs"
                plateau.decay(schedule.last_epoch, steps * left_epochs)
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
                if context_ridge:
                    loss = loss + context_ridge * model.context_penalty()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
                optimizer.step()
                schedule.step()
                if averaged is not None:
                    averaged.update_parameters(model)
                loss_sum += torch.tensor([loss.item() * len(rows), len(rows)], dtype=torch.float64)
            if distributed:
                dist.all_reduce(loss_sum)
            train_seconds = time.time() - t0
            seen_epoch = int(loss_sum[1])
            if member == 0:  # the rate reported is the model's own (the members' epochs cost the same)
                seen += seen_epoch
            kept = cast(SessionTransformer, averaged.module) if averaged is not None else model
            if follow is not None:  # no validation: the epochs are the model's
                loss_mean = float(loss_sum[0]) / max(1.0, float(loss_sum[1]))
                history.append({"epoch": epoch, "loss": loss_mean, "train_seconds": round(train_seconds, 3)})
                if rank == 0:
                    print(
                        f"[train] member {member + 1}/{params.members} epoch {epoch}/{follow} (the model's best "
                        f"epoch) loss {loss_mean:.4f} {seen_epoch / train_seconds:,.0f} sessions/s",
                        flush=True,
                    )
                if epoch == follow:
                    best_epoch, best_state = epoch, snapshot(kept)
                continue
            val, _, _ = gathered_metrics("validation", kept)
            elapsed = time.time() - t0
            improved = val["roc_auc"] > best_auc
            if improved:
                best_auc, best_epoch = val["roc_auc"], epoch
                best_state = snapshot(kept)
            rising = val["roc_auc"] >= reference_auc + params.min_improvement or reference_auc < 0
            if rising:
                reference_auc, bad = val["roc_auc"], 0
            else:
                bad += 1
            entry = {
                "epoch": epoch,
                "loss": float(loss_sum[0]) / max(1.0, float(loss_sum[1])),
                "validation_roc_auc": val["roc_auc"],
                "validation_log_loss": val["log_loss"],
                "rising": bool(rising),  # beat reference_auc by train.min_improvement: patience starts again
                "learning_rate": params.learning_rate * rate(max(0, schedule.last_epoch - 1)),  # at its last step
                "sessions_per_second": seen_epoch / train_seconds,
                "train_seconds": round(train_seconds, 3),
                "seconds": round(elapsed, 2),
            }
            if decay_left is not None:
                entry["decay"] = decay_reason  # plateau: an annealing epoch, and what started the annealing
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
            if decay_left is not None:  # plateau: annealing; it ends training when done
                decay_left -= 1
                if decay_left == 0:
                    if rank == 0:
                        why = "the epochs ran out" if decay_reason == "epochs" else "the validation AUC levelled off"
                        print(f"[train] annealed ({why}); best epoch {best_epoch}", flush=True)
                    break
                continue
            if plateau is not None:
                if bad >= params.patience:
                    # the validation AUC has levelled off at the peak rate: anneal, then stop (more than
                    # decay_epochs are left, or the annealing would have started at this epoch's top)
                    decay_left, decay_reason = params.decay_epochs, "plateau"
                    plateau.decay(schedule.last_epoch, steps * decay_left)
                    if rank == 0:
                        print(
                            f"[train] no validation AUC better by {params.min_improvement:g} for {bad} epochs: "
                            f"annealing over {decay_left} epoch{'s' if decay_left > 1 else ''}",
                            flush=True,
                        )
                continue
            if bad >= params.patience:
                if rank == 0:
                    print(
                        f"[train] early stop: no validation AUC better by {params.min_improvement:g} for {bad} epochs; "
                        f"best epoch {best_epoch}",
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
        other, other_epoch, other_history = fit(member, best_epoch if params.schedule == "average" else None)
        other_test, _, _ = gathered_metrics("test", other)
        member_bytes = weights_bytes(other) if rank == 0 else b""  # fit's `weights` are the bootstrap's
        members.append(Member(member_bytes, other_epoch, other_test, len(other_history)))
    validation_logits = _score(model, data["validation"], fields, device, params.batch_size)
    validation, _, _ = gathered_metrics("validation", model, validation_logits)
    if params.predictions_path is not None:
        _write_predictions(params.predictions_path, rank, data["validation"], validation_logits)
    test, _, _ = gathered_metrics("test", model)
    unknown_all = all_gather(unknown)
    if rank != 0:
        return None  # train_worker replaces it with rank 0's
    return TrainResult(
        weights=weights_bytes(model),
        history=history,
        best_epoch=best_epoch,
        validation=validation,
        test=test,
        train_sessions_per_second=seen / max(1e-9, sum(h["train_seconds"] for h in history)),
        seconds=time.time() - started,
        n_train=n_train_total,
        members=tuple(members),
        unknown={split: {f: sum(u[split][f] for u in unknown_all) for f in fields} for split in SPLITS},
    )
