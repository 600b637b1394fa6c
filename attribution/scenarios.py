"""Synthetic scenario families beyond the embedded default, to validate what a person reads against
planted truth that the code was not tuned on.

``generate.scenario`` names a :class:`Scenario` of :data:`REGISTRY` (what the raw table looks like):

- ``embedded``: the embedded default (the original analysis's event names, parquet, a stores dimension).
- ``renamed``: another app's table, as a new user would bring it: other event names (browse, funnel and
  conversion events), other column names, CSV with epoch-millisecond timestamps, no rank column and no
  stores dimension (stores are bare ids). The same behaviour model underneath, so only the names and
  the planted effects differ.

``generate.effects`` names an entry of :data:`EFFECTS` (what drives conversion):

- ``planted``: the embedded default's fixed effects (``catalogue.EVENT_EFFECTS``, the named stores);
- ``random``: drawn from ``run.seed``: each browse event's effect uniform in [-0.9, 0.9]; five of the 20
  most visited stores get a positive effect and two a negative one, between 0.2 and the largest
  event-type effect (the embedded default's planted stores are among its 20 most visited too);
- ``spread``: as ``random`` for the event types; the stores' effects are planted across the popularity
  range: two of the five positive ones among the 20 most visited stores, three among the stores ranked
  60-220 by visits (about 30-100 test sessions each at 12,000 users over 2 days), and the two negative
  ones anywhere in the 220 most visited; each effect between 0.3 and the largest event-type effect;
- ``ordered``: as ``random``, plus three effects that are not additive (:class:`OrderEffects`, drawn
  from ``run.seed``): an event type that helps only after another one, an event type whose first
  occurrence helps and whose repeats hurt, and an event type that hurts only as the session's last
  step. What a counts model can't see, and what the context and pair tables are there to show;
- ``none``: every effect 0 (the null scenario: conversion does not depend on the events).

:func:`overrides` gives the ``--set`` values that map a generated scenario into the pipeline, the way a
user maps their own table by config alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from attribution.schema import DEFAULT_CONVERSION_EVENTS, DEFAULT_FUNNEL_EVENTS

# generate.effects -> what it plants
EFFECTS = {
    "planted": "the embedded default's fixed effects",
    "random": "effects drawn from run.seed",
    "spread": "effects drawn from run.seed, planted stores across the popularity range",
    "ordered": "effects drawn from run.seed, plus a pair, an occurrence and a last-step effect",
    "none": "every effect 0 (the null scenario)",
}

SPREAD_MIN_STORES = 221  # generate.effects=spread plants stores up to popularity rank 220

# the embedded event name -> the renamed scenario's
RENAMED_EVENTS = {
    "home_page_load": "app_open",
    "m_card_view": "tile_impression",
    "m_card_click": "tile_tap",
    "store_page_load": "merchant_open",
    "m_search_query": "query_submit",
    "m_search_result_click": "result_tap",
    "m_select_tab": "tab_switch",
    "m_app_background": "app_pause",
    "m_app_foreground": "app_resume",
    "m_promo_banner_view": "banner_impression",
    "m_store_page_load_error": "merchant_open_failed",
    "action_add_item": "basket_add",
    "action_quick_add_item": "basket_quick_add",
    "cart_page_load": "basket_open",
    "checkout_page_load": "pay_open",
    "action_place_order": "pay_submit",
    "system_checkout_success": "order_confirmed",
    "m_legacy_widget_tap": "legacy_widget_tap",
}
# the raw table's column -> the renamed scenario's (no event_rank column there)
RENAMED_COLUMNS = {
    "user_id": "uid",
    "device_id": "install_id",
    "event_timestamp": "ts_ms",
    "event_name": "action",
    "store_id": "merchant_id",
    "discovery_feature": "surface",
}
RENAMED_ERROR_SUBSTRING = "failed"


@dataclass(frozen=True)
class Scenario:
    """One raw table the generator can write: its event and column names, its time format and file
    format, and whether a stores dimension comes with it. The behaviour underneath is the same."""

    name: str
    description: str
    events: Mapping[str, str] = field(default_factory=dict)  # embedded event name -> this table's
    columns: Mapping[str, str] = field(default_factory=dict)  # embedded raw column -> this table's
    epoch_ms: bool = False  # times as epoch milliseconds (text), else local wall-clock text
    raw_format: str = "parquet"  # the raw table's file format: parquet, or csv with a header
    stores_dimension: bool = True  # a stores dimension beside the events (else bare store ids)
    has_rank: bool = True  # an event_rank column
    error_substring: str = "error"

    def event_names(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The embedded event ``names`` as this table writes them."""
        return tuple(self.events.get(n, n) for n in names)


REGISTRY = {
    s.name: s
    for s in (
        Scenario("embedded", "the original analysis's event names, parquet and a stores dimension"),
        Scenario(
            "renamed",
            "another app's table: other event and column names, CSV with epoch-ms times, no stores dimension",
            events=RENAMED_EVENTS,
            columns=RENAMED_COLUMNS,
            epoch_ms=True,
            raw_format="csv",
            stores_dimension=False,
            has_rank=False,
            error_substring=RENAMED_ERROR_SUBSTRING,
        ),
    )
}
SCENARIOS = tuple(REGISTRY)


def get(name: str) -> Scenario:
    """The registered scenario called ``name``; a ValueError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def event_names(scenario: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return get(scenario).event_names(names)


def random_effects(
    seed: int, n_browse: int, n_stores: int, zero: tuple[int, ...] = (), popular: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """(event effects per browse event code, store effects per store index), drawn from ``seed``. The
    events in ``zero`` keep no effect: the pipeline drops them (error events), so no model sees them."""
    rng = np.random.default_rng([seed, 16])
    events = np.round(rng.uniform(-0.9, 0.9, n_browse), 2)
    events[list(zero)] = 0.0
    stores = np.zeros(n_stores)
    picks = rng.choice(min(popular, n_stores), size=min(7, n_stores), replace=False)
    largest = float(np.abs(events).max())
    low = min(0.2, largest)
    stores[picks[:5]] = np.round(rng.uniform(low, largest, len(picks[:5])), 2)
    stores[picks[5:]] = -np.round(rng.uniform(low, largest, len(picks[5:])), 2)
    return events, stores


def spread_effects(
    seed: int, n_browse: int, n_stores: int, zero: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`random_effects`' event effects, with the planted stores spread over the popularity range
    (store index = popularity rank): two positive among the 20 most visited, three positive among ranks
    60-220, two negative among the 220 most visited. Needs at least 221 stores."""
    if n_stores < SPREAD_MIN_STORES:  # config_checks refuses such a config first
        raise ValueError(f"generate.effects=spread needs >= {SPREAD_MIN_STORES} stores, not {n_stores}")
    events, _ = random_effects(seed, n_browse, n_stores, zero)
    rng = np.random.default_rng([seed, 17])
    popular = rng.choice(20, size=2, replace=False)
    modest = 60 + rng.choice(161, size=3, replace=False)
    negative = rng.choice(np.setdiff1d(np.arange(221), np.r_[popular, modest]), size=2, replace=False)
    largest = float(np.abs(events).max())
    low = min(0.3, largest)
    stores = np.zeros(n_stores)
    stores[np.r_[popular, modest]] = np.round(rng.uniform(low, largest, 5), 2)
    stores[negative] = -np.round(rng.uniform(low, largest, 2), 2)
    return events, stores


@dataclass(frozen=True)
class OrderEffects:
    """The planted effects that depend on order (``generate.effects=ordered``), on browse event codes, each
    added to the session's conversion logit without a position weight:

    - **pair**: ``pair_effect`` once per session in which an event of ``pair_first`` comes before one of
      ``pair_second`` (``pair_second`` helps only after ``pair_first``; it has no effect of its own);
    - **occurrence**: ``first_effect`` for the first event of ``occurrence_type`` in the session and
      ``repeat_effect`` for each later one (the first search helps, searching again is a bad sign);
    - **recency**: ``last_effect`` when the session's last model-input event is of ``last_type`` (a
      step that hurts only when the session ends on it)."""

    pair_first: int
    pair_second: int
    pair_effect: float
    occurrence_type: int
    first_effect: float
    repeat_effect: float
    last_type: int
    last_effect: float

    @property
    def types(self) -> tuple[int, ...]:
        """The event codes the order effects are planted on."""
        return (self.pair_first, self.pair_second, self.occurrence_type, self.last_type)


def ordered_effects(
    seed: int,
    n_browse: int,
    n_stores: int,
    pair_sessions: np.ndarray,
    occurrence_candidates: tuple[int, ...],
    last_candidates: tuple[int, ...],
    zero: tuple[int, ...] = (),
    frequent_pairs: int = 6,
) -> tuple[np.ndarray, np.ndarray, OrderEffects]:
    """:func:`random_effects` plus :class:`OrderEffects` drawn from ``seed``: the occurrence type among
    ``occurrence_candidates``, the last-step type among ``last_candidates``, and the pair among the
    ``frequent_pairs`` ordered pairs seen in most sessions (``pair_sessions[a, b]``: the share of sessions
    with an ``a`` before a ``b``) that involve neither, so the pair table, which evaluates the most
    frequent pairs, has it. The three types that carry an order effect have no additive effect of their
    own; the pair's first type keeps its drawn one."""
    events, stores = random_effects(seed, n_browse, n_stores, zero)
    rng = np.random.default_rng([seed, 18])
    occurrence = int(rng.choice(occurrence_candidates))
    last = int(rng.choice([c for c in last_candidates if c != occurrence]))
    share = np.array(pair_sessions, dtype=float)
    np.fill_diagonal(share, -1.0)
    share[list(zero), :] = share[:, list(zero)] = -1.0
    ranked = np.argsort(-share, axis=None, kind="stable")[:frequent_pairs]
    frequent = [tuple(int(v) for v in np.unravel_index(i, share.shape)) for i in ranked]
    allowed = [pair for pair in frequent if occurrence not in pair and last not in pair]
    if not allowed:
        raise ValueError("no frequent pair of event types is free of the occurrence and last-step types")
    first, second = allowed[int(rng.integers(len(allowed)))]
    order = OrderEffects(
        pair_first=first,
        pair_second=second,
        pair_effect=float(np.round(rng.uniform(0.8, 1.2), 2)),
        occurrence_type=occurrence,
        first_effect=float(np.round(rng.uniform(0.6, 0.9), 2)),
        repeat_effect=-float(np.round(rng.uniform(0.3, 0.5), 2)),
        last_type=last,
        last_effect=-float(np.round(rng.uniform(0.8, 1.2), 2)),
    )
    events[[second, occurrence, last]] = 0.0
    return events, stores, order


def overrides(scenario: str, data: str) -> list[str]:
    """``--set`` values that point the pipeline at a scenario generated under ``data``, mapping its
    table by config as a user would (the generator's own keys included, so it writes there)."""
    sc = get(scenario)
    common = [
        f"generate.output_path={data}/raw",
        f"generate.stores_path={data}/stores",
        f"generate.ground_truth_path={data}/ground_truth.json",
        f"input.path={data}/raw",
        f"generate.scenario={scenario}",
    ]
    out = [*common, f"stores.path={data}/stores" if sc.stores_dimension else "stores.path=null"]
    if sc.raw_format != "parquet":
        out.append(f"input.format={sc.raw_format}")
    key = {"event_timestamp": "event_ts"}  # the raw column -> its key under input.columns
    out += [f"input.columns.{key.get(k, k)}={v}" for k, v in sc.columns.items()]
    if not sc.has_rank:
        out.append("input.columns.event_rank=null")
    if sc.epoch_ms:
        out.append("input.timestamp_format=epoch_ms")
    if not sc.events:
        return out
    funnel = list(sc.event_names(DEFAULT_FUNNEL_EVENTS))
    conversion = list(sc.event_names(DEFAULT_CONVERSION_EVENTS))
    browse = [v for k, v in sc.events.items() if k not in DEFAULT_FUNNEL_EVENTS and k != "m_legacy_widget_tap"]
    return [
        *out,
        f"events.conversion_events=[{','.join(conversion)}]",
        f"events.funnel_events=[{','.join(funnel)}]",
        f"events.known_events=[{','.join(browse + funnel)}]",
        f"events.error_substring={sc.error_substring}",
    ]
