"""The second scenario family (another app's table, mapped by config alone) and the null scenario."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from attribution import catalogue, generate, planted_truth, scenarios
from tests.conftest import make_conf
from tests.helpers import small_model_sets


def test_random_effects_are_drawn_from_the_seed_within_the_stated_bounds():
    events, stores = scenarios.random_effects(3, catalogue.N_BROWSE, 400, zero=(catalogue.ERROR,))
    again = scenarios.random_effects(3, catalogue.N_BROWSE, 400, zero=(catalogue.ERROR,))
    assert np.array_equal(events, again[0]) and np.array_equal(stores, again[1])
    assert not np.array_equal(events, scenarios.random_effects(4, catalogue.N_BROWSE, 400)[0])
    assert events[catalogue.ERROR] == 0.0 and np.all(np.abs(events) <= 0.9)
    planted = np.flatnonzero(stores)
    assert len(planted) == 7 and planted.max() < 20  # among the most visited stores
    assert (stores > 0).sum() == 5 and (stores < 0).sum() == 2
    assert np.abs(stores).max() <= np.abs(events).max()


def test_spread_effects_plant_stores_across_the_popularity_range():
    """generate.effects=spread: the event effects are random's; two positive stores among the 20 most
    visited, three among ranks 60-220 (30-100 test sessions at the embedded size), two negative ones
    within the 220 most visited; and a config with fewer stores is refused in one line."""
    from attribution.errors import ConfigError

    for seed in (1, 2, 3):
        events, stores = scenarios.spread_effects(seed, catalogue.N_BROWSE, 400, zero=(catalogue.ERROR,))
        assert np.array_equal(
            events, scenarios.random_effects(seed, catalogue.N_BROWSE, 400, zero=(catalogue.ERROR,))[0]
        )
        positive, negative = np.flatnonzero(stores > 0), np.flatnonzero(stores < 0)
        assert (positive < 20).sum() == 2 and ((positive >= 60) & (positive <= 220)).sum() == 3
        assert len(positive) == 5 and len(negative) == 2 and negative.max() <= 220
        assert np.abs(stores[stores != 0]).min() >= 0.3 and np.abs(stores).max() <= np.abs(events).max()
    with pytest.raises(ConfigError, match="generate.n_stores must be >= 221, not 100"):
        make_conf("generate.effects=spread", "generate.n_stores=100")


def test_the_renamed_scenario_maps_by_config_alone(tmp_path):
    conf = make_conf(*scenarios.overrides("renamed", str(tmp_path)), "generate.effects=none")
    assert conf.input.format == "csv" and conf.stores.path is None
    assert conf.input.columns.event_ts == "ts_ms" and conf.input.columns.event_rank is None
    assert conf.events.conversion_events == ["pay_submit", "order_confirmed"]
    truth = planted_truth.ground_truth(conf)
    assert set(truth["event_type_effects"].values()) == {0.0} and truth["store_effects"] == {}
    assert "app_pause" in truth["event_type_effects"] and "m_app_background" not in truth["event_type_effects"]
    # no effect at all: every session's planted logit is the base logit
    p = generate.params_from(conf)
    rng = np.random.default_rng(0)
    lengths, ev, store, *_ = generate.browse_sessions(rng, p.n_stores, 200)
    assert np.all(generate.planted_logit(p, lengths, ev, store) == p.base_logit)


def _ordered_params(**order) -> generate.GenParams:
    """The embedded params with every additive effect 0 and the given order effects (the rest 0)."""
    base = dict(
        pair_first=catalogue.VIEW,
        pair_second=catalogue.CLICK,
        pair_effect=0.0,
        occurrence_type=catalogue.SEARCH,
        first_effect=0.0,
        repeat_effect=0.0,
        last_type=catalogue.HOME,
        last_effect=0.0,
    )
    p = generate.params_from(make_conf("generate.effects=none"))
    return dataclasses.replace(p, order=scenarios.OrderEffects(**{**base, **order}))


def test_order_effects_in_the_planted_logit_by_hand():
    """Each order effect on hand-written sessions: the pair only with a view before a click, the first
    search's effect and each repeat's, the last model-input event (an error event after it is not model
    input), padding anywhere (a session with events removed); the per-event contributions add up."""
    p = _ordered_params(pair_effect=0.9, first_effect=0.7, repeat_effect=-0.4, last_effect=-1.1)
    V, C, S, H, E, X = catalogue.VIEW, catalogue.CLICK, catalogue.SEARCH, catalogue.HOME, catalogue.ERROR, -1
    sessions = {
        (V, C, X, X): 0.9,  # a view before a click
        (C, V, X, X): 0.0,  # only a click before a view
        (C, V, X, C): 0.9,  # padding inside: still a view before a click
        (S, V, S, S): 0.7 - 0.4 - 0.4,  # the first search, two repeats
        (V, V, H, X): -1.1,  # ends on home
        (V, H, E, X): -1.1,  # ends on home: the error event after it is not model input
        (H, V, X, X): 0.0,  # home, but not last
        (S, V, C, H): 0.7 + 0.9 - 1.1,
    }
    ev = np.array(list(sessions), dtype=np.int64)
    store = np.full(ev.shape, -1)
    expected = p.base_logit + np.array(list(sessions.values()))
    np.testing.assert_allclose(generate.planted_logit(p, None, ev, store), expected)
    contributions = generate.event_contributions(p, ev, store)
    np.testing.assert_allclose(p.base_logit + contributions.sum(axis=1), expected)
    assert contributions[0].tolist() == [0.0, 0.9, 0.0, 0.0]  # the pair's effect sits on the click


def test_true_pair_interaction_is_minus_the_pair_effect_on_the_logit_and_zero_elsewhere():
    """With the pair effect the only effect, removing the view or the click or both each takes the pair
    away: R(both) - R(view) - R(click) = -0.9 on the logit in every session with a view before a click;
    (click, view) gets it in the share of its sessions that also have a view before a click; every pair
    with another type is exactly 0 (no other effect, no position weight to move)."""
    p = _ordered_params(pair_effect=0.9)
    truth = planted_truth.true_removal_effects(p, n=3000)
    by_pair = {(a, b): lo for a, b, _, _, lo in truth["pair"]}
    view_click, click_view = (catalogue.VIEW, catalogue.CLICK), (catalogue.CLICK, catalogue.VIEW)
    assert by_pair[view_click] == pytest.approx(-0.9)
    assert -0.9 < by_pair[click_view] < -0.1
    assert all(lo == pytest.approx(0.0, abs=1e-12) for k, lo in by_pair.items() if k not in (view_click, click_view))
    assert len(by_pair) == 20
    pp = {(a, b): v for a, b, _, v, _ in truth["pair"]}
    assert pp[(catalogue.VIEW, catalogue.CLICK)] < 0  # in P(convert) too, smaller


def test_ordered_effects_plant_three_order_effects_on_frequent_distinct_types():
    shares = generate.pair_session_shares(300)
    ranked = np.argsort(-np.where(np.eye(len(shares), dtype=bool), -1, shares), axis=None)[:6]
    frequent = {tuple(int(v) for v in np.unravel_index(i, shares.shape)) for i in ranked}
    for seed in range(1, 8):
        events, stores, order = generate.effects_of("ordered", seed, 300)
        assert (order.pair_first, order.pair_second) in frequent
        assert len(set(order.types)) == 4
        assert order.occurrence_type in generate.OCCURRENCE_CANDIDATES and order.last_type in generate.LAST_CANDIDATES
        assert events[[order.pair_second, order.occurrence_type, order.last_type]].tolist() == [0.0, 0.0, 0.0]
        assert 0.8 <= order.pair_effect <= 1.2 and 0.6 <= order.first_effect <= 0.9
        assert -0.5 <= order.repeat_effect <= -0.3 and -1.2 <= order.last_effect <= -0.8
        assert (stores != 0).sum() == 7
    assert generate.effects_of("ordered", 3, 300)[2] == generate.effects_of("ordered", 3, 300)[2]
    truth = planted_truth.ground_truth(make_conf("generate.effects=ordered", "run.seed=3"))
    o = truth["order_effects"]
    assert (
        o["pair"]["effect"]
        == generate.effects_of("ordered", 3, generate.params_from(make_conf()).n_stores)[2].pair_effect
    )
    occurrence = truth["true_context_effect_log_odds"]["occurrence"][o["occurrence"]["event_type"]]
    assert occurrence["1st"] > 0 > occurrence["2nd"]
    recency = truth["true_context_effect_log_odds"]["recency"][o["recency"]["event_type"]]
    assert recency["last"] < 0 and recency["earlier"] == pytest.approx(0.0)


@pytest.mark.slow
def test_the_null_scenario_on_another_apps_table_says_no_driver_can_be_read(spark, tmp_path):
    """Another app's CSV (renamed events and columns, epoch-ms times, no stores dimension) where conversion
    does not depend on the events: the pipeline runs on the config mapping alone, the model is at chance,
    and the report says so first, in the tables, the insights and the page."""
    from jobs import pipeline

    data, out = tmp_path / "data", tmp_path / "out"
    sets = [
        *scenarios.overrides("renamed", str(data)),
        "generate.effects=none",
        "generate.n_users=1500",
        "generate.n_days=1",
        "generate.n_bot_users=0",
        f"run.output_dir={out}",
        "run.run_id=null-scenario",
        "train.leakage_check=false",
        "train.ensemble_members=1",
        "baseline.enabled=false",
        *small_model_sets(),  # a model at chance is the point, not its size
        "train.epochs=3",
        "attribution.methods=[integrated_gradients]",
        "attribution.ig_steps=8",
        "report.default_method=integrated_gradients",
    ]
    argv = ["--conf", "conf/local.yaml", "--stages", "generate,sessionize,train,attribute,report"]
    for s in sets:
        argv += ["--set", s]
    assert pipeline.main(argv) == 0
    raw = pd.read_csv(next((data / "raw").glob("*.csv")), nrows=50)
    assert {"uid", "install_id", "ts_ms", "action", "merchant_id"} <= set(raw.columns)
    summary = json.loads((out / "sessionize_summary.json").read_text())
    assert summary["sessions"]["kept"] > 1000 and summary["rows"]["quarantined_unparseable_event_ts"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    status = manifest["stages"]["report"]["model_status"]
    assert status["status"] == "at_chance", status
    low, high = status["test_roc_auc_ci"]
    assert low <= 0.5 <= high or status["test_roc_auc"] < 0.55
    report = out / "report"
    types = pd.read_csv(report / "event_type_attribution_no_funnel.csv")
    assert set(types.model_status) == {"at_chance"} and "app_pause" in set(types.event_type)
    from attribution.report import AT_CHANCE_VERDICT

    for stem in ("event_type", "position", "store"):  # no key flagged as a driver or a detractor
        table = pd.read_csv(report / f"{stem}_attribution_no_funnel.csv")
        # every row has a verdict, and it is the at-chance one (an empty table or null verdicts would pass
        # a subset test)
        assert len(table) and table.effect_verdict.notna().all(), stem
        assert set(table.effect_verdict) == {AT_CHANCE_VERDICT}, (stem, set(table.effect_verdict))
    stores = pd.read_csv(report / "store_attribution_no_funnel.csv")
    assert (stores.store_name.astype(str) == stores.store_id.astype(str)).all()  # no dimension: ids
    page = (report / "index.html").read_text()
    assert "<p id=model-status class=warn>THE MODEL PREDICTS NO BETTER THAN CHANCE" in page
