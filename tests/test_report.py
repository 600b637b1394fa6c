"""Lift tables against hand-computed expectations, the sinks' round trips, idempotent reruns, the picture."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from attribution import aggregate, figures, report, report_text, statistics
from attribution.stages import explain as explain_stage
from attribution.stages import report as report_stage
from tests.conftest import make_conf

# Four sessions, hand-written. Event type A appears in s1 (converted), s2 (converted, twice), s3 (not).
EVENTS = [
    # session, label, position, type, store, length, gradient_attribution, contribution
    ("s1", 1, 0, "A", "x", 2, 0.6, 0.30),
    ("s1", 1, 1, "B", None, 2, 0.4, -0.20),
    ("s2", 1, 0, "A", "x", 3, 0.2, 0.10),
    ("s2", 1, 1, "A", "y", 3, 0.3, 0.05),
    ("s2", 1, 2, "B", None, 3, 0.5, 0.25),
    ("s3", 0, 0, "A", "y", 2, 0.1, -0.01),
    ("s3", 0, 1, "B", None, 2, 0.9, 0.40),
    ("s4", 0, 0, "B", "x", 1, 1.0, 0.50),
]


@pytest.fixture(scope="module")
def events(spark):
    from pyspark.sql import functions as F

    from attribution.events import position_bin

    df = spark.createDataFrame(
        EVENTS,
        "session_id string, label int, event_position int, event_type string, store_id string, "
        "session_length int, gradient_attribution double, contribution double",
    )
    return (
        df.withColumn("position_bin", position_bin(F.col("event_position") + 1))
        .withColumn("store_name", F.col("store_id"))
        .withColumn("run_id", F.lit("r1"))
    )


def _tables(events, **kw) -> dict[str, pd.DataFrame]:
    return {k: t.to_pandas() for k, t in aggregate.tables(aggregate.long_format(events), **kw).items()}


def _row(pdf, **keys):
    for k, v in keys.items():
        pdf = pdf[pdf[k] == v]
    assert len(pdf) == 1, pdf
    return pdf.iloc[0]


def test_event_type_lift_with_session_clustered_ci(events):
    table = _tables(events)["event_type"]
    a = _row(table, event_type="A")
    # converted: s1 contributes (n=1, s=0.6), s2 (n=2, s=0.5): mean 1.1/3
    m = 1.1 / 3
    assert a.converted == pytest.approx(m) and a.not_converted == pytest.approx(0.1)
    assert a.attribution_lift == pytest.approx(m - 0.1)
    assert a.events_converted == 3 and a.sessions_converted == 2 and a.sessions_not_converted == 1
    # one non-converted session: no variance there, so no CI
    assert math.isnan(a.lift_se) and pd.isna(a.significant)
    assert a.contribution_converted == pytest.approx((0.30 + 0.10 + 0.05) / 3)
    assert a.length_adjusted_converted == pytest.approx((0.6 * 2 + 0.2 * 3 + 0.3 * 3) / 3)
    b = _row(table, event_type="B")
    # B: converted s1 (0.4), s2 (0.5); not converted s3 (0.9), s4 (1.0): one event per session
    var_bc = 2 * ((0.4 - 0.45) ** 2 + (0.5 - 0.45) ** 2) / 4
    var_bn = 2 * ((0.9 - 0.95) ** 2 + (1.0 - 0.95) ** 2) / 4
    se = math.sqrt(var_bc + var_bn)
    assert b.attribution_lift == pytest.approx(-0.5)
    assert b.lift_se == pytest.approx(se)
    assert b.lift_ci_low == pytest.approx(-0.5 - 1.959963984540054 * se)
    assert bool(b.significant) is True  # -0.5 +/- 0.139 excludes 0
    # ordered by the effect (B +0.2375 above A +0.11; by the seed's lift A would come first)
    assert list(table.event_type) == ["B", "A"]


def _clustered_mean_and_se(per_session: list[tuple[float, int]]) -> tuple[float, float]:
    """sum(x)/sum(n) over sessions and its cluster-robust SE, written out session by session."""
    x = np.array([v for v, _ in per_session])
    n = np.array([k for _, k in per_session], float)
    m = x.sum() / n.sum()
    g = len(x)
    return m, math.sqrt(g / (g - 1) * ((x - m * n) ** 2).sum() / n.sum() ** 2)


def test_the_effect_is_the_mean_signed_contribution_with_a_session_clustered_ci(events):
    table = _tables(events)["event_type"]
    a = _row(table, event_type="A")
    # A's contributions by session, both labels: s1 0.30 (1 event), s2 0.10 + 0.05 (2), s3 -0.01 (1)
    m, se = _clustered_mean_and_se([(0.30, 1), (0.15, 2), (-0.01, 1)])
    assert a.effect_log_odds == pytest.approx(0.44 / 4) == pytest.approx(m)
    assert a.effect_se == pytest.approx(se)
    assert a.effect_ci_low == pytest.approx(m - 1.959963984540054 * se)
    assert a.effect_verdict == "indistinguishable from noise"  # 0.11 +/- 0.14
    assert a.events == 4 and a.sessions == 3
    assert a.mean_abs_effect_log_odds == pytest.approx((0.30 + 0.10 + 0.05 + 0.01) / 4)
    b = _row(table, event_type="B")
    m, se = _clustered_mean_and_se([(-0.20, 1), (0.25, 1), (0.40, 1), (0.50, 1)])
    assert b.effect_log_odds == pytest.approx(m) and b.effect_se == pytest.approx(se)
    assert (b.effect_verdict == "drives conversion") == (m - 1.959963984540054 * se > 0)
    # a method without a signed contribution has no effect, and keeps the seed's lift order
    from pyspark.sql import functions as F

    att = _tables(events.withColumn("attention_attribution", F.when(F.col("event_type") == "A", 0.9).otherwise(0.1)))
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
    table = _tables(events, min_events=4)["store"].set_index("store_id")
    view_cell = (0.2 + 0.21 + 0.22 + 0.23) / 8
    assert table.loc["A", "net_effect_log_odds"] == pytest.approx(-0.2)
    assert table.loc["B", "net_effect_log_odds"] == pytest.approx(0.215 - view_cell)
    assert table.loc["C", "net_effect_log_odds"] == pytest.approx((0.2 * 4 - view_cell * 4) / 8)
    assert table.loc["C", "store_name"] == "C"  # no name in the stores dimension: its id
    # A: four sessions of exactly -0.2 (no spread): SE 0; B's values spread by 0.01
    assert table.loc["A", "net_effect_se"] == pytest.approx(0.0, abs=1e-12)
    m, se = _clustered_mean_and_se([(0.2 + 0.01 * i - view_cell, 1) for i in range(4)])
    assert table.loc["B", "net_effect_se"] == pytest.approx(se)
    # the shrunk value: effect x tau2 / (tau2 + se^2 + b / sessions), with tau2 and b the intercept and
    # slope of the line through (1 / sessions, effect^2 - se^2), both at least 0
    e, se_, n = (table[c].to_numpy(float) for c in ("net_effect_log_odds", "net_effect_se", "sessions"))
    slope, intercept = np.polyfit(1 / n, e * e - se_ * se_, 1)
    b = max(slope, 0.0)
    tau2 = max(float(np.mean(e * e - se_ * se_) - b * np.mean(1 / n)), 0.0) if slope < 0 else max(intercept, 0.0)
    expected = e * tau2 / (tau2 + se_ * se_ + b / n) if tau2 > 0 else np.zeros(len(e))
    assert table.shrunk_net_effect_log_odds.to_numpy(float) == pytest.approx(expected)
    ordered = _tables(events, min_events=4)["store"]
    by_shrunk = sorted(table.index, key=lambda k: (-table.loc[k, "shrunk_net_effect_log_odds"], k))
    assert list(ordered.store_id) == by_shrunk and list(ordered["rank"]) == [1, 2, 3]
    # by the net effect alone (no shrinkage) B leads and A, all page loads, comes last
    assert sorted(table.index, key=lambda k: -table.loc[k, "net_effect_log_odds"]) == ["B", "C", "A"]
    # support: C has 8 sessions, A and B 4 each
    assert list(_tables(events, min_events=4, min_sessions=5)["store"].store_id) == ["C"]


def test_shrinkage_pulls_noisy_effects_towards_zero():
    effects = np.array([0.5, 0.5, -0.1, 0.0])
    se = np.array([0.05, 0.5, 0.05, np.nan])
    shrunk, tau2, b = statistics.shrink(effects, se)
    assert tau2 == pytest.approx((0.25 + 0.25 + 0.01) / 3 - (0.0025 + 0.25 + 0.0025) / 3) and b == 0
    assert shrunk[0] > shrunk[1] > 0  # the same effect, less precise: pulled further towards 0
    assert shrunk[3] == 0.0  # no SE: no evidence
    assert statistics.shrink(np.array([0.1, -0.1]), np.array([1.0, 1.0]))[0].tolist() == [0.0, 0.0]  # all noise


def test_shrinkage_by_support_discounts_what_a_rarely_seen_store_measures():
    """Rare stores (20 sessions) measure large effects of either sign with tiny sampling SEs (the model's
    estimate for them is noise, consistent across their sessions); common ones (1,000 sessions) small
    ones. The effect^2 vs 1/sessions line has slope ~ 0.04 x 20: a rare store's effect is mostly that."""
    rare = np.array([0.2, -0.2, 0.2, -0.2])
    common = np.array([0.1, -0.1, 0.0, 0.0])
    effects = np.r_[rare, common]
    se = np.full(8, 0.01)
    support = np.r_[np.full(4, 20.0), np.full(4, 1000.0)]
    shrunk, tau2, b = statistics.shrink(effects, se, support)
    x, y = 1 / support, effects**2 - se**2
    slope, intercept = np.polyfit(x, y, 1)
    assert b == pytest.approx(slope) and tau2 == pytest.approx(intercept)
    assert shrunk == pytest.approx(effects * tau2 / (tau2 + se**2 + b * x))
    assert shrunk[4] > shrunk[0] > 0  # the common store's 0.1 now ranks above the rare store's 0.2
    plain = statistics.shrink(effects, se)[0]
    assert plain[0] > plain[4]  # by sampling noise alone it would not


def test_position_table_keeps_the_bin_order_and_position_zero(events):
    table = _tables(events)["position"]
    assert list(table.position_bin) == ["1-5"]  # positions 0..2 are all in 1-5
    assert table.events_converted.iloc[0] + table.events_not_converted.iloc[0] == len(EVENTS)


def test_store_table_support_and_rank(events):
    table = _tables(events, min_events=2)["store"]
    # x: 0.6, 0.2, 1.0 (3 events, 3 sessions); y: 0.3, 0.1 (2 events)
    assert list(table.store_id) == ["x", "y"] and list(table["rank"]) == [1, 2]
    assert table.mean_attribution.tolist() == pytest.approx([1.8 / 3, 0.2])
    assert table.event_count.tolist() == [3, 2] and table.sessions.tolist() == [3, 2]
    assert list(_tables(events, min_events=3)["store"].store_id) == ["x"]


def test_type_position_heatmap_cells(events):
    table = _tables(events, max_position=2)["type_position"]
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
    store = _tables(both, min_events=2)["store"]
    assert store[store.method == "grad_x_input"].store_id.tolist() == ["x", "y"]
    assert store[store.method == "attention"].store_id.tolist() == ["y", "x"]
    assert store["rank"].tolist() == [1, 2, 1, 2]


def test_every_method_present_gets_its_rows(events):
    from pyspark.sql import functions as F

    both = events.withColumn("attention_attribution", F.lit(0.5))
    table = _tables(both)["event_type"]
    assert sorted(set(table.method)) == ["attention", "grad_x_input"]
    att = table[(table.method == "attention") & (table.event_type == "A")].iloc[0]
    assert att.converted == pytest.approx(0.5) and math.isnan(att.contribution_converted)


def _conf(tmp_path, run_id="r1", *extra):
    return make_conf(f"run.output_dir={tmp_path}", f"run.run_id={run_id}", "attribution.methods=[grad_x_input]", *extra)


def test_sinks_round_trip_and_rerun_is_idempotent(spark, events, tmp_path):
    from deltalake import DeltaTable

    conf = _conf(tmp_path)
    tables = report.build_tables(events, conf)
    where = report.write_tables(spark, tables, conf)
    csv = pd.read_csv(where["event_type_attribution_no_funnel.csv"])
    # the key and the effect first, then the seed's columns (its readers select them by name)
    assert list(csv.columns[:6]) == ["event_type", *aggregate.EFFECT_COLUMNS]
    assert {"not_converted", "converted", "attribution_lift"} <= set(csv.columns)
    assert list(csv.event_type) == ["B", "A"]  # the effect's order
    expected = tables["event_type"].column("attribution_lift").to_pylist()
    assert csv.attribution_lift.tolist() == pytest.approx(expected)
    # an empty table (no store reaches the default support of 10 events) still has its typed columns
    assert tables["store"].num_rows == 0
    assert pd.read_csv(where["store_attribution_no_funnel.csv"]).columns[0] == "rank"
    assert len(DeltaTable(where["delta/store_attribution_no_funnel"]).schema().fields) == tables["store"].num_columns
    delta = DeltaTable(where["delta/event_type_attribution_no_funnel"])
    assert delta.protocol().min_reader_version == 1 and delta.protocol().min_writer_version == 2
    assert len(delta.to_pandas()) == 2
    parquet = spark.read.parquet(where["parquet/event_type_attribution_no_funnel"])
    assert parquet.count() == 2
    # the same run again: same rows, not twice as many; a second run adds its own
    report.write_tables(spark, tables, conf)
    assert len(DeltaTable(where["delta/event_type_attribution_no_funnel"]).to_pandas()) == 2
    assert spark.read.parquet(where["parquet/event_type_attribution_no_funnel"]).count() == 2
    conf2 = _conf(tmp_path, "r2")
    report.write_tables(spark, report.build_tables(events, conf2), conf2)
    runs = DeltaTable(where["delta/event_type_attribution_no_funnel"]).to_pandas().run_id
    assert sorted(runs) == ["r1", "r1", "r2", "r2"]
    assert spark.read.parquet(where["parquet/event_type_attribution_no_funnel"]).count() == 4


def test_picture_has_the_four_panels_and_insights_mark_noise(events, tmp_path):
    conf = _conf(tmp_path)
    tables = report.frames(report.build_tables(events, conf))
    fig = figures.report_figure(tables, "grad_x_input")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4
    assert titles[0].startswith("Top") and "position" in titles[1] and "heatmap" not in titles[3]
    png = figures.report_picture(tables, "grad_x_input")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    text = report_text.key_insights(tables, "grad_x_input")
    # both CIs cross 0 (A +0.11 [-0.03, +0.25], B +0.24 [-0.07, +0.54]): no driver, said first
    assert "No driver stands out" in text and "Indistinguishable from noise: B, A" in text
    assert "Drivers" not in text and "Detractors" not in text
    assert json.dumps(text)


def test_explain_ranks_one_sessions_events_and_refuses_an_unknown_id(spark, events, tmp_path):
    from pyspark.sql import functions as F

    from attribution.io import InputError

    conf = _conf(tmp_path)
    events.withColumn("prediction", events.label * 0.5 + 0.2).write.parquet(
        str(tmp_path / "gradient_attribution_no_funnel")
    )
    text, png = explain_stage.run(spark, conf, "s2")
    lines = text.splitlines()
    assert lines[0].startswith("session s2: label 1 (converted), predicted P(convert) 0.700, 3 events")
    assert "ranked by grad_x_input (contribution, log-odds" in lines[0]
    # ranked by the signed contribution: position 3 (+0.25), 1 (+0.10), 2 (+0.05), 1-based
    ranked = [line.split()[:2] for line in lines[2:]]
    assert ranked == [["1", "3"], ["2", "1"], ["3", "2"]]
    assert lines[2].split()[-1] == "+0.2500"  # signed
    # integrated gradients as the report's method: its own contribution ranks the events
    ig = events.withColumn("ig_attribution", F.lit(0.3)).withColumn("ig_contribution", -F.col("contribution"))
    ig.withColumn("prediction", F.lit(0.5)).write.mode("overwrite").parquet(str(tmp_path / "ig_events"))
    ig_conf = _conf(
        tmp_path,
        "r1",
        "attribution.methods=[integrated_gradients]",
        "report.default_method=integrated_gradients",
        "attribution.output_path=ig_events",
    )
    text, _ = explain_stage.run(spark, ig_conf, "s2")
    assert [line.split()[:2] for line in text.splitlines()[2:]] == [["1", "2"], ["2", "1"], ["3", "3"]]
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="session 'nope' is not in"):
        explain_stage.run(spark, conf, "nope")


def test_event_table_as_delta_one_commit_per_run_and_idempotent(spark, events, tmp_path):
    from deltalake import DeltaTable
    from pyspark.sql import functions as F

    from attribution import sinks

    location = str(tmp_path / "delta_events")
    v0 = sinks.write_delta_events(spark, events, location, "r1")
    v1 = sinks.write_delta_events(spark, events, location, "r1")  # the same run again: replaced, not added
    v2 = sinks.write_delta_events(spark, events.limit(3).withColumn("run_id", F.lit("r2")), location, "r2")
    assert (v0, v1, v2) == (0, 1, 2)
    table = DeltaTable(location)
    assert table.protocol().min_reader_version == 1 and table.protocol().min_writer_version == 2
    rows = table.to_pandas()
    assert rows.groupby("run_id").size().to_dict() == {"r1": len(EVENTS), "r2": 3}
    r1 = rows[rows.run_id == "r1"].sort_values(["session_id", "event_position"])
    assert r1.gradient_attribution.tolist() == pytest.approx([e[6] for e in sorted(EVENTS, key=lambda e: (e[0], e[2]))])
    # time travel: version 0 is the first write, intact
    assert len(DeltaTable(location, version=0).to_pandas()) == len(EVENTS)


def test_a_failure_during_the_write_leaves_the_previous_table_unchanged(spark, events, tmp_path):
    """A task that fails while the executors write: no commit, the table stays at its last version."""
    from deltalake import DeltaTable
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    from attribution import sinks

    location = str(tmp_path / "delta_events")
    sinks.write_delta_events(spark, events, location, "r1")
    before = DeltaTable(location).to_pandas().sort_values(["session_id", "event_position"]).reset_index(drop=True)

    @F.udf(DoubleType())
    def fails_on_s3(session_id, value):
        if session_id == "s3":
            raise RuntimeError("injected failure while writing")
        return value

    broken = events.withColumn("gradient_attribution", fails_on_s3("session_id", "gradient_attribution"))
    with pytest.raises(Exception, match="injected failure"):
        sinks.write_delta_events(spark, broken, location, "r1")
    table = DeltaTable(location)
    assert table.version() == 0
    after = table.to_pandas().sort_values(["session_id", "event_position"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_event_level_csv_is_one_file_written_by_the_executors(spark, events, tmp_path):
    from attribution import sinks

    target = tmp_path / "gradient_attribution_no_funnel.csv"
    sinks.write_csv_single_file(events, str(target))
    back = pd.read_csv(target)
    assert len(back) == len(EVENTS) and "gradient_attribution" in back.columns
    assert sorted(back.gradient_attribution) == pytest.approx(sorted(e[6] for e in EVENTS))
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary directory left behind


def test_small_parquet_tables_partitioned_by_run_id_as_spark_reads_them(spark, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from attribution import sinks

    location = str(tmp_path / "parquet_table")
    odd = "2026-11-28T07:00/a=b c"  # characters Spark escapes in a partition directory's name
    first = pa.table({"run_id": ["r1", "r1"], "event_type": ["A", "B"], "lift": [0.5, -0.25]})
    sinks.write_parquet(first, location, "r1")
    sinks.write_parquet(pa.table({"run_id": [odd], "event_type": ["C"], "lift": [1.0]}), location, odd)
    sinks.write_parquet(first.slice(0, 1), location, "r1")  # the same run again: replaced, one row left
    back = spark.read.parquet(location).toPandas().sort_values("event_type")
    assert back.run_id.tolist() == ["r1", odd] and back.lift.tolist() == [0.5, 1.0]
    # an empty table leaves the run's partition empty but typed
    sinks.write_parquet(first.slice(0, 0), location, "r1")
    assert spark.read.parquet(location).where("run_id = 'r1'").count() == 0
    assert spark.read.parquet(location).count() == 1
    # a failure while the new partition is written: the previous one stays whole, nothing half-visible
    sinks.write_parquet(first, location, "r1")

    def broken(*args, **kwargs):
        raise OSError("injected failure while writing")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="injected failure"):
        sinks.write_parquet(first.slice(0, 1), location, "r1")
    assert spark.read.parquet(location).where("run_id = 'r1'").count() == 2
    assert not [p.name for p in (tmp_path / "parquet_table").iterdir() if p.name.startswith("_")]


def test_a_delta_table_in_the_earlier_unpartitioned_layout_keeps_working(tmp_path):
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from attribution import sinks

    location = str(tmp_path / "legacy")
    old = pa.table({"run_id": ["r0", "r1"], "event_type": ["A", "A"], "lift": [0.1, 0.2]})
    write_deltalake(location, old)  # as the report wrote it before tables were partitioned by run_id
    sinks.write_delta(
        None, pa.table({"run_id": ["r1", "r1"], "event_type": ["A", "B"], "lift": [0.3, 0.4]}), location, "r1"
    )
    rows = DeltaTable(location).to_pandas().sort_values(["run_id", "event_type"])
    assert rows.values.tolist() == [["r0", "A", 0.1], ["r1", "A", 0.3], ["r1", "B", 0.4]]


@pytest.mark.parametrize("auc, status", [(0.49, "at_chance"), (0.53, "at_chance"), (0.80, "ok")])
def test_a_model_at_chance_is_said_first_and_carried_by_every_table(spark, events, tmp_path, auc, status):
    """400 test sessions, 60 converted: the Hanley-McNeil 95% CI of an AUC of 0.53 is about +/- 0.08, so it
    includes 0.5; 0.80 is well clear of it."""
    from pyspark.sql import functions as F

    from attribution.statistics import roc_auc_ci

    sha = "ab" * 32
    events.withColumn("prediction", F.lit(0.2)).withColumn("model_sha256", F.lit(sha)).write.parquet(
        str(tmp_path / "gradient_attribution_no_funnel")
    )
    (tmp_path / "model").mkdir()
    test = {"roc_auc": auc, "sessions": 400, "positive_rate": 0.15}
    (tmp_path / "model" / "metrics.json").write_text(json.dumps({"model_sha256": sha, "test": test}))
    conf = _conf(tmp_path, "r1", f"generate.ground_truth_path={tmp_path}/none.json", "report.min_sessions=1")
    result = report_stage.run(spark, conf)
    low, high = roc_auc_ci(auc, 60, 340)
    assert result["model_status"]["test_roc_auc_ci"] == pytest.approx([low, high])
    assert (low <= 0.5) == (status == "at_chance") and result["model_status"]["status"] == status
    second = result["insights"].splitlines()[1]
    page = (tmp_path / "report" / "index.html").read_text()
    csv = pd.read_csv(tmp_path / "report" / "event_type_attribution_no_funnel.csv")
    assert set(csv.model_status) == {status}
    if status == "at_chance":
        assert second.startswith("THE MODEL PREDICTS NO BETTER THAN CHANCE") and "no driver can" in second
        # a model at chance supports no verdict: none is flagged, whatever the CIs say
        assert set(csv.effect_verdict.dropna()) == {report.AT_CHANCE_VERDICT}
        assert "No driver stands out" in result["insights"]
        assert "<p id=model-status class=warn>THE MODEL PREDICTS NO BETTER THAN CHANCE" in page
    else:
        assert second.startswith("The model predicts conversion better than chance (test ROC-AUC 0.800")
        assert report.AT_CHANCE_VERDICT not in set(csv.effect_verdict.dropna())
    # the event table scored by another model: its quality is unknown, and said so
    (tmp_path / "model" / "metrics.json").write_text(json.dumps({"model_sha256": "cd" * 32, "test": test}))
    other = report_stage.run(spark, conf)
    assert other["model_status"]["status"] == "unknown" and "another model" in other["insights"].splitlines()[1]


def test_the_store_panel_draws_a_shrunk_bar_outside_its_raw_ci(events, tmp_path):
    """Shrinkage can pull a store's bar below its raw effect's CI (a rare store with a large raw effect):
    the whiskers belong to the raw effect, drawn around it, not around the bar."""
    tables = report.frames(report.build_tables(events, _conf(tmp_path)))
    tables["store"] = pd.DataFrame(
        {
            "method": "grad_x_input",
            "rank": [1, 2],
            "store_id": ["x", "y"],
            "store_name": ["X", "Y"],
            "shrunk_net_effect_log_odds": [0.02, 0.01],
            "net_effect_log_odds": [0.2, 0.05],
            "net_effect_ci_low": [0.15, -0.01],
            "net_effect_ci_high": [0.25, 0.11],
            "effect_verdict": ["drives conversion", "indistinguishable from noise"],
            "mean_attribution": [0.5, 0.5],
        }
    )
    fig = figures.report_figure(tables, "grad_x_input")
    panel = next(ax for ax in fig.axes if ax.get_title().startswith("Top stores"))
    assert [round(p.get_width(), 3) for p in panel.patches] == [0.01, 0.02]  # the shrunk values, bottom up
    assert figures.report_picture(tables, "grad_x_input")[:8] == b"\x89PNG\r\n\x1a\n"


def test_removal_columns_by_hand(spark):
    """One value per (session, key) whatever its event count; the mean, the independent-sessions CI, the
    relative lift and the attributable conversions computed by hand; keys outside the sample are null."""
    from pyspark.sql import functions as F

    from attribution.events import position_bin

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
    events = (
        df.withColumn("position_bin", position_bin(F.col("event_position") + 1))
        .withColumn("store_name", F.col("store_id"))
        .withColumn("session_length", F.lit(2))
        .withColumn("gradient_attribution", F.lit(0.5))
        .withColumn("contribution", F.lit(0.1))
        .withColumn("run_id", F.lit("r1"))
    )
    removal = aggregate.removal_stats(events)
    out = {k: t.to_pandas() for k, t in aggregate.tables(aggregate.long_format(events), 1, removal=removal).items()}
    a = _row(out["event_type"], event_type="A")
    d = np.array([0.10, 0.30])
    se = d.std(ddof=1) / math.sqrt(2)
    assert a.removal_sessions == 2 and a.sessions == 3
    assert a.removal_effect_pp == pytest.approx(100 * d.mean())
    assert a.removal_ci_low_pp == pytest.approx(100 * (d.mean() - statistics.Z95 * se))
    assert a.removal_ci_high_pp == pytest.approx(100 * (d.mean() + statistics.Z95 * se))
    assert a.removal_relative_lift == pytest.approx(d.mean() / np.mean([0.6 - 0.10, 0.4 - 0.30]))
    assert a.attributable_conversions == pytest.approx(d.mean() * 3)
    b = _row(out["event_type"], event_type="B")
    assert b.removal_effect_pp == pytest.approx(-10.0) and b.removal_sessions == 1 and pd.isna(b.removal_ci_low_pp)
    assert pd.isna(_row(out["event_type"], event_type="C").removal_effect_pp)  # no sampled session has it
    pos = _row(out["position"], position_bin="1-5")
    assert pos.removal_effect_pp == pytest.approx(25.0) and pos.removal_sessions == 2
    x = _row(out["store"], store_id="x")
    assert x.removal_effect_pp == pytest.approx(3.0) and x.removal_sessions == 2
    assert pd.isna(_row(out["store"], store_id="y").removal_effect_pp)


@pytest.mark.parametrize(
    ("sessions", "converted", "model", "expected", "reason"),
    [
        (500, 60, "ok", "ok", None),
        (20, 5, "ok", "insufficient_data", "20 sessions of 2025-01-15, fewer than report.min_sessions (30)"),
        (500, 0, "ok", "insufficient_data", "none of the 500 sessions of 2025-01-15 converted"),
        (500, 500, "unknown", "insufficient_data", "all of the 500 sessions of 2025-01-15 converted"),
        (20, 5, "at_chance", "at_chance", None),
    ],
)
def test_data_status_by_case(sessions, converted, model, expected, reason):
    """Too few sessions, none or all converted: insufficient_data, naming why; a model at chance stays at
    chance (the more basic reason)."""
    out = report.data_status({"status": model}, sessions, converted, 30, "2025-01-15")
    assert out["status"] == expected
    assert out.get("reason") == reason
    assert (out.get("insufficient_data") is not None) == (model == "at_chance" and sessions < 30)
