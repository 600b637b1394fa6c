"""The registry of attribution methods: a method declared once flows to every stage's output."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from attribution import aggregate, explain, methods
from attribution.errors import ConfigError
from attribution.stages import attribute as attribute_stage
from tests.conftest import make_conf
from tests.helpers import save_random_model, synthetic_sessions, vocab_of
from udfs import attribution_udf


def _uniform(batch):
    """A toy method: every event gets 1 / the session's events, and an equal share of the logit."""
    share = batch.maskf / batch.maskf.sum(dim=1, keepdim=True)
    return methods.Scores(
        attribution=share,
        contribution=share * batch.logits[:, None],
        per_session={"uniform_events": batch.maskf.sum(dim=1)},
    )


@pytest.fixture
def uniform(monkeypatch):
    """The toy method, registered for this test alone."""
    method = methods.Method(
        name="uniform",
        attribution="uniform_attribution",
        contribution="uniform_contribution",
        compute=_uniform,
        session_columns=(("uniform_events", "events per session, as the toy method counts them"),),
    )
    monkeypatch.setitem(methods.REGISTRY, method.name, method)
    return method


def test_the_registry_derives_every_column_list_from_one_declaration():
    gx = methods.get("grad_x_input")
    assert gx.signed and gx.event_columns == ("gradient_attribution", "contribution")
    assert not methods.get("attention").signed
    assert methods.present(["ig_attribution", "attention_attribution", "x"]) == (
        methods.get("attention"),
        methods.get("integrated_gradients"),
    )
    fields = [f.name for f in attribution_udf.output_fields(["attention", "integrated_gradients"], ("store_ids",))]
    assert fields == [
        "prediction",
        "logit",
        "attention_attribution",
        "ig_attribution",
        "ig_contribution",
        "ig_completeness_gap",
        "unknown_store_ids",
    ]
    with pytest.raises(ValueError, match="unknown attribution method 'shap'; known: grad_x_input, attention"):
        methods.get("shap")


def test_a_method_unknown_to_the_registry_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match="attribution.methods: \\['uniform'\\]; choose from grad_x_input"):
        make_conf('attribution.methods=["uniform"]')


def test_a_method_added_in_a_test_alone_reaches_the_udf_the_event_table_the_tables_and_explain(
    spark, uniform, tmp_path
):
    table = synthetic_sessions(60, seed=3, max_len=12, full=True)
    (tmp_path / "out" / "sessions").mkdir(parents=True)
    pq.write_table(table, tmp_path / "out" / "sessions" / "part-0.parquet")
    save_random_model(tmp_path / "out" / "model", vocab_of(table), max_length=12)
    conf = make_conf(
        f"run.output_dir={tmp_path}/out",
        "run.run_id=toy",
        'attribution.methods=["grad_x_input", "uniform"]',
        "report.default_method=uniform",
        "attribution.split=all",
        "attribution.removal_sessions=0",
    )
    # the UDF runs in Spark's Python workers, which know the method only from the function it ships
    summary = attribute_stage.run(spark, conf).summary
    assert summary["methods"] == ["grad_x_input", "uniform"]
    assert summary["uniform_events"]["max_abs"] == 12.0  # its per-session column, summarized
    events = spark.read.parquet(f"{tmp_path}/out/gradient_attribution_no_funnel")
    pdf = events.toPandas()
    # its columns, after the built-in method's, with the values its definition gives
    columns = list(pdf.columns)
    assert columns.index("contribution") < columns.index("uniform_attribution") < columns.index("uniform_contribution")
    np.testing.assert_allclose(pdf.uniform_attribution, 1.0 / pdf.session_length, rtol=1e-6)
    logit = np.log(pdf.prediction / (1 - pdf.prediction))
    np.testing.assert_allclose(pdf.uniform_contribution, logit / pdf.session_length, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(pdf.uniform_events, pdf.session_length)  # its per-session column

    # the tables: the toy method gets its rows, with its effect = its mean contribution per event
    tables = {k: t.to_pandas() for k, t in aggregate.tables(aggregate.long_format(events)).items()}
    et = tables["event_type"]
    assert sorted(set(et.method)) == ["grad_x_input", "uniform"]
    mine = et[et.method == "uniform"].set_index("event_type")
    expected = pdf.groupby("event_type").uniform_contribution.mean()
    np.testing.assert_allclose(mine.loc[expected.index, "effect_log_odds"], expected.to_numpy(), atol=1e-12)

    # explain ranks by the report method's signed column
    rows = explain.session_events(spark, conf, pdf.session_id.iloc[0])
    assert rows.attrs["ranked_by"] == "uniform_contribution" and rows.attrs["signed"]
    assert {"uniform_attribution", "uniform_contribution"} <= set(explain.score_columns(rows))
