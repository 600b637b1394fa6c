"""Two full runs (generate -> sessionize -> train -> attribute -> faithfulness -> report) with the same config and
seed: one in this process's classic session, one in a process of its own as a Spark Connect client of a
local Connect server (``spark.api.mode=connect``), training as barrier tasks on the server's executors. The
answer does not depend on the run, on the kind of session or on where training runs.

What must match, and how exactly:
- the raw events, the sessions and the quarantine: exactly (the generator is a pure function of the seed
  and the block; sessionize orders ties deterministically);
- the model: the same sha256 (fixed seeds, one thread per process, a fixed shard order);
- the event-level table: exactly (CPU, the same batches: the same files give the same Arrow batches);
- the lift, faithfulness and ground-truth tables: to 1e-12 relative. They are sums of doubles, and Spark may add the partial sums of a
  shuffle in another order from run to run; floating-point addition is not associative, so the last bits
  can differ. Every count and every ordering key matches exactly.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from attribution import statistics
from tests.helpers import run_small_pipeline, run_small_pipeline_elsewhere
from tests.test_train import SMALL

pytestmark = pytest.mark.slow


def _run(tmp_path, name: str, connect: bool = False) -> dict:
    out = tmp_path / name
    (run_small_pipeline_elsewhere if connect else run_small_pipeline)(
        out,
        out,
        350,
        "run.run_id=det",
        "train.num_processes=1",
        "train.leakage_check=false",
        *SMALL,
        "train.epochs=2",
        "attribution.methods=[grad_x_input, attention, attention_rollout]",
        "report.default_method=grad_x_input",
        # the removal effects of the transformer alone in both runs: the classic run's blend with the counts
        # baseline (which a Connect run does not fit) is tested in test_train and test_aggregate
        "baseline.blend=false",
        # through Connect, training runs as barrier tasks on the server's executors (TorchDistributor's
        # Connect path), where the classic run trains in local mode: the same model bytes either way
        *(["spark.conf.spark.api.mode=connect", "train.local_mode=false"] if connect else []),
    )
    return {
        "raw": _sorted(pd.read_parquet(out / "raw")),
        "sessions": _sorted(pd.read_parquet(out / "sessions")),
        "quarantine": _sorted(pd.read_parquet(out / "quarantine")),
        "model_sha256": hashlib.sha256((out / "model" / "model.safetensors").read_bytes()).hexdigest(),
        "events": _sorted(pd.read_parquet(out / "gradient_attribution_no_funnel")),
        "tables": {p.name: pd.read_csv(p) for p in sorted((out / "report").glob("*.csv"))},
        "counts": _counts(out),
        "baseline": json.loads((out / "model" / "metrics.json").read_text())["baseline"],
    }


def _counts(out) -> dict:
    """The stages' counts: the sessionize reconciliation, and the attribution UDF's counters (data the UDF
    returns beside its rows, gathered the same way in both kinds of session)."""
    sessionize = json.loads((out / "sessionize_summary.json").read_text())
    attribute = json.loads((out / "attribute_summary.json").read_text())
    keys = ("sessions", "events", "model_batches", "oom_splits", "padding_efficiency", "events_by_device")
    return {
        "sessionize": {k: sessionize[k] for k in ("rows_read", "rows", "sessions", "kept_sessions_by_split")},
        "attribute": {k: attribute[k] for k in (*keys, "removal_sessions", "removal_forward_passes")},
    }


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in df.columns if df[c].map(lambda v: isinstance(v, (str, int, float, type(None)))).all()]
    return df.sort_values(keys, na_position="first").reset_index(drop=True)


def test_a_classic_and_a_connect_run_give_the_same_sessions_model_and_tables(tmp_path):
    a, b = _run(tmp_path, "classic"), _run(tmp_path, "connect", connect=True)
    for name in ("raw", "sessions", "quarantine", "events"):
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)
    assert len(a["sessions"]) > 500 and len(a["events"]) > 1000
    assert a["model_sha256"] == b["model_sha256"]
    assert a["counts"] == b["counts"]
    assert a["counts"]["attribute"]["events"] == len(a["events"]) and a["counts"]["attribute"]["model_batches"] > 0
    # 7 tables x 2 CSVs, the pair table (one CSV: it has no method), the ground-truth comparison,
    # faithfulness and agreement; the classic run also compares the model with the counts baseline, which a
    # Connect run skips (docs/connect.md)
    assert set(a["tables"]) - set(b["tables"]) == {"model_comparison.csv"} and len(b["tables"]) == 18
    assert len(b["tables"]["event_pair_attribution_no_funnel.csv"]) > 0
    assert list(a["tables"]["model_comparison.csv"].model) == ["transformer", "counts_baseline"]
    assert "Spark Connect" in b["baseline"]["skipped"] and "skipped" not in a["baseline"]
    # Without the baseline the removal CI has no model-choice part: the Connect run's interval is the
    # classic one with that part taken out (the parts add in quadrature), and every other cell is the same.
    with_choice = ("removal_baseline_pp", "removal_choice_se_pp", "removal_ci_low_pp", "removal_ci_high_pp")
    for name, table in b["tables"].items():
        classic = a["tables"][name]
        if "baseline_log_odds" in table:
            assert table.baseline_log_odds.isna().all() and classic.baseline_log_odds.notna().any(), name
        if "removal_choice_se_pp" in table:
            assert table.removal_baseline_pp.isna().all() and table.removal_choice_se_pp.isna().all(), name
            has = classic.removal_choice_se_pp.notna()
            assert has.any(), name
            half = (classic.removal_ci_high_pp - classic.removal_ci_low_pp)[has] / 2
            half_connect = (table.removal_ci_high_pp - table.removal_ci_low_pp)[has] / 2
            choice = statistics.Z95 * classic.removal_choice_se_pp[has]
            np.testing.assert_allclose(half**2, half_connect**2 + choice**2, rtol=1e-9, err_msg=name)
        if name == "ground_truth_recovery.csv":  # its coverage and wrong-direction rows read the CIs
            keep = ~(
                classic.check.str.startswith("removal_ci_coverage") | (classic.check == "removal_wrong_directions")
            )
            classic, table = classic[keep].reset_index(drop=True), table[keep.values].reset_index(drop=True)
            # the sign errors' detail quotes their CIs
            signs = classic.check == "removal_sign_errors"
            classic, table = (t.assign(detail=t.detail.where(~signs.values)) for t in (classic, table))
            # the error row's detail names the counts baseline's own error where there is one
            mae = classic.check == "removal_mae_pp"
            assert classic.detail[mae].str.startswith("the counts baseline alone").all(), name
            assert table.detail[mae.values].isna().all(), name
            classic, table = (t.assign(detail=t.detail.where(~mae.values)) for t in (classic, table))
        left, right = (t.drop(columns=["baseline_log_odds", *with_choice], errors="ignore") for t in (classic, table))
        pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-12, atol=0, obj=name)
