"""Faithfulness metrics against brute-force references, orders whose result is known in advance, and the
Spark stage end to end."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from attribution.faithfulness import (
    FaithfulnessOptions,
    average_ranks,
    deletion_counts,
    empty_probability,
    evaluate_sessions,
    k_values,
    random_ranks,
    ranks_of,
    spearman,
)
from attribution.features import encode_sessions
from attribution.model import to_tensors
from attribution.stages import attribute as attribute_stage
from attribution.stages import faithfulness as faithfulness_stage
from tests.conftest import make_conf
from tests.helpers import SMALL_MODEL, random_model, save_random_model, synthetic_sessions, vocab_of

OPTIONS = FaithfulnessOptions(random_draws=3, batch_positions=400)  # small chunks: many forward batches


@pytest.fixture(scope="module")
def setup():
    table = synthetic_sessions(40, seed=11, max_len=18)
    vocab = vocab_of(table)
    model = random_model(vocab, max_length=30, seed=4, std=0.2, **SMALL_MODEL)
    for p in model.parameters():
        p.requires_grad_(False)
    enc = encode_sessions(table, vocab)
    return model, enc, table.column("session_id").to_pylist()


def _p_masked(model, enc, row: int, keep: np.ndarray) -> float:
    """The reference: the whole session in its own layout, the removed events masked as padding."""
    b = enc.batch([row])
    tokens, cont, mask = to_tensors(b, model.spec.fields)
    mask = mask & torch.from_numpy(keep)[None, :]
    with torch.no_grad():
        logit, _ = model.forward_from_representation(model.represent(tokens, cont), mask)
    return float(torch.sigmoid(logit)[0])


def test_k_values_and_deletion_counts_by_hand():
    o = FaithfulnessOptions()
    assert k_values(20, o).tolist() == [1, 3, 5, 2, 4, 10]
    assert k_values(7, o).tolist() == [1, 3, 5, 1, 2, 4]  # ceil(0.7)=1, ceil(1.4)=2, ceil(3.5)=4
    assert k_values(2, o).tolist() == [1, 2, 2, 1, 1, 1]  # capped at the length, at least 1
    assert deletion_counts(7, 10).tolist() == [0, 1, 1, 2, 3, 4, 4, 5, 6, 6, 7]
    assert o.k_labels() == ["1", "3", "5", "10%", "20%", "50%"]


def test_ranks_ties_go_to_the_earlier_event():
    assert ranks_of(np.array([0.1, 0.5, 0.5, 0.2])).tolist() == [3, 0, 1, 2]


def test_compacted_session_gives_the_masked_logit(setup):
    model, enc, _ = setup
    rng = np.random.default_rng(0)
    for row in range(10):
        length = int(enc.lengths[row])
        keep = rng.random(length) < 0.5
        keep[rng.integers(length)] = True
        b = enc.batch([row])
        tokens, cont, _ = to_tensors(b, model.spec.fields)
        x = model.represent(tokens, cont)
        idx = torch.from_numpy(np.flatnonzero(keep))[None, :]
        with torch.no_grad():
            compact, _ = model.forward_from_representation(
                x[:, idx[0]], torch.ones_like(idx, dtype=torch.bool), positions=idx + 1
            )
        assert abs(float(torch.sigmoid(compact)[0]) - _p_masked(model, enc, row, keep)) < 1e-6


def test_metrics_equal_a_brute_force_reference(setup):
    model, enc, ids = setup
    rng = np.random.default_rng(1)
    scores = [rng.random(int(enc.offsets[-1])), rng.random(int(enc.offsets[-1]))]
    out = evaluate_sessions(model, enc, scores, ids, OPTIONS)
    p_empty = empty_probability(model, "cpu")
    for row in range(0, len(enc), 3):
        lo, length = int(enc.offsets[row]), int(enc.lengths[row])
        p_full = _p_masked(model, enc, row, np.ones(length, bool))
        assert abs(out[row].p_full - p_full) < 1e-6
        orders = [np.argsort(-s[lo : lo + length], kind="stable") for s in scores]
        for draw in random_ranks(ids[row], length, OPTIONS.random_draws, OPTIONS.seed):
            orders.append(np.argsort(draw, kind="stable"))
        for o, order in enumerate(orders):

            def p_without(j, order=order, length=length, row=row):
                keep = np.ones(length, bool)
                keep[order[:j]] = False
                return p_empty if j == length else _p_masked(model, enc, row, keep)

            def p_only(j, order=order, length=length, row=row):
                keep = np.zeros(length, bool)
                keep[order[:j]] = True
                return p_empty if j == 0 else _p_masked(model, enc, row, keep)

            ks = [min(length, k) for k in (1, 3, 5)] + [
                min(length, max(1, int(np.ceil(f * length - 1e-9)))) for f in (0.1, 0.2, 0.5)
            ]
            comp = [abs(p_full - p_without(k)) for k in ks]
            suff = [abs(p_full - p_only(k)) for k in ks]
            np.testing.assert_allclose(out[row].values["comprehensiveness"][o], comp, atol=1e-6)
            np.testing.assert_allclose(out[row].values["sufficiency"][o], suff, atol=1e-6)
            assert abs(out[row].values["aopc_comprehensiveness"][o] - np.mean(comp)) < 1e-6
            curve = [abs(p_full - p_without(int(np.floor(f / 10 * length + 0.5)))) for f in range(11)]
            area = sum((curve[i] + curve[i + 1]) / 2 * 0.1 for i in range(10))
            assert abs(out[row].values["deletion_area"][o] - area) < 1e-6


def test_the_best_order_beats_random_which_beats_the_worst(setup):
    """Scores = each event's leave-one-out effect on the prediction, measured by brute force: removing the
    top-1 event of that order moves the prediction the most any single removal can, and its reverse the
    least; a random order's top-1 lies in between, session by session."""
    model, enc, ids = setup
    loo = np.zeros(int(enc.offsets[-1]))
    for row in range(len(enc)):
        lo, length = int(enc.offsets[row]), int(enc.lengths[row])
        p_full = _p_masked(model, enc, row, np.ones(length, bool))
        for i in range(length):
            keep = np.ones(length, bool)
            keep[i] = False
            loo[lo + i] = abs(p_full - _p_masked(model, enc, row, keep)) if length > 1 else 0.0
    out = evaluate_sessions(model, enc, [loo, -loo], ids, FaithfulnessOptions(random_draws=5))
    best, worst = (np.array([m.values["comprehensiveness"][i, 0] for m in out]) for i in (0, 1))
    rand = np.array([m.values["comprehensiveness"][2:, 0].mean() for m in out])
    multi = enc.lengths > 1
    assert np.all(best[multi] >= rand[multi] - 1e-9) and np.all(rand[multi] >= worst[multi] - 1e-9)
    assert best.mean() > rand.mean() > worst.mean()


def test_sessions_of_one_event(setup):
    import pyarrow as pa

    model, _, _ = setup
    table = synthetic_sessions(40, seed=11, max_len=18)  # the fixture's sessions and vocabulary
    rows = table.to_pylist()[:6]
    for r in rows:  # each session cut to its first event
        for key, value in r.items():
            if isinstance(value, list):
                r[key] = value[:1]
        r["session_length"] = 1
    single = encode_sessions(pa.Table.from_pylist(rows, schema=table.schema), vocab_of(table))
    out = evaluate_sessions(
        model, single, [np.ones(6)], [f"s{i}" for i in range(6)], FaithfulnessOptions(random_draws=2)
    )
    p_empty = empty_probability(model, "cpu")
    for m in out:
        # removing the only event leaves the empty session, for every order alike; keeping it changes nothing
        np.testing.assert_allclose(m.values["comprehensiveness"], abs(m.p_full - p_empty), atol=1e-9)
        np.testing.assert_allclose(m.values["sufficiency"], 0.0, atol=1e-12)
        assert m.p_full != p_empty


def test_random_orders_are_reproducible_and_uniform():
    a = random_ranks("user1_dev_2025-01-15_1", 6, 4, seed=7)
    assert np.array_equal(a, random_ranks("user1_dev_2025-01-15_1", 6, 4, seed=7))
    assert not np.array_equal(a, random_ranks("user1_dev_2025-01-15_2", 6, 4, seed=7))
    assert all(sorted(r) == list(range(6)) for r in a.tolist())
    first = np.concatenate([np.argmin(random_ranks(f"s{i}", 4, 5, 0), axis=1) for i in range(2000)])
    counts = np.bincount(first, minlength=4)
    assert counts.min() > 0.9 * 2500 and counts.max() < 1.1 * 2500  # 10,000 draws, 4 equally likely


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.integers(0, 4, 9).astype(float)
        b = rng.random(9)
        expected = spearmanr(a, b).statistic
        if np.isnan(expected):  # a constant a: both must say undefined
            assert np.isnan(spearman(a, b))
        else:
            assert abs(spearman(a, b) - expected) < 1e-12
    assert average_ranks(np.array([3.0, 1.0, 3.0])).tolist() == [2.5, 1.0, 2.5]
    assert np.isnan(spearman(np.ones(4), np.arange(4.0)))


# --------------------------------------------------------------------------------------------------
# The Spark stage
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attributed(spark, tmp_path_factory):

    root = tmp_path_factory.mktemp("faith")
    table = synthetic_sessions(90, seed=13, max_len=20, full=True)
    (root / "out" / "sessions").mkdir(parents=True)
    pq.write_table(table, root / "out" / "sessions" / "part-0.parquet")
    loaded = save_random_model(root / "out" / "model", vocab_of(table))
    attribute_stage.run(spark, _conf(root))
    return root, table, loaded


def _sets(root) -> list[str]:
    """The stage tests' settings, as ``dotted.key=value`` (``--set`` values)."""
    methods = ["grad_x_input", "attention", "attention_rollout", "integrated_gradients"]
    return [
        f"run.output_dir={root}/out",
        "run.run_id=f1",
        f"attribution.methods={json.dumps(methods)}",
        "attribution.ig_steps=8",
        "attribution.split=all",
        "faithfulness.max_sessions=50",
        "faithfulness.random_draws=3",
    ]


def _conf(root, *extra):
    return make_conf(*_sets(root), *extra)


def test_stage_tables_match_the_in_process_metrics(spark, attributed):
    import pandas as pd

    root, table, loaded = attributed
    summary = faithfulness_stage.run(spark, _conf(root)).summary
    report = root / "out" / "report"
    faith = pd.read_csv(report / "attribution_faithfulness.csv")
    agree = pd.read_csv(report / "attribution_agreement.csv")
    methods = ["grad_x_input", "attention", "attention_rollout", "integrated_gradients"]
    assert summary["sessions"] == 50 and summary["methods"] == methods
    assert len(faith) == 4 * (6 + 6 + 3) and set(faith.sessions) == {50}
    assert (faith.ci_low <= faith.value).all() and (faith.value <= faith.ci_high).all()
    # every method is compared with the same random orders
    assert (faith.groupby(["metric", "k"]).random_baseline.nunique() == 1).all()
    assert summary["prediction_check_max_abs"] < 1e-6
    # the per-session rows equal the in-process evaluation of the event table's scores
    per = pd.read_parquet(root / "out" / "attribution_faithfulness_sessions")
    events = pd.read_parquet(root / "out" / "gradient_attribution_no_funnel").sort_values(
        ["session_id", "event_position"]
    )
    picked = sorted(per.session_id.unique())
    assert len(picked) == 50
    sub = table.filter(pc.is_in(table["session_id"], pa.array(picked)))
    enc = encode_sessions(sub, loaded.vocab)
    ids = sub.column("session_id").to_pylist()
    ev = events.set_index("session_id").loc[ids]
    cols = ["gradient_attribution", "attention_attribution", "rollout_attribution", "ig_attribution"]
    ref = evaluate_sessions(
        loaded.model, enc, [ev[c].to_numpy() for c in cols], ids, faithfulness_stage.options_of(_conf(root))
    )
    got = per[(per.metric == "aopc_comprehensiveness")].set_index(["session_id", "method"])
    for i, sid in enumerate(ids):
        for m, method in enumerate(methods):
            row = got.loc[(sid, method)]
            assert abs(row.value - ref[i].values["aopc_comprehensiveness"][m]) < 1e-6
            assert abs(row.random_value - ref[i].values["aopc_comprehensiveness"][4:].mean()) < 1e-6
    # the summary table is the mean of the per-session rows
    mean = per[(per.metric == "comprehensiveness") & (per.k == "3")].groupby("method").value.mean()
    table_rows = faith[(faith.metric == "comprehensiveness") & (faith.k == "3")].set_index("method").value
    np.testing.assert_allclose(table_rows[methods].to_numpy(), mean[methods].to_numpy(), atol=1e-12)
    # agreement: six pairs, quartiles in order, sessions of 3+ events only
    assert len(agree) == 6
    assert ((agree.q25 <= agree["median"]) & (agree["median"] <= agree.q75)).all()
    assert agree.sessions.max() <= (per.drop_duplicates("session_id").session_length >= 3).sum()
    # the verdict, recomputed here from the per-session rows: the method whose AOPC comprehensiveness
    # most exceeds the same sessions' random orders (paired, per session), and whether the 95% CI of that
    # paired difference (mean +/- 1.959964 x sd / sqrt(n)) lies above 0; sufficiency the lowest
    paired = per.assign(diff=per.value - per.random_value).groupby(["metric", "method"])["diff"]
    comp, suff = paired.mean()["aopc_comprehensiveness"], paired.mean()["aopc_sufficiency"]
    best = comp.idxmax()
    sd, n = paired.std(ddof=1)["aopc_comprehensiveness"][best], paired.count()["aopc_comprehensiveness"][best]
    verdict = summary["most_faithful"]
    assert verdict["by_comprehensiveness"] == best and verdict["by_sufficiency"] == suff.idxmin()
    assert verdict["comprehensiveness_vs_random"] == pytest.approx(comp[best])
    assert verdict["beats_random"] == bool(comp[best] - 1.959964 * sd / np.sqrt(n) > 0)
    aopc = faith[faith.metric == "aopc_comprehensiveness"].set_index("method")
    low = comp - 1.959964 * paired.std(ddof=1)["aopc_comprehensiveness"] / np.sqrt(
        paired.count()["aopc_comprehensiveness"]
    )
    np.testing.assert_allclose(aopc.vs_random_ci_low[methods].to_numpy(), low[methods].to_numpy(), atol=1e-9)
    assert aopc.beats_random[methods].tolist() == (low[methods] > 0).tolist()
    for out in ("attribution_faithfulness.png", "delta/attribution_faithfulness", "parquet/attribution_agreement"):
        assert (report / out).exists()


def test_a_model_other_than_the_event_tables_is_refused(spark, attributed, tmp_path):
    from attribution.faithfulness import FaithfulnessInputError

    root, table, _ = attributed
    save_random_model(tmp_path / "other", vocab_of(table), seed=5)
    with pytest.raises(FaithfulnessInputError, match="re-run the attribute stage"):
        faithfulness_stage.run(spark, _conf(root), model_path=str(tmp_path / "other"))


def test_sessions_missing_from_the_sessions_table_are_an_error_not_a_smaller_sample(spark, attributed, tmp_path):
    from attribution.faithfulness import FaithfulnessInputError

    root, table, _ = attributed
    (tmp_path / "fewer").mkdir()
    pq.write_table(table.slice(10), tmp_path / "fewer" / "part-0.parquet")  # the first 10 sessions gone
    conf = _conf(root, f"sessions.sessions_path={tmp_path / 'fewer'}", "faithfulness.max_sessions=1000")
    with pytest.raises(FaithfulnessInputError, match=r"10 of the 90 sampled sessions .* are not in the sessions table"):
        faithfulness_stage.run(spark, conf)


def test_the_faithfulness_job_prints_the_verdict_and_another_model_is_one_line_and_exit_2(
    spark, attributed, tmp_path, capsys
):
    """``python -m jobs.faithfulness`` as an entry point: exit 0 and the summary whose AOPC lines are the
    published table's values; ``--model`` pointing at another model is one line on stderr and exit 2."""
    import pandas as pd

    from jobs import faithfulness as job

    root, table, _ = attributed
    args = [a for s in _sets(root) for a in ("--set", s)]
    assert job.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("faithfulness: 50 sessions"))
    assert lines[head + 1].startswith("AOPC comprehensiveness")
    faith = pd.read_csv(root / "out" / "report" / "attribution_faithfulness.csv")
    aopc = faith[faith.metric == "aopc_comprehensiveness"].set_index("method")
    for line in lines[head + 2 : head + 6]:
        method, value, _, random = line.split()
        assert float(value) == pytest.approx(aopc.value[method], abs=5e-5)
        assert float(random.rstrip(")")) == pytest.approx(aopc.random_baseline[method], abs=5e-5)
    save_random_model(tmp_path / "other", vocab_of(table), seed=5)
    assert job.main([*args, "--model", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "re-run the attribute stage" in err[0]


def test_sessions_whose_inputs_changed_since_the_attribute_stage_are_an_error(spark, attributed, tmp_path):
    """The UDF recomputes each sampled session's prediction: where a session's events are not the ones
    attributed (same length, other store ids), the stage stops with one line naming the cause."""
    from attribution.faithfulness import FaithfulnessInputError

    root, table, _ = attributed
    ids = table.column("store_ids").to_pylist()
    changed = [list(reversed(s)) if i < 30 else s for i, s in enumerate(ids)]
    changed = [[*s[1:], "a_store_the_model_never_saw"] if i < 30 else s for i, s in enumerate(changed)]
    (tmp_path / "changed").mkdir()
    field = table.schema.field("store_ids")
    pq.write_table(
        table.set_column(table.schema.get_field_index("store_ids"), field, pa.array(changed, field.type)),
        tmp_path / "changed" / "part-0.parquet",
    )
    conf = _conf(root, f"sessions.sessions_path={tmp_path / 'changed'}", "faithfulness.max_sessions=1000")
    with pytest.raises(
        FaithfulnessInputError, match=r"prediction for a sampled session differs from the event table's"
    ):
        faithfulness_stage.run(spark, conf)


def test_counts_spark_connect_drops_are_counted_again_and_the_udfs_counters_are_null(
    spark, attributed, monkeypatch, caplog
):
    """Spark Connect 4.1 can drop an Observation's metrics (attribution.observed): the sampled sessions
    are counted again from the event table, so the run and its tables are the same; the UDF's counters,
    which nothing else holds, are null in the summary, not zero."""
    from attribution import observed

    root, _, _ = attributed
    summary = faithfulness_stage.run(spark, _conf(root)).summary
    monkeypatch.setattr(observed, "delivered", lambda observation: ({}, False))
    with caplog.at_level("WARNING", logger="attribution.observed"):
        dropped = faithfulness_stage.run(spark, _conf(root)).summary
    assert "faithfulness's sampled sessions: the Spark Connect server sent no observed metrics" in caplog.text
    assert summary["prediction_check_max_abs"] < 1e-6 and summary["forward_positions"] > 0
    assert dropped["prediction_check_max_abs"] is None and dropped["forward_positions"] is None
    timing = ("prediction_check_max_abs", "forward_positions", "evaluate_seconds", "seconds")
    assert {k: v for k, v in dropped.items() if k not in timing} == {
        k: v for k, v in summary.items() if k not in timing
    }
