"""The report stage's outputs: its tables written and rerun idempotently, the picture, the insights, the
model and data status every table carries (attribution/report.py, attribution/stages/report.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from attribution import figures, report, report_text, schema
from attribution.stages import report as report_stage
from tests.helpers import report_conf


def test_sinks_round_trip_and_rerun_is_idempotent(spark, events, tmp_path):
    from deltalake import DeltaTable

    conf = report_conf(tmp_path)
    tables = report.build_tables(events, conf)
    where = report.write_tables(spark, tables, conf)
    csv = pd.read_csv(where["event_type_attribution_no_funnel.csv"])
    # the key and the effect first, then the original analysis's columns (its readers select them by name)
    assert list(csv.columns[:6]) == ["event_type", *schema.EFFECT_COLUMNS]
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
    conf2 = report_conf(tmp_path, "r2")
    report.write_tables(spark, report.build_tables(events, conf2), conf2)
    runs = DeltaTable(where["delta/event_type_attribution_no_funnel"]).to_pandas().run_id
    assert sorted(runs) == ["r1", "r1", "r2", "r2"]
    assert spark.read.parquet(where["parquet/event_type_attribution_no_funnel"]).count() == 4


def test_picture_has_the_four_panels_and_insights_mark_noise(events, tmp_path):
    conf = report_conf(tmp_path)
    tables = report.frames(report.build_tables(events, conf))
    fig = figures.report_figure(tables, "grad_x_input")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4
    assert titles[0].startswith("Top") and "position" in titles[1] and "heatmap" not in titles[3]
    png = figures.report_picture(tables, "grad_x_input")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the axes say what they plot: the stores' net effect; the heatmap's means without a CI; without a
    # conversion rate, no percentage points
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert panels[2].get_xlabel() == figures.STORE_UNIT and "no CI" in panels[3].get_title()
    assert not any(a.child_axes for a in panels)
    # with the test split's rate (20 of 100: 16 pp per log-odds), the event-type and position panels read
    # in pp too, on a second axis whose scale is the effect's x 16
    status = {"status": "ok", "test_sessions": 100, "test_positives": 20}
    fig = figures.report_figure(tables, "grad_x_input", status=status)
    fig.canvas.draw()  # a second axis takes its limits from its parent's when drawn
    panels = [ax for ax in fig.axes if ax.get_title()]
    (types,), (positions,) = panels[0].child_axes, panels[1].child_axes
    assert types.get_xlabel() == positions.get_ylabel() == report.PP_UNIT
    assert np.allclose(types.get_xlim(), 16 * np.array(panels[0].get_xlim()))
    assert np.allclose(positions.get_ylim(), 16 * np.array(panels[1].get_ylim()))
    assert not panels[2].child_axes and not panels[3].child_axes
    text = report_text.key_insights(tables, "grad_x_input")
    # both CIs cross 0 (A +0.11 [-0.03, +0.25], B +0.24 [-0.07, +0.54]): no driver, said first
    assert "No driver stands out" in text and "Indistinguishable from noise: B, A" in text
    assert "Drivers" not in text and "Detractors" not in text
    assert json.dumps(text)


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
    conf = report_conf(tmp_path, "r1", f"generate.ground_truth_path={tmp_path}/none.json", "report.min_sessions=1")
    result = report_stage.run(spark, conf)
    low, high = roc_auc_ci(auc, 60, 340)
    assert result.summary["model_status"]["test_roc_auc_ci"] == pytest.approx([low, high])
    assert (low <= 0.5) == (status == "at_chance") and result.summary["model_status"]["status"] == status
    second = result.insights.splitlines()[1]
    page = (tmp_path / "report" / "index.html").read_text()
    csv = pd.read_csv(tmp_path / "report" / "event_type_attribution_no_funnel.csv")
    assert set(csv.model_status) == {status}
    if status == "at_chance":
        assert second.startswith("THE MODEL PREDICTS NO BETTER THAN CHANCE") and "no driver can" in second
        # a model at chance supports no verdict: none is flagged, whatever the CIs say
        assert set(csv.effect_verdict.dropna()) == {report.AT_CHANCE_VERDICT}
        assert "No driver stands out" in result.insights
        assert "<p id=model-status class=warn>THE MODEL PREDICTS NO BETTER THAN CHANCE" in page
    else:
        assert second.startswith("The model predicts conversion better than chance (test ROC-AUC 0.800")
        assert report.AT_CHANCE_VERDICT not in set(csv.effect_verdict.dropna())
    # the event table scored by another model: its quality is unknown, and said so
    (tmp_path / "model" / "metrics.json").write_text(json.dumps({"model_sha256": "cd" * 32, "test": test}))
    other = report_stage.run(spark, conf)
    assert other.summary["model_status"]["status"] == "unknown" and "another model" in other.insights.splitlines()[1]


def test_the_store_panel_draws_a_shrunk_bar_outside_its_raw_ci(events, tmp_path):
    """Shrinkage can pull a store's bar below its raw effect's CI (a rare store with a large raw effect):
    the whiskers belong to the raw effect, drawn around it, not around the bar."""
    tables = report.frames(report.build_tables(events, report_conf(tmp_path)))
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
