"""The synthetic clickstream: deterministic, realistic in shape, with known planted effects."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pandas.testing import assert_frame_equal

from attribution import catalogue
from attribution import generate as G
from attribution.stages import generate as generate_stage
from tests.conftest import make_conf


def small_conf(tmp_path, *extra):
    return make_conf(
        "generate.n_users=600",
        "generate.n_days=2",
        "generate.n_bot_users=1",
        "generate.bot_events_per_day=3000",
        "generate.dirty_fraction=0.01",
        f"generate.output_path={tmp_path}/raw",
        f"generate.stores_path={tmp_path}/stores",
        f"generate.ground_truth_path={tmp_path}/truth.json",
        *extra,
    )


def test_same_seed_same_data_whatever_the_partitioning(spark, tmp_path):
    a = G.generate_events(spark, small_conf(tmp_path, "generate.partitions=1")).toPandas()
    b = G.generate_events(spark, small_conf(tmp_path, "generate.partitions=3")).toPandas()
    key = ["user_id", "device_id", "event_timestamp", "event_name", "store_id", "event_rank", "planted_dirty_kind"]
    a = a.sort_values(key, na_position="first").reset_index(drop=True)
    b = b.sort_values(key, na_position="first").reset_index(drop=True)
    assert_frame_equal(a, b)
    c = G.generate_events(spark, small_conf(tmp_path, "run.seed=8")).toPandas()
    assert len(c) != len(a) or not c["event_timestamp"].equals(a["event_timestamp"])


def test_block_is_a_pure_function_of_seed_and_block():
    p = G.params_from(make_conf("generate.n_users=300"))
    assert_frame_equal(G.generate_block(p, 1), G.generate_block(p, 1))
    assert not G.generate_block(p, 0)["event_timestamp"].equals(G.generate_block(p, 1)["event_timestamp"])


def _sessions_of(df: pd.DataFrame) -> pd.DataFrame:
    clean = df[df.planted_dirty_kind.isna()].copy()
    clean["ts"] = pd.to_datetime(clean.event_timestamp)
    clean = clean.sort_values(["user_id", "device_id", "ts"])
    new = clean.groupby(["user_id", "device_id"]).ts.diff().dt.total_seconds().fillna(1e9) > 1800
    clean["sid"] = new.cumsum()
    return clean


def test_shape_of_the_app_traffic():
    p = G.params_from(make_conf("generate.n_users=2000", "generate.n_bot_users=0"))
    df = pd.concat([G.generate_block(p, b) for b in range(p.n_blocks)])
    s = _sessions_of(df)
    per_session = s.groupby("sid")
    lengths = per_session.size()
    converted = per_session.event_name.apply(lambda e: "action_place_order" in set(e))
    assert 0.08 < converted.mean() < 0.30  # a realistic conversion rate
    assert lengths.max() > 100 and lengths.median() < 30  # heavy tail: some sessions over 100 events
    assert s.groupby("user_id").device_id.nunique().max() >= 2  # users with several devices
    per_user_day = s.assign(day=s.ts.dt.date).groupby(["user_id", "day"]).sid.nunique()
    assert per_user_day.max() >= 3  # several sessions a day
    names = set(df.event_name.dropna())
    assert {
        "m_card_view",
        "m_card_click",
        "store_page_load",
        "m_search_query",
        "m_select_tab",
        "m_app_background",
        "m_app_foreground",
        "action_place_order",
        "cart_page_load",
    } <= names
    assert {"Core Search", "Traditional Carousel", "Home Feed"} <= set(df.discovery_feature.dropna())


def test_bots_are_heavy():
    p = G.params_from(make_conf("generate.n_users=10", "generate.n_bot_users=1", "generate.bot_events_per_day=30000"))
    bot = G.generate_block(p, p.n_user_blocks)
    bot = bot[bot.planted_dirty_kind.isna()]
    per_day = bot.groupby(bot.event_timestamp.str.slice(0, 10)).size()
    assert (per_day >= 24000).all() and "action_place_order" not in set(bot.event_name)


def test_planted_effects_move_conversion_as_declared():
    """Sessions whose first events include a click or store page load convert more; backgrounding less."""
    p = G.params_from(make_conf("generate.n_users=4000", "generate.n_bot_users=0", "generate.dirty_fraction=0"))
    s = _sessions_of(pd.concat([G.generate_block(p, b) for b in range(p.n_blocks)]))
    first5 = s.groupby("sid").head(5).groupby("sid").event_name.apply(set)
    converted = s.groupby("sid").event_name.apply(lambda e: "action_place_order" in set(e))

    def rate(event, present):
        mask = first5.apply(lambda e: event in e) == present
        return converted[mask].mean()

    assert rate("store_page_load", True) > rate("store_page_load", False) + 0.03
    assert rate("m_app_background", True) < rate("m_app_background", False) - 0.03


def test_planted_logit_is_the_documented_formula():
    p = G.params_from(make_conf())
    ev = np.array([[catalogue.CLICK, catalogue.PAGE, catalogue.VIEW, -1, -1, -1, -1]])
    store = np.array([[0, 0, 3, -1, -1, -1, -1]])  # McDonald's is store index 0
    mcd = catalogue.NAMED_STORE_EFFECTS["McDonald's"]
    expected = (
        p.base_logit
        + catalogue.EVENT_EFFECTS["m_card_click"]
        + mcd
        + catalogue.EVENT_EFFECTS["store_page_load"]
        + mcd
        + catalogue.EVENT_EFFECTS["m_card_view"]
    )
    assert np.isclose(G.planted_logit(p, np.array([3]), ev, store)[0], expected)
    late = np.full((1, 12), -1)
    late[0, 10] = catalogue.CLICK  # position 11: weight of bucket 11-20
    assert np.isclose(
        G.planted_logit(p, np.array([11]), late, np.full((1, 12), -1))[0],
        p.base_logit + catalogue.EVENT_EFFECTS["m_card_click"] * catalogue.POSITION_WEIGHTS["11-20"],
    )


def test_run_writes_data_stores_and_ground_truth(spark, tmp_path):
    conf = small_conf(tmp_path)
    counts = generate_stage.run(spark, conf)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["event_type_effects"]["m_app_background"] < 0 < truth["event_type_effects"]["m_card_click"]
    assert truth["store_effects"]["10000"] == {"store_name": "McDonald's", "effect": 0.6}
    assert truth["position_weights"]["1-5"] > truth["position_weights"]["50+"]
    raw = spark.read.parquet(f"{tmp_path}/raw")
    assert raw.count() == counts.rows == truth["rows"]
    assert set(truth["planted_dirty_rows"]) == set(G.DIRTY_KINDS) and all(
        v > 0 for v in truth["planted_dirty_rows"].values()
    )
    stores = spark.read.parquet(f"{tmp_path}/stores").toPandas()
    assert stores.store_id.is_unique and len(stores) == conf.generate.n_stores
    assert stores.loc[stores.store_name == "Safeway", "is_new_vertical"].item()


def test_local_config_knows_exactly_the_generators_catalogue():
    from pathlib import Path

    conf = make_conf(path=str(Path(__file__).resolve().parent.parent / "conf" / "local.yaml"))
    assert sorted(conf.events.known_events) == sorted(catalogue.BROWSE_EVENTS)
    assert tuple(conf.events.funnel_events) == catalogue.FUNNEL_EVENTS
