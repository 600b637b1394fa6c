"""The project's one schema: the names every stage, table and test share, defined once.

A leaf: it imports nothing from the project, so the configuration, the Spark transforms, the UDFs and
the report all read the same definitions. What is here:

- the original analysis's checkout funnel and conversion events (the configuration's defaults);
- the sessions table's per-event fields: each event-level name, its array in the sessions table, its type
  and its role (a categorical the model embeds, a continuous input, the report's key, the time);
- the position bins of the event table and the report;
- the removal-effect columns, per dimension (event table) and per key (report tables);
- the report's table kinds (:data:`TABLE_KINDS`, from the lift statistics, and
  :data:`REMOVAL_TABLE_KINDS`, from the removal sample alone): each table's keys, order, layout, file name
  and the columns it puts first. A new table is one :class:`TableKind` here plus its computation in
  :mod:`attribution.aggregate` (``_tagged``'s key and ``LAYOUTS``' layout).
"""

from __future__ import annotations

from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------
# Event names of the original analysis (the configuration's defaults, the embedded dataset's funnel)
# --------------------------------------------------------------------------------------------------

DEFAULT_CONVERSION_EVENTS = ("action_place_order", "system_checkout_success")
DEFAULT_FUNNEL_EVENTS = (
    "action_add_item",
    "action_quick_add_item",
    "cart_page_load",
    "checkout_page_load",
    "action_place_order",
    "system_checkout_success",
)

# --------------------------------------------------------------------------------------------------
# Columns every table shares
# --------------------------------------------------------------------------------------------------

SESSION_ID = "session_id"
LABEL = "label"
SESSION_DATE = "session_date"
SESSION_LENGTH = "session_length"
EVENT_POSITION = "event_position"  # 0-based, as in the original analysis's examples
POSITION_BIN = "position_bin"  # on the 1-based position
EVENT_TYPE = "event_type"
STORE_ID = "store_id"
STORE_NAME = "store_name"
RUN_ID = "run_id"
METHOD = "method"


@dataclass(frozen=True)
class EventField:
    """One per-event field: ``name`` in the event-level table, ``array`` in the sessions table (one list per
    session), its Spark type, and its role: ``model`` (a categorical the model embeds), ``continuous`` (a
    numeric model input), ``key`` (a key of the report, not a model input) or ``time``."""

    name: str
    array: str
    type: str
    role: str


# In the order the model's categorical fields are embedded (the vocabularies and the artifact keep it).
EVENT_FIELDS = (
    EventField("event_name", "event_names", "string", "model"),
    EventField("discovery_feature", "discovery_features", "string", "model"),
    EventField(STORE_ID, "store_ids", "string", "model"),
    EventField(STORE_NAME, "store_names", "string", "model"),
    EventField("store_category", "store_categories", "string", "model"),
    EventField("store_tag", "store_tags", "string", "model"),
    EventField(EVENT_TYPE, "event_types", "string", "key"),
    EventField("seconds_from_prev", "seconds_from_prev", "double", "continuous"),
    EventField("event_rank", "event_ranks", "int", "continuous"),
    EventField("is_new_vertical", "is_new_vertical", "boolean", "continuous"),
    EventField("event_ts", "event_ts", "timestamp", "time"),
)
FIELDS = {f.name: f for f in EVENT_FIELDS}
# The sessions table's arrays of the categorical fields the model can embed.
MODEL_FIELDS = tuple(f.array for f in EVENT_FIELDS if f.role == "model")
# The sessions table's columns the encoding reads: the model's arrays, the continuous ones, the length.
INPUT_COLUMNS = (*MODEL_FIELDS, *(f.array for f in EVENT_FIELDS if f.role == "continuous"), SESSION_LENGTH)
# The per-event fields carried from the sessions table into the event-level table, in its order.
EVENT_TABLE_FIELDS = (EVENT_TYPE, "event_name", STORE_ID, STORE_NAME, "event_ts")
# The original analysis's event-level columns, first and in its order.
ORIGINAL_EVENT_COLUMNS = (SESSION_ID, LABEL, EVENT_POSITION, "gradient_attribution", EVENT_TYPE, STORE_ID)

# --------------------------------------------------------------------------------------------------
# Position bins
# --------------------------------------------------------------------------------------------------

POSITION_BINS = ("1-5", "6-10", "11-20", "21-50", "50+")
# the 1-based upper bound of each bin but the last (above the last bound: 50+)
POSITION_BIN_UPPER = (5, 10, 20, 50)


def position_bin_bounds() -> dict[str, tuple[int, int | None]]:
    """Each bin's first and last 1-based position (None: no last)."""
    lows = (1, *(u + 1 for u in POSITION_BIN_UPPER))
    highs: tuple[int | None, ...] = (*POSITION_BIN_UPPER, None)
    return {b: (lo, hi) for b, lo, hi in zip(POSITION_BINS, lows, highs, strict=True)}


# --------------------------------------------------------------------------------------------------
# Removal effects
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemovalDimension:
    """A dimension whose keys are removed from a session: its name in the attribution UDF, the event
    table's column that holds each event's key, and the event table's column of the removal effect."""

    name: str
    key: str
    column: str


REMOVAL_DIMENSIONS = (
    RemovalDimension("event_type", EVENT_TYPE, "removal_effect_type"),
    RemovalDimension("position_bin", POSITION_BIN, "removal_effect_position"),
    RemovalDimension("store", STORE_ID, "removal_effect_store"),
)
# dimension -> the event table's per-event removal column (the ensemble's mean)
REMOVAL_EVENT_COLUMNS = {d.name: d.column for d in REMOVAL_DIMENSIONS}
# dimension -> the event table's per-event removal effect under each ensemble member (an array)
REMOVAL_MEMBER_COLUMNS = {d.name: f"{d.column}_members" for d in REMOVAL_DIMENSIONS}
# the event table's per-session pair interactions (on each session's first event; attribution/removal.py):
# a list of structs, one per evaluated ordered pair present in the session
PAIR_COLUMN = "removal_pair_interactions"
FIRST_EVENT_TYPE = "first_event_type"
SECOND_EVENT_TYPE = "second_event_type"
PAIR_FIELDS = (
    (FIRST_EVENT_TYPE, "string"),
    (SECOND_EVENT_TYPE, "string"),
    ("interaction", "double"),  # R(a and b) - R(a) - R(b) in P(convert), the ensemble's mean
    ("interaction_log_odds", "double"),  # the same on the model's logit
    ("interaction_members", "array<double>"),  # per ensemble member
    ("interaction_log_odds_members", "array<double>"),
)
# the report tables' removal columns, per key
REMOVAL_COLUMNS = (
    "removal_effect_pp",
    "removal_ci_low_pp",
    "removal_ci_high_pp",
    "removal_sampling_se_pp",
    "removal_model_se_pp",
    "removal_relative_lift",
    "attributable_conversions",
    "removal_sessions",
    "removal_models",
)

# --------------------------------------------------------------------------------------------------
# The report's tables
# --------------------------------------------------------------------------------------------------

EFFECT_COLUMNS = ("effect_log_odds", "effect_ci_low", "effect_ci_high", "effect_se", "effect_verdict")
STORE_EFFECT_COLUMNS = (
    "shrunk_net_effect_log_odds",
    "net_effect_log_odds",
    "net_effect_ci_low",
    "net_effect_ci_high",
    "net_effect_se",
    "effect_verdict",
)
LIFT_COLUMNS = (
    "not_converted",
    "converted",
    "attribution_lift",
    "lift_se",
    "lift_ci_low",
    "lift_ci_high",
    "events_converted",
    "events_not_converted",
    "sessions_converted",
    "sessions_not_converted",
    "contribution_converted",
    "contribution_not_converted",
    "length_adjusted_converted",
    "length_adjusted_not_converted",
    "length_adjusted_lift",
    "significant",
)
# The context tables' keys: an event's occurrence of its type in the session, the model-input event just
# before it (START for the first), and its distance from the session's last model-input event.
OCCURRENCE = "occurrence"
OCCURRENCES = ("1st", "2nd", "3rd+")
PREVIOUS_EVENT_TYPE = "previous_event_type"
START = "<start>"
RECENCY = "recency"
RECENCIES = ("last", "2-3 from the end", "earlier")
# A sort direction that is a tuple of values orders a column by those values, not the alphabet's.
BIN_ORDER = POSITION_BINS


@dataclass(frozen=True)
class TableKind:
    """One published table.

    ``name``: its ``kind`` in the aggregated statistics; ``stem``: the original analysis's file name (CSV)
    and the Delta and parquet directory; ``keys``: its key columns in the statistics; ``layout``: how
    :mod:`attribution.aggregate` cuts it out of the statistics (``effect``: the effect, removal and lift
    columns of one key; ``store``: net and shrunk effects, support filter and rank; ``cells``: means only);
    ``order``: its rows' sort, (column, ``ascending``, ``descending`` or a tuple of the column's values in
    their order, e.g. :data:`POSITION_BINS`); ``first``: the
    columns it publishes first (the rest follow in the order computed); ``removal``: the dimension whose
    removal effects it carries (None: none); ``baseline``: the counts baseline's feature prefix whose
    coefficient it carries as ``baseline_log_odds`` (None: none)."""

    name: str
    stem: str
    keys: tuple[str, ...]
    layout: str
    order: tuple[tuple[str, str | tuple[str, ...]], ...]
    first: tuple[str, ...]
    removal: str | None = None
    baseline: str | None = None

    @property
    def key(self) -> str:
        """The column that names a row's key in the published table."""
        return self.keys[0]


_EFFECT_FIRST = (
    *EFFECT_COLUMNS,
    *REMOVAL_COLUMNS,
    "events",
    "sessions",
    "not_converted",
    "converted",
    "attribution_lift",
)

# the context tables: an event type's effect in one context, beside its effect overall
_CONTEXT_FIRST = (*EFFECT_COLUMNS, "type_effect_log_odds", "events", "sessions")
CONTEXT_KINDS = ("occurrence", "context", "recency")


def _context_table(name: str, column: str, *order: tuple[str, str | tuple[str, ...]]) -> TableKind:
    """The context table ``name``: an event type's effect in one context (``column``), beside its effect
    overall; rows by method, event type, then ``order``."""
    return TableKind(
        name=name,
        stem=f"event_type_{name}_attribution_no_funnel",
        keys=(EVENT_TYPE, column),
        layout="context",
        order=((METHOD, "ascending"), (EVENT_TYPE, "ascending"), *order),
        first=(EVENT_TYPE, column, *_CONTEXT_FIRST),
    )


TABLE_KINDS = (
    TableKind(
        name="event_type",
        stem="event_type_attribution_no_funnel",
        keys=(EVENT_TYPE,),
        layout="effect",
        order=(
            (METHOD, "ascending"),
            ("effect_log_odds", "descending"),
            ("attribution_lift", "descending"),
            (EVENT_TYPE, "ascending"),
        ),
        first=(EVENT_TYPE, *_EFFECT_FIRST),
        removal="event_type",
        baseline=EVENT_TYPE,
    ),
    TableKind(
        name="position",
        stem="position_attribution_no_funnel",
        keys=(POSITION_BIN,),
        layout="effect",
        order=((METHOD, "ascending"), (POSITION_BIN, BIN_ORDER)),
        first=(POSITION_BIN, *_EFFECT_FIRST),
        removal="position_bin",
        baseline=POSITION_BIN,
    ),
    TableKind(
        name="store",
        stem="store_attribution_no_funnel",
        # store_name is a key beside store_id (sessionize refuses a stores dimension with duplicate ids, so
        # it adds no groups): an aggregate over a string (first(store_name)) would force Spark's sort-based
        # aggregation, which took 5 of the 7 seconds at 307k events.
        keys=(STORE_ID, STORE_NAME),
        layout="store",
        order=(
            (METHOD, "ascending"),
            ("shrunk_net_effect_log_odds", "descending"),
            ("mean_attribution", "descending"),
            (STORE_ID, "ascending"),
        ),
        first=(
            "rank",
            STORE_ID,
            STORE_NAME,
            *STORE_EFFECT_COLUMNS,
            *REMOVAL_COLUMNS,
            "mean_attribution",
            "event_count",
            "sessions",
        ),
        removal="store",
        baseline="store",
    ),
    TableKind(
        name="type_position",
        stem="event_type_position_attribution_no_funnel",
        keys=(EVENT_TYPE, "position"),
        layout="cells",
        order=((METHOD, "ascending"), (EVENT_TYPE, "ascending"), ("position", "ascending")),
        first=(EVENT_TYPE, "position", "effect_log_odds", "mean_attribution", "events"),
    ),
    _context_table("occurrence", OCCURRENCE, (OCCURRENCE, OCCURRENCES)),
    _context_table("context", PREVIOUS_EVENT_TYPE, ("sessions", "descending"), (PREVIOUS_EVENT_TYPE, "ascending")),
    _context_table("recency", RECENCY, (RECENCY, RECENCIES)),
)
# The pair table: the interaction of two event types' removal effects (attribution/removal.py), per ordered
# pair, from the removal sample alone: no method, no lift statistics. Rows by |interaction_log_odds|.
PAIR_INTERACTION_COLUMNS = (
    "interaction_log_odds",
    "interaction_ci_low",
    "interaction_ci_high",
    "interaction_sampling_se",
    "interaction_model_se",
    "interaction_verdict",
    "interaction_pp",
    "interaction_ci_low_pp",
    "interaction_ci_high_pp",
    "sessions",
    "interaction_models",
)
PAIR_TABLE = TableKind(
    name="pair",
    stem="event_pair_attribution_no_funnel",
    keys=(FIRST_EVENT_TYPE, SECOND_EVENT_TYPE),
    layout="pair",
    order=(("rank", "ascending"),),
    first=("rank", FIRST_EVENT_TYPE, SECOND_EVENT_TYPE, *PAIR_INTERACTION_COLUMNS),
)
# the tables computed from the removal sample alone, after the lift statistics' tables
REMOVAL_TABLE_KINDS = (PAIR_TABLE,)
TABLES = {k.name: k for k in (*TABLE_KINDS, *REMOVAL_TABLE_KINDS)}
# every lift table's key columns, once each: a key column of another table is null in a table's statistics
KEY_COLUMNS = tuple(dict.fromkeys(c for k in TABLE_KINDS for c in k.keys))
GROUND_TRUTH_TABLE = "ground_truth_recovery"
MODEL_COMPARISON_TABLE = "model_comparison"


def table(name: str) -> TableKind:
    """The registered table called ``name``; a ValueError naming the known ones otherwise."""
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    return TABLES[name]
