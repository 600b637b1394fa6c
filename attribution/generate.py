"""Synthetic food-delivery clickstream with planted conversion drivers.

Spark-native: the driver only makes block ids; each block of ``BLOCK_USERS`` users is generated on an
executor by vectorized numpy seeded with ``(seed, block_id)``, so the data is identical whatever the
number of partitions, and 100M+ events is just more blocks.

Conversion is drawn from a known logistic model (the *ground truth*, written beside the data):

    logit(session) = base_logit
                     + sum_i event_effect[type_i] * position_weight[bin(i)]
                     + sum_i store_effect[store_i] * position_weight[bin(i)]   (clicks, store page loads)
                     + Normal(0, noise_sd)                                        (what no model can see)

over the session's browse events (funnel events come after the decision). ``noise_sd`` keeps a good
model in the original analysis's realistic AUC band (0.65-0.85) instead of 0.99.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from attribution import scenarios
from attribution.catalogue import (
    ADD,
    ALL_EVENTS,
    BROWSE_EVENTS,
    CARD_FEATURES,
    CART,
    CHECKOUT,
    CLICK,
    CLICKLIKE,
    ERROR,
    EVENT_EFFECTS,
    FOREGROUND,
    HOME,
    INITIAL,
    MEAN_GAP_S,
    N_BROWSE,
    PAGE,
    PLACE,
    PROMO,
    QUICK_ADD,
    RESULT,
    SEARCH,
    SEARCH_FEATURE,
    STORE_ID_BASE,
    SUCCESS,
    TAB,
    TRANSITIONS,
    UNKNOWN_EVENT,
    VIEW,
    position_weight_for,
    store_effects,
)
from attribution.config import Config
from attribution.scenarios import OrderEffects, ordered_effects, random_effects, spread_effects

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

BLOCK_USERS = 256

# ---- block generation ----------------------------------------------------------------------------

RAW_COLUMNS = (
    "user_id",
    "device_id",
    "event_timestamp",
    "event_name",
    "store_id",
    "discovery_feature",
    "event_rank",
    "planted_dirty_kind",
)
RAW_SCHEMA = (
    "user_id string, device_id string, event_timestamp string, event_name string, store_id long, "
    "discovery_feature string, event_rank int, planted_dirty_kind string"
)
DIRTY_KINDS = ("duplicate", "null_user_id", "null_device_id", "null_event_name", "unparseable_ts", "unknown_event")


@dataclass(frozen=True)
class GenParams:
    """The plain values a block needs (shipped to executors; no Config object in closures)."""

    seed: int
    n_users: int
    n_bot_users: int
    n_days: int
    start_epoch_s: int  # midnight of start_date in the data's time zone, as epoch seconds
    n_stores: int
    bot_events_per_day: int
    dirty_fraction: float
    noise_sd: float
    base_logit: float
    time_zone: str
    scenario: str = "embedded"  # attribution.scenarios.SCENARIOS
    event_effects: tuple[float, ...] = ()  # per browse event code
    store_effect_values: tuple[float, ...] = ()  # per store index
    order: OrderEffects | None = None  # generate.effects=ordered: the effects that are not additive

    @property
    def n_user_blocks(self) -> int:
        return -(-self.n_users // BLOCK_USERS)

    @property
    def n_blocks(self) -> int:
        return self.n_user_blocks + self.n_bot_users


def params_from(conf: Config) -> GenParams:
    import zoneinfo

    g = conf.generate
    start = dt.datetime.combine(
        dt.date.fromisoformat(g.start_date), dt.time(0), zoneinfo.ZoneInfo(conf.input.time_zone)
    )
    events, stores, order = effects_of(g.effects, conf.run.seed, g.n_stores)
    return GenParams(
        seed=conf.run.seed,
        n_users=g.n_users,
        n_bot_users=g.n_bot_users,
        n_days=g.n_days,
        start_epoch_s=int(start.timestamp()),
        n_stores=g.n_stores,
        bot_events_per_day=g.bot_events_per_day,
        dirty_fraction=g.dirty_fraction,
        noise_sd=g.noise_sd,
        base_logit=g.base_logit,
        time_zone=conf.input.time_zone,
        scenario=g.scenario,
        event_effects=tuple(float(v) for v in events),
        store_effect_values=tuple(float(v) for v in stores),
        order=order,
    )


# generate.effects=ordered: the occurrence effect goes on a step people repeat now and then, the last-step
# effect on one sessions often end on (attribution/scenarios.py, ordered_effects)
OCCURRENCE_CANDIDATES = (HOME, SEARCH, TAB, PROMO)
LAST_CANDIDATES = (HOME, VIEW, PAGE, FOREGROUND)


def effects_of(kind: str, seed: int, n_stores: int) -> tuple[np.ndarray, np.ndarray, OrderEffects | None]:
    """(planted effect per browse event code, per store index, the order effects or None) for
    ``generate.effects``."""

    if kind == "random":
        return (*random_effects(seed, N_BROWSE, n_stores, zero=(ERROR,)), None)
    if kind == "spread":
        return (*spread_effects(seed, N_BROWSE, n_stores, zero=(ERROR,)), None)
    if kind == "ordered":
        shares = pair_session_shares(n_stores)
        return ordered_effects(seed, N_BROWSE, n_stores, shares, OCCURRENCE_CANDIDATES, LAST_CANDIDATES, zero=(ERROR,))
    if kind == "none":
        return np.zeros(N_BROWSE), np.zeros(n_stores), None
    return np.array([EVENT_EFFECTS[e] for e in BROWSE_EVENTS]), store_effects(n_stores), None


def ordered_pairs(ev: np.ndarray) -> np.ndarray:
    """(n, types, types) booleans: whether session i of ``ev`` (n, L) browse codes, -1 padded, has an event
    of type a before one of type b (a != b); error events are not model input and count for neither."""
    n, length = ev.shape
    positions = np.arange(length)[None, :]
    first = np.full((n, N_BROWSE), length, dtype=np.int64)
    last = np.full((n, N_BROWSE), -1, dtype=np.int64)
    for code in range(N_BROWSE):
        if code == ERROR:
            continue
        at = ev == code
        first[:, code] = np.where(at, positions, length).min(axis=1)
        last[:, code] = np.where(at, positions, -1).max(axis=1)
    out = first[:, :, None] < last[:, None, :]
    out[:, np.arange(N_BROWSE), np.arange(N_BROWSE)] = False
    return out


def pair_session_shares(n_stores: int, n: int = 4000) -> np.ndarray:
    """(types, types): the share of browse sessions with an event of type a before one of type b, over
    ``n`` sessions drawn by the behaviour model (the same whatever the seed: the behaviour is fixed)."""
    _, ev, *_ = browse_sessions(np.random.default_rng(20_261_203), n_stores, n)
    return ordered_pairs(ev).mean(axis=0)


def _store_popularity(n_stores: int) -> np.ndarray:
    p = 1.0 / (np.arange(n_stores) + 3.0) ** 1.05
    return p / p.sum()


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` (n, k)."""
    cum = probs.cumsum(axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return (u >= cum).sum(axis=1)


def browse_sessions(
    rng: np.random.Generator, n_stores: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Browse part of ``n`` sessions as padded (n, L) arrays; -1 marks padding."""
    lengths = np.maximum(1, np.floor(rng.lognormal(2.2, 0.9, n))).astype(np.int64)
    lengths = np.minimum(lengths, 400)
    L = int(lengths.max()) if n else 1
    ev = np.full((n, L), -1, dtype=np.int64)
    store = np.full((n, L), -1, dtype=np.int64)
    feat = np.full((n, L), -1, dtype=np.int64)  # index into CARD_FEATURES, len() = Core Search
    rank = np.full((n, L), -1, dtype=np.int64)
    gap = np.zeros((n, L))
    popularity = _store_popularity(n_stores)
    cur = _choice_rows(rng, np.broadcast_to(INITIAL, (n, N_BROWSE)))
    cur_store = np.full(n, -1, dtype=np.int64)
    cur_feat = np.full(n, -1, dtype=np.int64)
    prev = np.zeros(n, dtype=np.int64)  # the previous event (HOME for finished sessions)
    for t in range(L):
        alive = lengths > t
        if t > 0:
            nxt = _choice_rows(rng, TRANSITIONS[prev])
            cur = np.where(alive, nxt, -1)
        new_store = rng.choice(n_stores, size=n, p=popularity)
        new_feat = rng.integers(0, len(CARD_FEATURES), size=n)
        # Which store an event is about: clicks mostly on the card just seen, page loads on what was clicked.
        inherit = np.zeros(n, dtype=bool)
        if t > 0:
            inherit |= (cur == CLICK) & (prev == VIEW) & (rng.random(n) < 0.7)
            inherit |= (cur == CLICK) & (prev == PROMO)
            inherit |= (cur == PAGE) & np.isin(prev, (CLICK, RESULT, PAGE, ERROR, FOREGROUND)) & (cur_store >= 0)
            inherit |= (cur == ERROR) & np.isin(prev, (CLICK, RESULT, PAGE))
        has_store = np.isin(cur, (VIEW, CLICK, PAGE, RESULT, PROMO, ERROR))
        s = np.where(inherit, cur_store, new_store)
        s = np.where(has_store, s, -1)
        is_search = np.isin(cur, (SEARCH, RESULT))
        f = np.where(inherit, cur_feat, new_feat)
        f = np.where(is_search, len(CARD_FEATURES), f)
        f = np.where(np.isin(cur, (VIEW, CLICK, PAGE, RESULT, PROMO, SEARCH)), f, -1)
        r = np.where(np.isin(cur, (VIEW, CLICK)), rng.geometric(0.15, n) - 1, -1)
        r = np.where(cur == RESULT, rng.geometric(0.4, n) - 1, r)
        ev[:, t] = cur
        store[:, t] = np.where(alive, s, -1)
        feat[:, t] = np.where(alive, f, -1)
        rank[:, t] = np.where(alive, r, -1)
        gap[:, t] = np.where(alive, rng.exponential(MEAN_GAP_S[np.maximum(cur, 0)]), 0.0)
        cur_store = np.where(has_store, s, cur_store)
        cur_feat = np.where(has_store | is_search, f, cur_feat)
        prev = np.maximum(cur, 0)
    gap = np.minimum(gap, 25 * 60.0)  # inside a session, never a 30-minute silence
    return lengths, ev, store, feat, rank, gap


def planted_logit(p: GenParams, lengths: np.ndarray, ev: np.ndarray, store: np.ndarray) -> np.ndarray:
    return p.base_logit + event_contributions(p, ev, store).sum(axis=1)


def event_contributions(p: GenParams, ev: np.ndarray, store: np.ndarray) -> np.ndarray:
    """(n, L): what each event adds to its session's planted logit: its type's effect and its store's
    (click-like events) times its position weight, plus the order effects
    (:class:`attribution.scenarios.OrderEffects`) at the event that carries them: the occurrence effect at
    each event of the occurrence type, the last-step effect at the session's last model-input event, and
    the pair effect at the first event of the pair's second type after an event of its first type. The
    session's logit is ``base_logit`` plus their sum. ``ev`` (n, L) browse codes, -1 padded (padding may
    sit anywhere: a session with events removed)."""
    n, length = ev.shape
    eff_by_event = np.asarray(p.event_effects, float)
    s_eff = np.asarray(p.store_effect_values, float)
    pos_w = position_weight_for(np.arange(1, length + 1))[None, :]
    valid = ev >= 0
    contrib = np.where(valid, eff_by_event[np.maximum(ev, 0)], 0.0) * pos_w
    clicklike = np.isin(ev, CLICKLIKE) & (store >= 0)
    contrib += np.where(clicklike, s_eff[np.maximum(store, 0)], 0.0) * pos_w
    if p.order is None:
        return contrib
    o = p.order
    positions = np.arange(length)[None, :]
    rows = np.arange(n)
    first_a = np.where(ev == o.pair_first, positions, length).min(axis=1)
    after_a = (ev == o.pair_second) & (positions > first_a[:, None])
    completes = np.where(after_a, positions, length).min(axis=1)  # the first b after the first a
    paired = completes < length
    contrib[rows[paired], completes[paired]] += o.pair_effect
    is_c = ev == o.occurrence_type
    nth = np.cumsum(is_c, axis=1)
    contrib += np.where(is_c, np.where(nth == 1, o.first_effect, o.repeat_effect), 0.0)
    model_input = valid & (ev != ERROR)
    last = np.where(model_input, positions, -1).max(axis=1)
    ends_on = (last >= 0) & (ev[rows, np.maximum(last, 0)] == o.last_type)
    contrib[rows[ends_on], last[ends_on]] += o.last_effect
    return contrib


def _tail_segments(rng: np.random.Generator, converted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Funnel events after the browse part (padded (n, 8) event codes) and a short after-order tail."""
    n = len(converted)
    K = 9
    ev = np.full((n, K), -1, dtype=np.int64)
    n_items = rng.integers(1, 4, n)
    abandoned = (~converted) & (rng.random(n) < 0.22)
    checkout_abandon = abandoned & (rng.random(n) < 0.35)
    for k in range(3):
        add = (converted | abandoned) & (n_items > k)
        ev[:, k] = np.where(add, np.where(rng.random(n) < 0.3, QUICK_ADD, ADD), -1)
    ev[:, 3] = np.where(converted | abandoned, CART, -1)
    ev[:, 4] = np.where(converted | checkout_abandon, CHECKOUT, -1)
    ev[:, 5] = np.where(converted, PLACE, -1)
    ev[:, 6] = np.where(converted, SUCCESS, -1)
    # After the order: some users keep browsing (left out of the model input: it is after conversion).
    after = converted & (rng.random(n) < 0.3)
    ev[:, 7] = np.where(after, HOME, -1)
    ev[:, 8] = np.where(after & (rng.random(n) < 0.5), VIEW, -1)
    gap = np.where(ev >= 0, rng.exponential(12.0, (n, K)), 0.0)
    return ev, gap


def generate_block(p: GenParams, block: int) -> pd.DataFrame:
    """All events of one block of users (or one bot user), as the raw table's columns."""
    rng = np.random.default_rng([p.seed, block])
    if block < p.n_user_blocks:
        ev_flat = _user_block(rng, p, block)
    else:
        ev_flat = _bot_block(rng, p, block - p.n_user_blocks)
    return _finish(rng, p, ev_flat)


def _user_block(rng: np.random.Generator, p: GenParams, block: int) -> dict[str, np.ndarray]:
    first_user = block * BLOCK_USERS
    users = np.arange(first_user, min(first_user + BLOCK_USERS, p.n_users))
    n_devices = 1 + rng.binomial(2, 0.3, len(users))
    # Sessions per user-day: some users skip a day, a few open the app many times.
    per_day = rng.poisson(1.5, (len(users), p.n_days)) * (rng.random((len(users), p.n_days)) < 0.85)
    ud_user = np.repeat(np.arange(len(users))[:, None], p.n_days, axis=1).ravel()
    ud_day = np.tile(np.arange(p.n_days), len(users))
    counts = per_day.ravel()
    s_user = np.repeat(ud_user, counts)  # local user index per session
    s_day = np.repeat(ud_day, counts)
    s_group = np.repeat(np.arange(len(counts)), counts)
    n = len(s_user)
    dev_probs = np.array([[0.7, 0.2, 0.1]]) * (np.arange(3)[None, :] < n_devices[s_user][:, None])
    s_dev = _choice_rows(rng, dev_probs)

    lengths, ev, store, feat, rank, gap = browse_sessions(rng, p.n_stores, n)
    logit = planted_logit(p, lengths, ev, store) + rng.normal(0.0, p.noise_sd, n)
    converted = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    t_ev, t_gap = _tail_segments(rng, converted)
    # The last browsed store is what gets ordered.
    last_store = store[np.arange(n), np.maximum(lengths - 1, 0)]
    t_store = np.where(np.isin(t_ev, (ADD, QUICK_ADD, CART, CHECKOUT, PLACE, SUCCESS)), last_store[:, None], -1)
    t_store = np.where(t_ev == VIEW, rng.choice(p.n_stores, size=t_ev.shape, p=_store_popularity(p.n_stores)), t_store)
    ev = np.concatenate([ev, t_ev], axis=1)
    store = np.concatenate([store, t_store], axis=1)
    feat = np.concatenate([feat, np.full(t_ev.shape, -1)], axis=1)
    rank = np.concatenate([rank, np.full(t_ev.shape, -1)], axis=1)
    gap = np.concatenate([gap, t_gap], axis=1)

    # Event time = session start + cumulative gaps (the gap is the wait *before* the next event).
    offsets = np.concatenate([np.zeros((n, 1)), np.cumsum(gap, axis=1)[:, :-1]], axis=1)
    valid = ev >= 0
    duration = np.where(valid, offsets, 0.0).max(axis=1)
    # Sessions of a user-day follow each other, more than 30 minutes apart; late ones cross midnight.
    between = 1860.0 + rng.exponential(3 * 3600.0, n)
    total = duration + between
    excl = np.cumsum(total) - total
    group_first = np.r_[0, np.cumsum(counts)[:-1]]
    day_offset = rng.uniform(6 * 3600.0, 14 * 3600.0, len(counts))
    start = p.start_epoch_s + s_day * 86400.0 + day_offset[s_group] + (excl - excl[group_first[s_group]])
    ts = start[:, None] + offsets

    sess_user = users[s_user]
    sess_dev = sess_user * 3 + s_dev
    return {
        "user": np.broadcast_to(sess_user[:, None], ev.shape)[valid],
        "device": np.broadcast_to(sess_dev[:, None], ev.shape)[valid],
        "ts_ms": np.round(ts[valid] * 1000).astype(np.int64),
        "event": ev[valid],
        "store": store[valid],
        "feat": feat[valid],
        "rank": rank[valid],
    }


def _bot_block(rng: np.random.Generator, p: GenParams, bot: int) -> dict[str, np.ndarray]:
    """A scraper-like user: tens of thousands of card views and clicks a day, never ordering."""
    user = p.n_users + bot
    parts = []
    for day in range(p.n_days):
        m = int(p.bot_events_per_day * rng.uniform(0.8, 1.2))
        gaps = rng.uniform(1.0, 3.0, m)
        ts = p.start_epoch_s + day * 86400.0 + 1800.0 + np.cumsum(gaps)
        ev = np.where(np.arange(m) % 3 == 2, CLICK, VIEW)
        parts.append((ts, ev))
    ts = np.concatenate([t for t, _ in parts])
    ev = np.concatenate([e for _, e in parts])
    m = len(ts)
    return {
        "user": np.full(m, user),
        "device": np.full(m, user * 3),
        "ts_ms": np.round(ts * 1000).astype(np.int64),
        "event": ev,
        "store": rng.integers(0, p.n_stores, m),
        "feat": np.zeros(m, dtype=np.int64),
        "rank": rng.integers(0, 30, m),
    }


def _finish(rng: np.random.Generator, p: GenParams, e: dict[str, np.ndarray]) -> pd.DataFrame:
    """Turn codes into the raw table's columns and plant the dirty rows (one kind per row, known)."""

    m = len(e["event"])
    scenario = scenarios.get(p.scenario)
    names = np.array(scenario.event_names(ALL_EVENTS + (UNKNOWN_EVENT,)), dtype=object)
    features = np.array(CARD_FEATURES + (SEARCH_FEATURE,), dtype=object)
    f = p.dirty_fraction
    probs = np.array([f, f / 3, f / 3, f / 3, f, f, 1.0 - 4 * f])
    kind = rng.choice(len(probs), size=m, p=probs / probs.sum())
    user = pd.array(np.char.add("user", e["user"].astype(str)), dtype=object)
    device = pd.array(np.char.add("device", e["device"].astype(str)), dtype=object)
    if scenario.epoch_ms:  # epoch milliseconds, as text
        ts_text = np.asarray(e["ts_ms"].astype(str), dtype=object)
    else:
        ts = pd.to_datetime(e["ts_ms"], unit="ms", utc=True).tz_convert(p.time_zone)
        ts_text = np.asarray(ts.strftime("%Y-%m-%d %H:%M:%S.%f").str.slice(0, 23), dtype=object)
    event_code = np.where(kind == 5, len(names) - 1, e["event"])
    df = pd.DataFrame(
        {
            "user_id": user,
            "device_id": device,
            "event_timestamp": ts_text,
            "event_name": names[event_code],
            "store_id": pd.array(np.where(e["store"] >= 0, e["store"] + STORE_ID_BASE, 0), dtype="Int64"),
            "discovery_feature": np.where(e["feat"] >= 0, features[np.maximum(e["feat"], 0)], np.array(None)),
            "event_rank": pd.array(np.maximum(e["rank"], 0), dtype="Int32"),
            "planted_dirty_kind": np.array([None] * m, dtype=object),
        }
    )
    df.loc[e["store"] < 0, "store_id"] = pd.NA
    df.loc[e["rank"] < 0, "event_rank"] = pd.NA
    labels = np.array(DIRTY_KINDS + (None,), dtype=object)
    df["planted_dirty_kind"] = labels[kind]
    dup = df[kind == 0].copy()  # the copy is the dirty row; the original stays clean
    df.loc[kind == 0, "planted_dirty_kind"] = None
    df.loc[kind == 1, "user_id"] = None
    df.loc[kind == 2, "device_id"] = None
    df.loc[kind == 3, "event_name"] = None
    df.loc[kind == 4, "event_timestamp"] = np.where(
        rng.random(int((kind == 4).sum())) < 0.5, "not-a-timestamp", "2025-13-45 99:99:99"
    )
    out = pd.concat([df, dup], ignore_index=True)
    scenario = scenarios.get(p.scenario)
    if not scenario.has_rank:
        out = out.drop(columns=["event_rank"])
    return out.rename(columns=dict(scenario.columns)) if scenario.columns else out


def raw_schema(scenario: str) -> str:
    """The generated table's Spark schema for ``scenario``."""
    sc = scenarios.get(scenario)
    if not sc.columns and sc.has_rank and sc.raw_format == "parquet":
        return RAW_SCHEMA
    # a text table (CSV) holds every column as text but the store id
    types = {"store_id": "long"}
    kept = [c for c in RAW_COLUMNS if sc.has_rank or c != "event_rank"]
    return ", ".join(f"{sc.columns.get(c, c)} {types.get(c, 'string')}" for c in kept)


def generate_events(spark: SparkSession, conf: Config) -> DataFrame:
    """The raw events as a Spark DataFrame (lazy; nothing is generated until an action)."""
    p = params_from(conf)

    def gen(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for block in batch["id"].tolist():
                yield generate_block(p, int(block))

    blocks = spark.range(0, p.n_blocks, numPartitions=min(conf.generate.partitions, p.n_blocks))
    return blocks.mapInPandas(gen, raw_schema(p.scenario))
