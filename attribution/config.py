"""Typed, validated configuration for every stage.

One YAML file (``conf/local.yaml``, ``conf/cluster.yaml``) plus repeatable ``--set dotted.key=value``
overrides are loaded into frozen dataclasses. Unknown keys, wrong types and missing required values
fail at start with a :class:`ConfigError` that names the dotted key, so a typo in a 2-hour cluster job
is caught in the first second, not at the last stage.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


# --------------------------------------------------------------------------------------------------
# The schema. Defaults are the original analysis's (the notebook this project reproduces) where it states one.
# --------------------------------------------------------------------------------------------------

INPUT_FORMATS = ("parquet", "csv", "json", "delta", "table")
EVENT_TYPE_LABELS = ("event", "event_feature")
TIMESTAMP_EPOCH_FORMATS = ("epoch_s", "epoch_ms")


@dataclass(frozen=True)
class RunConf:
    """Identity and reproducibility of one run."""

    run_id: Optional[str] = None  # None: a timestamped id is made at start (day-YYYY-MM-DD in day mode)
    seed: int = 7
    output_dir: str = "outputs"
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


@dataclass(frozen=True)
class SparkConf:
    """How the SparkSession is built. ``master`` stays None under spark-submit (it sets the master).

    ``remote`` (``sc://host:port``, or the ``SPARK_REMOTE`` environment variable) makes the jobs a Spark
    Connect client of that server; ``conf`` ``spark.api.mode: connect`` with a ``master`` starts a local
    Connect server and connects to it (see docs/connect.md)."""

    app_name: str = "session-attribution"
    master: Optional[str] = None
    remote: Optional[str] = None
    # With ``remote``: upload the project's code to the session, for the server's Python workers.
    ship_code: bool = True
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InputColumns:
    """Names of the columns in the warehouse's own event table."""

    user_id: str = "user_id"
    device_id: str = "device_id"
    event_ts: str = "event_timestamp"
    event_name: str = "event_name"
    store_id: Optional[str] = "store_id"
    discovery_feature: Optional[str] = "discovery_feature"
    event_rank: Optional[str] = "event_rank"


@dataclass(frozen=True)
class InputConf:
    """Where the raw events are and how to read them."""

    path: Optional[str] = None  # a path, or the table name when format is 'table'
    format: str = "parquet"
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
    valid_until: str = "2100-01-01"


@dataclass(frozen=True)
class StoreColumns:
    store_id: str = "store_id"
    store_name: Optional[str] = "store_name"
    store_category: Optional[str] = "store_category"
    store_tag: Optional[str] = "store_tag"
    is_new_vertical: Optional[str] = "is_new_vertical"


@dataclass(frozen=True)
class StoresConf:
    """Optional stores dimension, joined to events by broadcast."""

    path: Optional[str] = None
    format: str = "parquet"
    options: dict[str, str] = field(default_factory=dict)
    columns: StoreColumns = field(default_factory=StoreColumns)


DEFAULT_CONVERSION_EVENTS = ("action_place_order", "system_checkout_success")
DEFAULT_FUNNEL_EVENTS = (
    "action_add_item",
    "action_quick_add_item",
    "cart_page_load",
    "checkout_page_load",
    "action_place_order",
    "system_checkout_success",
)


@dataclass(frozen=True)
class EventsConf:
    """Business rules on event names."""

    conversion_events: list[str] = field(default_factory=lambda: list(DEFAULT_CONVERSION_EVENTS))
    funnel_events: list[str] = field(default_factory=lambda: list(DEFAULT_FUNNEL_EVENTS))
    # Events whose name contains this (case-insensitive) are left out of the model input; "" disables.
    error_substring: str = "error"
    # When set, event names outside this list (and outside the funnel) are quarantined as unknown.
    known_events: Optional[list[str]] = None
    # "event": event_type = event name; "event_feature": "m_card_click - Traditional Carousel".
    event_type_label: str = "event"


@dataclass(frozen=True)
class FunnelConf:
    # False keeps funnel events in the model input, to reproduce the seed's leakage comparison.
    exclude: bool = True


@dataclass(frozen=True)
class SessionConf:
    inactivity_gap_minutes: float = 30.0
    max_length: int = 100
    min_events: int = 2
    # Device-days with more raw events than this are excluded as bot-like (None: keep all).
    max_events_per_device_day: Optional[int] = None


@dataclass(frozen=True)
class SplitConf:
    """Deterministic train/validation/test split by a hash of session_id."""

    train: float = 0.7
    validation: float = 0.1
    test: float = 0.2
    salt: str = "split-v1"


@dataclass(frozen=True)
class GenerateConf:
    """The embedded synthetic clickstream (jobs/generate.py)."""

    output_path: str = "data/raw_events"
    stores_path: str = "data/stores"
    ground_truth_path: str = "data/ground_truth.json"
    n_users: int = 12000
    n_days: int = 2
    start_date: str = "2025-01-15"
    n_stores: int = 400
    n_bot_users: int = 3
    bot_events_per_day: int = 20000
    partitions: int = 8
    dirty_fraction: float = 0.002  # share of rows for each dirty kind
    noise_sd: float = 0.5  # unobserved per-session noise on the conversion logit
    base_logit: float = -2.9
    # embedded: the original analysis's event names, parquet and a stores dimension; renamed: another
    # app's table (other event and column names, CSV with epoch-ms times, no stores dimension).
    # attribution/scenarios.py maps it into the pipeline.
    scenario: str = "embedded"
    # planted: the embedded default's fixed effects; random: drawn from run.seed; none: every effect 0
    effects: str = "planted"


@dataclass(frozen=True)
class SessionsOutputConf:
    sessions_path: str = "sessions"  # relative paths are under run.output_dir
    quarantine_path: str = "quarantine"
    summary_path: str = "sessionize_summary.json"


# Categorical per-event fields the model can embed, in the sessions table's column names.
MODEL_FIELDS = ("event_names", "discovery_features", "store_ids", "store_names", "store_categories", "store_tags")


@dataclass(frozen=True)
class VocabConf:
    """Vocabularies built in Spark from the training split; rarer values map to <UNK>."""

    min_frequency: int = 3
    max_size: int = 200_000  # per field, most frequent first: bounds the embedding tables on big catalogs


@dataclass(frozen=True)
class ModelConf:
    """The session transformer (attribution/model.py). Defaults are the seed's."""

    d_model: int = 192
    n_heads: int = 6
    n_layers: int = 3
    ff_dim: int = 512
    dropout: float = 0.1
    field_dim: int = 32  # embedding width of each categorical field before the projection to d_model
    continuous_dim: int = 16  # width of the projected continuous features
    # Rank of the additive per-event path beside the CLS head (attribution/model.py): each event also adds
    # sum_k (A x_i)_k * P[position_i]_k to the logit directly, so a step's main effect needn't be counted
    # through attention. Not in the seed's model; 0 turns it off (the seed's CLS head alone).
    additive_rank: int = 4


@dataclass(frozen=True)
class TrainConf:
    """Training through TorchDistributor (attribution/train.py)."""

    num_processes: int = 2
    local_mode: bool = True  # False on a cluster: one process per executor task (GPU when use_gpu)
    use_gpu: bool = False
    threads_per_process: Optional[int] = None  # None: the driver's cores / num_processes (local mode)
    shards_per_process: int = 4
    max_train_sessions: Optional[int] = None  # sample the train split down to this many (None: all)
    batch_size: int = 64
    epochs: int = 10
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    # Ridge penalty per categorical value (attribution/model.py, SessionTransformer.embedding_penalty): the
    # loss adds embedding_ridge / training sessions x the sum over values of |their projected embedding|^2,
    # so a value needs evidence from on the order of this many sessions before it carries an effect of its
    # own. 0 turns it off.
    embedding_ridge: float = 100.0
    pos_weight: Optional[float] = None  # BCE positive-class weight (None: unweighted)
    grad_clip: float = 1.0
    patience: int = 3  # epochs without a better validation AUC before stopping
    # Training refuses (exit 2, one line) when the train or validation split has fewer converted or
    # non-converted sessions than this: a day without conversions has nothing to learn from.
    min_class_sessions: int = 5
    warmup_steps: int = 100
    model_path: str = "model"  # relative paths are under run.output_dir
    # In day mode (--date, --from/--to) training writes a version per window, model_path/versions/<window>,
    # and LATEST names the one whose window ends last. The model stages use this version (None: the latest;
    # outside day mode, with no versions, model_path itself).
    model_version: Optional[str] = None
    shards_path: str = "train_shards"
    # Also train on sessions that keep the funnel events (funnel.exclude=false) and report its test
    # AUC beside the real model's: the leakage the seed warns about, measured on every run.
    leakage_check: bool = False
    leakage_check_epochs: int = 3


@dataclass(frozen=True)
class AttributionConf:
    """The attribution stage (jobs/attribute.py)."""

    # Any of the registered methods (attribution/methods.py): grad_x_input (the seed analysis's method),
    # attention, attention_rollout, integrated_gradients.
    methods: list[str] = field(default_factory=lambda: ["grad_x_input", "attention", "attention_rollout"])
    split: str = "test"  # which sessions to attribute: train, validation, test or all
    batch_size: int = 256  # sessions per forward/backward; a GPU out-of-memory halves it and retries
    # At most this many padded positions (sessions x the longest) per batch: long sessions come in
    # smaller batches, so memory is bounded by this, not by the data.
    max_batch_positions: int = 8192
    attention_layer: int = -1  # the layer whose CLS attention is `attention` (-1: the last)
    ig_steps: int = 32
    ig_baseline: str = "pad"  # pad: the <PAD> event's representation; zero: the zero vector
    # About this many of the attributed sessions (chosen by a hash of session_id, so the same ones on every
    # run) get removal effects: per distinct event type, position bin and store of the session, one forward
    # pass without that key's events (attribution/removal.py). A count, not a share, so the cost is bounded
    # whatever the day's volume. 0 turns them off; the report's removal columns are then null.
    removal_sessions: int = 2000
    threads_per_task: Optional[int] = None  # CPU executors: torch threads per task (None: spark.task.cpus)
    output_path: str = "gradient_attribution_no_funnel"  # the event-level table, parquet by session_date
    # The same table published as Delta (partitioned by run_id, one commit per run; null: not published)
    # and as one CSV file (large: null by default). The attribute stage writes them, so re-running the
    # report never rewrites the event-level table.
    delta_path: Optional[str] = "report/delta/gradient_attribution_no_funnel"
    csv_path: Optional[str] = None
    summary_path: str = "attribute_summary.json"
    # Fault injection, for tests: the first attempt of this partition's task fails after its first Arrow
    # batch, so a run with task retries (spark.master local[N,3]) shows that a retried task leaves no trace.
    fail_first_attempt_of_partition: Optional[int] = None
    # Drift: the attributed sessions' ROC-AUC against the model's test ROC-AUC; a drop larger than this is
    # flagged in the summary (and printed).
    max_auc_drop: float = 0.05


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
    summary_path: str = "faithfulness_summary.json"


@dataclass(frozen=True)
class ReportConf:
    """The report stage (jobs/report.py): lift tables, sinks, the picture, key insights."""

    output_path: str = "report"  # relative paths are under run.output_dir
    default_method: str = "grad_x_input"  # the method of the seed-named CSVs and the picture
    formats: list[str] = field(default_factory=lambda: ["csv", "delta", "parquet"])
    store_min_events: int = 10  # the seed's minimum support for the store ranking
    # Stores seen in fewer sessions are left out of the store ranking: their effect is mostly noise
    # (the shrinkage pulls it towards 0 as well).
    store_min_sessions: int = 20
    # A model whose test ROC-AUC is below this, or whose 95% CI includes 0.5, predicts no better than
    # chance: the report says so first and the tables carry model_status = at_chance.
    min_test_auc: float = 0.55
    # Fewer sessions than this in the event table (the day's, in day mode), or none converted, or all:
    # the report still publishes, with status insufficient_data first and no verdicts.
    min_sessions: int = 30
    heatmap_positions: int = 20
    # Day mode: each day's additive statistics (per-session sums, store cell sums, removal rows) are kept
    # here, partitioned by session_date; with window_days N the report's tables cover the N days up to
    # --date, computed from them without reading or scoring those days' events again.
    stats_path: str = "report_stats"
    window_days: Optional[int] = None
    top_event_types: int = 15  # bars in the picture's first panel


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
    attribution: AttributionConf = field(default_factory=AttributionConf)
    faithfulness: FaithfulnessConf = field(default_factory=FaithfulnessConf)
    report: ReportConf = field(default_factory=ReportConf)

    def output(self, relative: str) -> str:
        """Resolve an output location: absolute paths and URIs stay, others go under run.output_dir."""
        if "://" in relative or relative.startswith("/"):
            return relative
        if "://" in self.run.output_dir:  # a URI: pathlib would fold its '//' into one
            return self.run.output_dir.rstrip("/") + "/" + relative
        return str(Path(self.run.output_dir) / relative)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return the typed value or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, found {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, found {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, found {type(value).__name__} {value!r}")
        # Spark conf and reader options are strings; YAML numbers and booleans are written as Spark expects.
        return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    if value is None:
        raise ConfigError(f"{key}: a value is required ({_type_name(tp)}), found null")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # run_id: 20250115 is a fine id
        if isinstance(value, _dt.date):  # YAML reads an unquoted 2025-01-15 as a date
            return value.isoformat()
    raise ConfigError(f"{key}: expected {_type_name(tp)}, found {type(value).__name__} {value!r}")


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (known keys{' under ' + prefix if prefix else ''}: "
            f"{', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, raw in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(raw, hints[name], key)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``dotted`` in the raw tree, following the schema: inside a mapping-typed field (spark.conf,
    input.options) the rest of the key is one key, dots and all (``spark.conf.spark.driver.memory``)."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"--set {dotted}: empty key segment")
    node: dict[str, Any] = tree
    cls: Any = Config
    i = 0
    while i < len(parts) - 1:
        part = parts[i]
        hints = typing.get_type_hints(cls) if cls is not None and dataclasses.is_dataclass(cls) else {}
        tp = hints.get(part)
        if tp is not None and typing.get_origin(tp) is dict:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: {part} is a value, not a section")
            child[".".join(parts[i + 1 :])] = value
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part} is a value, not a section")
        node = child
        cls = tp if tp is not None and dataclasses.is_dataclass(tp) else None
        i += 1
    node[parts[-1]] = value


_SET_RE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.]*)=(?P<value>.*)$", re.S)


def parse_override(text: str) -> tuple[str, Any]:
    """``dotted.key=value`` -> (key, YAML-typed value). Only the first '=' separates key from value."""
    match = _SET_RE.match(text)
    if not match:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    raw = match.group("value")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {match.group('key')}: value {raw!r} is not valid YAML: {exc}") from exc
    return match.group("key"), value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load YAML at ``path`` (None: all defaults), apply ``--set`` overrides, validate, return Config."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        tree = loaded
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    conf = _build(Config, tree, "")
    validate(conf)
    return conf


def validate(conf: Config) -> None:
    """Cross-field checks that types alone can't express."""
    from attribution.scenarios import EFFECTS, SCENARIOS

    if conf.spark.remote is not None and not conf.spark.remote.startswith("sc://"):
        raise ConfigError(f"spark.remote: {conf.spark.remote!r} is not a Spark Connect URL (sc://host:port)")
    api_mode = str(conf.spark.conf.get("spark.api.mode", "classic")).lower()
    if api_mode not in ("classic", "connect"):
        raise ConfigError(f"spark.conf.spark.api.mode: {api_mode!r} is not 'classic' or 'connect'")
    g = conf.generate
    if g.scenario not in SCENARIOS:
        raise ConfigError(f"generate.scenario: {g.scenario!r} is not one of {', '.join(SCENARIOS)}")
    if g.effects not in EFFECTS:
        raise ConfigError(f"generate.effects: {g.effects!r} is not one of {', '.join(EFFECTS)}")
    if conf.input.format not in INPUT_FORMATS:
        raise ConfigError(f"input.format: {conf.input.format!r} is not one of {', '.join(INPUT_FORMATS)}")
    if conf.stores.format not in INPUT_FORMATS:
        raise ConfigError(f"stores.format: {conf.stores.format!r} is not one of {', '.join(INPUT_FORMATS)}")
    if conf.events.event_type_label not in EVENT_TYPE_LABELS:
        raise ConfigError(
            f"events.event_type_label: {conf.events.event_type_label!r} is not one of {', '.join(EVENT_TYPE_LABELS)}"
        )
    if conf.events.event_type_label == "event_feature" and conf.input.columns.discovery_feature is None:
        raise ConfigError("events.event_type_label: 'event_feature' needs input.columns.discovery_feature")
    if not conf.events.conversion_events:
        raise ConfigError("events.conversion_events: at least one conversion event is required")
    s = conf.session
    if s.inactivity_gap_minutes <= 0:
        raise ConfigError("session.inactivity_gap_minutes: must be > 0")
    if s.min_events < 1:
        raise ConfigError("session.min_events: must be >= 1")
    if s.max_length < s.min_events:
        raise ConfigError("session.max_length: must be >= session.min_events")
    if s.max_events_per_device_day is not None and s.max_events_per_device_day < 1:
        raise ConfigError("session.max_events_per_device_day: must be >= 1 or null")
    sp = conf.split
    for name in ("train", "validation", "test"):
        if getattr(sp, name) < 0:
            raise ConfigError(f"split.{name}: must be >= 0")
    if abs(sp.train + sp.validation + sp.test - 1.0) > 1e-9:
        raise ConfigError(f"split: train + validation + test must be 1, found {sp.train + sp.validation + sp.test:g}")
    g = conf.generate
    for name in ("n_users", "n_days", "n_stores", "partitions"):
        if getattr(g, name) < 1:
            raise ConfigError(f"generate.{name}: must be >= 1")
    if g.n_stores < 20:
        raise ConfigError("generate.n_stores: must be >= 20 (the named chains come first)")
    if not 0 <= g.dirty_fraction < 0.2:
        raise ConfigError("generate.dirty_fraction: must be in [0, 0.2)")
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(conf.input.time_zone)
    except Exception as exc:  # noqa: BLE001 - any failure means the zone can't be used
        raise ConfigError(f"input.time_zone: {conf.input.time_zone!r} is not a known time zone") from exc

    for name, value in (("date", conf.run.date), ("date_to", conf.run.date_to)):
        if value is None:
            continue
        try:
            _dt.date.fromisoformat(str(value))
        except ValueError as exc:
            raise ConfigError(f"run.{name}: {value!r} is not a YYYY-MM-DD date") from exc
    if conf.run.date_to is not None and (conf.run.date is None or str(conf.run.date_to) < str(conf.run.date)):
        raise ConfigError(f"run.date_to: {conf.run.date_to} needs run.date on or before it")
    for name in ("valid_from", "valid_until"):
        try:
            _dt.date.fromisoformat(getattr(conf.input, name))
        except ValueError as exc:
            raise ConfigError(f"input.{name}: {getattr(conf.input, name)!r} is not a YYYY-MM-DD date") from exc
    try:
        _dt.date.fromisoformat(g.start_date)
    except ValueError as exc:
        raise ConfigError(f"generate.start_date: {g.start_date!r} is not a YYYY-MM-DD date") from exc
    v, m, t = conf.vocab, conf.model, conf.train
    if v.min_frequency < 1 or v.max_size < 1:
        raise ConfigError("vocab.min_frequency and vocab.max_size: must be >= 1")
    for name in ("d_model", "n_heads", "n_layers", "ff_dim", "field_dim", "continuous_dim"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name}: must be >= 1")
    if m.d_model % m.n_heads:
        raise ConfigError(f"model.d_model: {m.d_model} must be divisible by model.n_heads ({m.n_heads})")
    if m.additive_rank < 0:
        raise ConfigError(f"model.additive_rank: {m.additive_rank} must be >= 0 (0: no additive path)")
    if not 0 <= m.dropout < 1:
        raise ConfigError("model.dropout: must be in [0, 1)")
    for name in (
        "num_processes",
        "shards_per_process",
        "batch_size",
        "epochs",
        "patience",
        "leakage_check_epochs",
        "min_class_sessions",
    ):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name}: must be >= 1")
    if t.threads_per_process is not None and t.threads_per_process < 1:
        raise ConfigError("train.threads_per_process: must be >= 1 or null")
    if t.max_train_sessions is not None and t.max_train_sessions < 1:
        raise ConfigError("train.max_train_sessions: must be >= 1 or null")
    if t.learning_rate <= 0 or t.weight_decay < 0 or t.grad_clip <= 0 or t.warmup_steps < 0 or t.embedding_ridge < 0:
        raise ConfigError(
            "train: learning_rate and grad_clip must be > 0, weight_decay, embedding_ridge and warmup_steps >= 0"
        )
    if t.pos_weight is not None and t.pos_weight <= 0:
        raise ConfigError("train.pos_weight: must be > 0 or null")
    a = conf.attribution
    from attribution.methods import names

    known = names()
    bad = [x for x in a.methods if x not in known]
    if bad or not a.methods:
        raise ConfigError(f"attribution.methods: {bad or 'empty'}; choose from {', '.join(known)}")
    if a.split not in ("train", "validation", "test", "all"):
        raise ConfigError(f"attribution.split: {a.split!r} is not one of train, validation, test, all")
    if a.batch_size < 1 or a.ig_steps < 1 or a.max_batch_positions < 1:
        raise ConfigError("attribution.batch_size, max_batch_positions and ig_steps: must be >= 1")
    if a.removal_sessions < 0:
        raise ConfigError(f"attribution.removal_sessions: {a.removal_sessions} must be >= 0 (0 turns them off)")
    if a.ig_baseline not in ("pad", "zero"):
        raise ConfigError(f"attribution.ig_baseline: {a.ig_baseline!r} is not one of pad, zero")
    if a.threads_per_task is not None and a.threads_per_task < 1:
        raise ConfigError("attribution.threads_per_task: must be >= 1 or null")
    fa = conf.faithfulness
    if fa.max_sessions < 1 or fa.deletion_steps < 1 or fa.random_draws < 1 or fa.batch_positions < 100:
        raise ConfigError(
            "faithfulness.max_sessions, deletion_steps and random_draws: must be >= 1; batch_positions >= 100"
        )
    if not fa.k_events and not fa.k_fractions:
        raise ConfigError("faithfulness.k_events and k_fractions: at least one k is required")
    if any(k < 1 for k in fa.k_events):
        raise ConfigError(f"faithfulness.k_events: {fa.k_events}: each must be >= 1")
    if any(not 0 < x <= 1 for x in fa.k_fractions):
        raise ConfigError(f"faithfulness.k_fractions: {fa.k_fractions}: each must be in (0, 1]")
    r = conf.report
    bad_formats = [f for f in r.formats if f not in ("csv", "delta", "parquet")]
    if bad_formats:
        raise ConfigError(f"report.formats: {bad_formats} not among csv, delta, parquet")
    if r.default_method not in a.methods:
        raise ConfigError(
            f"report.default_method: {r.default_method!r} is not in attribution.methods ({', '.join(a.methods)}); "
            "add it to the methods, or set report.default_method to one of them"
        )
    if r.store_min_events < 1 or r.heatmap_positions < 1 or r.top_event_types < 1 or r.store_min_sessions < 1:
        raise ConfigError(
            "report.store_min_events, store_min_sessions, heatmap_positions and top_event_types: must be >= 1"
        )
    if r.window_days is not None and r.window_days < 1:
        raise ConfigError(f"report.window_days: {r.window_days} must be >= 1 (or null: the day alone)")
    if r.min_sessions < 1:
        raise ConfigError(f"report.min_sessions: {r.min_sessions} must be >= 1")
    if not 0.0 <= r.min_test_auc <= 1.0:
        raise ConfigError(f"report.min_test_auc: {r.min_test_auc} must be between 0 and 1")
    _validate_run_id(conf.run.run_id)
    _validate_paths(conf)


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# Locations a stage replaces whole: Spark's overwrite deletes whatever is there first.
REPLACED_PATHS = (
    "generate.output_path",
    "sessions.sessions_path",
    "sessions.quarantine_path",
    "train.shards_path",
    "attribution.output_path",
    "faithfulness.sessions_path",
)
# Every other location the config names (read, or written file by file).
OTHER_PATHS = (
    "input.path",
    "stores.path",
    "generate.stores_path",
    "generate.ground_truth_path",
    "sessions.summary_path",
    "train.model_path",
    "attribution.delta_path",
    "attribution.csv_path",
    "attribution.summary_path",
    "faithfulness.summary_path",
    "report.output_path",
)


def _validate_run_id(run_id: Optional[str]) -> None:
    """A run id names partitions (run_id=...) and Delta predicates: letters, digits, '.', '_', '-'."""
    if run_id is not None and not RUN_ID.fullmatch(run_id):
        raise ConfigError(
            f"run.run_id: {run_id!r} must be 1-128 letters, digits, '.', '_' or '-' (starting with a letter or "
            "digit): it names directories and partitions"
        )


def _validate_paths(conf: Config) -> None:
    """Output locations that a stage replaces whole must not be the output directory itself, escape it
    with '..', or hold another configured location: an overwrite there would delete it."""
    if not conf.run.output_dir.strip():
        raise ConfigError("run.output_dir: a directory is required")

    def value(key: str) -> Optional[str]:
        section, name = key.split(".")
        return getattr(getattr(conf, section), name)

    def resolved(key: str) -> Optional[str]:
        v = value(key)
        if v is None:
            return None
        if key in ("input.path", "stores.path") or key.startswith("generate."):
            loc = v  # read and generated locations are used as written (relative to the working dir)
        else:
            loc = conf.output(v)
        if "://" in loc:
            return loc.rstrip("/")
        return str(Path(loc).resolve())

    root = str(Path(conf.run.output_dir).resolve())
    for key in REPLACED_PATHS:
        v = value(key)
        if v is not None and not v.strip():
            raise ConfigError(f"{key}: a location is required")
        if v is not None and "://" not in v and ".." in Path(v).parts:
            raise ConfigError(f"{key}: {v!r} must not contain '..'")
        loc = resolved(key)
        if loc is None:
            continue
        if loc in (root, "/") or root.startswith(loc.rstrip("/") + "/"):
            raise ConfigError(f"{key}: {v!r} is the output directory or holds it; the stage would delete it")
        for other in (*REPLACED_PATHS, *OTHER_PATHS):
            if other == key or (key == "generate.output_path" and other == "input.path"):
                continue  # generate writes the input it is meant to produce
            o = resolved(other)
            if o is not None and (o == loc or o.startswith(loc + "/")):
                raise ConfigError(
                    f"{key}: {v!r} holds {other} ({value(other)!r}); the stage replaces it whole and would delete it"
                )
