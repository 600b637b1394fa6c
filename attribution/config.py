"""Typed configuration for every stage: one frozen dataclass per section, each with its own ``check()``.

A leaf of the project: it imports only :mod:`attribution.errors` and :mod:`attribution.schema`, so every
layer can read a :class:`Config`. Loading (YAML plus ``--set dotted.key=value``) is
:mod:`attribution.config_loader`; the checks that span sections or read a registry (methods, scenarios,
the output locations) are :mod:`attribution.config_checks`. A problem is a :class:`ConfigError` naming
the dotted key, so a typo in a 2-hour cluster job is caught in the first second, not at the last stage.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from attribution.errors import ConfigError
from attribution.schema import DEFAULT_CONVERSION_EVENTS, DEFAULT_FUNNEL_EVENTS, MODEL_FIELDS

__all__ = ["DEFAULT_CONVERSION_EVENTS", "DEFAULT_FUNNEL_EVENTS", "MODEL_FIELDS", "Config", "ConfigError"]

# --------------------------------------------------------------------------------------------------
# The sections. Defaults are the original analysis's (the notebook this project reproduces) where it
# states one.
# --------------------------------------------------------------------------------------------------

INPUT_FORMATS = ("parquet", "csv", "json", "delta", "table")
REPORT_FORMATS = ("csv", "delta", "parquet")
SPLITS = ("train", "validation", "test", "all")
IG_BASELINES = ("pad", "zero")
EVENT_WRITERS = ("arrow", "spark")
# A run id names partitions (run_id=...) and Delta predicates: letters, digits, '.', '_', '-'.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _date(key: str, value: Any) -> None:
    try:
        _dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not a YYYY-MM-DD date") from exc


def _at_least_one(section: str, obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(obj, name) < 1:
            raise ConfigError(f"{section}.{name}: must be >= 1")


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


EVENT_TYPE_LABELS = ("event", "event_feature")
TIMESTAMP_EPOCH_FORMATS = ("epoch_s", "epoch_ms")


@dataclass(frozen=True)
class RunConf:
    """Identity and reproducibility of one run."""

    run_id: Optional[str] = None  # None: a timestamped id is made at start (day-YYYY-MM-DD in day mode)
    seed: int = 7  # seeds the generator and training (the ensemble's members use seed + 1, ...)
    output_dir: str = "outputs"  # where every output goes; the relative paths of the other sections are under it
    # Day mode (the jobs' --date, or --from/--to, one day at a time): the stages read only this local day
    # (in input.time_zone) and replace only its partitions. None: the whole input, as one run.
    date: Optional[str] = None
    # Training's window: the sessions of [date, date_to] (the train job's --from/--to); None: date alone.
    date_to: Optional[str] = None

    def day_file(self, path: str) -> str:
        """A per-run file's name in day mode: ``x_summary.json`` -> ``x_summary_2025-01-15.json``, so each
        day of a backfill keeps its own summary."""
        if self.date is None:
            return path
        stem, dot, ext = path.rpartition(".")
        return f"{stem}_{self.date}.{ext}" if dot else f"{path}_{self.date}"

    def check(self) -> None:
        for name in ("date", "date_to"):
            if getattr(self, name) is not None:
                _date(f"run.{name}", getattr(self, name))
        if self.date_to is not None and (self.date is None or str(self.date_to) < str(self.date)):
            raise ConfigError(f"run.date_to: {self.date_to} needs run.date on or before it")
        if self.run_id is not None and not RUN_ID.fullmatch(self.run_id):
            raise ConfigError(
                f"run.run_id: {self.run_id!r} must be 1-128 letters, digits, '.', '_' or '-' (starting with a "
                "letter or digit): it names directories and partitions"
            )
        if not self.output_dir.strip():
            raise ConfigError("run.output_dir: a directory is required")


@dataclass(frozen=True)
class SparkConf:
    """How the SparkSession is built. ``master`` stays None under spark-submit (it sets the master).

    ``remote`` (``sc://host:port``, or the ``SPARK_REMOTE`` environment variable) makes the jobs a Spark
    Connect client of that server; ``conf`` ``spark.api.mode: connect`` with a ``master`` starts a local
    Connect server and connects to it (see docs/connect.md)."""

    app_name: str = "session-attribution"  # the Spark application's name
    master: Optional[str] = None  # e.g. local[2]; None under spark-submit, which sets it
    remote: Optional[str] = None  # sc://host:port: run as a Spark Connect client of that server
    # With ``remote``: upload the project's code to the session, for the server's Python workers.
    ship_code: bool = True
    # Spark properties set on the session (spark.sql.shuffle.partitions, ...).
    conf: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.remote is not None and not self.remote.startswith("sc://"):
            raise ConfigError(f"spark.remote: {self.remote!r} is not a Spark Connect URL (sc://host:port)")
        api_mode = str(self.conf.get("spark.api.mode", "classic")).lower()
        if api_mode not in ("classic", "connect"):
            raise ConfigError(f"spark.conf.spark.api.mode: {api_mode!r} is not 'classic' or 'connect'")


@dataclass(frozen=True)
class InputColumns:
    """Names of the columns in the warehouse's own event table."""

    user_id: str = "user_id"  # the user's id column
    device_id: str = "device_id"  # the device's id column
    event_ts: str = "event_timestamp"  # the event time column (see input.timestamp_format)
    event_name: str = "event_name"  # the event name column
    store_id: Optional[str] = "store_id"  # the store an event is about (null: no store column)
    discovery_feature: Optional[str] = "discovery_feature"  # the surface an event came from, a model input (null: none)
    event_rank: Optional[str] = "event_rank"  # the card's rank on screen, a model input (null: none)


@dataclass(frozen=True)
class InputConf:
    """Where the raw events are and how to read them."""

    path: Optional[str] = None  # a path, or the table name when format is 'table'
    format: str = "parquet"  # parquet, csv, json, delta or table (a catalog table named by input.path)
    options: dict[str, str] = field(default_factory=dict)  # passed to the Spark reader (csv header, ...)
    columns: InputColumns = field(default_factory=InputColumns)
    # None: the column is a timestamp, or an ISO-8601 string. Else a Spark datetime pattern
    # ("yyyy-MM-dd HH:mm:ss.SSS") or epoch_s / epoch_ms for numbers.
    timestamp_format: Optional[str] = None
    # Zone of timestamps written without an offset, and the zone whose calendar day bounds a session.
    time_zone: str = "UTC"
    # A column holding each event's local date (input.time_zone) as a date or YYYY-MM-DD text, usually
    # the table's partition column: a day run reads only that day's partition (pushed down); its rows
    # whose time falls on another day are quarantined as outside_run_date. Without it a day run filters
    # on the time column (pushed down when it is a timestamp; text and epoch times are parsed first).
    date_column: Optional[str] = None
    # Events outside [valid_from, valid_until) are quarantined (epoch-zero and far-future clocks).
    valid_from: str = "2000-01-01"
    valid_until: str = "2100-01-01"  # the end (exclusive) of the valid event times; see valid_from

    def check(self) -> None:
        _one_of("input.format", self.format, INPUT_FORMATS)
        try:
            zoneinfo.ZoneInfo(self.time_zone)
        except Exception as exc:  # noqa: BLE001 - any failure means the zone can't be used
            raise ConfigError(f"input.time_zone: {self.time_zone!r} is not a known time zone") from exc
        for name in ("valid_from", "valid_until"):
            _date(f"input.{name}", getattr(self, name))


@dataclass(frozen=True)
class StoreColumns:
    store_id: str = "store_id"  # the stores dimension's id column, joined to input.columns.store_id
    store_name: Optional[str] = "store_name"  # the store's name (null: none)
    store_category: Optional[str] = "store_category"  # the store's category, a model input (null: none)
    store_tag: Optional[str] = "store_tag"  # the store's tag, a model input (null: none)
    # Whether the store is of a new vertical, a model input (null: none).
    is_new_vertical: Optional[str] = "is_new_vertical"


@dataclass(frozen=True)
class StoresConf:
    """Optional stores dimension, joined to events by broadcast."""

    path: Optional[str] = None  # the stores dimension (null: stores are bare ids)
    format: str = "parquet"  # the stores dimension's file format: parquet, csv, json or delta
    options: dict[str, str] = field(default_factory=dict)  # passed to the Spark reader of the stores dimension
    columns: StoreColumns = field(default_factory=StoreColumns)

    def check(self) -> None:
        _one_of("stores.format", self.format, INPUT_FORMATS)


@dataclass(frozen=True)
class EventsConf:
    """Business rules on event names."""

    # A session with one of these converted (its label).
    conversion_events: list[str] = field(default_factory=lambda: list(DEFAULT_CONVERSION_EVENTS))
    # The checkout funnel: left out of the model input, so the model can't read the answer.
    funnel_events: list[str] = field(default_factory=lambda: list(DEFAULT_FUNNEL_EVENTS))
    # Events whose name contains this (case-insensitive) are left out of the model input; "" disables.
    error_substring: str = "error"
    # When set, event names outside this list (and outside the funnel) are quarantined as unknown.
    known_events: Optional[list[str]] = None
    # "event": event_type = event name; "event_feature": "m_card_click - Traditional Carousel".
    event_type_label: str = "event"

    def check(self) -> None:
        _one_of("events.event_type_label", self.event_type_label, EVENT_TYPE_LABELS)
        if not self.conversion_events:
            raise ConfigError("events.conversion_events: at least one conversion event is required")


@dataclass(frozen=True)
class FunnelConf:
    # False keeps funnel events in the model input, to reproduce the original analysis's leakage comparison.
    exclude: bool = True

    def check(self) -> None:
        """A boolean alone: nothing beyond its type."""


@dataclass(frozen=True)
class SessionConf:
    inactivity_gap_minutes: float = 30.0  # a longer silence on a (user, device, local day) starts a new session
    max_length: int = 100  # model-input events kept per session: the first ones (the rest are counted, not kept)
    min_events: int = 2  # shorter sessions are left out (counted as too short)
    # Device-days with more raw events than this are excluded as bot-like (None: keep all).
    max_events_per_device_day: Optional[int] = None

    def check(self) -> None:
        if self.inactivity_gap_minutes <= 0:
            raise ConfigError("session.inactivity_gap_minutes: must be > 0")
        if self.min_events < 1:
            raise ConfigError("session.min_events: must be >= 1")
        if self.max_length < self.min_events:
            raise ConfigError("session.max_length: must be >= session.min_events")
        if self.max_events_per_device_day is not None and self.max_events_per_device_day < 1:
            raise ConfigError("session.max_events_per_device_day: must be >= 1 or null")


@dataclass(frozen=True)
class SplitConf:
    """Deterministic train/validation/test split by a hash of session_id."""

    train: float = 0.7  # share of the sessions for training
    validation: float = 0.1  # share for early stopping and the baseline's regularization
    test: float = 0.2  # share the metrics and the tables are computed on
    salt: str = "split-v1"  # hashed with session_id: a new salt is a new split

    def check(self) -> None:
        for name in ("train", "validation", "test"):
            if getattr(self, name) < 0:
                raise ConfigError(f"split.{name}: must be >= 0")
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-9:
            raise ConfigError(f"split: train + validation + test must be 1, found {total:g}")


@dataclass(frozen=True)
class GenerateConf:
    """The embedded synthetic clickstream (jobs/generate.py)."""

    output_path: str = "data/raw_events"  # where the generated raw events go (parquet; CSV for the renamed scenario)
    stores_path: str = "data/stores"  # where the generated stores dimension goes
    ground_truth_path: str = "data/ground_truth.json"  # the planted truth, which the report scores the tables against
    n_users: int = 12000  # users simulated
    n_days: int = 2  # days simulated from start_date
    start_date: str = "2025-01-15"  # the first simulated day
    n_stores: int = 400  # stores, the first 20 named chains, by popularity
    n_bot_users: int = 3  # scraper-like users with tens of thousands of events a day
    bot_events_per_day: int = 20000  # each bot user's events per day
    partitions: int = 8  # Spark partitions the generation runs in
    dirty_fraction: float = 0.002  # share of rows for each dirty kind
    noise_sd: float = 0.5  # unobserved per-session noise on the conversion logit
    base_logit: float = -2.9  # the conversion logit of a session without effects
    # embedded: the original analysis's event names, parquet and a stores dimension; renamed: another
    # app's table (other event and column names, CSV with epoch-ms times, no stores dimension).
    # attribution/scenarios.py maps it into the pipeline.
    scenario: str = "embedded"
    # planted: the embedded default's fixed effects; random: drawn from run.seed; none: every effect 0
    effects: str = "planted"

    def check(self) -> None:
        """The scenario and effects names are checked against the generator's registry
        (:mod:`attribution.config_checks`)."""
        _at_least_one("generate", self, ("n_users", "n_days", "n_stores", "partitions"))
        if self.n_stores < 20:
            raise ConfigError("generate.n_stores: must be >= 20 (the named chains come first)")
        if not 0 <= self.dirty_fraction < 0.2:
            raise ConfigError("generate.dirty_fraction: must be in [0, 0.2)")
        _date("generate.start_date", self.start_date)


@dataclass(frozen=True)
class SessionsOutputConf:
    sessions_path: str = "sessions"  # relative paths are under run.output_dir
    quarantine_path: str = "quarantine"  # rejected rows, with a reason each
    summary_path: str = "sessionize_summary.json"  # the counts that reconcile every row read

    def check(self) -> None:
        """Locations alone: :mod:`attribution.config_checks` checks them against the others."""


@dataclass(frozen=True)
class VocabConf:
    """Vocabularies built in Spark from the training split; rarer values map to <UNK>."""

    min_frequency: int = 3  # values seen in fewer training sessions map to <UNK>
    max_size: int = 200_000  # per field, most frequent first: bounds the embedding tables on big catalogs

    def check(self) -> None:
        if self.min_frequency < 1 or self.max_size < 1:
            raise ConfigError("vocab.min_frequency and vocab.max_size: must be >= 1")


@dataclass(frozen=True)
class ModelConf:
    """The session transformer (attribution/model.py). Defaults are the original analysis's."""

    d_model: int = 192  # the transformer's width
    n_heads: int = 6  # attention heads per layer
    n_layers: int = 3  # transformer layers
    ff_dim: int = 512  # the feed-forward width
    dropout: float = 0.1  # dropout in training
    field_dim: int = 32  # embedding width of each categorical field before the projection to d_model
    continuous_dim: int = 16  # width of the projected continuous features
    # Rank of the additive per-event path beside the CLS head (attribution/model.py): each event also adds
    # sum_k (A x_i)_k * P[position_i]_k to the logit directly, so a step's main effect needn't be counted
    # through attention. Not in the original analysis's model; 0 turns it off (the original analysis's CLS head alone).
    additive_rank: int = 4
    # Order made explicit (attribution/model.py), both off in the original analysis's model: causal_events lets an event
    # attend only to itself and the events before it (the CLS token still reads them all), so "b after an
    # a" and "the first c" are in b's and c's own representations; end_distance N adds a learned embedding
    # of each event's distance from the session's last event (0, 1, ..., N and more), so "the last step"
    # is too. 0 turns it off.
    causal_events: bool = False
    end_distance: int = 0  # the distance embedding's cap (0: no embedding; see above)
    # The context path (attribution/model.py), not in the original analysis's model: each event also adds
    # to the logit a learned weight for its event type in its context (each event type before it in the
    # session, whether it is the first or the last step): "b helps after an a", "the first c counts
    # more than its repeats", "d hurts as the last step". A matrix of event types x (event types + 2).
    context: bool = False

    def check(self) -> None:
        _at_least_one("model", self, ("d_model", "n_heads", "n_layers", "ff_dim", "field_dim", "continuous_dim"))
        if self.end_distance < 0:
            raise ConfigError(f"model.end_distance: {self.end_distance} must be >= 0 (0: none)")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model: {self.d_model} must be divisible by model.n_heads ({self.n_heads})")
        if self.additive_rank < 0:
            raise ConfigError(f"model.additive_rank: {self.additive_rank} must be >= 0 (0: no additive path)")
        if not 0 <= self.dropout < 1:
            raise ConfigError("model.dropout: must be in [0, 1)")


TRAIN_SCHEDULES = ("cosine", "plateau", "average")  # train.schedule


@dataclass(frozen=True)
class TrainConf:
    """Training through TorchDistributor (attribution/train.py)."""

    num_processes: int = 2  # TorchDistributor processes
    local_mode: bool = True  # False on a cluster: one process per executor task (GPU when use_gpu)
    use_gpu: bool = False  # train on GPUs (one per process, on a cluster)
    threads_per_process: Optional[int] = None  # None: the driver's cores / num_processes (local mode)
    shards_per_process: int = 4  # parquet shards written per process
    max_train_sessions: Optional[int] = None  # sample the train split down to this many (None: all)
    batch_size: int = 64  # sessions per step, per process
    epochs: int = 10  # at most this many passes over the training sessions (see patience)
    learning_rate: float = 1e-3  # AdamW's peak learning rate
    weight_decay: float = 0.01  # AdamW's weight decay
    # The context path's matrix (model.context) learns at this multiple of learning_rate, without weight
    # decay: it is a logistic regression's few coefficients beside the network's many weights, and at the
    # network's rate it moves too little before early stopping (docs/scenarios.md).
    context_lr_scale: float = 10.0
    # ... from this many training sessions; on fewer, the multiple falls in proportion (never below 1).
    # Adam moves a weight whose gradient is mostly noise as fast as one the data determines, and on a
    # small training set the fast rate fits the pairs' noise and crowds out the stores' effects.
    context_full_sessions: int = 20_000
    # Ridge on the context path's matrix: the loss adds context_ridge / training sessions x sum W^2, so
    # an event type's weight in a context needs on the order of this many sessions of evidence. 0: none.
    context_ridge: float = 0.0
    # Ridge penalty per categorical value (attribution/model.py, SessionTransformer.embedding_penalty): the
    # loss adds embedding_ridge / training sessions x the sum over values of |their projected embedding|^2,
    # so a value needs evidence from on the order of this many sessions before it carries an effect of its
    # own. 0 turns it off.
    embedding_ridge: float = 100.0
    pos_weight: Optional[float] = None  # BCE positive-class weight (None: unweighted)
    grad_clip: float = 1.0  # the gradients' largest norm
    patience: int = 3  # epochs without a better validation AUC before stopping (plateau: annealing)
    # The learning rate after the warm-up. ``cosine``: a cosine from the peak to 0 over train.epochs, and
    # training stops after `patience` epochs without a gain; an early stop then comes at a rate still
    # high. ``plateau``: the peak rate until `patience` epochs without a gain, then a cosine to 0 over
    # `decay_epochs` epochs, then the stop; train.epochs caps it all, and annealing starts in time to end
    # by then. ``average``: the peak rate throughout, and the model scored and kept is the weights'
    # moving average over about `average_epochs` epochs, whose validation AUC rises smoothly where the
    # weights' own swings; training stops after `patience` epochs without a gain, and the ensemble's
    # members train the model's best epoch's number of epochs. With plateau and average, how long it
    # trains is decided by the validation split, not by the cap (docs/outputs.md).
    schedule: str = "cosine"
    decay_epochs: int = 1  # plateau: epochs of annealing from the peak rate to 0 before the stop
    average_epochs: float = 1.0  # average: how many epochs of steps the weights' moving average spans
    # An epoch resets the patience, and counts for the "still rising" warning, only when its validation
    # ROC-AUC beats the last such epoch's by at least this much; the highest-AUC epoch's model is kept
    # either way. A validation split of a few thousand sessions has an AUC standard error near 0.007, so gains
    # under 0.001 an epoch are a plateau, not a model still learning.
    min_improvement: float = 0.001
    # Training refuses (exit 2, one line) when the train or validation split has fewer converted or
    # non-converted sessions than this: a day without conversions has nothing to learn from.
    min_class_sessions: int = 5
    warmup_steps: int = 100  # steps of linear warm-up to the learning rate
    model_path: str = "model"  # relative paths are under run.output_dir
    # In day mode (--date, --from/--to) training writes a version per window, model_path/versions/<window>,
    # and LATEST names the one whose window ends last. The model stages use this version (None: the latest;
    # outside day mode, with no versions, model_path itself).
    model_version: Optional[str] = None
    shards_path: str = "train_shards"  # where the training shards go (under run.output_dir)
    # Also train on sessions that keep the funnel events (funnel.exclude=false) and report its test
    # AUC beside the real model's: the leakage the original analysis warns about, measured on every run.
    leakage_check: bool = False
    leakage_check_epochs: int = 3  # epochs of the leakage check's model
    # Models trained in the same TorchDistributor job for the removal effects' model uncertainty: the model
    # every table reads, then ensemble_members - 1 members, each from another seed on a bootstrap resample
    # of the training sessions. The removal columns average the members' removal effects, and their CI
    # counts the members' spread as well as session sampling (attribution/removal.py). 1: the model alone,
    # a CI of session sampling only. Each member costs one more training and one more removal pass.
    ensemble_members: int = 3

    def check(self) -> None:
        _at_least_one(
            "train",
            self,
            (
                "num_processes",
                "shards_per_process",
                "batch_size",
                "epochs",
                "patience",
                "leakage_check_epochs",
                "min_class_sessions",
                "ensemble_members",
                "decay_epochs",
            ),
        )
        if self.schedule not in TRAIN_SCHEDULES:
            raise ConfigError(f"train.schedule: {self.schedule!r} is not one of {', '.join(TRAIN_SCHEDULES)}")
        if not self.average_epochs > 0:
            raise ConfigError(f"train.average_epochs: must be > 0, not {self.average_epochs}")
        if self.threads_per_process is not None and self.threads_per_process < 1:
            raise ConfigError("train.threads_per_process: must be >= 1 or null")
        if self.max_train_sessions is not None and self.max_train_sessions < 1:
            raise ConfigError("train.max_train_sessions: must be >= 1 or null")
        if (
            self.learning_rate <= 0
            or self.weight_decay < 0
            or not self.context_lr_scale > 0
            or self.context_full_sessions < 1
            or self.context_ridge < 0
            or self.grad_clip <= 0
            or self.warmup_steps < 0
            or self.embedding_ridge < 0
        ):
            raise ConfigError(
                "train: learning_rate, context_lr_scale, context_full_sessions and grad_clip must be > 0, weight_decay, "
                "embedding_ridge, context_ridge and warmup_steps >= 0"
            )
        if self.pos_weight is not None and self.pos_weight <= 0:
            raise ConfigError("train.pos_weight: must be > 0 or null")
        if not 0 <= self.min_improvement < 1:
            raise ConfigError("train.min_improvement: must be >= 0 and < 1 (a validation ROC-AUC difference)")


@dataclass(frozen=True)
class BaselineConf:
    """The counts baseline fitted beside the transformer in the train stage (attribution/baseline.py): a
    logistic regression on per-session counts of event types, stores, position bins and their pairs."""

    enabled: bool = True  # fit the counts baseline in the train stage (skipped under Spark Connect)
    # Also count each (event type, position bin) pair, so the baseline can weigh a step by where it falls.
    type_by_position: bool = True
    # regParam values tried; the one with the lowest validation log loss is kept
    reg_params: list[float] = field(default_factory=lambda: [0.0003, 0.001, 0.003])
    elastic_net_param: float = 0.5  # 0: ridge, 1: lasso
    # false: the penalty is on every count's own coefficient alike. true (Spark's default): it weighs each
    # coefficient by its count's standard deviation, which leaves a store seen in few sessions nearly
    # unpenalized, so the validation split picks a penalty that also shrinks the event types' effects.
    standardization: bool = False
    # The optimizer's iterations at most, each a pass over the training sessions' counts; a fit stops
    # sooner at Spark's tolerance (1e-6). An event type and its type-and-bin pairs overlap, so the penalized
    # fit converges slowly; baseline.json records each fit's iterations (docs/outputs.md).
    max_iter: int = 200
    # A value (event type, store, bin) seen in fewer training sessions has no feature of its own.
    min_sessions: int = 5
    max_features: int = 262_144  # at most this many count features (the most frequent)
    # The report's paired comparison (DeLong) runs on the driver over at most this many test sessions,
    # chosen by a hash of session_id (all of them below it).
    comparison_max_sessions: int = 200_000
    # The removal effects blend the two models: w x the transformer's + (1 - w) x the baseline's, w in
    # 0, 0.05, ..., 1 chosen by the validation log loss of the blended P(convert) (attribution/baseline.py).
    # false: the transformer's alone (w = 1).
    blend: bool = True
    # Fits of the baseline for the removal effects' CI: the main fit and members - 1 more at its regParam on
    # bootstrap resamples of the training sessions. The k-th member of the blend pairs the transformer's
    # k-th ensemble member with the k-th fit, so the members' spread counts both models' estimation error
    # (attribution/removal_tables.py). null: as many as train.ensemble_members; 1: the main fit alone.
    members: int | None = None
    # The removal effects' baseline may add order terms to the counts (attribution/baseline.py): per
    # session, each pair of event types u, t with a t after the first u, each type's repeats, and the
    # first and the last event's type. Their L2 penalty is each of these times the counts' (at the counts'
    # chosen regParam; their L1 part the square root of it times; below 1, lighter than the counts'; how
    # the list was chosen: docs/scenarios.md). The validation log loss picks one, and
    # its fit is kept when it lowers the counts alone's by more than 1.96 standard errors of the paired
    # per-session difference (else the counts alone). The model comparison and the coefficients beside the
    # tables stay the counts fit's. []: the counts alone. Needs standardization false (a standardized fit
    # undoes the scale).
    order_penalties: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0])

    def check(self) -> None:
        if any(not p > 0 for p in self.order_penalties):
            raise ConfigError(f"baseline.order_penalties: {self.order_penalties}: each must be above 0")
        if self.order_penalties and self.standardization:
            raise ConfigError(
                "baseline.order_penalties needs baseline.standardization false: a standardized fit undoes the "
                "order terms' own penalty (set order_penalties: [] to fit the counts alone)"
            )
        if not self.reg_params or any(r < 0 for r in self.reg_params):
            raise ConfigError(f"baseline.reg_params: {self.reg_params}: at least one, each >= 0")
        if not 0.0 <= self.elastic_net_param <= 1.0:
            raise ConfigError(f"baseline.elastic_net_param: {self.elastic_net_param} must be in [0, 1]")
        _at_least_one("baseline", self, ("max_iter", "min_sessions", "max_features", "comparison_max_sessions"))
        if self.members is not None and self.members < 1:
            raise ConfigError(f"baseline.members: {self.members} must be at least 1 (or null: as many as the ensemble)")

    def fits(self, ensemble_members: int) -> int:
        """How many fits the removal effects' CI gets: ``members``, or the transformer's ensemble size."""
        return ensemble_members if self.members is None else self.members


@dataclass(frozen=True)
class AttributionConf:
    """The attribution stage (jobs/attribute.py)."""

    # Any of the registered methods (attribution/methods.py): grad_x_input (the original analysis's method),
    # attention, attention_rollout, integrated_gradients.
    methods: list[str] = field(default_factory=lambda: ["grad_x_input", "attention", "attention_rollout"])
    split: str = "test"  # which sessions to attribute: train, validation, test or all
    batch_size: int = 256  # sessions per forward/backward; a GPU out-of-memory halves it and retries
    # At most this many padded positions (sessions x the longest) per batch: long sessions come in
    # smaller batches, so memory is bounded by this, not by the data.
    max_batch_positions: int = 8192
    attention_layer: int = -1  # the layer whose CLS attention is `attention` (-1: the last)
    ig_steps: int = 32  # integrated gradients' steps from the baseline to the input
    ig_baseline: str = "pad"  # pad: the <PAD> event's representation; zero: the zero vector
    # About this many of the attributed sessions (chosen by a hash of session_id, so the same ones on every
    # run) get removal effects: per distinct event type, position bin and store of the session, one forward
    # pass without that key's events (attribution/removal.py). A count, not a share, so the cost is bounded
    # whatever the day's volume. 0 turns them off; the report's removal columns are then null.
    removal_sessions: int = 2000
    # The pair table (event_pair_attribution_no_funnel): in the same sessions, the interaction of this many
    # ordered pairs of event types (an a before a b), those seen in most attributed sessions; one forward
    # pass more per session and pair of types present. 0 turns the pair table off.
    removal_pairs: int = 10
    threads_per_task: Optional[int] = None  # CPU executors: torch threads per task (None: spark.task.cpus)
    # The sessions are hash-partitioned by session_id into this many tasks before scoring (one shuffle of
    # the columns the UDF reads); null keeps the partitions the read gives. For a split whose sessions sit
    # in few files, which a time-ordered split does: the embedded default's test sessions sit 85% in one
    # of its two input partitions, so one core did most of the work (docs/scaling.md).
    partitions: Optional[int] = None
    output_path: str = "gradient_attribution_no_funnel"  # the event-level table, parquet by session_date
    # Who writes the event table: arrow, the UDF's own Python worker with pyarrow, in the process that
    # scored the sessions (no trip back through the JVM; the output must be a path or a URI pyarrow
    # opens on the executors, as the run's other outputs); spark, Spark's explode and parquet writer
    # (any Hadoop filesystem, Spark's output committer). The same table either way (docs/scaling.md).
    writer: str = "arrow"
    # The same table published as Delta (partitioned by run_id, one commit per run; null: not published)
    # and as one CSV file (large: null by default). The attribute stage writes them, so re-running the
    # report never rewrites the event-level table.
    delta_path: Optional[str] = "report/delta/gradient_attribution_no_funnel"
    csv_path: Optional[str] = None  # the event table as one CSV file (null: not written)
    summary_path: str = "attribute_summary.json"  # the stage's counts, checks and timings
    # Drift: the attributed sessions' ROC-AUC against the model's test ROC-AUC; a drop larger than this is
    # flagged in the summary (and printed).
    max_auc_drop: float = 0.05

    def check(self) -> None:
        """The method names are checked against the method registry (:mod:`attribution.config_checks`)."""
        if not self.methods:
            raise ConfigError("attribution.methods: empty; choose at least one method")
        _one_of("attribution.split", self.split, SPLITS)
        if self.batch_size < 1 or self.ig_steps < 1 or self.max_batch_positions < 1:
            raise ConfigError("attribution.batch_size, max_batch_positions and ig_steps: must be >= 1")
        if self.removal_sessions < 0:
            raise ConfigError(f"attribution.removal_sessions: {self.removal_sessions} must be >= 0 (0 turns them off)")
        if self.removal_pairs < 0:
            raise ConfigError(f"attribution.removal_pairs: {self.removal_pairs} must be >= 0 (0 turns the pairs off)")
        _one_of("attribution.ig_baseline", self.ig_baseline, IG_BASELINES)
        _one_of("attribution.writer", self.writer, EVENT_WRITERS)
        if self.threads_per_task is not None and self.threads_per_task < 1:
            raise ConfigError("attribution.threads_per_task: must be >= 1 or null")
        if self.partitions is not None and self.partitions < 1:
            raise ConfigError(f"attribution.partitions: {self.partitions} must be >= 1 or null")


@dataclass(frozen=True)
class FaithfulnessConf:
    """The faithfulness stage (jobs/faithfulness.py): is each method's ranking of events faithful to the
    model, and do the methods agree? Evaluated on a sample of the event table's sessions."""

    # Sessions evaluated: those with the smallest hash of session_id (the same ones on every run).
    # Each costs about 20 forward passes per method and random draw, on ever shorter sessions.
    max_sessions: int = 2000
    k_events: list[int] = field(default_factory=lambda: [1, 3, 5])  # top-k events removed / kept
    k_fractions: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.5])  # ... as a share of the session
    deletion_steps: int = 10  # points of the deletion curve (removing 0%, 10%, ... 100% of the events)
    random_draws: int = 5  # random orders per session for the baseline
    batch_positions: int = 65536  # padded positions per forward pass
    sessions_path: str = "attribution_faithfulness_sessions"  # per-session metrics, parquet
    # The verdict: which method is most faithful, and whether it beats random.
    summary_path: str = "faithfulness_summary.json"

    def check(self) -> None:
        if self.max_sessions < 1 or self.deletion_steps < 1 or self.random_draws < 1 or self.batch_positions < 100:
            raise ConfigError(
                "faithfulness.max_sessions, deletion_steps and random_draws: must be >= 1; batch_positions >= 100"
            )
        if not self.k_events and not self.k_fractions:
            raise ConfigError("faithfulness.k_events and k_fractions: at least one k is required")
        if any(k < 1 for k in self.k_events):
            raise ConfigError(f"faithfulness.k_events: {self.k_events}: each must be >= 1")
        if any(not 0 < x <= 1 for x in self.k_fractions):
            raise ConfigError(f"faithfulness.k_fractions: {self.k_fractions}: each must be in (0, 1]")


@dataclass(frozen=True)
class ReportConf:
    """The report stage (jobs/report.py): lift tables, sinks, the picture, key insights."""

    output_path: str = "report"  # relative paths are under run.output_dir
    default_method: str = "grad_x_input"  # the method of the original analysis's CSVs and the picture
    # The published tables' formats: csv, delta, parquet.
    formats: list[str] = field(default_factory=lambda: ["csv", "delta", "parquet"])
    store_min_events: int = 10  # the original analysis's minimum support for the store ranking
    # Stores seen in fewer sessions are left out of the store ranking: their effect is mostly noise
    # (the shrinkage pulls it towards 0 as well).
    store_min_sessions: int = 20
    # A model whose test ROC-AUC is below this, or whose 95% CI includes 0.5, predicts no better than
    # chance: the report says so first and the tables carry model_status = at_chance.
    min_test_auc: float = 0.55
    # Fewer sessions than this in the event table (the day's, in day mode), or none converted, or all:
    # the report still publishes, with status insufficient_data first and no verdicts.
    min_sessions: int = 30
    heatmap_positions: int = 20  # positions in the type x position table and heatmap
    # Day mode: each day's additive statistics (per-session sums, store cell sums, removal rows) are kept
    # here, partitioned by session_date; with window_days N the report's tables cover the N days up to
    # --date, computed from them without reading or scoring those days' events again.
    stats_path: str = "report_stats"
    window_days: Optional[int] = None  # day mode: the tables cover this many days to run.date (null: the day alone)
    top_event_types: int = 15  # bars in the picture's first panel
    # The context tables (occurrence, previous step, recency) leave out contexts seen in fewer sessions.
    context_min_sessions: int = 20
    # The pair table's verdict names a pair only when the interaction's 95% CI lies beyond this size on
    # the logit (log-odds), not merely beyond 0: smaller interactions are read as none. It is the line the
    # planted-truth checks draw between no interaction and one (attribution.ground_truth.PAIR_NULL).
    pair_min_interaction: float = 0.1
    # The pair table's verdicts need the sequence model to predict the test sessions better than the
    # counts baseline (model_comparison.csv, the AUC difference's CI above 0): a model of counts has no
    # interactions, so where the transformer does no better the data give no evidence that any pair
    # interacts, and every pair reads as noise (docs/outputs.md, "The pair table"). False: no such gate.
    pair_needs_better_model: bool = True

    def check(self) -> None:
        """``default_method`` is checked against ``attribution.methods`` (:mod:`attribution.config_checks`)."""
        bad_formats = [f for f in self.formats if f not in REPORT_FORMATS]
        if bad_formats:
            raise ConfigError(f"report.formats: {bad_formats} not among {', '.join(REPORT_FORMATS)}")
        if (
            self.store_min_events < 1
            or self.heatmap_positions < 1
            or self.top_event_types < 1
            or self.store_min_sessions < 1
            or self.context_min_sessions < 1
        ):
            raise ConfigError(
                "report.store_min_events, store_min_sessions, context_min_sessions, heatmap_positions and "
                "top_event_types: must be >= 1"
            )
        if not self.pair_min_interaction >= 0:
            raise ConfigError(f"report.pair_min_interaction: {self.pair_min_interaction} must be >= 0 (log-odds)")
        if self.window_days is not None and self.window_days < 1:
            raise ConfigError(f"report.window_days: {self.window_days} must be >= 1 (or null: the day alone)")
        if self.min_sessions < 1:
            raise ConfigError(f"report.min_sessions: {self.min_sessions} must be >= 1")
        if not 0.0 <= self.min_test_auc <= 1.0:
            raise ConfigError(f"report.min_test_auc: {self.min_test_auc} must be between 0 and 1")


TRACKING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,255}")


@dataclass(frozen=True)
class TrackingConf:
    """MLflow tracking (attribution/tracking.py): one MLflow run per run id, to which every stage logs; each
    trained model logged as a pyfunc model and registered; the report's files logged with it."""

    enabled: bool = True  # false: nothing is logged to MLflow and the model stages use model/LATEST
    # The MLflow tracking URI: a server (http://host:5000), databricks, or sqlite:///path/mlflow.db. null:
    # $MLFLOW_TRACKING_URI when set, else a SQLite store in run.output_dir (mlflow.db, with the artifacts
    # under mlruns/), which needs an output_dir on the driver's disk.
    uri: Optional[str] = None
    experiment: str = "session-attribution"  # the MLflow experiment the runs go to
    # The registered model each training adds a version to, tagged with its training window and sha256
    # (null: the model is logged with its run and not registered).
    registered_model: Optional[str] = "session-conversion"
    # The model stages (attribute, faithfulness, report) use the registered version at this alias (e.g.
    # champion, set in MLflow's UI or client), and the drift check reads that version's test ROC-AUC.
    # null: the latest model by training window, as model/LATEST names it.
    model_alias: Optional[str] = None
    # Log each trained model as an MLflow pyfunc model (it scores a sessions DataFrame); false: the run
    # keeps the metrics, and the model directory stays the only copy.
    log_model: bool = True
    # Seconds to wait for a tracking server before the job stops with one line (exit 2).
    timeout_seconds: int = 10

    def check(self) -> None:
        if not self.experiment.strip():
            raise ConfigError("tracking.experiment: a name is required")
        for key in ("registered_model", "model_alias"):
            value = getattr(self, key)
            if value is not None and not TRACKING_NAME.fullmatch(str(value)):
                raise ConfigError(
                    f"tracking.{key}: {value!r} must be letters, digits, '.', '_' or '-', starting with a letter or digit"
                )
        if self.model_alias is not None and (not self.enabled or self.registered_model is None):
            raise ConfigError(
                f"tracking.model_alias: {self.model_alias!r} names a registered model version, which needs "
                "tracking.enabled: true and a tracking.registered_model"
            )
        if self.model_alias is not None and self.model_alias.lower().startswith("v") and self.model_alias[1:].isdigit():
            raise ConfigError(f"tracking.model_alias: {self.model_alias!r} reads as a version number to MLflow")
        if self.timeout_seconds < 1:
            raise ConfigError(f"tracking.timeout_seconds: {self.timeout_seconds} must be >= 1")


@dataclass(frozen=True)
class Config:
    run: RunConf = field(default_factory=RunConf)
    spark: SparkConf = field(default_factory=SparkConf)
    input: InputConf = field(default_factory=InputConf)
    stores: StoresConf = field(default_factory=StoresConf)
    events: EventsConf = field(default_factory=EventsConf)
    funnel: FunnelConf = field(default_factory=FunnelConf)
    session: SessionConf = field(default_factory=SessionConf)
    split: SplitConf = field(default_factory=SplitConf)
    generate: GenerateConf = field(default_factory=GenerateConf)
    sessions: SessionsOutputConf = field(default_factory=SessionsOutputConf)
    vocab: VocabConf = field(default_factory=VocabConf)
    model: ModelConf = field(default_factory=ModelConf)
    train: TrainConf = field(default_factory=TrainConf)
    baseline: BaselineConf = field(default_factory=BaselineConf)
    attribution: AttributionConf = field(default_factory=AttributionConf)
    faithfulness: FaithfulnessConf = field(default_factory=FaithfulnessConf)
    report: ReportConf = field(default_factory=ReportConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)

    def output(self, relative: str) -> str:
        """Resolve an output location: absolute paths and URIs stay, others go under run.output_dir."""
        if "://" in relative or relative.startswith("/"):
            return relative
        if "://" in self.run.output_dir:  # a URI: pathlib would fold its '//' into one
            return self.run.output_dir.rstrip("/") + "/" + relative
        return str(Path(self.run.output_dir) / relative)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Every section's own checks, in the order of the sections. The checks across sections are
        :func:`attribution.config_checks.check`."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).check()


SECRET_WORDS = ("secret", "password", "token", "credential", "access.key", "accesskey", "private")


def redacted(tree: Any) -> Any:
    """A copy of a config tree with the values of credential-looking keys replaced."""
    if isinstance(tree, dict):
        return {k: ("***" if any(w in str(k).lower() for w in SECRET_WORDS) else redacted(v)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redacted(v) for v in tree]
    return tree
