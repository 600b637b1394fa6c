"""The second scenario family (another app's table, mapped by config alone) and the null scenario."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from attribution import generate, scenarios
from tests.conftest import make_conf


def test_random_effects_are_drawn_from_the_seed_within_the_stated_bounds():
    events, stores = scenarios.random_effects(3, generate.N_BROWSE, 400, zero=(generate.ERROR,))
    again = scenarios.random_effects(3, generate.N_BROWSE, 400, zero=(generate.ERROR,))
    assert np.array_equal(events, again[0]) and np.array_equal(stores, again[1])
    assert not np.array_equal(events, scenarios.random_effects(4, generate.N_BROWSE, 400)[0])
    assert events[generate.ERROR] == 0.0 and np.all(np.abs(events) <= 0.9)
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
        events, stores = scenarios.spread_effects(seed, generate.N_BROWSE, 400, zero=(generate.ERROR,))
        assert np.array_equal(events, scenarios.random_effects(seed, generate.N_BROWSE, 400, zero=(generate.ERROR,))[0])
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
    truth = generate.ground_truth(conf)
    assert set(truth["event_type_effects"].values()) == {0.0} and truth["store_effects"] == {}
    assert "app_pause" in truth["event_type_effects"] and "m_app_background" not in truth["event_type_effects"]
    # no effect at all: every session's planted logit is the base logit
    p = generate.params_from(conf)
    rng = np.random.default_rng(0)
    lengths, ev, store, *_ = generate._browse_sessions(rng, p, 200)
    assert np.all(generate._planted_logit(p, lengths, ev, store) == p.base_logit)


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
        "generate.n_users=3000",
        "generate.n_days=1",
        "generate.n_bot_users=0",
        f"run.output_dir={out}",
        "run.run_id=null-scenario",
        "train.leakage_check=false",
        "train.ensemble_members=1",
        "baseline.enabled=false",
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
