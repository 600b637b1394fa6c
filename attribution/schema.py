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
    "removal_transformer_pp",
    "removal_baseline_pp",
    "removal_choice_se_pp",
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
    log-odds per event it carries as ``baseline_log_odds`` (None: none)."""

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
            "events",
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


# --------------------------------------------------------------------------------------------------
# What every published column means: defined once here; docs/columns.md is written from it
# (``python -m scripts.columns_doc``) and a test holds every column of a real run's outputs to it
# --------------------------------------------------------------------------------------------------

EVENT_TABLE = "gradient_attribution_no_funnel"
FAITHFULNESS_TABLE = "attribution_faithfulness"
AGREEMENT_TABLE = "attribution_agreement"

# group -> (what the group is, {column: meaning}); a column is defined in one group only
COLUMN_GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    "run": (
        "Every table",
        {
            RUN_ID: "the run that wrote the row (`run.run_id`; `day-YYYY-MM-DD` in day mode); a rerun replaces "
            "its own run id's rows",
            "model_status": "the model's standing when the table was written: `ok`, `at_chance` (test ROC-AUC "
            "CI includes 0.5, or below `report.min_test_auc`), `unknown`, or `insufficient_data` (fewer than "
            "`report.min_sessions` sessions, or one label)",
            METHOD: "the attribution method whose scores the row reads (`grad_x_input`, `integrated_gradients`, "
            "`attention`, `attention_rollout`)",
        },
    ),
    "keys": (
        "The keys a row is about",
        {
            EVENT_TYPE: "the event's type: its name, or name and discovery feature (`events.event_type_label`)",
            POSITION_BIN: "where in the session: `1-5`, `6-10`, `11-20`, `21-50`, `50+` on the 1-based position",
            "position": "the 1-based position in the session (the heatmap's column; up to "
            "`report.heatmap_max_position`)",
            STORE_ID: "the store's id as the events carry it",
            STORE_NAME: "the store's name from the stores dimension (its id when the dimension has none)",
            OCCURRENCE: "which occurrence of its type in the session the event is: `1st`, `2nd`, `3rd+`",
            PREVIOUS_EVENT_TYPE: f"the type of the model-input event just before it (`{START}` for the first)",
            RECENCY: "the event's distance from the session's last model-input event: `last`, "
            "`2-3 from the end`, `earlier`",
        },
    ),
    "effect": (
        "Effects: how strongly one event pushes (signed methods)",
        {
            "effect_log_odds": "the effect: the mean signed contribution of one event of the key to the model's "
            "logit, in log-odds, over the key's events of both labels (null for attention methods)",
            "effect_ci_low": "the effect's 95% CI, low end, with each session as one cluster",
            "effect_ci_high": "the effect's 95% CI, high end",
            "effect_se": "the effect's standard error, session-clustered",
            "effect_verdict": "`drives conversion` (CI above 0), `holds conversion back` (CI below 0), "
            "`indistinguishable from noise` (CI across 0); in the store table, read on the net effect",
            "mean_abs_effect_log_odds": "the mean |contribution| of the key's events: how far they move the logit "
            "either way",
            "type_effect_log_odds": "the row's event type's effect over all its events, beside its effect in "
            "this context",
            "mean_attribution": "the mean normalized attribution (the method's share of the session) of the key's "
            "events",
            "events": "the key's events among the scored sessions",
            "sessions": "the scored sessions with at least one event of the key",
        },
    ),
    "store": (
        "Stores: the effect beyond type and position",
        {
            "rank": "the store's rank by `shrunk_net_effect_log_odds`, 1 first, per method, among stores with "
            "at least `report.store_min_sessions` sessions and `report.store_min_events` events",
            "shrunk_net_effect_log_odds": "the net effect pulled towards 0 by its support (empirical Bayes), so a "
            "store seen in few sessions can't top the ranking by luck",
            "net_effect_log_odds": "the mean of (contribution minus the mean contribution of store events of the "
            "same type and position bin): the store's effect beyond its events' type and position",
            "net_effect_ci_low": "the net effect's 95% CI, low end, session-clustered",
            "net_effect_ci_high": "the net effect's 95% CI, high end",
            "net_effect_se": "the net effect's standard error, session-clustered",
        },
    ),
    "removal": (
        "Removal effects: how much a step moves conversion (the figure to quote)",
        {
            "removal_effect_pp": "how much higher the model's P(convert) is for a session with the key's events "
            "than with all of them removed (the gap closed), in percentage points, over the removal sample's "
            "sessions that have the key, averaged over the ensemble's members; with a counts baseline the "
            "model is the blend of the two that the validation split chose (`baseline.blend`): w x "
            "`removal_transformer_pp` + (1 - w) x `removal_baseline_pp`",
            "removal_ci_low_pp": "the removal effect's 95% CI, low end: session sampling, with more than one "
            "member the model's own variance, and with a counts baseline the model choice",
            "removal_ci_high_pp": "the removal effect's 95% CI, high end",
            "removal_sampling_se_pp": "the removal effect's standard error from session sampling",
            "removal_model_se_pp": "the removal effect's standard error from the model (the members' spread / "
            "sqrt(members); in a blend each member pairs a transformer member with a fit of the counts baseline "
            "on its own bootstrap resample, `baseline.members`); null with one member",
            "removal_transformer_pp": "the transformer's own removal effect of the key on the same sessions "
            "(the ensemble's mean), in percentage points; equal to `removal_effect_pp` without a blend",
            "removal_baseline_pp": "the counts baseline's removal effect of the key on the same sessions, in "
            "percentage points: another model family's answer to the same question (with the order terms the "
            "validation split chose, `baseline.order_penalties`); null without a baseline",
            "removal_choice_se_pp": "the removal effect's standard error from the model choice: the distance "
            "between the transformer's and the counts baseline's removal effects, counted as one standard "
            "error; null without a baseline",
            "removal_relative_lift": "the removal effect as a share of the mean P(convert) without the key",
            "attributable_conversions": "the removal effect (a fraction) x the key's scored sessions: predicted "
            "conversions owed to the key among the scored sessions (the test split by default), not a day's "
            "whole traffic",
            "removal_sessions": "the removal sample's sessions that have the key",
            "removal_models": "the ensemble members averaged (`train.ensemble_members`)",
        },
    ),
    "lift": (
        "The original analysis's lift (kept for compatibility; it does not order the tables)",
        {
            "not_converted": "the mean normalized attribution of the key's events in sessions that did not "
            "convert (0 when it has none)",
            "converted": "the same in converted sessions",
            "attribution_lift": "`converted` minus `not_converted`",
            "lift_se": "the lift's standard error, session-clustered on each side",
            "lift_ci_low": "the lift's 95% CI, low end",
            "lift_ci_high": "the lift's 95% CI, high end",
            "significant": "whether the lift's CI excludes 0 (null without a CI)",
            "events_converted": "the key's events in converted sessions",
            "events_not_converted": "the key's events in the other sessions",
            "sessions_converted": "converted sessions with the key",
            "sessions_not_converted": "the other sessions with the key",
            "contribution_converted": "the mean signed contribution of the key's events in converted sessions",
            "contribution_not_converted": "the same in the other sessions",
            "length_adjusted_converted": "the mean attribution x session length (1.0 is an average share) in "
            "converted sessions",
            "length_adjusted_not_converted": "the same in the other sessions",
            "length_adjusted_lift": "`length_adjusted_converted` minus `length_adjusted_not_converted`",
        },
    ),
    "baseline": (
        "The counts baseline",
        {
            "baseline_log_odds": "the counts baseline's log-odds per event of the row's key: its coefficient, "
            "plus for an event type (a position bin) its type-and-bin pairs' coefficients averaged over where "
            "its training events fall (null for a key with no feature of its own)",
        },
    ),
    "pair": (
        "The pair table",
        {
            "rank": "the pair's rank by |interaction_log_odds|, 1 first",
            FIRST_EVENT_TYPE: "A, the event type whose first event comes before B's last in the session",
            SECOND_EVENT_TYPE: "B",
            "interaction_log_odds": "R(A and B) - R(A) - R(B) on the model's logit, R a removal effect, over the "
            "removal sample's sessions with the pair, averaged over the members",
            "interaction_ci_low": "its 95% CI, low end (session sampling and the members)",
            "interaction_ci_high": "its 95% CI, high end",
            "interaction_sampling_se": "its standard error from session sampling",
            "interaction_model_se": "its standard error from the members; null with one member",
            "interaction_verdict": "`work together` (CI below -`report.pair_min_interaction`), `stand in for each "
            "other` (CI above it), or `indistinguishable from noise` (no interaction of that size, or, with its "
            "reason in brackets, the transformer predicts no better than the counts baseline)",
            "interaction_pp": "the same interaction in P(convert), percentage points",
            "interaction_ci_low_pp": "its 95% CI in percentage points, low end",
            "interaction_ci_high_pp": "its 95% CI in percentage points, high end",
            "sessions": "the removal sample's sessions with the pair",
            "interaction_models": "the ensemble members averaged",
        },
    ),
    MODEL_COMPARISON_TABLE: (
        "model_comparison: the transformer against the counts baseline",
        {
            "model": "`transformer` or `counts_baseline`",
            "test_sessions": "the paired test sessions (a hash sample of `baseline.comparison_max_sessions` when "
            "there are more)",
            "positive_rate": "their conversion rate",
            "roc_auc": "the model's ROC-AUC on them",
            "roc_auc_ci_low": "its 95% CI, low end (Hanley-McNeil)",
            "roc_auc_ci_high": "its 95% CI, high end",
            "pr_auc": "average precision",
            "log_loss": "log loss",
            "mean_prediction": "the mean predicted P(convert)",
            "auc_difference": "transformer row: its ROC-AUC minus the baseline's on the same sessions",
            "auc_difference_ci_low": "its paired 95% CI, low end (DeLong)",
            "auc_difference_ci_high": "its paired 95% CI, high end",
            "comparison_verdict": "transformer row: `beats the counts baseline` (CI above 0), `no better than the "
            "counts baseline` (CI across 0), `worse than the counts baseline` (CI below 0)",
            "event_type_order_spearman": "baseline row: Spearman correlation of its event types' log-odds per "
            "event (`baseline_log_odds`) with the report method's effects",
            "position_order_spearman": "baseline row: the same for position bins",
            "store_order_spearman": "baseline row: the same for the published stores' shrunk net effects",
        },
    ),
    GROUND_TRUTH_TABLE: (
        "ground_truth_recovery: the tables against the planted truth (synthetic data only)",
        {
            "check": 'what is scored (docs/methods.md, "Planted drivers", lists every check)',
            "value": "the check's score",
            "expected": "the bar it must meet, in words",
            "agrees": "whether the value meets the bar",
            "compared": "how many keys or pairs the check compared",
            "detail": "the misses, or the ranking it read",
        },
    ),
    FAITHFULNESS_TABLE: (
        "attribution_faithfulness: how well each method explains the model",
        {
            "metric": "`comprehensiveness`, `sufficiency`, `aopc_comprehensiveness`, `aopc_sufficiency`, "
            "`deletion_area`",
            "k": "how many top events (`1`, `3`, `5`, `10%`, `20%`, `50%`), `all` for AOPC, `curve` for the "
            "deletion area",
            "value": "the metric's mean over the evaluated sessions",
            "ci_low": "its 95% CI, low end",
            "ci_high": "its 95% CI, high end",
            "random_baseline": "the same metric for random orders of the same sessions' events",
            "random_ci_low": "its 95% CI, low end",
            "random_ci_high": "its 95% CI, high end",
            "vs_random": "the mean paired difference, method minus random",
            "vs_random_ci_low": "its 95% CI, low end",
            "vs_random_ci_high": "its 95% CI, high end",
            "better": "`higher` or `lower`: which way the metric is better",
            "beats_random": "whether the paired difference's CI lies on the better side of 0",
            "sessions": "the sessions evaluated",
        },
    ),
    AGREEMENT_TABLE: (
        "attribution_agreement: how much two methods agree",
        {
            "other_method": "the method compared with `method`",
            "sessions": "sessions of 3 or more events compared",
            "mean": "the mean per-session Spearman correlation of the two methods' scores",
            "q25": "its first quartile",
            "median": "its median",
            "q75": "its third quartile",
            "share_positive": "the share of sessions where the correlation is above 0",
        },
    ),
    EVENT_TABLE: (
        "gradient_attribution_no_funnel: one row per scored event",
        {
            SESSION_ID: "the session: user, device, local day and its number that day",
            LABEL: "1 when the session converted",
            EVENT_POSITION: "the event's 0-based position in the session, as in the original analysis",
            "event_name": "the event's name as logged",
            "event_ts": "the event's time",
            SESSION_LENGTH: "the session's model-input events",
            SESSION_DATE: "the session's local day (the table's partition)",
            "prediction": "the model's P(convert) for the session",
            "gradient_attribution": "gradient x input: |contribution| / its sum over the session; sums to 1",
            "contribution": "signed gradient x input, in log-odds: above 0 pushes towards conversion",
            "attention_attribution": "CLS-to-event attention, head-averaged, of `attribution.attention_layer`; "
            "sums to 1",
            "rollout_attribution": "attention rollout (Abnar & Zuidema 2020); sums to 1",
            "ig_attribution": "integrated gradients, normalized like gradient_attribution",
            "ig_contribution": "integrated gradients, signed, in log-odds, from the PAD representation",
            "ig_completeness_gap": "the session's integrated gradients' sum minus (f(x) - f(baseline))",
            "removal_effect_type": "the session's P(convert) minus its P(convert) without every event of this "
            "event's type, the members' mean; null outside the removal sample",
            "removal_effect_position": "the same for the event's position bin",
            "removal_effect_store": "the same for the event's store; null for an event without one",
            "removal_effect_type_members": "`removal_effect_type` under each ensemble member, the model first",
            "removal_effect_position_members": "`removal_effect_position` under each member",
            "removal_effect_store_members": "`removal_effect_store` under each member",
            PAIR_COLUMN: "on a sampled session's first event only: one struct per evaluated pair present "
            "(first_event_type, second_event_type, interaction, interaction_log_odds, and each member's)",
            "model_sha256": "the sha256 of the model that scored the row",
        },
    ),
}

# each published table (its file stem) -> the groups its columns come from
_LIFT = ("run", "keys", "effect", "removal", "lift", "baseline")
TABLE_COLUMN_GROUPS: dict[str, tuple[str, ...]] = {
    **{k.stem: _LIFT for k in TABLE_KINDS if k.layout == "effect"},
    **{k.stem: (*_LIFT, "store") for k in TABLE_KINDS if k.layout == "store"},
    **{k.stem: ("run", "keys", "effect") for k in TABLE_KINDS if k.layout in ("cells", "context")},
    PAIR_TABLE.stem: ("run", "pair"),
    MODEL_COMPARISON_TABLE: ("run", MODEL_COMPARISON_TABLE),
    GROUND_TRUTH_TABLE: ("run", GROUND_TRUTH_TABLE),
    FAITHFULNESS_TABLE: ("run", FAITHFULNESS_TABLE),
    AGREEMENT_TABLE: ("run", AGREEMENT_TABLE),
    EVENT_TABLE: ("run", "keys", EVENT_TABLE),
}

# The type of every column above, as the Delta tables declare it (Spark SQL's names); a column not named
# here is a double. docs/columns.md states them, and the tests read every published table with Polars
# (Delta) and DuckDB (parquet) and hold each column's type to this.
_PAIR_STRUCT = "struct<" + ", ".join(f"{name}: {kind}" for name, kind in PAIR_FIELDS) + ">"
_COUNTS = (
    "events",
    "events_converted",
    "events_not_converted",
    "sessions",
    "sessions_converted",
    "sessions_not_converted",
    "removal_sessions",
    "removal_models",
    "interaction_models",
    "test_sessions",
    "compared",
)
_TEXT = (
    RUN_ID,
    "model_status",
    METHOD,
    "model_sha256",
    SESSION_ID,
    EVENT_TYPE,
    "event_name",
    STORE_ID,
    STORE_NAME,
    POSITION_BIN,
    OCCURRENCE,
    PREVIOUS_EVENT_TYPE,
    RECENCY,
    FIRST_EVENT_TYPE,
    SECOND_EVENT_TYPE,
    "effect_verdict",
    "interaction_verdict",
    "comparison_verdict",
    "better",
    "model",
    "metric",
    "check",
    "expected",
    "detail",
    "k",
    "other_method",
)
COLUMN_TYPES: dict[str, str] = {
    **{c: "string" for c in _TEXT},
    **{c: "bigint" for c in _COUNTS},
    **{c: "int" for c in (LABEL, EVENT_POSITION, SESSION_LENGTH, "position", "rank")},
    **{c: "boolean" for c in ("agrees", "beats_random", "significant")},
    SESSION_DATE: "date",
    "event_ts": "timestamp",
    **{c: "array<double>" for c in REMOVAL_MEMBER_COLUMNS.values()},
    PAIR_COLUMN: f"array<{_PAIR_STRUCT}>",
}


def column_type(column: str) -> str:
    """The Spark SQL type of a published column (docs/columns.md's type column)."""
    return COLUMN_TYPES.get(column, "double")


def column_meaning(stem: str, column: str) -> str:
    """What ``column`` of the published table ``stem`` (or its ``_by_method`` file) means; a KeyError
    naming the table and the column when it is not defined, or defined in two of the table's groups."""
    stem = stem.removesuffix("_by_method")
    if stem not in TABLE_COLUMN_GROUPS:
        raise KeyError(f"{stem}: not a published table")
    found = [COLUMN_GROUPS[g][1][column] for g in TABLE_COLUMN_GROUPS[stem] if column in COLUMN_GROUPS[g][1]]
    if len(found) != 1:
        raise KeyError(f"{stem}.{column}: defined in {len(found)} of its column groups")
    return found[0]
