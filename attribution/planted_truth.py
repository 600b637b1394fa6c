"""The planted truth written beside the generated data (``ground_truth.json``): the planted model itself,
its own removal effects and pair interactions (the values the tables' removal columns estimate), and on
the order-dependent scenarios the planted contribution per context (what the context tables estimate).
Each is computed from the generator's own sessions and logit (:mod:`attribution.generate`), never from
the pipeline's outputs."""

from __future__ import annotations

import numpy as np

from attribution import scenarios
from attribution.catalogue import (
    BROWSE_EVENTS,
    CLICKLIKE,
    ERROR,
    FUNNEL_EVENTS,
    N_BROWSE,
    POSITION_WEIGHTS,
    UNKNOWN_EVENT,
    store_table,
)
from attribution.config import Config
from attribution.generate import (
    GenParams,
    browse_sessions,
    effects_of,
    event_contributions,
    ordered_pairs,
    params_from,
    planted_logit,
)
from attribution.schema import (
    DEFAULT_CONVERSION_EVENTS,
    OCCURRENCE,
    OCCURRENCES,
    RECENCIES,
    RECENCY,
    position_bin_bounds,
)


def true_context_effects(p: GenParams, n: int = 20000) -> dict[str, dict[str, dict[str, float]]]:
    """The planted per-event contributions (:func:`event_contributions`, log-odds) averaged per event type
    and context, over ``n`` browse sessions drawn as the generator draws them: ``occurrence`` (the event's
    occurrence of its type: 1st, 2nd, 3rd+) and ``recency`` (last, 2-3 from the end, earlier, counted
    over the model-input events), as the context tables of attribution/aggregate.py cut them. By browse
    event code; error events are left out."""
    rng = np.random.default_rng([p.seed, 20_261_204])
    _, ev, store, *_ = browse_sessions(rng, p.n_stores, n)
    contrib = event_contributions(p, ev, store)
    model_input = (ev >= 0) & (ev != ERROR)
    after = np.cumsum(model_input[:, ::-1], axis=1)[:, ::-1] - model_input  # model-input events after each
    nth = np.zeros_like(ev)
    for code in range(N_BROWSE):
        nth += np.where(ev == code, np.cumsum(ev == code, axis=1), 0)
    contexts = {
        OCCURRENCE: (np.minimum(nth, 3) - 1, OCCURRENCES),
        RECENCY: (np.where(after == 0, 0, np.where(after <= 2, 1, 2)), RECENCIES),
    }
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, (index, labels) in contexts.items():
        out[name] = {}
        for code in range(N_BROWSE):
            if code == ERROR:
                continue
            at = model_input & (ev == code)
            cells = {label: at & (index == i) for i, label in enumerate(labels)}
            out[name][str(code)] = {label: float(contrib[c].mean()) for label, c in cells.items() if c.any()}
    return out


def true_removal_effects(p: GenParams, n: int = 20000, pairs: int = 20, chunk: int = 2000) -> dict:
    """The planted model's own removal effects, in percentage points: over ``n`` browse sessions drawn as
    the generator draws them, the mean of P(convert) minus P(convert) with every event of the key removed
    and the gap closed (the remaining events in order at positions 1, 2, ..., as the attribution's
    removal does, attribution/removal.py), over the sessions that have the key; the same noise draw on
    both sides. Per event type (by browse event code) and per position bin. Error events are left out:
    the pipeline's rules drop them, so no model sees them.

    ``pair``: for the ``pairs`` ordered pairs of event types (a, b) with an a before a b in most sessions,
    the interaction removal effect over those sessions, R(a and b) - R(a) - R(b), in percentage points
    and on the logit: ``[first code, second code, share of sessions, interaction pp, interaction
    log-odds]``. On the logit an additive model has none but what closing the gap does to the position
    weights; in percentage points the S-curve of P(convert) adds its own.

    Sessions are evaluated ``chunk`` at a time, shortest first, each chunk as wide as its longest."""
    rng = np.random.default_rng([p.seed, 20_251_202])
    lengths, ev_all, store_all, *_ = browse_sessions(rng, p.n_stores, n)
    noise_all = rng.normal(0.0, p.noise_sd, n)
    types = [code for code in range(N_BROWSE) if code != ERROR]
    bins = {b: (lo, hi if hi is not None else 10**9) for b, (lo, hi) in position_bin_bounds().items()}
    shares = ordered_pairs(ev_all).mean(axis=0)
    ranked = np.argsort(-shares, axis=None, kind="stable")
    firsts, seconds = np.unravel_index(ranked, shares.shape)
    chosen = [(int(a), int(b)) for a, b in zip(firsts, seconds, strict=True) if a != b and ERROR not in (a, b)][:pairs]
    # per key: the sessions' P(convert) drop and whether they have the key, filled chunk by chunk
    keys: list[tuple[str, int | str]] = [*(("t", c) for c in types), *(("b", b) for b in bins)]
    drop = {k: np.full(n, np.nan) for k in keys}
    inter_pp = {pair: np.full(n, np.nan) for pair in chosen}
    inter_lo = {pair: np.full(n, np.nan) for pair in chosen}
    by_length = np.argsort(lengths, kind="stable")
    for start in range(0, n, chunk):
        rows = by_length[start : start + chunk]
        width = int(lengths[rows].max())
        ev, store, noise = ev_all[rows, :width], store_all[rows, :width], noise_all[rows]
        full = planted_logit(p, lengths[rows], ev, store)

        def without(removed: np.ndarray, ev: np.ndarray = ev, store: np.ndarray = store) -> np.ndarray:
            """Each session's planted logit (no noise) with the ``removed`` events gone, the gap closed."""
            kept = ~removed & (ev >= 0)
            order = np.argsort(~kept, axis=1, kind="stable")  # the kept events first, in order
            closed_ev = np.take_along_axis(np.where(kept, ev, -1), order, axis=1)
            closed_store = np.take_along_axis(np.where(kept, store, -1), order, axis=1)
            return planted_logit(p, kept.sum(axis=1), closed_ev, closed_store)

        positions = np.arange(1, width + 1)[None, :]
        masks: dict[tuple[str, int | str], np.ndarray] = {("t", c): ev == c for c in types}
        masks.update({("b", b): (positions >= lo) & (positions <= hi) & (ev >= 0) for b, (lo, hi) in bins.items()})
        alone = {}
        for key, removed in masks.items():
            alone[key] = without(removed)
            has = removed.any(axis=1)
            drop[key][rows[has]] = _sigmoid(full[has] + noise[has]) - _sigmoid(alone[key][has] + noise[has])
        has_pair = ordered_pairs(ev)
        for a, b in chosen:
            at = has_pair[:, a, b]
            if not at.any():
                continue
            la, lb, lf = alone[("t", a)][at], alone[("t", b)][at], full[at]
            lab = without((ev == a) | (ev == b))[at]
            z = noise[at]
            pp = _sigmoid(la + z) + _sigmoid(lb + z) - _sigmoid(lf + z) - _sigmoid(lab + z)
            inter_pp[(a, b)][rows[at]] = pp
            inter_lo[(a, b)][rows[at]] = la + lb - lf - lab

    def mean(values: np.ndarray) -> float:
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    return {
        "event_type": {str(c): 100 * mean(drop[("t", c)]) for c in types},
        "position_bin": {b: 100 * mean(drop[("b", b)]) for b in bins},
        "pair": [[a, b, float(shares[a, b]), 100 * mean(inter_pp[(a, b)]), mean(inter_lo[(a, b)])] for a, b in chosen],
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def ground_truth(conf: Config) -> dict:
    """The planted model, written beside the data so later stages can check what attribution recovers."""

    g = conf.generate
    stores = store_table(g.n_stores)
    events, eff, order = effects_of(g.effects, conf.run.seed, g.n_stores)
    scenario = scenarios.get(g.scenario)
    browse = scenario.event_names(BROWSE_EVENTS)
    params = params_from(conf)
    removal = true_removal_effects(params)
    truth = {
        "model": "logit = base_logit + sum_i (event_effect[type_i] + store_effect[store_i]*clicklike_i)"
        " * position_weight[bin_i] + order_effects + Normal(0, noise_sd); browse events only",
        "scenario": g.scenario,
        "effects": g.effects,
        "base_logit": g.base_logit,
        "noise_sd": g.noise_sd,
        # error events are dropped by the pipeline's rules, so no model sees them: not a driver to find
        "event_type_effects": {browse[i]: float(events[i]) for i in range(N_BROWSE) if i != ERROR},
        "position_weights": POSITION_WEIGHTS,
        # the planted model's removal effects (percentage points; see true_removal_effects): what the
        # tables' removal_effect_pp estimates through the model
        "true_removal_effect_pp": {
            "event_type": {browse[int(k)]: v for k, v in removal["event_type"].items()},
            "position_bin": removal["position_bin"],
        },
        # per ordered pair (first, second) in >= 1% of the sessions: the planted model's interaction
        # removal effect R(both) - R(first) - R(second) over the sessions with first before second
        "true_pair_interaction": [
            {
                "first_event_type": browse[a],
                "second_event_type": browse[b],
                "session_share": share,
                "interaction_pp": pp,
                "interaction_log_odds": lo,
            }
            for a, b, share, pp, lo in removal["pair"]
        ],
        "store_effect_applies_to": [browse[i] for i in CLICKLIKE],
        "store_effects": {
            str(int(stores.store_id[i])): {
                "store_name": stores.store_name[i] if scenario.stores_dimension else str(int(stores.store_id[i])),
                "effect": float(eff[i]),
            }
            for i in range(g.n_stores)
            if eff[i] != 0.0
        },
        "funnel_events": list(scenario.event_names(FUNNEL_EVENTS)),
        "conversion_events": list(scenario.event_names(DEFAULT_CONVERSION_EVENTS)),
        "unknown_event_name": scenario.event_names((UNKNOWN_EVENT,))[0],
        "timestamps": f"{scenario.columns.get('event_timestamp', 'event_timestamp')} is epoch milliseconds (text)"
        if scenario.epoch_ms
        else f"event_timestamp is local wall-clock time in {conf.input.time_zone}, no offset",
        "n_users": g.n_users,
        "n_bot_users": g.n_bot_users,
        "bot_user_ids": [f"user{g.n_users + b}" for b in range(g.n_bot_users)],
        "seed": conf.run.seed,
    }
    if order is not None:
        # the effects that are not additive (attribution/scenarios.py OrderEffects), by event name, and
        # the planted per-event contributions per context (true_context_effects), which the context
        # tables estimate
        truth["order_effects"] = {
            "pair": {
                "first_event_type": browse[order.pair_first],
                "second_event_type": browse[order.pair_second],
                "effect": order.pair_effect,
            },
            "occurrence": {
                "event_type": browse[order.occurrence_type],
                "first_effect": order.first_effect,
                "repeat_effect": order.repeat_effect,
            },
            "recency": {"event_type": browse[order.last_type], "last_effect": order.last_effect},
        }
        contexts = true_context_effects(params)
        truth["true_context_effect_log_odds"] = {
            name: {browse[int(code)]: cells for code, cells in by_code.items()} for name, by_code in contexts.items()
        }
    return truth
