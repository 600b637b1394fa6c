"""The sessionization rules, vectorized over Arrow columns of sorted events (no Spark).

Spark hash-partitions valid events by (user, device, local day) and sorts each partition by that key,
then time, event name, store, feature and rank (``attribution.sessionize.order_events``);
``SessionStream`` reads those rows as Arrow record batches and returns one row per session. Every rule
is a numpy pass over a chunk of rows, never a Python loop over events:

    duplicate        every field equals the previous row's (same device-day)
    new session      a new device-day, or a gap over the inactivity gap (exactly the gap stays in)
    bot-like         the device-day has more rows than ``max_events_per_device_day``
    after conversion the session's first non-duplicate conversion event and everything after it
    funnel, error    funnel event names (unless ``funnel.exclude=false``), names containing the error text
    candidate        everything else: model input, of which the first ``max_length`` are kept

Each row gets the first of these categories that applies (``CATEGORIES`` order), and every session row
carries its count per category, so the run summary reconciles exactly.

Memory. A device-day's rows are held until the day ends (a later row could make it bot-like), so a
Python worker holds at most one device-day under the cap plus one chunk. A device-day that passes
``max_events_per_device_day`` switches to a streaming mode that keeps only its open session's counts
and last row: a bot with millions of events a day costs time in one task, not memory. Without a cap,
the largest device-day is held whole (about 100 bytes an event).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from attribution.config import Config

KEY_COLUMNS = ("user_id", "device_id", "event_date")
EVENT_FIELDS = ("event_name", "store_id", "discovery_feature", "event_rank")
STORE_FIELDS = ("store_name", "store_category", "store_tag", "is_new_vertical")
STORE_ARRAYS = ("store_names", "store_categories", "store_tags", "is_new_vertical")
# Row categories in priority order; "candidate" rows are split into model input / truncated / short later.
CATEGORIES = ("duplicate", "bot_like_device_day", "after_conversion", "funnel", "error", "candidate")
DUP, BOT, AFTER, FUNNEL, ERROR, CANDIDATE = range(len(CATEGORIES))

TS = pa.timestamp("us", tz="UTC")
OUTPUT_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("device_id", pa.string()),
        ("session_date", pa.date32()),
        ("session_n", pa.int32()),
        ("label", pa.int32()),
        ("status", pa.string()),
        ("session_length", pa.int32()),
        ("original_length", pa.int32()),
        ("session_start_ts", TS),
        ("session_end_ts", TS),
        ("event_names", pa.list_(pa.string())),
        ("event_types", pa.list_(pa.string())),
        ("store_ids", pa.list_(pa.string())),
        ("store_names", pa.list_(pa.string())),
        ("store_categories", pa.list_(pa.string())),
        ("store_tags", pa.list_(pa.string())),
        ("is_new_vertical", pa.list_(pa.bool_())),
        ("discovery_features", pa.list_(pa.string())),
        ("event_ranks", pa.list_(pa.int32())),
        ("seconds_from_prev", pa.list_(pa.float64())),
        ("event_ts", pa.list_(TS)),
        ("n_rows", pa.int64()),
        *[(f"n_{c}", pa.int64()) for c in CATEGORIES[:-1]],
        ("n_truncated", pa.int64()),
        ("n_short_session", pa.int64()),
        ("n_model_input", pa.int64()),
    ]
)
_DDL = {pa.string(): "string", pa.date32(): "date", pa.int32(): "int", pa.int64(): "bigint", TS: "timestamp"}
_DDL.update({pa.bool_(): "boolean", pa.float64(): "double"})


def _ddl(t: pa.DataType) -> str:
    return f"array<{_DDL[t.value_type]}>" if pa.types.is_list(t) else _DDL[t]


def spark_ddl(schema: pa.Schema) -> str:
    """The Spark DDL of an Arrow schema of flat columns and lists of them, for ``mapInArrow``."""
    return ", ".join(f"{f.name} {_ddl(f.type)}" for f in schema)


# Spark DDL of OUTPUT_SCHEMA, for mapInArrow.
OUTPUT_DDL = spark_ddl(OUTPUT_SCHEMA)
# Rows are processed in chunks of about this many (small Arrow batches are gathered first): the numpy
# passes cost a fixed overhead per chunk.
CHUNK_ROWS = 32_768


@dataclass(frozen=True)
class Rules:
    conversion_events: tuple[str, ...]
    funnel_events: tuple[str, ...]  # empty when funnel.exclude is false
    error_substring: str
    event_type_label: str  # "event" or "event_feature"
    gap_us: int
    max_length: int
    min_events: int
    max_events_per_device_day: Optional[int]


def rules_from(conf: Config) -> Rules:
    """``Rules`` from a ``Config``."""
    ev, s = conf.events, conf.session
    return Rules(
        conversion_events=tuple(ev.conversion_events),
        funnel_events=tuple(ev.funnel_events) if conf.funnel.exclude else (),
        error_substring=ev.error_substring,
        event_type_label=ev.event_type_label,
        gap_us=int(round(s.inactivity_gap_minutes * 60 * 1_000_000)),
        max_length=s.max_length,
        min_events=s.min_events,
        max_events_per_device_day=s.max_events_per_device_day,
    )


# --------------------------------------------------------------------------------------------------
# Per-row marks
# --------------------------------------------------------------------------------------------------


def _np(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return a.to_numpy(zero_copy_only=False)


def _ts_us(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return _np(pc.cast(col, pa.int64()))


def _same_key_mask(t: pa.Table) -> np.ndarray:
    """Whether each row has the previous row's (user, device, day); row 0: False. Keys are never null
    (validation quarantines those rows)."""
    n = t.num_rows
    same = np.zeros(n, dtype=bool)
    if n > 1:
        same[1:] = True
        for c in KEY_COLUMNS:
            col = t.column(c)
            same[1:] &= _np(pc.equal(col.slice(1), col.slice(0, n - 1)))
    return same


def _equal_at(col: pa.Array | pa.ChunkedArray, rows: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Null-safe equality of ``col[rows]`` and ``col[prev]``."""
    a, b = col.take(pa.array(rows)), col.take(pa.array(prev))
    eq = _np(pc.fill_null(pc.equal(a, b), False))
    return eq | (_np(pc.is_null(a)) & _np(pc.is_null(b)))


def _marks(t: pa.Table, ts: np.ndarray, gap_us: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key_change, duplicate, new_session) per row of sorted rows; row 0 starts a device-day."""
    n = t.num_rows
    same_key = _same_key_mask(t)
    key_change = ~same_key
    gap = np.zeros(n, dtype=np.int64)
    gap[1:] = np.diff(ts)
    # A duplicate ties the previous row's time: only those few rows compare the other fields.
    ties = np.flatnonzero(same_key & (gap == 0))
    if len(ties):
        same = np.ones(len(ties), dtype=bool)
        for c in EVENT_FIELDS:
            same &= _equal_at(t.column(c), ties, ties - 1)
        ties = ties[same]
    dup = np.zeros(n, dtype=bool)
    dup[ties] = True
    new_session = key_change | (gap > gap_us)
    return key_change, dup, new_session


def _in(col: pa.Array | pa.ChunkedArray, values: Iterable[str]) -> np.ndarray:
    if not values:
        return np.zeros(len(col), dtype=bool)
    return _np(pc.fill_null(pc.is_in(col, value_set=pa.array(list(values), pa.string())), False))


def _starts_to_index(starts: np.ndarray, n: int) -> np.ndarray:
    """Group index of each of n rows, given the sorted start row of every group (starts[0] == 0)."""
    flags = np.zeros(n, dtype=np.int64)
    flags[starts] = 1
    return np.cumsum(flags) - 1


# --------------------------------------------------------------------------------------------------
# Sessions of complete device-days
# --------------------------------------------------------------------------------------------------


class StoresLookup:
    """The stores dimension (store_id -> name, category, tag, new-vertical flag), joined in memory."""

    def __init__(self, stores: Optional[pa.Table]):
        self.stores = stores.combine_chunks() if stores is not None and stores.num_rows else None

    def columns(self, store_ids: pa.Array) -> list[pa.Array]:
        n = len(store_ids)
        if self.stores is None:
            return [pa.nulls(n, pa.string())] * 3 + [pa.nulls(n, pa.bool_())]
        idx = pc.index_in(store_ids, value_set=self.stores.column("store_id"))
        return [self.stores.column(c).take(idx).combine_chunks() for c in STORE_FIELDS]


def _event_types(names: pa.Array, features: pa.Array, label: str) -> pa.Array:
    if label != "event_feature":
        return names
    joined = pc.binary_join_element_wise(names, features, " - ")
    return pc.if_else(pc.is_valid(features), joined, names)


def _session_table(
    keys: pa.Table,
    session_n: np.ndarray,
    label: np.ndarray,
    start_us: np.ndarray,
    end_us: np.ndarray,
    counts: np.ndarray,
    events: pa.Table,
    kept_per_session: np.ndarray,
    rules: Rules,
    stores: StoresLookup,
) -> pa.Table:
    """Assemble the output rows: ``keys`` holds each session's (user, device, day), ``counts`` its rows per
    category (sessions x CATEGORIES), ``events`` the events of the arrays, session after session, in
    order, ``kept_per_session`` how many of them each session has."""
    original = counts[:, CANDIDATE].astype(np.int64)
    length = kept_per_session.astype(np.int64)
    bot = counts[:, BOT] > 0
    short = ~bot & (original < rules.min_events)
    status = np.where(bot, "bot_like_device_day", np.where(short, "short_session", "kept"))
    offsets = pa.array(np.concatenate([[0], np.cumsum(length)]).astype(np.int32))
    names = events.column("event_name").combine_chunks()
    features = events.column("discovery_feature").combine_chunks()
    store_ids = events.column("store_id").combine_chunks()
    ts = _ts_us(events.column("event_ts"))
    gaps = np.zeros(len(ts), dtype=np.float64)
    if len(ts) > 1:
        gaps[1:] = np.diff(ts) / 1_000_000.0
    gaps[offsets.to_numpy()[:-1][length > 0]] = 0.0  # each session's first event
    columns = {
        "user_id": keys.column("user_id"),
        "device_id": keys.column("device_id"),
        "session_date": keys.column("event_date"),
        "session_n": pa.array(session_n, pa.int32()),
        "label": pa.array(label.astype(np.int32)),
        "status": pa.array(status, pa.string()),
        "session_length": pa.array(length.astype(np.int32)),
        "original_length": pa.array(original.astype(np.int32)),
        "session_start_ts": pa.array(start_us, pa.int64()).cast(TS),
        "session_end_ts": pa.array(end_us, pa.int64()).cast(TS),
        "event_names": pa.ListArray.from_arrays(offsets, names),
        "event_types": pa.ListArray.from_arrays(offsets, _event_types(names, features, rules.event_type_label)),
        "store_ids": pa.ListArray.from_arrays(offsets, store_ids),
    }
    for name, values in zip(STORE_ARRAYS, stores.columns(store_ids), strict=True):
        columns[name] = pa.ListArray.from_arrays(offsets, values)
    columns["discovery_features"] = pa.ListArray.from_arrays(offsets, features)
    columns["event_ranks"] = pa.ListArray.from_arrays(offsets, events.column("event_rank").combine_chunks())
    columns["seconds_from_prev"] = pa.ListArray.from_arrays(offsets, pa.array(gaps))
    columns["event_ts"] = pa.ListArray.from_arrays(offsets, pa.array(ts, pa.int64()).cast(TS))
    columns["n_rows"] = pa.array(counts.sum(axis=1).astype(np.int64))
    for i, c in enumerate(CATEGORIES[:-1]):
        columns[f"n_{c}"] = pa.array(counts[:, i].astype(np.int64))
    columns["n_truncated"] = pa.array(original - length)
    columns["n_short_session"] = pa.array(np.where(short, original, 0).astype(np.int64))
    columns["n_model_input"] = pa.array(np.where(~bot & ~short, length, 0).astype(np.int64))
    return pa.Table.from_arrays([columns[f.name] for f in OUTPUT_SCHEMA], schema=OUTPUT_SCHEMA)


def sessions_of_days(t: pa.Table, rules: Rules, stores: StoresLookup) -> pa.Table:
    """Sorted rows of complete device-days -> one row per session (``OUTPUT_SCHEMA``)."""
    n = t.num_rows
    if n == 0:
        return OUTPUT_SCHEMA.empty_table()
    ts = _ts_us(t.column("event_ts"))
    key_change, dup, new_session = _marks(t, ts, rules.gap_us)
    day_starts = np.flatnonzero(key_change)
    day = _starts_to_index(day_starts, n)
    if rules.max_events_per_device_day is not None:
        day_rows = np.diff(np.append(day_starts, n))
        bot = (day_rows > rules.max_events_per_device_day)[day]
    else:
        bot = np.zeros(n, dtype=bool)
    starts = np.flatnonzero(new_session)
    ends = np.append(starts[1:], n)
    session = _starts_to_index(starts, n)
    n_sessions = len(starts)

    name = t.column("event_name")
    is_conversion = _in(name, rules.conversion_events) & ~dup
    conv_so_far = np.cumsum(is_conversion)
    conv_before = (conv_so_far - is_conversion)[starts]
    after = (conv_so_far - conv_before[session]) > 0  # the session's first conversion and after
    funnel = _in(name, rules.funnel_events)
    if rules.error_substring:
        error = _np(pc.fill_null(pc.match_substring(pc.utf8_lower(name), rules.error_substring.lower()), False))
    else:
        error = np.zeros(n, dtype=bool)
    category = np.full(n, CANDIDATE, dtype=np.int64)
    for code, mask in reversed(((DUP, dup), (BOT, bot), (AFTER, after), (FUNNEL, funnel), (ERROR, error))):
        category[mask] = code  # reversed: the highest-priority rule is written last and wins
    counts = np.bincount(session * len(CATEGORIES) + category, minlength=n_sessions * len(CATEGORIES))
    counts = counts.reshape(n_sessions, len(CATEGORIES))

    candidate = category == CANDIDATE
    rank = np.cumsum(candidate)
    rank = rank - (rank - candidate)[starts][session]  # 1-based rank among the session's candidates
    keep = candidate & (rank <= rules.max_length)
    kept = np.flatnonzero(keep)
    kept_per_session = np.bincount(session[kept], minlength=n_sessions)

    label = np.bincount(session, weights=(is_conversion & ~bot), minlength=n_sessions) > 0
    first_session_of_day = np.searchsorted(starts, day_starts)  # each day starts a session
    session_n = np.arange(n_sessions) - first_session_of_day[day[starts]] + 1
    return _session_table(
        t.select(list(KEY_COLUMNS)).take(pa.array(starts)),
        session_n,
        label,
        ts[starts],
        ts[ends - 1],
        counts,
        t.select(["event_ts", *EVENT_FIELDS]).take(pa.array(kept)),
        kept_per_session,
        rules,
        stores,
    )


# --------------------------------------------------------------------------------------------------
# Streaming over a partition
# --------------------------------------------------------------------------------------------------


def _rows(tables: list[pa.Table]) -> int:
    return sum(t.num_rows for t in tables)


def _key_of(t: pa.Table, i: int) -> tuple:
    return tuple(t.column(c)[i] for c in KEY_COLUMNS)


def _run_length(t: pa.Table, key: tuple, from_end: bool) -> int:
    """How many rows at the start (or end) of ``t`` have ``key``."""
    match = np.ones(t.num_rows, dtype=bool)
    for c, value in zip(KEY_COLUMNS, key, strict=True):
        match &= _np(pc.equal(t.column(c), value))
    if from_end:
        match = match[::-1]
    misses = np.flatnonzero(~match)
    return int(misses[0]) if len(misses) else t.num_rows


class BotSession(NamedTuple):
    """A closed session of a bot-like day: its number within the day, first and last event time (us),
    rows and duplicate rows."""

    number: int
    start_us: int
    end_us: int
    rows: int
    duplicates: int


@dataclass
class _BotDay:
    """A device-day past the cap: only its open session's counts and last row are kept."""

    last: pa.Table  # the day's last row so far (the duplicate and gap checks of the next row need it)
    session_n: int  # the open session's number
    start_us: int
    end_us: int
    n_rows: int
    n_duplicate: int


class SessionStream:
    """Sorted Arrow record batches of one partition -> record batches of sessions.

    Rows of the last device-day of a batch wait for the next batch (the day may continue); complete
    days are gathered into chunks of about ``chunk_rows`` rows for ``sessions_of_days``; a day past
    the cap streams through ``_BotDay``.
    """

    def __init__(self, rules: Rules, stores: StoresLookup, chunk_rows: int = CHUNK_ROWS):
        self.rules = rules
        self.stores = stores
        self.chunk_rows = chunk_rows
        self.ready: list[pa.Table] = []  # complete device-days, not yet processed
        self.open: list[pa.Table] = []  # rows of the last device-day seen, which may continue
        self.last_key: Optional[tuple] = None
        self.bot: Optional[_BotDay] = None
        self.out: list[pa.Table] = []

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                self._push(pa.Table.from_batches([batch]))
                yield from self._drain(force=False)
        self._close_open()
        yield from self._drain(force=True)

    def _push(self, t: pa.Table) -> None:
        n = t.num_rows
        # Rows are sorted by key: the open day's rows lead the batch, the batch's last day ends it.
        lead = _run_length(t, self.last_key, from_end=False) if self.last_key is not None else 0
        self.last_key = _key_of(t, n - 1)
        if lead == n:
            self._extend_open(t)
            return
        self._extend_open(t.slice(0, lead))
        self._close_open()
        last = n - _run_length(t, self.last_key, from_end=True)
        if last > lead:
            self.ready.append(t.slice(lead, last - lead))
        self._extend_open(t.slice(last))

    def _extend_open(self, t: pa.Table) -> None:
        if t.num_rows == 0:
            return
        if self.bot is not None:
            self._bot_rows(t)
            return
        self.open.append(t)
        cap = self.rules.max_events_per_device_day
        if cap is not None and _rows(self.open) > cap:
            rows = pa.concat_tables(self.open).combine_chunks()
            self.open = []
            ts0 = int(_ts_us(rows.column("event_ts"))[0])
            self.bot = _BotDay(last=rows.slice(0, 1), session_n=1, start_us=ts0, end_us=ts0, n_rows=1, n_duplicate=0)
            self._bot_rows(rows.slice(1))

    def _close_open(self) -> None:
        if self.bot is not None:
            b = self.bot
            self._bot_sessions([BotSession(b.session_n, b.start_us, b.end_us, b.n_rows, b.n_duplicate)])
            self.bot = None
        elif self.open:
            self.ready.extend(self.open)
            self.open = []

    def _drain(self, force: bool) -> Iterator[pa.RecordBatch]:
        if self.ready and (force or _rows(self.ready) >= self.chunk_rows):
            t = pa.concat_tables(self.ready).combine_chunks()
            self.ready = []
            self.out.append(sessions_of_days(t, self.rules, self.stores))
        for table in self.out:
            yield from table.to_batches()
        self.out = []

    # -- a bot-like device-day, streamed ----------------------------------------------------------

    def _bot_rows(self, t: pa.Table) -> None:
        """Fold rows of a bot-like day into its open session; sessions that close are output."""
        b = self.bot
        assert b is not None, "rows of a bot-like day arrive only while its day is open"
        both = pa.concat_tables([b.last, t]).combine_chunks()
        ts = _ts_us(both.column("event_ts"))
        _, dup, new_session = _marks(both, ts, self.rules.gap_us)
        dup, new_session, ts = dup[1:], new_session[1:], ts[1:]
        n = t.num_rows
        starts = np.flatnonzero(new_session)
        head = int(starts[0]) if len(starts) else n  # rows continuing the open session
        if head:
            b.n_rows += head
            b.n_duplicate += int(dup[:head].sum())
            b.end_us = int(ts[head - 1])
        b.last = t.slice(n - 1)
        if not len(starts):
            return
        bounds = np.append(starts, n)
        rows = np.diff(bounds)
        dups = np.add.reduceat(dup.astype(np.int64), starts)
        numbers = b.session_n + 1 + np.arange(len(starts))
        closed = [BotSession(b.session_n, b.start_us, b.end_us, b.n_rows, b.n_duplicate)]
        closed += [
            BotSession(*row)
            for row in zip(numbers[:-1], ts[starts[:-1]], ts[bounds[1:-1] - 1], rows[:-1], dups[:-1], strict=True)
        ]
        self._bot_sessions(closed)
        b.session_n = int(numbers[-1])
        b.start_us, b.end_us = int(ts[starts[-1]]), int(ts[n - 1])
        b.n_rows, b.n_duplicate = int(rows[-1]), int(dups[-1])

    def _bot_sessions(self, sessions: list[BotSession]) -> None:
        number, start_us, end_us, rows, duplicates = np.array(sessions, dtype=np.int64).reshape(-1, 5).T
        m = len(number)
        counts = np.zeros((m, len(CATEGORIES)), dtype=np.int64)
        counts[:, DUP] = duplicates
        counts[:, BOT] = rows - duplicates
        assert self.bot is not None
        last = self.bot.last
        self.out.append(
            _session_table(
                last.select(list(KEY_COLUMNS)).take(pa.array(np.zeros(m, dtype=np.int64))),
                number,
                np.zeros(m, dtype=bool),
                start_us,
                end_us,
                counts,
                last.slice(0, 0),
                np.zeros(m, dtype=np.int64),
                self.rules,
                self.stores,
            )
        )
