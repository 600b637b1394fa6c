"""The report's tables in Spark SQL (attribution/aggregate.py) against hand-computed expectations on the
hand-written event table of tests/helpers.py (``events``)."""

from __future__ import annotations

import math
from html import escape

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from attribution import aggregate, removal_tables, schema, statistics
from tests.helpers import EVENT_ROWS, row_of, tables_of


def test_event_type_lift_with_session_clustered_ci(events):
    table = tables_of(events)["event_type"]
    a = row_of(table, event_type="A")
    # converted: s1 contributes (n=1, s=0.6), s2 (n=2, s=0.5): mean 1.1/3
    m = 1.1 / 3
    assert a.converted == pytest.approx(m) and a.not_converted == pytest.approx(0.1)
    assert a.attribution_lift == pytest.approx(m - 0.1)
    assert a.events_converted == 3 and a.sessions_converted == 2 and a.sessions_not_converted == 1
    # one non-converted session: no variance there, so no CI
    assert math.isnan(a.lift_se) and pd.isna(a.significant)
    assert a.contribution_converted == pytest.approx((0.30 + 0.10 + 0.05) / 3)
    assert a.length_adjusted_converted == pytest.approx((0.6 * 2 + 0.2 * 3 + 0.3 * 3) / 3)
    b = row_of(table, event_type="B")
    # B: converted s1 (0.4), s2 (0.5); not converted s3 (0.9), s4 (1.0): one event per session
    var_bc = 2 * ((0.4 - 0.45) ** 2 + (0.5 - 0.45) ** 2) / 4
    var_bn = 2 * ((0.9 - 0.95) ** 2 + (1.0 - 0.95) ** 2) / 4
    se = math.sqrt(var_bc + var_bn)
    assert b.attribution_lift == pytest.approx(-0.5)
    assert b.lift_se == pytest.approx(se)
    assert b.lift_ci_low == pytest.approx(-0.5 - 1.959963984540054 * se)
    assert bool(b.significant) is True  # -0.5 +/- 0.139 excludes 0
    # ordered by the effect (B +0.2375 above A +0.11; by the original analysis's lift A would come first)
    assert list(table.event_type) == ["B", "A"]


def _clustered_mean_and_se(per_session: list[tuple[float, int]]) -> tuple[float, float]:
    """sum(x)/sum(n) over sessions and its cluster-robust SE, written out session by session."""
    x = np.array([v for v, _ in per_session])
    n = np.array([k for _, k in per_session], float)
    m = x.sum() / n.sum()
    g = len(x)
    return m, math.sqrt(g / (g - 1) * ((x - m * n) ** 2).sum() / n.sum() ** 2)


def test_the_effect_is_the_mean_signed_contribution_with_a_session_clustered_ci(events):
    table = tables_of(events)["event_type"]
    a = row_of(table, event_type="A")
    # A's contributions by session, both labels: s1 0.30 (1 event), s2 0.10 + 0.05 (2), s3 -0.01 (1)
    m, se = _clustered_mean_and_se([(0.30, 1), (0.15, 2), (-0.01, 1)])
    assert a.effect_log_odds == pytest.approx(0.44 / 4) == pytest.approx(m)
    assert a.effect_se == pytest.approx(se)
    assert a.effect_ci_low == pytest.approx(m - 1.959963984540054 * se)
    assert a.effect_verdict == "indistinguishable from noise"  # 0.11 +/- 0.14
    assert a.events == 4 and a.sessions == 3
    assert a.mean_abs_effect_log_odds == pytest.approx((0.30 + 0.10 + 0.05 + 0.01) / 4)
    b = row_of(table, event_type="B")
    m, se = _clustered_mean_and_se([(-0.20, 1), (0.25, 1), (0.40, 1), (0.50, 1)])
    assert b.effect_log_odds == pytest.approx(m) and b.effect_se == pytest.approx(se)
    # m 0.2375, se 0.155: the CI [-0.066, +0.541] crosses 0
    assert m - 1.959963984540054 * se < 0 < m + 1.959963984540054 * se
    assert b.effect_verdict == "indistinguishable from noise"
    # a method without a signed contribution has no effect, and keeps the original analysis's lift order
    from pyspark.sql import functions as F

    att = tables_of(events.withColumn("attention_attribution", F.when(F.col("event_type") == "A", 0.9).otherwise(0.1)))
    rows = att["event_type"][att["event_type"].method == "attention"]
    assert rows.effect_log_odds.isna().all() and list(rows.event_type) == ["A", "B"]


def test_store_effect_is_beyond_its_events_type_and_position_and_ranked_by_the_shrunk_value(spark):
    """Store A's events are all page loads (a high-contribution type), store B's all views: by the raw
    mean A wins, but within each (type, position bin) cell B is above its cell's average and A below."""
    rows = []
    for i in range(4):
        rows.append((f"a{i}", 1, 0, "page", "A", 1.0))  # page cell: A 1.0, C 1.4 -> mean 1.2
        rows.append((f"c{i}", 0, 0, "page", "C", 1.4))
        rows.append((f"b{i}", 1, 0, "view", "B", 0.2 + 0.01 * i))  # view cell: B 0.215, C 0.0 -> 0.1075
        rows.append((f"d{i}", 0, 0, "view", "C", 0.0))
    df = spark.createDataFrame(
        rows,
        "session_id string, label int, event_position int, event_type string, store_id string, contribution double",
    )
    from pyspark.sql import functions as F

    events = (
        df.withColumn("gradient_attribution", F.lit(0.5))
        .withColumn("session_length", F.lit(1))
        .withColumn("position_bin", F.lit("1-5"))
        .withColumn("store_name", F.when(F.col("store_id") != "C", F.col("store_id")))  # C has no name
    )
    table = tables_of(events, min_events=4)["store"].set_index("store_id")
    view_cell = (0.2 + 0.21 + 0.22 + 0.23) / 8
    assert table.loc["A", "net_effect_log_odds"] == pytest.approx(-0.2)
    assert table.loc["B", "net_effect_log_odds"] == pytest.approx(0.215 - view_cell)
    assert table.loc["C", "net_effect_log_odds"] == pytest.approx((0.2 * 4 - view_cell * 4) / 8)
    assert table.loc["C", "store_name"] == "C"  # no name in the stores dimension: its id
    # A: four sessions of exactly -0.2 (no spread): SE 0; B's values spread by 0.01
    assert table.loc["A", "net_effect_se"] == pytest.approx(0.0, abs=1e-12)
    m, se = _clustered_mean_and_se([(0.2 + 0.01 * i - view_cell, 1) for i in range(4)])
    assert table.loc["B", "net_effect_se"] == pytest.approx(se)
    # the shrunk value: effect x tau2 / (tau2 + se^2 + b / sessions), with b where the stores' median
    # effect^2 / (se^2 + b / sessions) is the chi-square(1) median (found here by scipy's root finder) and
    # tau2 the mean positive part of effect^2 - that noise
    from scipy.optimize import brentq
    from scipy.stats import chi2

    e, se_, n = (table[c].to_numpy(float) for c in ("net_effect_log_odds", "net_effect_se", "sessions"))
    target = chi2.ppf(0.5, 1)
    b = brentq(lambda b: float(np.median(e * e / (se_ * se_ + b / n))) - target, 1e-12, 100.0)
    noise = se_ * se_ + b / n
    tau2 = float(np.mean(np.maximum(e * e - noise, 0.0)))
    assert tau2 > 0
    assert table.shrunk_net_effect_log_odds.to_numpy(float) == pytest.approx(e * tau2 / (tau2 + noise))
    ordered = tables_of(events, min_events=4)["store"]
    by_shrunk = sorted(table.index, key=lambda k: (-table.loc[k, "shrunk_net_effect_log_odds"], k))
    assert list(ordered.store_id) == by_shrunk and list(ordered["rank"]) == [1, 2, 3]
    # by the net effect alone (no shrinkage) B leads and A, all page loads, comes last
    assert sorted(table.index, key=lambda k: -table.loc[k, "net_effect_log_odds"]) == ["B", "C", "A"]
    # support: C has 8 sessions, A and B 4 each
    assert list(tables_of(events, min_events=4, min_sessions=5)["store"].store_id) == ["C"]


def test_position_table_keeps_the_bin_order_and_position_zero(events):
    table = tables_of(events)["position"]
    assert list(table.position_bin) == ["1-5"]  # positions 0..2 are all in 1-5
    assert table.events_converted.iloc[0] + table.events_not_converted.iloc[0] == len(EVENT_ROWS)


def test_store_table_support_and_rank(events):
    table = tables_of(events, min_events=2)["store"]
    # x: 0.6, 0.2, 1.0 (3 events, 3 sessions); y: 0.3, 0.1 (2 events)
    assert list(table.store_id) == ["x", "y"] and list(table["rank"]) == [1, 2]
    assert table.mean_attribution.tolist() == pytest.approx([1.8 / 3, 0.2])
    assert table.events.tolist() == [3, 2] and table.sessions.tolist() == [3, 2]
    assert list(tables_of(events, min_events=3)["store"].store_id) == ["x"]


def test_type_position_heatmap_cells(events):
    table = tables_of(events, max_position=2)["type_position"]
    cells = {(r.event_type, r.position): (r.mean_attribution, r.events) for r in table.itertuples()}
    # 1-based positions 1 and 2 only; position 1: A in s1 (0.6), s2 (0.2), s3 (0.1); B in s4 (1.0)
    assert set(cells) == {("A", 1), ("A", 2), ("B", 1), ("B", 2)}
    assert cells[("A", 1)] == (pytest.approx(0.3), 3) and cells[("B", 1)] == (pytest.approx(1.0), 1)
    assert cells[("A", 2)] == (pytest.approx(0.3), 1) and cells[("B", 2)] == (pytest.approx(0.65), 2)


def test_lift_stats_in_spark_holds_every_table_and_ranks_restart_per_method(spark, events):
    from chispa import assert_df_equality
    from pyspark.sql import functions as F

    stats = aggregate.lift_stats(aggregate.long_format(events), max_position=2)
    got = stats.where("kind = 'position'").select(
        "method", "position_bin", "event_count", "sessions", "events_converted", "events_not_converted"
    )
    # s1 (2 events) and s2 (3) converted, s3 (2) and s4 (1) not: all in bin 1-5
    expected = spark.createDataFrame([("grad_x_input", "1-5", 8, 4, 5, 3)], got.schema)
    assert_df_equality(got, expected, ignore_nullable=True)
    assert sorted(r.kind for r in stats.select("kind").distinct().collect()) == sorted(aggregate.KINDS)
    # heatmap cells: means and events, no session counts (sessions are not kept for them)
    cell = stats.where("kind = 'type_position' AND event_type = 'B' AND position = 2").first()
    assert cell.mean_attribution == pytest.approx(0.65) and cell.event_count == 2 and cell.sessions is None
    # with a second method reversing the store order, each method ranks its own stores from 1
    both = events.withColumn("attention_attribution", F.when(F.col("store_id") == "y", 0.9).otherwise(0.1))
    store = tables_of(both, min_events=2)["store"]
    assert store[store.method == "grad_x_input"].store_id.tolist() == ["x", "y"]
    assert store[store.method == "attention"].store_id.tolist() == ["y", "x"]
    assert store["rank"].tolist() == [1, 2, 1, 2]


def test_every_method_present_gets_its_rows(events):
    from pyspark.sql import functions as F

    both = events.withColumn("attention_attribution", F.lit(0.5))
    table = tables_of(both)["event_type"]
    assert sorted(set(table.method)) == ["attention", "grad_x_input"]
    att = table[(table.method == "attention") & (table.event_type == "A")].iloc[0]
    assert att.converted == pytest.approx(0.5) and math.isnan(att.contribution_converted)


def _with_event_columns(df):
    """The event table's other columns around hand-written removal rows: the position bin, the store's
    name (its id), two-event sessions with a fixed attribution, one run."""
    from pyspark.sql import functions as F

    from attribution.events import position_bin

    return (
        df.withColumn("position_bin", position_bin(F.col("event_position") + 1))
        .withColumn("store_name", F.col("store_id"))
        .withColumn("session_length", F.lit(2))
        .withColumn("gradient_attribution", F.lit(0.5))
        .withColumn("contribution", F.lit(0.1))
        .withColumn("run_id", F.lit("r1"))
    )


def test_removal_columns_by_hand(spark):
    """One value per (session, key) whatever its event count; the mean, the independent-sessions CI, the
    relative lift and the attributable conversions computed by hand; keys outside the sample are null."""
    rows = [
        # session, label, position, type, store, prediction, removal type / position / store
        ("s1", 1, 0, "A", "x", 0.6, 0.10, 0.30, 0.05),
        ("s1", 1, 1, "A", None, 0.6, 0.10, 0.30, None),  # A counted once for s1
        ("s2", 0, 0, "A", "x", 0.4, 0.30, 0.20, 0.01),
        ("s2", 0, 1, "B", None, 0.4, -0.10, 0.20, None),
        ("s3", 0, 0, "A", "y", 0.2, None, None, None),  # not in the sample
        ("s3", 0, 1, "C", None, 0.2, None, None, None),
    ]
    df = spark.createDataFrame(
        rows,
        "session_id string, label int, event_position int, event_type string, store_id string, prediction double, "
        "removal_effect_type double, removal_effect_position double, removal_effect_store double",
    )
    events = _with_event_columns(df)
    removal = removal_tables.removal_stats(events)
    out = {k: t.to_pandas() for k, t in aggregate.tables(aggregate.long_format(events), 1, removal=removal).items()}
    a = row_of(out["event_type"], event_type="A")
    d = np.array([0.10, 0.30])
    se = d.std(ddof=1) / math.sqrt(2)
    assert a.removal_sessions == 2 and a.sessions == 3
    assert a.removal_effect_pp == pytest.approx(100 * d.mean())
    assert a.removal_ci_low_pp == pytest.approx(100 * (d.mean() - statistics.Z95 * se))
    assert a.removal_ci_high_pp == pytest.approx(100 * (d.mean() + statistics.Z95 * se))
    assert a.removal_relative_lift == pytest.approx(d.mean() / np.mean([0.6 - 0.10, 0.4 - 0.30]))
    assert a.attributable_conversions == pytest.approx(d.mean() * 3)
    b = row_of(out["event_type"], event_type="B")
    assert b.removal_effect_pp == pytest.approx(-10.0) and b.removal_sessions == 1 and pd.isna(b.removal_ci_low_pp)
    assert pd.isna(row_of(out["event_type"], event_type="C").removal_effect_pp)  # no sampled session has it
    pos = row_of(out["position"], position_bin="1-5")
    assert pos.removal_effect_pp == pytest.approx(25.0) and pos.removal_sessions == 2
    x = row_of(out["store"], store_id="x")
    assert x.removal_effect_pp == pytest.approx(3.0) and x.removal_sessions == 2
    assert pd.isna(row_of(out["store"], store_id="y").removal_effect_pp)


def test_removal_ci_counts_the_ensemble_members_spread_by_hand(spark):
    """Three members' removal effects for key A in three sessions: the published value is the mean of the
    per-session ensemble means; the sampling SE is theirs over sessions, the model SE the spread of the
    members' means / sqrt(3), and the CI's half-width the root of the sum of 1.96 x the first squared and
    Student's t (2 degrees of freedom: 4.302653) x the second squared. One member (key B) has no model SE
    and a CI of sampling alone."""
    from pyspark.sql import functions as F

    members = {"s1": [0.10, 0.20, 0.60], "s2": [0.00, 0.10, 0.20], "s3": [0.30, 0.10, 0.50]}
    rows = []
    for s, m in members.items():
        rows.append((s, 1, 0, "A", 0.5, float(np.mean(m)), m, float(np.mean(m)), m))
        rows.append((s, 1, 1, "A", 0.5, float(np.mean(m)), m, float(np.mean(m)), m))  # one value per session
    rows += [("s4", 0, 0, "B", 0.4, 0.05, [0.05], 0.05, [0.05]), ("s5", 0, 0, "B", 0.4, 0.15, [0.15], 0.15, [0.15])]
    df = spark.createDataFrame(
        rows,
        "session_id string, label int, event_position int, event_type string, prediction double, "
        "removal_effect_type double, removal_effect_type_members array<double>, "
        "removal_effect_position double, removal_effect_position_members array<double>",
    )
    events = _with_event_columns(df.withColumn("store_id", F.lit(None).cast("string")))
    removal = removal_tables.removal_stats(events)
    out = aggregate.tables(aggregate.long_format(events), 1, removal=removal)["event_type"].to_pandas()
    a = row_of(out, event_type="A")
    m = np.array(list(members.values()))  # sessions x members
    per_session, per_member = m.mean(axis=1), m.mean(axis=0)
    se_sampling = per_session.std(ddof=1) / math.sqrt(3)
    se_model = per_member.std(ddof=1) / math.sqrt(3)
    half = math.hypot(1.959964 * se_sampling, 4.302653 * se_model)
    assert a.removal_models == 3 and a.removal_sessions == 3
    assert a.removal_effect_pp == pytest.approx(100 * per_session.mean())
    assert a.removal_sampling_se_pp == pytest.approx(100 * se_sampling)
    assert a.removal_model_se_pp == pytest.approx(100 * se_model)
    assert a.removal_ci_low_pp == pytest.approx(100 * (per_session.mean() - half), abs=1e-4)
    assert a.removal_ci_high_pp == pytest.approx(100 * (per_session.mean() + half), abs=1e-4)
    # the combined interval is wider than either part's alone
    assert half > 1.959964 * se_sampling and half > 4.302653 * se_model
    b = row_of(out, event_type="B")
    assert b.removal_models == 1 and pd.isna(b.removal_model_se_pp)
    se_b = np.std([0.05, 0.15], ddof=1) / math.sqrt(2)
    assert b.removal_ci_high_pp == pytest.approx(100 * (0.10 + statistics.Z95 * se_b))


def test_the_three_verdicts_through_the_tables_the_insights_and_the_page(spark):
    """One type whose every event pushes up (+0.4 or +0.6), one whose every event pushes down, one that
    alternates +0.5 / -0.5: their CIs lie above 0, below 0, and across it, so the verdicts are known
    without the code: drives, holds back, noise. They must reach the insights and the page the same way."""
    from pyspark.sql import functions as F

    from attribution import page, report_text
    from attribution.events import position_bin

    rows = []
    for i in range(12):
        label = i % 2
        for pos, (kind, c) in enumerate(
            [("up", 0.4 + 0.2 * (i % 2)), ("down", -0.4 - 0.2 * (i % 2)), ("noise", 0.5 if i % 2 else -0.5)]
        ):
            rows.append((f"s{i}", label, pos, kind, None, 3, 1 / 3, c))
    df = spark.createDataFrame(
        rows,
        "session_id string, label int, event_position int, event_type string, store_id string, "
        "session_length int, gradient_attribution double, contribution double",
    )
    events = df.withColumn("position_bin", position_bin(F.col("event_position") + 1)).withColumn(
        "store_name", F.col("store_id")
    )
    table = tables_of(events)["event_type"]
    verdicts = dict(zip(table.event_type, table.effect_verdict, strict=True))
    assert verdicts == {"up": aggregate.DRIVES, "down": aggregate.HOLDS_BACK, "noise": aggregate.NOISE}
    assert list(table.event_type) == ["up", "noise", "down"]  # by effect: +0.5, 0, -0.5
    tables = tables_of(events)
    insights = report_text.key_insights(tables, "grad_x_input")
    drivers = insights.split("Drivers (CI above 0)", 1)[1].split("Detractors", 1)[0]
    detractors = insights.split("Detractors (CI below 0)", 1)[1]
    assert "up" in drivers and "down" not in drivers and "noise" not in drivers
    assert "down" in detractors.splitlines()[1] and "Indistinguishable from noise: noise" in insights
    status = {"status": "ok", "test_roc_auc": 0.8, "test_roc_auc_ci": [0.78, 0.82], "test_sessions": 12}
    html = page.render(tables, "grad_x_input", status, None, b"", "r").decode()
    first = lambda div: html.split(f"<div id={div}>", 1)[1].split("<td class=event-type>", 1)[1].split("</td>")[0]  # noqa: E731
    assert first("drivers") == "up" and first("detractors") == "down"
    # counted as N of M: one of the three types drives conversion, one holds it back
    heading = lambda key: html.split(f"<h2 id={key}-count>", 1)[1].split("</h2>", 1)[0]  # noqa: E731
    assert heading("drivers") == "Top drivers: 1 of 3 event types drive conversion"
    assert heading("detractors") == "Top detractors: 1 of 3 event types hold it back"
    assert escape(page.CAUSATION_CAVEAT) in html and "id=scope" not in html  # no scope given, none shown
    assert "id=calibration" not in html  # no mean prediction in the status, no calibration line
    calibrated = {**status, "test_mean_prediction": 0.182, "test_positive_rate": 0.157}
    html = page.render(tables, "grad_x_input", calibrated, None, b"", "r").decode()
    line = html.split("<li id=calibration>", 1)[1].split("</li>", 1)[0]
    assert "is 0.182 against a conversion rate of 0.157: the predictions run 2.5 percentage points high" in line


def test_the_context_tables_against_a_pandas_reference(spark):
    """Occurrence, previous step and recency, computed by pandas from the same events: each (type, context)
    row's effect, CI, events and sessions, the type's overall effect beside it, and the contexts' order."""
    from pyspark.sql import functions as F

    from attribution.events import position_bin

    rng = np.random.default_rng(4)
    rows = []
    for i in range(80):
        length = int(rng.integers(1, 8))
        for pos, t in enumerate(rng.choice(["a", "b", "c"], size=length)):
            c = float(np.round(rng.normal(0.2 if t == "a" else -0.1, 0.3), 3))
            rows.append((f"s{i:02d}", i % 2, pos, str(t), None, length, 1 / length, c))
    columns = "session_id string, label int, event_position int, event_type string, store_id string, session_length int, gradient_attribution double, contribution double"
    df = spark.createDataFrame(rows, columns)
    # two methods: each event is in the long format twice, which must not count as its own predecessor
    events = (
        df.withColumn("position_bin", position_bin(F.col("event_position") + 1))
        .withColumn("store_name", F.col("store_id"))
        .withColumn("attention_attribution", F.col("gradient_attribution"))
    )
    tables = {k: t[t.method == "grad_x_input"] for k, t in tables_of(events).items() if "method" in t}
    pdf = pd.DataFrame(rows, columns=[c.split()[0] for c in columns.split(", ")])
    pdf = pdf.sort_values(["session_id", "event_position"])
    nth = pdf.groupby(["session_id", "event_type"]).cumcount() + 1
    pdf["occurrence"] = np.select([nth == 1, nth == 2], ["1st", "2nd"], "3rd+")
    pdf["previous_event_type"] = pdf.groupby("session_id").event_type.shift(1).fillna("<start>")
    from_end = pdf.session_length - pdf.event_position - 1
    pdf["recency"] = np.select([from_end == 0, from_end <= 2], ["last", "2-3 from the end"], "earlier")
    overall = pdf.groupby("event_type").contribution.mean()
    for kind, column in (("occurrence", "occurrence"), ("context", "previous_event_type"), ("recency", "recency")):
        table = tables[kind]
        groups = pdf.groupby(["event_type", column])
        assert len(table) == groups.ngroups
        for (t, key), g in groups:
            row = row_of(table, event_type=t, **{column: key})
            per_session = [(x.contribution.sum(), len(x)) for _, x in g.groupby("session_id")]
            assert row.events == len(g) and row.sessions == len(per_session)
            assert row.effect_log_odds == pytest.approx(g.contribution.mean())
            assert row.type_effect_log_odds == pytest.approx(overall[t])
            if len(per_session) > 1:
                _, se = _clustered_mean_and_se(per_session)
                assert row.effect_se == pytest.approx(se)
    occurrence = tables["occurrence"]
    assert list(occurrence[occurrence.event_type == "a"].occurrence) == ["1st", "2nd", "3rd+"]
    recency = tables["recency"]
    assert list(recency[recency.event_type == "b"].recency) == ["last", "2-3 from the end", "earlier"]
    context = tables["context"]
    sessions = list(context[context.event_type == "c"].sessions)
    assert sessions == sorted(sessions, reverse=True)  # contexts by support
    # the support filter: a context seen in fewer sessions than asked is left out
    few = tables_of(events, context_min_sessions=20)["context"]
    few = few[few.method == "grad_x_input"]
    assert len(few) == (context.sessions >= 20).sum() < len(context) and (few.sessions >= 20).all()


def test_pair_table_by_hand(spark):
    """Pair interactions on each session's first event, two members each: the table's mean, both SEs and
    the two-part CI on each scale by hand, the verdict from the logit's CI (three pairs whose CIs lie
    below 0, above 0 and across it), the rank by |interaction_log_odds|, the support floor, and nothing
    read from a later event's copy."""
    from pyspark.sql import functions as F

    pair = "struct<first_event_type:string,second_event_type:string,interaction:double,interaction_log_odds:double,interaction_members:array<double>,interaction_log_odds_members:array<double>>"
    # (first, second) -> per session: the two members' (probability, log-odds) interactions
    values = {
        ("A", "B"): [
            [(-0.02, -0.30), (-0.04, -0.32)],
            [(-0.03, -0.35), (-0.03, -0.37)],
            [(-0.01, -0.40), (-0.02, -0.41)],
        ],
        ("B", "A"): [[(0.01, 0.20), (0.02, 0.21)], [(0.02, 0.22), (0.01, 0.21)], [(0.01, 0.21), (0.02, 0.22)]],
        ("A", "C"): [[(0.01, 0.30), (0.00, -0.20)], [(-0.01, -0.25), (0.01, 0.20)], [(0.00, 0.05), (0.00, -0.10)]],
        ("C", "B"): [[(0.05, 0.90), (0.05, 0.90)]],  # one session: below the floor of 2
    }
    sessions: dict[str, list] = {}
    for (a, b), per_session in values.items():
        for i, members in enumerate(per_session):
            prob, lo = [m[0] for m in members], [m[1] for m in members]
            entry = (a, b, float(np.mean(prob)), float(np.mean(lo)), prob, lo)
            sessions.setdefault(f"s{i}", []).append(entry)
    rows = []
    for s, entries in sessions.items():
        rows.append((s, 1, 0, "A", 0.5, 0.1, [0.1, 0.1], entries))
        rows.append((s, 1, 1, "B", 0.5, 0.1, [0.1, 0.1], entries))  # a later event: must not count again
    df = spark.createDataFrame(
        rows,
        "session_id string, label int, event_position int, event_type string, prediction double, "
        f"removal_effect_type double, removal_effect_type_members array<double>, removal_pair_interactions array<{pair}>",
    )
    events = _with_event_columns(df.withColumn("store_id", F.lit(None).cast("string"))).withColumn(
        "removal_pair_interactions",
        F.when(F.col("event_position") == 0, F.col("removal_pair_interactions")),
    )
    removal = removal_tables.removal_stats(events)
    table = removal_tables.pair_table(removal, min_sessions=2).to_pandas()
    assert list(zip(table.first_event_type, table.second_event_type, strict=True)) == [
        ("A", "B"),
        ("B", "A"),
        ("A", "C"),
    ]
    assert table["rank"].tolist() == [1, 2, 3]
    t2 = 12.706205  # Student's t, 1 degree of freedom (two members)
    for (a, b), verdict in (
        (("A", "B"), removal_tables.WORK_TOGETHER),
        (("B", "A"), removal_tables.STAND_IN),
        (("A", "C"), removal_tables.PAIR_NOISE),
    ):
        got = table[(table.first_event_type == a) & (table.second_event_type == b)].iloc[0]
        m = np.array(values[(a, b)])  # sessions x members x (probability, log-odds)
        for scale, column, unit in ((1, "interaction_log_odds", 1.0), (0, "interaction_pp", 100.0)):
            per_session, per_member = m[:, :, scale].mean(axis=1), m[:, :, scale].mean(axis=0)
            se_s = per_session.std(ddof=1) / math.sqrt(3)
            se_m = per_member.std(ddof=1) / math.sqrt(2)
            half = math.hypot(1.959964 * se_s, t2 * se_m)
            suffix = "" if unit == 1.0 else "_pp"
            assert got[column] == pytest.approx(unit * per_session.mean()), (a, b, column)
            assert got[f"interaction_ci_low{suffix}"] == pytest.approx(unit * (per_session.mean() - half), abs=1e-5)
            assert got[f"interaction_ci_high{suffix}"] == pytest.approx(unit * (per_session.mean() + half), abs=1e-5)
            if unit == 1.0:
                assert got.interaction_sampling_se == pytest.approx(se_s)
                assert got.interaction_model_se == pytest.approx(se_m)
        assert got.interaction_verdict == verdict, (a, b)
        assert got.sessions == 3 and got.interaction_models == 2
    # what a person reads: the two flagged pairs, with their verdicts, in the insights and on the page
    from attribution import page, report_text

    lines = "\n".join(report_text.pair_lines(table))
    html = "".join(page._pairs(table))
    for a, b, verdict in (("A", "B", removal_tables.WORK_TOGETHER), ("B", "A", removal_tables.STAND_IN)):
        assert f"{a} -> {b}: {verdict}" in lines
        assert f"<b>{a}</b> then <b>{b}</b> {verdict}" in html
    assert "A -> C" not in lines and "<b>C</b>" not in html
    assert report_text.PAIR_CAVEAT in lines and "id=pair-caveat" in html  # flagged pairs come with the caveat
    quiet = table[table.interaction_verdict == removal_tables.PAIR_NOISE]
    assert "No pair interacts" in "\n".join(report_text.pair_lines(quiet)) and "No pair interacts" in "".join(
        page._pairs(quiet)
    )
    # report.pair_min_interaction: a verdict needs the CI beyond that size. At 0.2, A -> B's CI (about
    # [-0.48, -0.24]) still lies below -0.2; B -> A's (about [+0.19, +0.23]) lies above 0 but not above
    # 0.2, so it is read as no interaction
    margin = removal_tables.pair_table(removal, min_sessions=2, min_interaction=0.2).to_pandas()
    pairs = zip(margin.first_event_type, margin.second_event_type, strict=True)
    verdicts = dict(zip(pairs, margin.interaction_verdict, strict=True))
    by_hand = {
        (r.first_event_type, r.second_event_type): removal_tables.WORK_TOGETHER
        if r.interaction_ci_high < -0.2
        else removal_tables.STAND_IN
        if r.interaction_ci_low > 0.2
        else removal_tables.PAIR_NOISE
        for r in table.itertuples()
    }
    assert verdicts == by_hand
    assert verdicts == {
        ("A", "B"): removal_tables.WORK_TOGETHER,
        ("B", "A"): removal_tables.PAIR_NOISE,
        ("A", "C"): removal_tables.PAIR_NOISE,
    }
    assert margin.drop(columns="interaction_verdict").equals(table.drop(columns="interaction_verdict"))
    # report.pair_needs_better_model: the verdicts stand only where the transformer beats the counts
    # baseline; otherwise every pair reads as noise, for that reason, and nothing else in the table moves
    from attribution import baseline
    from attribution.report import NO_ORDER_EVIDENCE_VERDICT, gate_pairs

    arrow = {"pair": pa.Table.from_pandas(table, preserve_index=False)}
    for verdict, status, kept in (
        (baseline.BEATS, "ok", True),
        (baseline.NO_BETTER, "ok", False),
        (baseline.WORSE, "ok", False),
        (None, "ok", False),  # no comparison could be made (a split without both labels)
        (baseline.NO_BETTER, "at_chance", True),  # the model at chance: its own verdict stands
    ):
        gated = gate_pairs(arrow, {"verdict": verdict}, status)["pair"].to_pandas()
        expected = table.interaction_verdict if kept else [NO_ORDER_EVIDENCE_VERDICT] * len(table)
        assert gated.interaction_verdict.tolist() == list(expected), (verdict, status)
        assert gated.drop(columns="interaction_verdict").equals(table.drop(columns="interaction_verdict"))
        if not kept:
            assert report_text.flagged_pairs(gated).empty
            assert report_text.PAIRS_GATED in "\n".join(report_text.pair_lines(gated))
            assert escape(report_text.PAIRS_GATED) in "".join(page._pairs(gated))
    assert gate_pairs(arrow, None, "ok") is arrow  # no baseline, no comparison: no gate


def _baseline_logit(types, stores, summary):
    """The counts baseline's logit of one session, recomputed here from its definition: the intercept, and
    per event its type's and its store's coefficient and its position bin's (positions 1, 2, ...)."""
    c = summary["coefficients"]
    bins = [
        schema.POSITION_BINS[int(np.searchsorted(schema.POSITION_BIN_UPPER, p, side="left"))]
        for p in range(1, len(types) + 1)
    ]
    return summary["intercept"] + sum(
        c["event_type"].get(t, 0.0) + (c["store"].get(s, 0.0) if s else 0.0) + c["position_bin"].get(b, 0.0)
        for t, s, b in zip(types, stores, bins, strict=True)
    )


def test_the_counts_baselines_removal_effects_by_brute_force(spark):
    """With the counts baseline's summary, every removal row also gets the baseline's removal effect of the
    key: its P(convert) minus its P(convert) on the session rebuilt without the key's events (the rest
    moved up to positions 1, 2, ...), mean over the sampled sessions. Recomputed here session by session
    from the coefficients, with sessions long enough that removal moves events across position bins, a
    type without a coefficient and events without a store. The model-choice SE is the distance between
    the two removal effects and the CI holds the baseline's."""
    from pyspark.sql import functions as F

    summary = {
        "intercept": -1.0,
        "coefficients": {
            "event_type": {"A": 0.4, "B": -0.3},  # C has no feature: 0
            "store": {"x": 0.2, "y": -0.5},
            "position_bin": {"1-5": 0.1, "6-10": -0.2, "11-20": 0.05, "21-50": 0.3},
        },
    }
    rng = np.random.default_rng(3)
    sessions = {
        f"s{i}": (list(rng.choice(["A", "B", "C"], n)), list(rng.choice(["x", "y", None], n)))
        for i, n in enumerate((3, 7, 12, 6, 23))
    }
    rows = []
    for sid, (types, stores) in sessions.items():
        for pos, (t, s) in enumerate(zip(types, stores, strict=True)):
            # the model's removal effects are placeholders here: every session is sampled
            rows.append((sid, 1, pos, t, s, 0.5, 0.01, 0.01, 0.01 if s else None, len(types)))
    df = spark.createDataFrame(
        rows,
        "session_id string, label int, event_position int, event_type string, store_id string, prediction double, "
        "removal_effect_type double, removal_effect_position double, removal_effect_store double, n int",
    )
    events = _with_event_columns(df).withColumn("session_length", F.col("n")).drop("n")
    removal = removal_tables.removal_stats(events, summary)
    out = {k: t.to_pandas() for k, t in aggregate.tables(aggregate.long_format(events), 1, removal=removal).items()}

    def sigmoid(z):
        return 1.0 / (1.0 + math.exp(-z))

    def brute(removed):
        drops = []
        for types, stores in sessions.values():
            gone = [removed(i, t, s) for i, (t, s) in enumerate(zip(types, stores, strict=True))]
            if not any(gone):
                continue
            kept = [(t, s) for (t, s), g in zip(zip(types, stores, strict=True), gone, strict=True) if not g]
            full = _baseline_logit(types, stores, summary)
            without = _baseline_logit([t for t, _ in kept], [s for _, s in kept], summary)
            drops.append(sigmoid(full) - sigmoid(without))
        return 100 * np.mean(drops)

    def bin_of(i):
        return schema.POSITION_BINS[int(np.searchsorted(schema.POSITION_BIN_UPPER, i + 1, side="left"))]

    for t in ("A", "B", "C"):
        row = row_of(out["event_type"], event_type=t)
        assert row.removal_baseline_pp == pytest.approx(brute(lambda i, u, s, t=t: u == t), abs=1e-9)
        assert row.removal_choice_se_pp == pytest.approx(abs(row.removal_effect_pp - row.removal_baseline_pp))
        assert row.removal_ci_low_pp < row.removal_baseline_pp < row.removal_ci_high_pp
    for b in ("1-5", "6-10", "11-20", "21-50"):
        row = row_of(out["position"], position_bin=b)
        assert row.removal_baseline_pp == pytest.approx(brute(lambda i, u, s, b=b: bin_of(i) == b), abs=1e-9)
    for s in ("x", "y"):
        row = row_of(out["store"], store_id=s)
        assert row.removal_baseline_pp == pytest.approx(brute(lambda i, u, v, s=s: v == s), abs=1e-9)
    # without the baseline: no baseline column values, no choice part
    plain = aggregate.tables(aggregate.long_format(events), 1, removal=removal_tables.removal_stats(events))
    a = row_of(plain["event_type"].to_pandas(), event_type="A")
    assert pd.isna(a.removal_baseline_pp) and pd.isna(a.removal_choice_se_pp)


def test_the_blended_removal_effects_by_hand(spark):
    """With a blend weight w in the baseline's summary, the published removal effect is that of the model
    w x transformer + (1 - w) x baseline: per session w x d + (1 - w) x the baseline's removal effect
    (recomputed here from the coefficients), the sampling SE their spread over sessions, the model SE w x
    the transformer members' (the baseline has no members), the relative lift over the blend's P(convert)
    without the key, and beside it the transformer's own effect and the choice SE as the distance between
    the two models' effects, not the blend's distance to the baseline."""
    from pyspark.sql import functions as F

    w = 0.3
    summary = {
        "intercept": -0.5,
        "coefficients": {"event_type": {"A": 0.8, "B": -0.4}},
        "blend": {"transformer_weight": w},
    }
    sessions = {  # types in order, the model's P(convert), its members' removal effects of A
        "s1": (["A", "B", "A"], 0.7, [0.20, 0.30]),
        "s2": (["B", "A"], 0.4, [0.05, 0.15]),
        "s3": (["A"], 0.6, [0.40, 0.20]),
        "s4": (["B", "B"], 0.2, None),  # no A
    }
    rows = []
    for sid, (types, p, m) in sessions.items():
        for pos, t in enumerate(types):
            d = None if m is None else float(np.mean(m))
            rows.append((sid, 1, pos, t, p, d if m is not None else 0.0, m or [0.0, 0.0]))
    df = spark.createDataFrame(
        rows,
        "session_id string, label int, event_position int, event_type string, prediction double, "
        "removal_effect_type double, removal_effect_type_members array<double>",
    )
    events = _with_event_columns(df.withColumn("store_id", F.lit(None).cast("string")))
    blended = aggregate.tables(aggregate.long_format(events), 1, removal=removal_tables.removal_stats(events, summary))
    alone = aggregate.tables(
        aggregate.long_format(events), 1, removal=removal_tables.removal_stats(events, {**summary, "blend": None})
    )
    a = row_of(blended["event_type"].to_pandas(), event_type="A")
    own = row_of(alone["event_type"].to_pandas(), event_type="A")

    def p_baseline(types):
        return 1 / (
            1 + math.exp(-(summary["intercept"] + sum(summary["coefficients"]["event_type"][t] for t in types)))
        )

    with_a = [s for s, (types, _, _) in sessions.items() if "A" in types]
    d_t = np.array([np.mean(sessions[s][2]) for s in with_a])
    d_b = np.array([p_baseline(sessions[s][0]) - p_baseline([t for t in sessions[s][0] if t != "A"]) for s in with_a])
    p_t = np.array([sessions[s][1] for s in with_a])
    p_b = np.array([p_baseline(sessions[s][0]) for s in with_a])
    d = w * d_t + (1 - w) * d_b
    members = np.array([sessions[s][2] for s in with_a]).mean(axis=0)  # each member's mean over sessions
    assert a.removal_effect_pp == pytest.approx(100 * d.mean())
    assert a.removal_transformer_pp == pytest.approx(100 * d_t.mean())
    assert a.removal_baseline_pp == pytest.approx(100 * d_b.mean())
    assert a.removal_sampling_se_pp == pytest.approx(100 * d.std(ddof=1) / math.sqrt(3))
    assert a.removal_model_se_pp == pytest.approx(100 * w * members.std(ddof=1) / math.sqrt(2))
    assert a.removal_choice_se_pp == pytest.approx(100 * abs(d_t.mean() - d_b.mean()))
    p = w * p_t + (1 - w) * p_b
    assert a.removal_relative_lift == pytest.approx(d.mean() / np.mean(p - d))
    # the transformer alone: the same baseline column, the transformer's effect published
    assert own.removal_effect_pp == pytest.approx(100 * d_t.mean()) == pytest.approx(own.removal_transformer_pp)
    assert own.removal_choice_se_pp == pytest.approx(a.removal_choice_se_pp)
