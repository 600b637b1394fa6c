"""Planted-driver recovery scored on published tables whose answer is known by construction."""

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


def _tables(effect: dict, lift: dict, by_bin: list[float], method="m", signed=True, stores=(0, 1, 2, 3, 4)):
    """The published tables of one method: event types with their effect and lift, position bins with
    their mean |effect| (signed) or length-adjusted attribution, and the store table ranked as ``stores``."""
    et = pd.DataFrame(
        {
            "method": method,
            "event_type": list(effect),
            "effect_log_odds": [effect[e] if signed else np.nan for e in effect],
            "attribution_lift": [lift[e] for e in effect],
            "events": 40,
        }
    )
    pos = pd.DataFrame(
        {
            "method": method,
            "position_bin": ["1-5", "6-10", "11-20", "21-50", "50+"],
            "mean_abs_effect_log_odds": by_bin if signed else np.nan,
            "length_adjusted_converted": by_bin,
            "length_adjusted_not_converted": by_bin,
            "events_converted": 5,
            "events_not_converted": 5,
        }
    )
    store = pd.DataFrame(
        {
            "method": method,
            "rank": range(1, len(stores) + 1),
            "store_id": [10000 + i for i in stores],
            "store_name": [f"S{i}" for i in stores],
        }
    )
    return {"event_type": et, "position": pos, "store": store}


def _checks(table):
    df = table.to_pandas()
    return {(r.method, r.check): r for r in df.itertuples()}


def test_a_method_that_orders_everything_right():
    contribution = {e: 0.1 * v for e, v in EFFECTS.items()}
    t = ground_truth.recovery(
        _tables(contribution, contribution, [2.0, 1.5, 1.0, 0.8, 0.5], stores=[0, 1, 2, 3, 4, 7, 5, 6]), TRUTH
    )
    c = _checks(t)
    assert c[("m", "event_type_effect_spearman")].value == pytest.approx(1.0)
    assert c[("m", "event_type_lift_spearman")].value == pytest.approx(1.0)
    assert c[("m", "store_precision_at_5")].value == 1.0
    assert c[("m", "position_direction_spearman")].value == pytest.approx(-1.0)
    assert all(r.agrees for r in c.values())
    s = ground_truth.summary(t, "m")
    assert s["default_method_passes"] and s["default_method_rank_correlation"] == pytest.approx(1.0)


def test_a_method_that_orders_everything_wrong():
    contribution = {e: -v for e, v in EFFECTS.items()}
    t = ground_truth.recovery(
        _tables(contribution, contribution, [0.5, 0.8, 1.0, 1.5, 2.0], signed=False, stores=[5, 6, 7, 0, 1, 2, 3, 4]),
        TRUTH,
    )
    c = _checks(t)
    assert ("m", "event_type_effect_spearman") not in c  # no signed contribution: no such check
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
        effect_log_odds=[0.2, -0.1, 5.0],
        events=[40, 120, 20],
    )
    et["event_type"] = pd.concat([rows[rows.event_type != "click"], extra], ignore_index=True)
    # click's mean = (0.2 * 40 - 0.1 * 120) / 160 = -0.025: between view (-0.01) and background (-0.09)
    t = ground_truth.recovery(et, TRUTH)
    row = _checks(t)[("m", "event_type_effect_spearman")]
    assert row.compared == 5
    from scipy.stats import spearmanr

    ours = [-0.025, 0.08, 0.03, -0.01, -0.09]  # click, page, search, view, background
    assert row.value == pytest.approx(spearmanr(ours, [0.6, 0.8, 0.3, -0.1, -0.9]).statistic)


def test_the_store_check_reads_the_published_top_5():
    # the table's top 5 rows are S0, S5, S1, S6, S2: three of the planted top 5 (S0..S4)
    t = ground_truth.recovery(
        _tables(dict(EFFECTS), dict(EFFECTS), [1, 1, 1, 1, 1], stores=[0, 5, 1, 6, 2, 3, 4]), TRUTH
    )
    row = _checks(t)[("m", "store_precision_at_5")]
    assert (
        row.value == pytest.approx(3 / 5) and row.agrees and row.detail.startswith("table's top 5: S0, S5, S1, S6, S2")
    )


def test_the_ground_truth_of_other_data_gives_no_rows():
    other = {e + "_x": v for e, v in EFFECTS.items()}
    t = ground_truth.recovery(_tables(other, other, [1, 1, 1, 1, 1], stores=[0, 1, 2]), TRUTH)
    assert t.num_rows == 0 and "check" in t.column_names


def test_removal_order_is_scored_against_the_true_removal_effect():
    """The removal column ranked as the planted removal effects scores 1; reversed, -1; an event type split
    by discovery feature is left out of the comparison."""
    true_removal = {"click": 9.0, "page": 13.0, "search": 4.0, "view": -3.0, "background": -8.0}
    truth = {**TRUTH, "true_removal_effect_pp": {"event_type": true_removal}}
    for order, expected in ((1, 1.0), (-1, -1.0)):
        t = _tables(dict(EFFECTS), dict(EFFECTS), [1, 1, 1, 1, 1])
        et = t["event_type"]
        et["removal_effect_pp"] = [order * true_removal[e] for e in et["event_type"]]
        split = et.iloc[[0]].assign(event_type="click - Carousel", removal_effect_pp=-100.0 * order)
        t["event_type"] = pd.concat([et, split], ignore_index=True)
        c = _checks(ground_truth.recovery(t, truth))
        row = c[("m", "event_type_removal_spearman")]
        assert row.value == pytest.approx(expected) and row.compared == 5


def test_the_effect_order_is_also_scored_against_the_true_removal_effect():
    """The same effect column, against the other truth: the true removal effects ordered differently from
    the per-occurrence effects (page and click swap, so do view and search) score the effect order by
    the removal truth's ranks, computed here with scipy."""
    from scipy.stats import spearmanr

    true_removal = {"click": 13.0, "page": 9.0, "search": -3.0, "view": 4.0, "background": -8.0}
    truth = {**TRUTH, "true_removal_effect_pp": {"event_type": true_removal}}
    t = _tables(dict(EFFECTS), dict(EFFECTS), [1, 1, 1, 1, 1])
    c = _checks(ground_truth.recovery(t, truth))
    row = c[("m", "event_type_effect_vs_removal_spearman")]
    names = list(true_removal)
    want = spearmanr([EFFECTS[n] for n in names], [true_removal[n] for n in names]).statistic
    assert row.value == pytest.approx(want) and row.compared == 5 and want < 1
    assert c[("m", "event_type_effect_spearman")].value == pytest.approx(1.0)
    # without the removal truth (an older ground truth file) there is no such row
    assert ("m", "event_type_effect_vs_removal_spearman") not in _checks(ground_truth.recovery(t, TRUTH))


def test_removal_coverage_mae_and_sign_errors_by_hand():
    """Five event types and five position bins with published removal effects and CIs against planted
    ones: which CIs hold the truth, the mean absolute error and the sign errors are counted by hand."""
    true_types = {"click": 9.0, "page": 13.0, "search": 4.0, "view": -3.0, "background": -0.5}
    true_bins = {"1-5": 2.0, "6-10": 2.0, "11-20": 2.5, "21-50": 2.5, "50+": 1.7}
    truth = {**TRUTH, "true_removal_effect_pp": {"event_type": true_types, "position_bin": true_bins}}
    t = _tables(EFFECTS, EFFECTS, [0.5, 0.4, 0.3, 0.2, 0.1])
    # click: covered; page: 12 [11, 12.5] misses 13; search: covered; view: +1.0 [0.5, 1.5], a sign error
    # (|-3| >= 1); background: +0.2 [0.1, 0.3] misses -0.5 but is no sign error (|-0.5| < 1)
    t["event_type"]["removal_effect_pp"] = [8.5, 12.0, 4.2, 1.0, 0.2]
    t["event_type"]["removal_ci_low_pp"] = [8.0, 11.0, 3.5, 0.5, 0.1]
    t["event_type"]["removal_ci_high_pp"] = [9.5, 12.5, 5.0, 1.5, 0.3]
    # bins: all covered but 50+ (1.0 [0.8, 1.2] vs 1.7)
    t["position"]["removal_effect_pp"] = [2.1, 1.9, 2.5, 2.6, 1.0]
    t["position"]["removal_ci_low_pp"] = [1.5, 1.5, 2.0, 2.0, 0.8]
    t["position"]["removal_ci_high_pp"] = [2.5, 2.5, 3.0, 3.0, 1.2]
    c = _checks(ground_truth.recovery(t, truth))
    types = c[("m", "removal_ci_coverage_event_type")]
    assert types.value == pytest.approx(2 / 5) and types.compared == 5 and not types.agrees
    assert "page +12.00 [+11.00, +12.50] vs +13.00" in types.detail and "click" not in types.detail
    bins = c[("m", "removal_ci_coverage_position_bin")]
    assert bins.value == pytest.approx(4 / 5) and bins.agrees and "50+" in bins.detail
    errors = [0.5, 1.0, 0.2, 4.0, 0.7, 0.1, 0.1, 0.0, 0.1, 0.7]
    mae = c[("m", "removal_mae_pp")]
    assert mae.value == pytest.approx(np.mean(errors)) and mae.compared == 10
    assert mae.agrees == (np.mean(errors) <= 0.75) and mae.detail == ""
    signs = c[("m", "removal_sign_errors")]
    assert signs.value == 1 and not signs.agrees and signs.detail == "view +1.00 [+0.50, +1.50] vs -3.00"
    # view's CI excludes 0: the page states a direction, the wrong one
    wrong = c[("m", "removal_wrong_directions")]
    assert wrong.value == 1 and not wrong.agrees and wrong.compared == 10
    # with a CI that holds 0 the same sign error reads "can't tell": still a sign error, no wrong direction
    t["event_type"]["removal_ci_low_pp"] = [8.0, 11.0, 3.5, -0.5, 0.1]
    widened = _checks(ground_truth.recovery(t, truth))
    assert widened[("m", "removal_sign_errors")].value == 1
    assert widened[("m", "removal_wrong_directions")].value == 0 and widened[("m", "removal_wrong_directions")].agrees
    t["event_type"]["removal_ci_low_pp"] = [8.0, 11.0, 3.5, 0.5, 0.1]
    # a blend: the two models' own effects beside it, their errors in the MAE row's detail
    t["event_type"]["removal_transformer_pp"] = [9.0, 13.0, 4.0, -3.0, 0.5]  # errors 0, 0, 0, 0, 1
    t["position"]["removal_transformer_pp"] = [2.0, 2.0, 2.5, 2.5, 1.7]  # errors 0
    t["event_type"]["removal_baseline_pp"] = [11.0, 15.0, 6.0, -1.0, 1.5]  # errors 2
    t["position"]["removal_baseline_pp"] = [4.0, 4.0, 4.5, 4.5, 3.7]
    blended = _checks(ground_truth.recovery(t, truth))[("m", "removal_mae_pp")]
    assert blended.value == pytest.approx(np.mean(errors))
    assert blended.detail == "the transformer alone 0.10 pp; the counts baseline alone 2.00 pp"


def _pairs(rows):
    """A pair table: (first, second, interaction_log_odds, verdict), ranked in the order given."""
    return pd.DataFrame(
        {
            "rank": range(1, len(rows) + 1),
            "first_event_type": [r[0] for r in rows],
            "second_event_type": [r[1] for r in rows],
            "interaction_log_odds": [r[2] for r in rows],
            "interaction_verdict": [r[3] for r in rows],
        }
    )


def _context(kind, column, rows):
    """A context table of method m: (event type, context, effect, CI low, CI high)."""
    return pd.DataFrame(
        {
            "method": "m",
            "event_type": [r[0] for r in rows],
            column: [r[1] for r in rows],
            "effect_log_odds": [r[2] for r in rows],
            "effect_ci_low": [r[3] for r in rows],
            "effect_ci_high": [r[4] for r in rows],
        }
    )


def test_pair_and_order_checks_by_hand():
    """The planted pair ranked 2nd with "work together"; of the three pairs whose planted interaction is
    under 0.1 one is flagged (1/3 invented); one flagged pair has the other sign than a real interaction;
    the occurrence type's 1st row lies above its 2nd, the last-step type's last row does not lie below its
    earlier one (overlapping CIs)."""
    truth = {
        **TRUTH,
        "true_pair_interaction": [
            {"first_event_type": "view", "second_event_type": "page", "interaction_log_odds": -0.9},
            {"first_event_type": "page", "second_event_type": "view", "interaction_log_odds": -0.4},
            {"first_event_type": "click", "second_event_type": "page", "interaction_log_odds": 0.05},
            {"first_event_type": "view", "second_event_type": "click", "interaction_log_odds": -0.02},
            {"first_event_type": "search", "second_event_type": "view", "interaction_log_odds": 0.0},
        ],
        "order_effects": {
            "pair": {"first_event_type": "view", "second_event_type": "page", "effect": 0.9},
            "occurrence": {"event_type": "search", "first_effect": 0.7, "repeat_effect": -0.4},
            "recency": {"event_type": "view", "last_effect": -1.0},
        },
    }
    tables = _tables(EFFECTS, EFFECTS, [0.5, 0.4, 0.3, 0.2, 0.1])
    tables["pair"] = _pairs(
        [
            ("page", "view", +0.5, "stand in for each other"),  # real (-0.4), flagged the other way
            ("view", "page", -0.6, "work together"),  # the planted pair
            ("click", "page", 0.3, "stand in for each other"),  # invented
            ("view", "click", 0.01, "indistinguishable from noise"),
            ("search", "view", -0.01, "indistinguishable from noise"),
        ]
    )
    tables["occurrence"] = _context(
        "occurrence", "occurrence", [("search", "1st", 0.2, 0.15, 0.25), ("search", "2nd", -0.1, -0.2, 0.0)]
    )
    tables["recency"] = _context(
        "recency", "recency", [("view", "last", -0.2, -0.3, -0.1), ("view", "earlier", -0.15, -0.2, -0.1)]
    )
    checks = _checks(ground_truth.recovery(tables, truth))
    invented = checks[("m", "pairs_flagged_without_interaction")]
    assert invented.value == pytest.approx(1 / 3) and not invented.agrees and invented.compared == 3
    assert "click → page" in invented.detail
    signs = checks[("m", "pair_sign_errors")]
    assert signs.value == 1 and not signs.agrees and signs.compared == 2
    rank = checks[("m", "pair_planted_rank")]
    assert rank.value == 2 and rank.agrees
    occurrence = checks[("m", "occurrence_planted_direction")]
    assert occurrence.value == pytest.approx(0.3) and occurrence.agrees
    recency = checks[("m", "recency_planted_direction")]
    assert recency.value == pytest.approx(0.05) and not recency.agrees  # -0.1 is not below -0.2
    # the planted pair flagged the wrong way is not found, whatever its rank
    tables["pair"].loc[1, "interaction_verdict"] = "stand in for each other"
    assert not _checks(ground_truth.recovery(tables, truth))[("m", "pair_planted_rank")].agrees
