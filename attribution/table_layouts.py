"""Each published table cut out of the collected statistics (:func:`attribution.aggregate.lift_stats`'s
rows, as Arrow, on the driver): its layout's columns, its support filters, its order and the store
ranking (``attribution.schema.TABLE_KINDS`` names each table's layout and order)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from attribution.removal_tables import with_removal
from attribution.schema import EFFECT_COLUMNS, LIFT_COLUMNS, STORE_EFFECT_COLUMNS, TableKind, table
from attribution.statistics import shrink


def _order(table: pa.Table, order: tuple[tuple[str, str | tuple[str, ...]], ...]) -> pa.Table:
    """``table`` sorted by ``order`` (a TableKind's): a direction that is a tuple of values sorts the column
    by those values' order (the position bins, the occurrences); values outside it go last."""
    keys, helpers = [], []
    for column, direction in order:
        if isinstance(direction, tuple):
            helper = f"_{column}_order"
            index = pc.index_in(table[column], value_set=pa.array(direction, pa.string()))
            table = table.append_column(helper, pc.fill_null(index, len(direction)))
            keys.append((helper, "ascending"))
            helpers.append(helper)
        else:
            keys.append((column, direction))
    return table.take(pc.sort_indices(table, sort_keys=keys, null_placement="at_end")).drop_columns(helpers)


def _rank_within(method: np.ndarray) -> np.ndarray:
    """1, 2, ... within each run of equal methods (rows sorted by method)."""
    starts = np.r_[0, np.flatnonzero(method[1:] != method[:-1]) + 1] if len(method) else np.array([], int)
    first = np.zeros(len(method), dtype=np.int64)
    first[starts] = starts
    return np.arange(len(method)) - np.maximum.accumulate(first) + 1


def _effect_layout(
    rows: pa.Table, kind: TableKind, min_events: int, min_sessions: int, removal: pa.Table | None
) -> pa.Table:
    """One key's effect, removal and lift columns (the event-type and position tables)."""
    cols = ["method", kind.key, *EFFECT_COLUMNS, "event_count", "sessions", "mean_abs_effect_log_odds", *LIFT_COLUMNS]
    out = rows.select(cols)
    out = out.rename_columns([("events" if c == "event_count" else c) for c in out.column_names])
    return with_removal(out, kind.name, kind.key, removal, after="effect_verdict")


def _store_layout(
    rows: pa.Table, kind: TableKind, min_events: int, min_sessions: int, removal: pa.Table | None
) -> pa.Table:
    """Stores with at least ``min_events`` events and ``min_sessions`` sessions: the net effect, shrunk by
    support (:func:`attribution.statistics.shrink`), the removal and lift columns; ``rank`` is added after
    the sort."""
    rows = rows.filter(
        pc.and_(pc.greater_equal(rows["event_count"], min_events), pc.greater_equal(rows["sessions"], min_sessions))
    )
    # a store without a name in the stores dimension (or no dimension at all) shows its id
    name = pc.if_else(pc.is_null(rows["store_name"]), pc.cast(rows["store_id"], pa.string()), rows["store_name"])
    rows = rows.set_column(rows.column_names.index("store_name"), "store_name", name)
    shrunk = np.zeros(rows.num_rows)
    method = rows["method"].to_numpy(zero_copy_only=False)
    net = rows["net_effect_log_odds"].to_numpy(zero_copy_only=False).astype(float)
    se = rows["net_effect_se"].to_numpy(zero_copy_only=False).astype(float)
    support = rows["sessions"].to_numpy(zero_copy_only=False).astype(float)
    signed = np.zeros(rows.num_rows, dtype=bool)
    for m in np.unique(method):
        at = method == m
        signed[at] = np.isfinite(net[at]).any()
        shrunk[at] = shrink(net[at], se[at], support[at])[0]
    shrunk_col = pa.array(np.where(signed, shrunk, np.nan), pa.float64(), mask=~signed)
    cols = [
        "method",
        "store_id",
        "store_name",
        *STORE_EFFECT_COLUMNS[1:],
        "mean_attribution",
        "event_count",
        "sessions",
        "mean_abs_effect_log_odds",
        *LIFT_COLUMNS,
    ]
    out = rows.select(cols).add_column(3, "shrunk_net_effect_log_odds", shrunk_col)
    out = out.rename_columns([("events" if c == "event_count" else c) for c in out.column_names])
    return with_removal(out, kind.name, kind.key, removal, after="effect_verdict")


def _cells_layout(
    rows: pa.Table, kind: TableKind, min_events: int, min_sessions: int, removal: pa.Table | None
) -> pa.Table:
    """Means only, per cell of the keys (the type x position heatmap)."""
    out = rows.select(["method", *kind.keys, "effect_log_odds", "mean_attribution", "event_count"])
    return out.rename_columns(["method", *kind.keys, "effect_log_odds", "mean_attribution", "events"])


def _context_layout(
    rows: pa.Table, kind: TableKind, min_events: int, min_sessions: int, removal: pa.Table | None
) -> pa.Table:
    """An event type's effect in one context (occurrence, previous step, recency), with its CI, beside the
    type's effect overall (``type_effect_log_odds``, filled in by :func:`finish`). Contexts seen in fewer
    than ``min_sessions`` sessions are left out."""
    rows = rows.filter(pc.greater_equal(rows["sessions"], min_sessions))
    cols = ["method", *kind.keys, *EFFECT_COLUMNS, "event_count", "sessions", "mean_abs_effect_log_odds"]
    out = rows.select(cols)
    return out.rename_columns([("events" if c == "event_count" else c) for c in out.column_names])


def _with_type_effect(table: pa.Table, stats: pa.Table) -> pa.Table:
    """``table`` with ``type_effect_log_odds``: the effect of the row's event type over all its events."""
    types = stats.filter(pc.equal(stats["kind"], "event_type")).select(["method", "event_type", "effect_log_odds"])
    lookup = {(m, t): e for m, t, e in zip(*(types[c].to_pylist() for c in types.column_names), strict=True)}
    values = [
        lookup.get((m, t)) for m, t in zip(table["method"].to_pylist(), table["event_type"].to_pylist(), strict=True)
    ]
    at = table.column_names.index("effect_verdict") + 1
    return table.add_column(at, "type_effect_log_odds", pa.array(values, pa.float64()))


# TableKind.layout -> how its rows are cut out of the statistics
LAYOUTS = {"effect": _effect_layout, "store": _store_layout, "cells": _cells_layout, "context": _context_layout}


def finish(
    stats: pa.Table,
    kind: str,
    min_events: int = 10,
    min_sessions: int = 1,
    removal: pa.Table | None = None,
    context_min_sessions: int = 1,
) -> pa.Table:
    """One table out of the collected :func:`lift_stats` rows: its layout's columns, its order
    (``attribution.schema.TABLE_KINDS``). Event types by effect (descending; methods without a signed
    contribution by the original analysis's lift); position bins in order; stores with at least
    ``min_events`` events and ``min_sessions`` sessions, ranked by the shrunk net effect (methods without
    one by mean attribution, as the original analysis); type x position by type and position."""
    spec = table(kind)
    rows = stats.filter(pc.equal(stats["kind"], kind))
    least = context_min_sessions if spec.layout == "context" else min_sessions
    cut = LAYOUTS[spec.layout](rows, spec, min_events, least, removal)
    if spec.layout == "context":
        cut = _with_type_effect(cut, stats)
    out = _order(cut, spec.order)
    if spec.layout == "store":
        rank = _rank_within(out["method"].to_numpy(zero_copy_only=False))  # 1 = highest within each method
        out = out.append_column("rank", pa.array(rank, pa.int32()))
    return out
