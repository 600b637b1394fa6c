"""One session explained by the report's method (attribution/explain.py, jobs/explain.py)."""

from __future__ import annotations

import pytest

from attribution.stages import explain as explain_stage
from tests.helpers import report_conf


def test_explain_ranks_one_sessions_events_and_refuses_an_unknown_id(spark, events, tmp_path):
    from pyspark.sql import functions as F

    from attribution.errors import InputError

    conf = report_conf(tmp_path)
    events.withColumn("prediction", events.label * 0.5 + 0.2).write.parquet(
        str(tmp_path / "gradient_attribution_no_funnel")
    )
    explained = explain_stage.run(spark, conf, "s2")
    text, png = explained.table, explained.picture
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
    ig_conf = report_conf(
        tmp_path,
        "r1",
        "attribution.methods=[integrated_gradients]",
        "report.default_method=integrated_gradients",
        "attribution.output_path=ig_events",
    )
    text = explain_stage.run(spark, ig_conf, "s2").table
    assert [line.split()[:2] for line in text.splitlines()[2:]] == [["1", "2"], ["2", "1"], ["3", "3"]]
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="session 'nope' is not in"):
        explain_stage.run(spark, conf, "nope")


def test_the_explain_job_prints_the_ranking_and_an_unknown_id_is_one_line_and_exit_2(spark, events, tmp_path, capsys):
    """``python -m jobs.explain`` as an entry point: the stage's text and the picture's path on stdout; an id
    not in the event table is one line on stderr and exit 2."""
    from jobs import explain as job

    events.withColumn("prediction", events.label * 0.5 + 0.2).write.parquet(
        str(tmp_path / "gradient_attribution_no_funnel")
    )
    sets = [f"run.output_dir={tmp_path}", "run.run_id=r1", "attribution.methods=[grad_x_input]"]
    args = [a for s in sets for a in ("--set", s)]
    assert job.main([*args, "--session-id", "s2"]) == 0
    out = capsys.readouterr().out.splitlines()
    text = explain_stage.run(spark, report_conf(tmp_path), "s2").table
    assert out[: len(text.splitlines())] == text.splitlines()
    picture = out[-1].removeprefix("picture: ")
    assert out[-1].startswith("picture: ") and open(picture, "rb").read(4) == b"\x89PNG"
    assert job.main([*args, "--session-id", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "session 'nope' is not in" in err[0]
