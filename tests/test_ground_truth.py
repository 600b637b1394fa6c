"""Planted-driver recovery on tables whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attribution import ground_truth

EFFECTS = {"click": 0.6, "page": 0.8, "search": 0.3, "view": -0.1, "background": -0.9}
TRUTH = {
    "event_type_effects": EFFECTS,
    "store_effects": {
        str(10000 + i): {"store_name": f"S{i}", "effect": e}
        for i, e in enumerate([0.6, 0.5, 0.45, 0.4, 0.35, -0.3, -0.4, 0.2])
    },
}


def _tables(contribution: dict, lift: dict, adjusted_by_bin: list[float], method="m", signed=True):
    et = pd.DataFrame(
        {
            "method": method,
            "event_type": list(contribution),
            "attribution_lift": [lift[e] for e in contribution],
            "contribution_converted": [contribution[e] if signed else np.nan for e in contribution],
            "contribution_not_converted": [contribution[e] if signed else np.nan for e in contribution],
            "events_converted": 10,
            "events_not_converted": 30,
        }
    )
    pos = pd.DataFrame(
        {
            "method": method,
            "position_bin": ["1-5", "6-10", "11-20", "21-50", "50+"],
            "length_adjusted_converted": adjusted_by_bin,
            "length_adjusted_not_converted": adjusted_by_bin,
            "events_converted": 5,
            "events_not_converted": 5,
        }
    )
    return {"event_type": et, "position": pos}


def _stores(order: list[int], method="m"):
    """Store scores: the stores in ``order`` get decreasing effects."""
    return pd.DataFrame(
        {
            "method": method,
            "store_id": [10000 + i for i in order],
            "store_name": [f"S{i}" for i in order],
            "effect": np.linspace(1, 0, len(order)),
            "events": 200,
        }
    )


def _checks(table):
    df = table.to_pandas()
    return {(r.method, r.check): r for r in df.itertuples()}


def test_a_method_that_orders_everything_right():
    contribution = {e: 0.1 * v for e, v in EFFECTS.items()}
    t = ground_truth.recovery(
        _tables(contribution, contribution, [2.0, 1.5, 1.0, 0.8, 0.5]), _stores([0, 1, 2, 3, 4, 7, 5, 6]), TRUTH
    )
    c = _checks(t)
    assert c[("m", "event_type_contribution_spearman")].value == pytest.approx(1.0)
    assert c[("m", "event_type_lift_spearman")].value == pytest.approx(1.0)
    assert c[("m", "store_precision_at_5")].value == 1.0
    assert c[("m", "position_direction_spearman")].value == pytest.approx(-1.0)
    assert all(r.agrees for r in c.values())
    s = ground_truth.summary(t, "m")
    assert s["default_method_passes"] and s["default_method_rank_correlation"] == pytest.approx(1.0)


def test_a_method_that_orders_everything_wrong():
    contribution = {e: -v for e, v in EFFECTS.items()}
    t = ground_truth.recovery(
        _tables(contribution, contribution, [0.5, 0.8, 1.0, 1.5, 2.0], signed=False),
        _stores([5, 6, 7, 0, 1, 2, 3, 4]),
        TRUTH,
    )
    c = _checks(t)
    assert ("m", "event_type_contribution_spearman") not in c  # no signed contribution: no such check
    assert c[("m", "event_type_lift_spearman")].value == pytest.approx(-1.0)
    assert c[("m", "store_precision_at_5")].value == pytest.approx(2 / 5)  # S0 and S1 in its top 5
    assert c[("m", "position_direction_spearman")].value == pytest.approx(1.0)
    assert not any(r.agrees for r in c.values())
    assert not ground_truth.summary(t, "m")["default_method_passes"]


def test_event_types_with_a_discovery_feature_are_compared_by_event_name():
    # "click - Carousel" and "click - Search": weighted into one "click"; an unknown type is ignored
    et = _tables({e: 0.1 * v for e, v in EFFECTS.items()}, dict.fromkeys(EFFECTS, 0.0), [1, 1, 1, 1, 1])
    rows = et["event_type"]
    click = rows[rows.event_type == "click"].iloc[0]
    extra = pd.DataFrame([click, click, click]).assign(
        event_type=["click - Carousel", "click - Search", "m_unknown"],
        contribution_converted=[0.2, -0.1, 5.0],
        contribution_not_converted=[0.2, -0.1, 5.0],
        events_converted=[10, 30, 10],
        events_not_converted=[30, 90, 10],
    )
    et["event_type"] = pd.concat([rows[rows.event_type != "click"], extra], ignore_index=True)
    # click's mean = (0.2 * 40 - 0.1 * 120) / 160 = -0.025: between view (-0.01) and background (-0.09)
    t = ground_truth.recovery(et, _stores([0, 1, 2, 3, 4]), TRUTH)
    row = _checks(t)[("m", "event_type_contribution_spearman")]
    assert row.compared == 5
    from scipy.stats import spearmanr

    ours = [-0.025, 0.08, 0.03, -0.01, -0.09]  # click, page, search, view, background
    assert row.value == pytest.approx(spearmanr(ours, [0.6, 0.8, 0.3, -0.1, -0.9]).statistic)


def test_store_scores_are_beyond_the_event_type_and_position_cell(spark):
    """Store A's events are all page loads (a high-scoring type), store B's all views: by the raw mean A
    wins, but within each cell B scores above its cell's average and A below."""
    rows = []
    for _ in range(4):
        rows.append(("m", "page", "1-5", 1000, "A", 1.0, None))  # page cell: A 1.0, C 1.4
        rows.append(("m", "page", "1-5", 1002, "C", 1.4, None))
        rows.append(("m", "view", "1-5", 1001, "B", 0.2, None))  # view cell: B 0.2, C 0.0
        rows.append(("m", "view", "1-5", 1002, "C", 0.0, None))
    long = spark.createDataFrame(
        rows,
        "method string, event_type string, position_bin string, store_id long, store_name string, "
        "attribution double, contribution double",
    )
    got = ground_truth.store_scores(long, min_events=4).set_index("store_name")
    # cell means: page 1.2, view 0.1 -> A -0.2, B +0.1, C: (0.2 * 4 - 0.1 * 4) / 8 = +0.05
    assert got.loc["A", "effect"] == pytest.approx(-0.2)
    assert got.loc["B", "effect"] == pytest.approx(0.1)
    assert got.loc["C", "effect"] == pytest.approx(0.05)
    assert set(ground_truth.store_scores(long, min_events=5).store_name) == {"C"}  # support filter


def test_the_ground_truth_of_other_data_gives_no_rows():
    other = {e + "_x": v for e, v in EFFECTS.items()}
    t = ground_truth.recovery(_tables(other, other, [1, 1, 1, 1, 1]), _stores([0, 1, 2]), TRUTH)
    assert t.num_rows == 0 and "check" in t.column_names
