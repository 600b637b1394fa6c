"""The event-level attribution table: one row per (session, event), from the per-session score arrays.

Pure DataFrame transforms (testable with chispa). ``event_position`` is 0-based as in the original analysis's examples;
``position_bin`` is on the 1-based position (``1-5``, ``6-10``, ``11-20``, ``21-50``, ``50+``) so the first
event is in ``1-5`` (the original analysis's code lost position 0 from its bins).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from attribution import methods
from attribution.schema import (
    EVENT_TABLE_FIELDS,
    FIELDS,
    ORIGINAL_EVENT_COLUMNS,
    PAIR_COLUMN,
    POSITION_BIN_UPPER,
    POSITION_BINS,
    REMOVAL_EVENT_COLUMNS,
    REMOVAL_MEMBER_COLUMNS,
)

# Per-event arrays of the sessions table carried into the event table: column -> array.
EVENT_COLUMNS = {name: FIELDS[name].array for name in EVENT_TABLE_FIELDS}


def position_bin(position_1based: Column) -> Column:
    """The bin (``attribution.schema.POSITION_BINS``) of a 1-based position."""
    out = F.when(position_1based <= POSITION_BIN_UPPER[0], POSITION_BINS[0])
    for upper, label in zip(POSITION_BIN_UPPER[1:], POSITION_BINS[1:-1], strict=True):
        out = out.when(position_1based <= upper, label)
    return out.otherwise(POSITION_BINS[-1])


@dataclass(frozen=True)
class EventLayout:
    """Where each column of the event table comes from in the scored sessions (one row per session):
    ``arrays`` maps an event-table column to the per-event array it is taken from, ``per_session`` are
    the session's values repeated on each of its events, ``first_event`` the session's values on its
    first event only (null on the others). The Spark explode (:func:`event_table`) and the Arrow one of
    the worker-side writer (udfs/event_files.py) both read it."""

    arrays: dict[str, str]
    per_session: tuple[str, ...]
    first_event: tuple[str, ...]


def event_layout(columns: list[str]) -> EventLayout:
    """The layout of the event table made from scored sessions with these ``columns``."""
    registered = methods.present(columns)
    per_event = [
        *(c for m in registered for c in m.event_columns),
        *REMOVAL_EVENT_COLUMNS.values(),
        *REMOVAL_MEMBER_COLUMNS.values(),
    ]
    method_session = [c for m in registered for c, _ in m.session_columns]
    scores = [c for c in per_event if c in columns]
    return EventLayout(
        arrays={**EVENT_COLUMNS, **{c: c for c in scores}},
        per_session=(
            "session_id",
            "label",
            "session_length",
            "session_date",
            "prediction",
            *[c for c in method_session if c in columns],
        ),
        # the pair interactions are per session: on its first event only
        first_event=(PAIR_COLUMN,) if PAIR_COLUMN in columns else (),
    )


def extra_event_columns() -> tuple[str, ...]:
    """The event table's columns after the original analysis's, in order (each where present): read at
    call time, so a method registered at run time has its place."""
    return (
        "store_name",
        "event_name",
        "prediction",
        *methods.event_columns(),
        *REMOVAL_EVENT_COLUMNS.values(),
        *REMOVAL_MEMBER_COLUMNS.values(),
        PAIR_COLUMN,
        "session_length",
        "position_bin",
        "event_ts",
        "run_id",
        "model_sha256",
        "session_date",
    )


def event_table(scored: DataFrame, run_id: str, model_sha256: str) -> DataFrame:
    """Explode scored sessions into the event-level table (columns in the original analysis's order first): per
    event, every registered method's score arrays present in ``scored`` and the removal effects of the
    event's type, position bin and store in its session (attribution/removal.py): the ensemble's mean and
    each member's value; on a session's first event (``event_position`` 0), its pair interactions."""
    layout = event_layout(scored.columns)
    zipped = F.arrays_zip(*[F.col(src).alias(dst) for dst, src in layout.arrays.items()])
    exploded = scored.select(
        *layout.per_session,
        *layout.first_event,
        F.posexplode(zipped).alias("event_position", "e"),
    )
    flat = (
        exploded.select("*", *[F.col(f"e.{name}").alias(name) for name in layout.arrays])
        .drop("e")
        .withColumn("position_bin", position_bin(F.col("event_position") + 1))
        .withColumns({c: F.when(F.col("event_position") == 0, F.col(c)) for c in layout.first_event})
        .withColumn("run_id", F.lit(run_id))
        .withColumn("model_sha256", F.lit(model_sha256))
    )
    ordered = [c for c in dict.fromkeys([*ORIGINAL_EVENT_COLUMNS, *extra_event_columns()]) if c in flat.columns]
    return flat.select(*ordered)
