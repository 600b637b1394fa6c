"""Synthetic scenario families beyond the embedded default, to validate what a person reads against
planted truth that the code was not tuned on.

``generate.scenario``:

- ``embedded``: the embedded default (the original analysis's event names, parquet, a stores dimension).
- ``renamed``: another app's table, as a new user would bring it: other event names (browse, funnel and
  conversion events), other column names, CSV with epoch-millisecond timestamps, no rank column and no
  stores dimension (stores are bare ids). The same behaviour model underneath, so only the names and
  the planted effects differ.

``generate.effects``:

- ``planted``: the embedded default's fixed effects (``generate.EVENT_EFFECTS``, the named stores);
- ``random``: drawn from ``run.seed``: each browse event's effect uniform in [-0.9, 0.9]; five of the 20
  most visited stores get a positive effect and two a negative one, between 0.2 and the largest
  event-type effect (the embedded default's planted stores are among its 20 most visited too);
- ``none``: every effect 0 (the null scenario: conversion does not depend on the events).

:func:`overrides` gives the ``--set`` values that map a generated scenario into the pipeline, the way a
user maps their own table by config alone.
"""

from __future__ import annotations

import numpy as np

from attribution.config import DEFAULT_CONVERSION_EVENTS, DEFAULT_FUNNEL_EVENTS

SCENARIOS = ("embedded", "renamed")
EFFECTS = ("planted", "random", "none")

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


def event_names(scenario: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(RENAMED_EVENTS.get(n, n) for n in names) if scenario == "renamed" else names


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


def overrides(scenario: str, data: str) -> list[str]:
    """``--set`` values that point the pipeline at a scenario generated under ``data``, mapping its
    table by config as a user would (the generator's own keys included, so it writes there)."""
    common = [
        f"generate.output_path={data}/raw",
        f"generate.stores_path={data}/stores",
        f"generate.ground_truth_path={data}/ground_truth.json",
        f"input.path={data}/raw",
        f"generate.scenario={scenario}",
    ]
    if scenario == "embedded":
        return [*common, f"stores.path={data}/stores"]
    renamed = [RENAMED_EVENTS[e] for e in DEFAULT_FUNNEL_EVENTS]
    conversion = [RENAMED_EVENTS[e] for e in DEFAULT_CONVERSION_EVENTS]
    browse = [v for k, v in RENAMED_EVENTS.items() if k not in DEFAULT_FUNNEL_EVENTS and k != "m_legacy_widget_tap"]
    key = {"event_timestamp": "event_ts"}  # the raw column -> its key under input.columns
    columns = [f"input.columns.{key.get(k, k)}={v}" for k, v in RENAMED_COLUMNS.items()]
    return [
        *common,
        "input.format=csv",
        *columns,
        "input.columns.event_rank=null",
        "input.timestamp_format=epoch_ms",
        "stores.path=null",
        f"events.conversion_events=[{','.join(conversion)}]",
        f"events.funnel_events=[{','.join(renamed)}]",
        f"events.known_events=[{','.join(browse + renamed)}]",
        f"events.error_substring={RENAMED_ERROR_SUBSTRING}",
    ]
