"""Training: vocabularies in Spark, a short run that learns a planted rule, determinism, TorchDistributor."""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

from attribution import baseline, ground_truth, schema, train, train_worker
from attribution.features import build_vocabularies
from attribution.model import ModelSpec, SessionTransformer, build_model, load_artifact
from attribution.report import NO_ORDER_EVIDENCE_VERDICT
from attribution.report_text import PAIRS_GATED
from attribution.schema import POSITION_BIN_UPPER, POSITION_BINS
from tests.conftest import make_conf
from tests.helpers import (
    QUICK_BASELINE,
    ordered_pairs_by_sessions,
    removal_model_probabilities,
    run_small_pipeline,
    small_model_sets,
    synthetic_sessions,
    vocab_of,
    write_shards,
)

# the tests' small model with one layer (trains in seconds), and small training settings
SMALL = [
    *small_model_sets(n_layers=1, ff_dim=48),
    "train.batch_size=32",
    "train.epochs=6",
    "train.patience=6",
    "train.ensemble_members=1",
    "train.learning_rate=0.003",
    "train.warmup_steps=10",
    "train.threads_per_process=1",
    *QUICK_BASELINE,
]


def _spark_df(spark, table, path):
    pq.write_table(table, path / "sessions.parquet")
    return spark.read.parquet(str(path / "sessions.parquet"))


def test_vocabularies_in_spark_match_a_plain_count(spark, tmp_path):
    table = synthetic_sessions(300, seed=2)
    df = _spark_df(spark, table, tmp_path)
    vocab, stats = build_vocabularies(df, min_frequency=5, max_size=1000)
    expected = vocab_of(table, min_frequency=5)
    assert vocab.tokens == expected.tokens  # same values, most frequent first, ties by value
    assert "store_tags" not in vocab.fields  # the input has no tags: no embedding for them
    assert stats["store_ids"]["distinct"] == 12 and stats["store_ids"]["kept"] == len(expected.tokens["store_ids"])
    capped, capped_stats = build_vocabularies(df, min_frequency=1, max_size=3)
    assert capped.tokens["store_ids"] == vocab_of(table, 1).tokens["store_ids"][:3]
    assert capped_stats["store_ids"]["to_unk"] == 12 - 3


def _params(conf, table, shards, epochs=None):
    vocab = vocab_of(table.filter(pc.equal(table["split"], "train")), 2)
    spec = ModelSpec.of(conf.model, vocab, 30)
    return train.worker_params(conf, spec.to_dict(), vocab, str(shards), epochs or conf.train.epochs), spec, vocab


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    table = synthetic_sessions(1500, seed=4)
    write_shards(table, root, n_shards=4)
    return table, root


@pytest.fixture(scope="module")
def small_run(planted):
    """One training of SMALL on the planted shards (the embedding ridge at its default, 100), which the
    determinism, ensemble and ridge tests each compare with a run of their own."""
    table, root = planted
    params, spec, vocab = _params(make_conf(*SMALL), table, root)
    return train_worker.train_worker(params), spec, vocab


def _oracle_auc(table, split="test"):
    """The best any model can do: the planted rule's own probabilities (0.8 / 0.1)."""
    from attribution.metrics import roc_auc

    rows = [i for i, s in enumerate(table.column("split").to_pylist()) if s == split]
    names = table.column("event_names").to_pylist()
    stores = table.column("store_ids").to_pylist()
    p = [
        0.8 if any(e == "m_card_click" and s in ("s0", "s1") for e, s in zip(names[i], stores[i], strict=True)) else 0.1
        for i in rows
    ]
    y = [table.column("label")[i].as_py() for i in rows]
    return roc_auc(y, p)


def test_short_training_learns_the_planted_rule_and_reruns_identically(planted, small_run):
    table, root = planted
    first, spec, vocab = small_run
    params, _, _ = _params(make_conf(*SMALL), table, root)
    oracle = _oracle_auc(table)
    assert first.test["sessions"] == table.column("split").to_pylist().count("test")
    assert first.test["roc_auc"] > 0.5 + 0.8 * (oracle - 0.5), (first.test, oracle)
    assert first.history[-1]["loss"] < first.history[0]["loss"]
    second = train_worker.train_worker(params)
    assert hashlib.sha256(first.weights).hexdigest() == hashlib.sha256(second.weights).hexdigest()
    # the best checkpoint is the one returned: its validation AUC is the history's best
    best = max(h["validation_roc_auc"] for h in first.history)
    assert first.validation["roc_auc"] == pytest.approx(best, abs=1e-12)
    loaded = build_model(first.weights, {"model": spec.to_dict(), "weights_sha256": "x"}, vocab)
    assert loaded.spec == spec


def test_patience_counts_only_gains_of_min_improvement_and_the_best_epoch_is_kept(planted, small_run):
    """train.min_improvement: an epoch resets the patience only when its validation AUC beats the last
    such epoch's by that much; the model kept is still the highest-AUC epoch's. The expected stop is
    worked out from small_run's own validation AUCs (the same seed gives the same epochs)."""
    table, root = planted
    aucs = [h["validation_roc_auc"] for h in small_run[0].history]
    params, _, _ = _params(make_conf(*SMALL, "train.patience=2", "train.min_improvement=0.1"), table, root)
    assert params.min_improvement == 0.1
    expected_rising, reference, bad = [], None, 0
    for auc in aucs:
        rising = reference is None or auc >= reference + 0.1
        expected_rising.append(rising)
        reference, bad = (auc, 0) if rising else (reference, bad + 1)
        if bad == 2:
            break
    assert len(expected_rising) < len(aucs)  # this data and gap stop early, or the test shows nothing
    run = train_worker.train_worker(params)
    assert [h["validation_roc_auc"] for h in run.history] == pytest.approx(aucs[: len(expected_rising)], abs=1e-9)
    assert [h["rising"] for h in run.history] == expected_rising
    kept = aucs[: len(expected_rising)]
    assert run.best_epoch == kept.index(max(kept)) + 1
    assert run.validation["roc_auc"] == pytest.approx(max(kept), abs=1e-12)


def test_the_plateau_schedule_anneals_once_the_validation_auc_levels_off(planted):
    """train.schedule=plateau: after the warm-up the rate is the peak until the validation AUC has not
    risen by min_improvement for `patience` epochs, then it anneals to 0 over decay_epochs and training
    stops; when the cap comes first, the annealing fills the last decay_epochs and says so."""
    rate = train_worker.PlateauRate(warmup=4)
    assert [rate(s) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    rate.decay(10, 20)
    assert [rate(s) for s in (9, 10, 20, 30, 40)] == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0], abs=1e-12)

    table, root = planted
    sets = (*SMALL, "train.schedule=plateau", "train.patience=1", "train.min_improvement=0.05", "train.epochs=8")
    params, _, _ = _params(make_conf(*sets, "train.decay_epochs=2"), table, root)
    assert (params.schedule, params.decay_epochs) == ("plateau", 2)
    run = train_worker.train_worker(params)
    history = run.history
    aucs = [h["validation_roc_auc"] for h in history]
    # the first epoch whose AUC does not beat the last rising one by 0.05 ends the peak-rate phase
    reference, stable = aucs[0], len(aucs)
    for i, auc in enumerate(aucs[1:], start=2):
        if auc >= reference + 0.05:
            reference = auc
        else:
            stable = i
            break
    assert stable + 2 == len(history) < 8, aucs  # two epochs of annealing after it, then the stop
    assert [h.get("decay") for h in history] == [None] * stable + ["plateau", "plateau"]
    peak = params.learning_rate
    assert [h["learning_rate"] for h in history[:stable]] == pytest.approx([peak] * stable)
    assert 0 < history[-2]["learning_rate"] < peak and history[-1]["learning_rate"] < 0.01 * peak
    assert run.best_epoch == aucs.index(max(aucs)) + 1
    # the cap before any plateau: the annealing takes the last epoch, started by the epochs running out
    params, _, _ = _params(
        make_conf(*SMALL, "train.schedule=plateau", "train.epochs=2", "train.patience=5"), table, root
    )
    capped = train_worker.train_worker(params).history
    assert [h.get("decay") for h in capped] == [None, "epochs"]
    assert capped[0]["learning_rate"] == pytest.approx(peak) and capped[1]["learning_rate"] < 0.01 * peak
    # "still rising" (the stage's warning): with plateau, when the epochs ran out before the AUC levelled off
    from attribution.stages.train import still_improving

    assert still_improving("plateau", capped, 2, 2) and not still_improving("plateau", history, run.best_epoch, 8)


def test_the_average_schedule_keeps_the_weights_moving_average_and_stops_when_it_levels_off(planted):
    """train.schedule=average: the rate stays at the peak after the warm-up, and the model scored on the
    validation split and kept is the weights' exponential moving average over about average_epochs
    epochs of steps. Its validation AUC decides the stop (patience, min_improvement) as cosine's does."""
    table, root = planted
    sets = (*SMALL, "train.schedule=average", "train.epochs=6")
    # an average over a tiny span is the model itself: it learns the planted rule over the epochs
    params, _, _ = _params(make_conf(*sets, "train.average_epochs=0.0001"), table, root)
    assert (params.schedule, params.average_epochs) == ("average", 0.0001)
    itself = [h["validation_roc_auc"] for h in train_worker.train_worker(params).history]
    assert itself[-1] - itself[0] > 0.03, itself
    # an average over 1,000 epochs barely leaves the weights after the first step: the scored model does
    # not learn, though the weights under it train as above (scoring them would give the rise above)
    params, _, _ = _params(make_conf(*sets, "train.average_epochs=1000"), table, root)
    frozen = [h["validation_roc_auc"] for h in train_worker.train_worker(params).history]
    assert max(frozen) - min(frozen) < 0.01 and max(frozen) < itself[-1] - 0.02, (frozen, itself)
    # the default span, and the stop: the first epoch that does not beat the last rising one by 0.02 ends it
    stop_by = ("train.patience=1", "train.min_improvement=0.02")
    params, _, _ = _params(make_conf(*sets, *stop_by, "train.ensemble_members=2"), table, root)
    run = train_worker.train_worker(params)
    aucs = [h["validation_roc_auc"] for h in run.history]
    reference, stop = aucs[0], len(aucs)
    for i, auc in enumerate(aucs[1:], start=2):
        if auc >= reference + 0.02:
            reference = auc
        else:
            stop = i
            break
    assert len(aucs) == stop, aucs
    assert [h["learning_rate"] for h in run.history] == pytest.approx([params.learning_rate] * len(aucs))
    assert run.best_epoch == aucs.index(max(aucs)) + 1
    assert run.validation["roc_auc"] == pytest.approx(max(aucs), abs=1e-12)
    # the member trains the model's best epoch's number of epochs and keeps its last: it stops where the
    # model's kept weights did, not by its own validation AUC (the model ran on past its best, patience)
    (member,) = run.members
    assert len(aucs) > run.best_epoch, aucs
    assert member.epochs_run == member.best_epoch == run.best_epoch, (member.epochs_run, member.best_epoch)
    assert member.test["roc_auc"] > 0.6, member.test  # it learns the rule as the model does


def test_ensemble_members_are_other_models_and_the_first_is_the_model_alone(planted, small_run):
    """train.ensemble_members=2: the first model is the one a single-model run trains (same weights), the
    second differs (another seed, a bootstrap resample) yet also learns the rule (better than chance), and
    its test metrics cover every test session."""
    table, root = planted
    alone, _, _ = _params(make_conf(*SMALL), table, root)
    params, spec, vocab = _params(make_conf(*SMALL, "train.ensemble_members=2"), table, root)
    assert params.members == 2 and alone.members == 1
    single = small_run[0]
    both = train_worker.train_worker(params)
    assert single.members == () and len(both.members) == 1
    assert hashlib.sha256(both.weights).hexdigest() == hashlib.sha256(single.weights).hexdigest()
    member = both.members[0]
    assert hashlib.sha256(member.weights).hexdigest() != hashlib.sha256(both.weights).hexdigest()
    first = build_model(both.weights, {"model": spec.to_dict(), "weights_sha256": "x"}, vocab).model
    second = build_model(member.weights, {"model": spec.to_dict(), "weights_sha256": "x"}, vocab).model
    gap = max((a - b).abs().max().item() for a, b in zip(first.parameters(), second.parameters(), strict=True))
    assert gap > 1e-3
    assert member.test["sessions"] == table.column("split").to_pylist().count("test")
    # above chance: on 1,000 training sessions a single model's test AUC already swings from 0.73 to 0.91
    # with the seed alone, so the member is held to learning the rule, not to matching the first model
    assert member.test["roc_auc"] > 0.5 + 0.25 * (_oracle_auc(table) - 0.5), member.test


def test_the_context_paths_rate_falls_with_the_training_sessions(planted):
    """train.context_lr_scale applies in full from train.context_full_sessions training sessions and in
    proportion below (never under the model's own rate); the worker trains the matrix at that rate: on the
    same data and seed, the matrix moves further at 10x than at 1x."""
    assert train_worker.context_rate_multiple(10, 20_000, 50_000) == 10
    assert train_worker.context_rate_multiple(10, 20_000, 20_000) == 10
    assert train_worker.context_rate_multiple(10, 20_000, 5_000) == 2.5
    assert train_worker.context_rate_multiple(10, 20_000, 1_000) == 1  # 0.5 would be under the model's rate
    assert train_worker.context_rate_multiple(0.5, 20_000, 50_000) == 0.5  # a scale under 1 is kept as set
    table, root = planted
    n_train = table.column("split").to_pylist().count("train")
    with_context = [*SMALL, "model.context=true", "train.context_lr_scale=10"]
    slow_params, spec, vocab = _params(make_conf(*with_context), table, root)
    fast_params, _, _ = _params(make_conf(*with_context, f"train.context_full_sessions={n_train}"), table, root)
    assert spec.context and n_train < 20_000 / 10  # the default full_sessions (20,000) gives 1x here
    assert slow_params.context_full_sessions == 20_000 and fast_params.context_full_sessions == n_train

    def matrix(params):
        result = train_worker.train_worker(params)
        return build_model(result.weights, {"model": spec.to_dict(), "weights_sha256": "x"}, vocab).model.context_matrix

    slow_w, fast_w = matrix(slow_params).detach(), matrix(fast_params).detach()
    assert fast_w.abs().max() > 2 * slow_w.abs().max(), (fast_w.abs().max(), slow_w.abs().max())


def _store_norms(result, spec, vocab):
    """Each store value's projected embedding norm |W e_v| in a trained model."""
    model = build_model(result.weights, {"model": spec.to_dict(), "weights_sha256": "x"}, vocab).model
    w = model.field_projection("store_ids").detach()
    rows = model.embeddings["store_ids"].weight.detach()[2:]
    return dict(zip(vocab.tokens["store_ids"], (rows @ w.T).norm(dim=1).tolist(), strict=True))


def test_the_embedding_ridge_keeps_the_planted_stores_and_shrinks_the_rest(planted, small_run):
    """Only clicks on s0 and s1 convert. With the ridge (train.embedding_ridge), those two stores keep the
    two largest representations; the other stores' shrink, together, to under half of what they are
    without it, more than the planted stores' do; and the model still learns the rule."""
    table, root = planted
    params, spec, vocab = _params(make_conf(*SMALL, "train.embedding_ridge=0"), table, root)
    free_run = train_worker.train_worker(params)
    assert make_conf(*SMALL).train.embedding_ridge == 100  # small_run's
    runs = {0: (free_run, _store_norms(free_run, spec, vocab)), 100: (small_run[0], _store_norms(*small_run))}
    (with_ridge, shrunk), (_, free) = runs[100], runs[0]
    assert sorted(shrunk, key=shrunk.get)[-2:] in (["s0", "s1"], ["s1", "s0"]), shrunk

    def kept(stores):
        return sum(shrunk[s] for s in stores) / sum(free[s] for s in stores)

    others = [s for s in shrunk if s not in ("s0", "s1")]
    assert len(others) >= 5 and kept(others) < 0.5 and kept(others) < kept(["s0", "s1"]), (shrunk, free)
    oracle = _oracle_auc(table)
    assert with_ridge.test["roc_auc"] > 0.5 + 0.8 * (oracle - 0.5), (with_ridge.test, oracle)


def test_torch_distributor_local_mode_with_two_processes(spark, planted):
    table, root = planted
    conf = make_conf(*SMALL, "train.num_processes=2", "train.epochs=10", "train.patience=10")
    params, spec, vocab = _params(conf, table, root)
    result = train.distribute(conf, params)
    # both ranks' test shards were scored and gathered: every test session counted once
    assert result.test["sessions"] == table.column("split").to_pylist().count("test")
    assert result.test["roc_auc"] > 0.5 + 0.6 * (_oracle_auc(table) - 0.5)
    assert len(result.history) == 10
    # the gathered weights build the model whose validation AUC was the best of the history
    built = build_model(result.weights, {"model": spec.to_dict(), "weights_sha256": "x"}, vocab)
    assert built.spec == spec
    assert sum(p.numel() for p in built.model.parameters()) == sum(
        p.numel() for p in SessionTransformer(spec).parameters()
    )
    assert result.validation["roc_auc"] == pytest.approx(max(h["validation_roc_auc"] for h in result.history))
    best = result.history[result.best_epoch - 1]
    assert best["validation_roc_auc"] == max(h["validation_roc_auc"] for h in result.history)


def test_a_rank_without_sessions_is_a_clear_error(tmp_path):
    table = synthetic_sessions(30, seed=1)
    write_shards(table, tmp_path, n_shards=1)  # only shard 0: rank 1 of 2 gets nothing
    conf = make_conf(*SMALL)
    params, _, _ = _params(conf, table, tmp_path)
    # read as rank 1 of 2 would, without a process group
    with pytest.raises(RuntimeError, match="rank 1 of 2 has no training sessions"):
        train_worker.train_process(params, 1, 2, torch.device("cpu"), distributed=False)


@pytest.mark.slow
def test_pipeline_trains_attributes_and_writes_artifact_metrics_and_leakage_check(spark, tmp_path):
    """generate -> sessionize -> train (2 processes) -> attribute on a small dataset, via the pipeline job."""
    out = tmp_path / "out"
    run_small_pipeline(
        tmp_path,
        out,
        1500,
        "run.run_id=t-train",
        "train.num_processes=2",
        "train.leakage_check=true",
        "train.leakage_check_epochs=2",
        *SMALL,
        # the acceptance bars below were set on the cosine over 3 epochs at this size: conf/local.yaml's
        # moving average, capped at 3 epochs, lags the weights and finds 2 of the 5 planted stores on this
        # seed (docs/scenarios.md, "Training that stops by itself"); tests/test_cluster.py runs it end to end
        "train.schedule=cosine",
        "train.epochs=3",
        "train.ensemble_members=2",  # the removal CI's model part, end to end
        "attribution.ig_steps=4",
        "generate.n_stores=60",  # the 400 default's stores see too few of 1,500 users for the store bar
    )
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    sessions = spark.read.parquet(str(out / "sessions"))
    by_split = {r["split"]: r["count"] for r in sessions.groupBy("split").count().collect()}
    assert metrics["sessions"] == by_split
    assert metrics["test"]["sessions"] == by_split["test"]
    # the context path's rate for this many training sessions, counted here (conf/local.yaml: 10x from 20,000)
    expected_multiple = max(1.0, 10 * by_split["train"] / 20_000)
    assert metrics["context_rate"]["multiple"] == pytest.approx(expected_multiple)
    assert 0.6 < metrics["test"]["roc_auc"] < 0.95
    # "still rising": the last allowed epoch is the best and beat the last epoch that reset the patience
    # by train.min_improvement (0.001)
    aucs = [h["validation_roc_auc"] for h in metrics["history"]]
    reference = aucs[0]
    for auc in aucs[1:-1]:
        reference = auc if auc >= reference + 0.001 else reference
    rising_at_end = len(aucs) == 3 and aucs[-1] == max(aucs) and aucs[-1] >= reference + 0.001
    assert metrics["still_improving"] is rising_at_end, aucs
    leak = metrics["leakage_check"]["test"]["roc_auc"]
    assert leak > metrics["test"]["roc_auc"] + 0.05
    loaded = load_artifact(str(out / "model"))
    assert loaded.sha256 == metrics["model_sha256"]
    assert loaded.sha256 == hashlib.sha256((out / "model" / "model.safetensors").read_bytes()).hexdigest()
    assert np.isclose(
        json.loads((out / "model" / "model_config.json").read_text())["test_roc_auc"], metrics["test"]["roc_auc"]
    )
    # the attribute stage: one row per test event, tied to this model
    events = spark.read.parquet(str(out / "gradient_attribution_no_funnel"))
    test_events = sessions.where("split = 'test'").selectExpr("sum(session_length)").first()[0]
    assert events.count() == test_events
    assert {r[0] for r in events.select("model_sha256").distinct().collect()} == {metrics["model_sha256"]}
    summary = json.loads((out / "attribute_summary.json").read_text())
    assert summary["events"] == test_events and summary["sessions"] == by_split["test"]
    # faithfulness and the planted-driver comparison reach the manifest and the report
    manifest = json.loads((out / "manifest.json").read_text())
    methods = ["grad_x_input", "attention", "attention_rollout", "integrated_gradients"]
    faith = manifest["stages"]["faithfulness"]
    assert faith["sessions"] == min(300, by_split["test"]) and faith["methods"] == methods
    assert faith["most_faithful"]["by_comprehensiveness"] in methods
    assert manifest["stages"]["report"]["most_faithful"] == faith["most_faithful"]
    truth = manifest["ground_truth"]
    assert truth["default_method"] == "integrated_gradients" and set(truth["checks"]) == set(methods)
    recovered = pd.read_csv(out / "report" / "ground_truth_recovery.csv")
    # three checks per method, the removal column's and its five scores (coverage of event types and of
    # position bins, error, signs, wrong directions) and the pair table's two (invented pairs, sign
    # errors) for every method, the signed ones two more (their effect order against the planted effects
    # and against the true removal effects)
    assert len(recovered) == 4 * 11 + 2 * 2
    assert set(recovered[recovered.check == "event_type_removal_spearman"].method) == set(methods)
    signed = {"grad_x_input", "integrated_gradients"}
    assert set(recovered[recovered.check == "event_type_effect_vs_removal_spearman"].method) == signed
    # the acceptance bars, for the default method, on this run. At this size (1,500 users, 60 stores, 3
    # epochs, the settings above) three other seeds (run.seed 1, 2 and 3; this test runs conf/local.yaml's
    # 7) gave an event-type order of 0.92, 0.88 and 0.90 against the bar of 0.8, a store top 5 holding 4, 3
    # and 4 of the 5 planted stores (bar: 3), and a position direction of -0.9, -0.9 and -0.6 (bar: below
    # 0). With the default 400 stores the top 5 held 1 and 4 on seeds 1 and 2: too few sessions a store
    ig = recovered[recovered.method == "integrated_gradients"].set_index("check")
    for check in ("event_type_effect_spearman", "store_precision_at_5", "position_direction_spearman"):
        assert ig.loc[check, "agrees"], (check, ig.loc[check].to_dict())
    assert ig.loc["event_type_effect_spearman", "value"] >= ground_truth.ACCEPTANCE
    assert ig.loc["store_precision_at_5", "value"] >= 0.6
    assert (out / "report" / "attribution_faithfulness.png").stat().st_size > 10_000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == metrics["model_sha256"]
    assert manifest["model"]["test_roc_auc"] == metrics["test"]["roc_auc"]
    assert manifest["model"]["leakage_check_test_roc_auc"] == leak
    assert set(manifest["timings_s"]) == {"generate", "sessionize", "train", "attribute", "faithfulness", "report"}
    # the report: the original analysis's CSVs, one row per event type of the default method (conf/local.yaml's)
    csv = pd.read_csv(out / "report" / "event_type_attribution_no_funnel.csv")
    n_types = events.select("event_type").distinct().count()
    assert len(csv) == n_types and set(csv.method) == {"integrated_gradients"}
    assert (out / "report" / "attention_attribution_analysis.png").stat().st_size > 50_000
    # the removal columns: the mean of the two members, each member's value in the event table, a CI with
    # both parts; the coverage row recomputed here from the published CSV and the generator's truth
    sampled = events.where("removal_effect_type is not null").select(
        "removal_effect_type", "removal_effect_type_members"
    )
    pairs = sampled.toPandas()
    assert len(pairs) > 100 and {len(m) for m in pairs.removal_effect_type_members} == {2}
    np.testing.assert_allclose(pairs.removal_effect_type, [np.mean(m) for m in pairs.removal_effect_type_members])
    removal = csv.dropna(subset=["removal_effect_pp"])
    assert set(removal.removal_models) == {2} and removal.removal_model_se_pp.notna().all()
    half = (removal.removal_ci_high_pp - removal.removal_ci_low_pp) / 2
    assert (half > 1.959 * removal.removal_sampling_se_pp).all() and (half > 12.7 * removal.removal_model_se_pp).all()
    planted = json.loads((tmp_path / "truth.json").read_text())["true_removal_effect_pp"]["event_type"]
    whole = removal[removal.event_type.isin(list(planted))]
    held = (whole.removal_ci_low_pp <= whole.event_type.map(planted)) & (
        whole.event_type.map(planted) <= whole.removal_ci_high_pp
    )
    row = recovered[
        (recovered.method == "integrated_gradients") & (recovered.check == "removal_ci_coverage_event_type")
    ]
    assert len(whole) >= 5 and row.value.item() == pytest.approx(held.mean()) and row.compared.item() == len(whole)
    # the counts baseline's removal effects: its own Spark ML models (vectorizer and regression, as saved)
    # scoring each sampled session with and without each event type, against the published column
    _check_baseline_removal(spark, out, sessions, events, csv.set_index("event_type").removal_baseline_pp)
    _check_blend(spark, out, sessions, metrics, csv)
    _every_table_read_by_polars_and_duckdb(out)
    _check_mlflow(out, sessions, events, metrics)
    # the pair table: the 10 ordered pairs of event types in most test sessions (counted here in pandas),
    # each interaction the mean of the sessions' values in the event table, ranked by its size
    pair_table = pd.read_csv(out / "report" / "event_pair_attribution_no_funnel.csv")
    test_types = sessions.where("split = 'test'").select("event_types").toPandas().event_types
    frequent = ordered_pairs_by_sessions(test_types)[:10]
    assert [tuple(p) for p in summary["removal_pairs"]] == frequent
    assert set(zip(pair_table.first_event_type, pair_table.second_event_type, strict=True)) <= set(frequent)
    assert len(pair_table) >= 8 and pair_table["rank"].tolist() == list(range(1, len(pair_table) + 1))
    assert pair_table.interaction_log_odds.abs().is_monotonic_decreasing and set(pair_table.interaction_models) == {2}
    per_session = events.where("removal_pair_interactions is not null").select("removal_pair_interactions").toPandas()
    values: dict = {}
    for entries in per_session.removal_pair_interactions:
        for e in entries:
            values.setdefault((e["first_event_type"], e["second_event_type"]), []).append(e["interaction_log_odds"])
    for r in pair_table.itertuples():
        mine = values[(r.first_event_type, r.second_event_type)]
        assert r.sessions == len(mine) and r.interaction_log_odds == pytest.approx(np.mean(mine))
    # what a person reads: the CSV in the effect's order, and the page naming the same top driver
    assert csv.effect_log_odds.dropna().is_monotonic_decreasing and set(csv.model_status) == {"ok"}
    drivers = csv[csv.effect_verdict == "drives conversion"]
    page = (out / "report" / "index.html").read_text()
    assert "predicts conversion better than chance" in page
    # planted drivers at 1,500 users: the CSV has drivers, and the page's first one is the CSV's first
    assert len(drivers)
    top = page.split("<div id=drivers>", 1)[1].split("<td class=event-type>", 1)[1].split("</td>", 1)[0]
    # the scope line: the test split's sessions, their days from the sessions table, this model
    dates = sessions.where("split = 'test'").selectExpr("min(session_date)", "max(session_date)").first()
    scope = page.split("<p id=scope>", 1)[1].split("</p>", 1)[0]
    converted = int(sessions.where("split = 'test' and label = 1").count())
    assert scope.startswith(
        f"Scope: the test split, {by_split['test']:,} sessions ({converted:,} converted) from {dates[0]} to "
        f"{dates[1]}; model {metrics['model_sha256'][:12]}."
    ), scope
    calibration = page.split("<li id=calibration>", 1)[1].split("</li>", 1)[0]
    test = metrics["test"]
    assert f"is {test['mean_prediction']:.3f} against a conversion rate of {test['positive_rate']:.3f}" in calibration
    # the reliability curve: the test sessions in their bins, the sessions-weighted mean prediction the
    # calibration line's, and each bin a row of the page's table
    curve = test["reliability"]
    assert sum(b["sessions"] for b in curve) == test["sessions"]
    weighted = sum(b["sessions"] * b["mean_prediction"] for b in curve) / test["sessions"]
    assert weighted == pytest.approx(test["mean_prediction"], abs=1e-9)
    table = page.split("<div id=reliability>", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == len(curve) + 1 and f"<td class=num>{curve[0]['sessions']:,}</td>" in table
    assert top == drivers.event_type.iloc[0]
    # the counts baseline: fitted in the train stage, compared on the same test sessions in the report
    comparison = pd.read_csv(out / "report" / "model_comparison.csv")
    assert list(comparison.model) == ["transformer", "counts_baseline"]
    per_session = events.where("event_position = 0").select("session_id", "label", "prediction").toPandas()
    counts = pd.read_parquet(out / "model" / "baseline" / "test_predictions")
    paired = per_session.merge(counts[["session_id", "baseline_prediction"]], on="session_id")
    assert len(paired) == by_split["test"] == comparison.test_sessions.iloc[0]
    auc_model = roc_auc_score(paired.label, paired.prediction)
    auc_counts = roc_auc_score(paired.label, paired.baseline_prediction)
    assert comparison.roc_auc.tolist() == pytest.approx([auc_model, auc_counts], abs=1e-9)
    assert comparison.auc_difference.iloc[0] == pytest.approx(auc_model - auc_counts, abs=1e-9)
    first = comparison.iloc[0]
    assert first.comparison_verdict == baseline.verdict(first.auc_difference_ci_low, first.auc_difference_ci_high)
    # report.pair_needs_better_model: the pair verdicts stand only where the transformer beats the baseline
    gated = set(pair_table.interaction_verdict) == {NO_ORDER_EVIDENCE_VERDICT}
    assert gated == (first.comparison_verdict != baseline.BEATS), (
        first.comparison_verdict,
        set(pair_table.interaction_verdict),
    )
    assert (html.escape(PAIRS_GATED) in page) == gated
    fitted = json.loads((out / "model" / "baseline" / "baseline.json").read_text())
    assert metrics["baseline"]["reg_param"] == fitted["reg_param"] and fitted["reg_param"] in fitted["reg_params_tried"]
    # baseline_log_odds: what one more event of the type adds to the baseline's logit, averaged over the
    # type's training events (its coefficient and that of its pair with the event's position bin)
    coef = fitted["coefficients"]
    added = {}
    for types in sessions.where("split = 'train'").select("event_types").toPandas().event_types:
        for i, t in enumerate(types):
            b = next((b for b, u in zip(POSITION_BINS, POSITION_BIN_UPPER, strict=False) if i < u), POSITION_BINS[-1])
            w = coef["event_type"].get(t, 0.0) + coef[baseline.CROSS_PREFIX].get(f"{t}@{b}", 0.0)
            added.setdefault(t, []).append(w)
    expected = csv.event_type.map({t: np.mean(w) for t, w in added.items()}).astype(float)
    assert np.allclose(csv.baseline_log_odds, expected, equal_nan=True) and expected.notna().all()
    assert not np.allclose(csv.baseline_log_odds, csv.event_type.map(coef["event_type"]).fillna(0.0))
    assert "the counts baseline (logistic regression on per-session counts)" in page.split("<p id=baseline", 1)[1]
    # every column this run publishes has one meaning in attribution/schema.py (docs/columns.md), and every
    # meaning there is of a column some output of this run has: a renamed, added or dropped column fails
    published = {p.stem: list(pd.read_csv(p, nrows=0).columns) for p in (out / "report").glob("*.csv")}
    published[schema.EVENT_TABLE] = events.columns
    assert set(published) == {*schema.TABLE_COLUMN_GROUPS, *(f"{k.stem}_by_method" for k in schema.TABLE_KINDS)}
    for stem, columns in published.items():
        for column in columns:
            assert schema.column_meaning(stem, column)  # a KeyError names the table and the column
    defined = {c for _, columns in schema.COLUMN_GROUPS.values() for c in columns}
    assert defined - {c for columns in published.values() for c in columns} == set()


def test_prepare_shards_samples_the_train_split_deterministically_and_shards_every_session(spark, tmp_path):
    import pyarrow.dataset as ds

    table = synthetic_sessions(400, seed=12, full=True)
    (tmp_path / "sessions").mkdir()
    pq.write_table(table, tmp_path / "sessions" / "p.parquet")
    conf = make_conf("train.max_train_sessions=100", "train.shards_per_process=3", "vocab.min_frequency=1")
    splits = table.column("split").to_pylist()
    runs = []
    for name in ("a", "b"):
        vocab, stats, counts = train.prepare_shards(spark, conf, str(tmp_path / "sessions"), str(tmp_path / name), 2)
        runs.append(ds.dataset(str(tmp_path / name), format="parquet", partitioning="hive").to_table())
    assert counts["validation"] == splits.count("validation") and counts["test"] == splits.count("test")
    assert 60 <= counts["train"] <= 140  # a hash sample of ~100 of 280
    a, b = runs
    assert sorted(a.column("session_id").to_pylist()) == sorted(b.column("session_id").to_pylist())
    assert a.num_rows == counts["train"] + counts["validation"] + counts["test"]
    assert set(a.column("shard").to_pylist()) <= set(range(6))
    # the vocabulary comes from the sampled train split only
    sampled = a.filter(pc.equal(a["split"], "train"))
    assert vocab.tokens["store_ids"] == vocab_of(sampled).tokens["store_ids"]


def test_a_failed_distributed_training_is_one_line_naming_where_and_why():
    cluster = make_conf("train.local_mode=false", "train.num_processes=4").train
    lost = RuntimeError(
        "An error occurred while calling o364.collectToPython.\n: org.apache.spark.SparkException: Job aborted due "
        "to stage failure: Could not recover from a failed barrier ResultStage.\nLost task 0.0 in stage 16.0: "
        "ExecutorLostFailure (executor 0 exited caused by one of the running tasks) Reason: Command exited with "
        "code 137\n\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages"
    )
    text = train._training_failure(lost, cluster)
    assert text == (
        "training failed on 4 barrier task(s) on the executors (train.local_mode=false): an executor was lost: "
        "ExecutorLostFailure (executor 0 exited caused by one of the running tasks) Reason: Command exited with code 137"
    )
    missing = RuntimeError("Traceback ...\nModuleNotFoundError: No module named 'attribution'\n")
    assert "can't import attribution: ship the code with --py-files" in train._training_failure(missing, cluster)
    local = make_conf("train.num_processes=2").train
    other = RuntimeError("TorchDistributor failed during training.View stdout logs for detailed error message.")
    assert train._training_failure(other, local) == (
        "training failed on 2 process(es) on the driver (train.local_mode=true): RuntimeError: TorchDistributor "
        "failed during training.View stdout logs for detailed error message.; the processes' output is above"
    )
    assert "\n" not in text


def test_a_taken_rendezvous_port_is_recognized_for_the_one_retry():
    """The barrier task's error carries the torchrun output's tail: a port bound by someone else between
    its choice and the rendezvous is retried once; any other failure is not."""
    taken = RuntimeError(
        "Command ['torchrun', '--nnodes=2', '--rdzv_endpoint=10.0.0.5:41231'] failed with return code 1. The task "
        "output is included below: [W socket.cpp:464] [c10d] The server socket has failed to bind to "
        "10.0.0.5:41231 (errno: 98 - Address already in use). EADDRINUSE"
    )
    assert train.port_taken(str(taken)) and train.port_taken(
        "The server socket has failed to listen: Address already in use"
    )
    assert not train.port_taken("ExecutorLostFailure (executor 0 exited) Reason: Command exited with code 137")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ("none", "the train split of .* has 0 converted and [0-9,]+ non-converted sessions"),
        ("all", "the train split of .* has [0-9,]+ converted and 0 non-converted sessions"),
        ("one", "the (train|validation) split of .* has [01] converted and [0-9,]+ non-converted sessions"),
    ],
)
def test_training_on_a_degenerate_day_refuses_with_one_line(spark, tmp_path, capsys, labels, expected):
    """A day without conversions, with only conversions, or with one converted session: exit 2 and one
    line naming the split and its counts, no model written (it used to end in a traceback)."""
    import re

    import pyarrow as pa

    from jobs import train as train_job

    table = synthetic_sessions(120, seed=3, full=True)
    n = table.num_rows
    new = {"none": [0] * n, "all": [1] * n, "one": [1] + [0] * (n - 1)}[labels]
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(new, pa.int32()))
    (tmp_path / "sessions").mkdir()
    pq.write_table(table, tmp_path / "sessions" / "part-0.parquet")
    code = train_job.main(
        [
            "--set",
            f"run.output_dir={tmp_path}",
            "--set",
            "train.num_processes=1",
            *sum((["--set", s] for s in SMALL), []),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and re.search(expected, err[0]) and "train.min_class_sessions" in err[0], err
    assert not (tmp_path / "model").exists()


def _check_baseline_removal(spark, out, sessions, events, published):
    models = out / "model" / baseline.DIRECTORY / baseline.MODELS
    summary = json.loads((out / "model" / baseline.DIRECTORY / baseline.SUMMARY).read_text())
    ids = events.where("removal_effect_type is not null").select("session_id").distinct()
    rows = []
    for r in sessions.join(ids, "session_id").select("session_id", "event_types", "store_ids").toPandas().itertuples():
        types, stores = list(r.event_types), list(r.store_ids)
        rows.append((r.session_id, "", types, stores, len(types)))
        for t in set(types):
            keep = [i for i, e in enumerate(types) if e != t]
            rows.append((r.session_id, t, [types[i] for i in keep], [stores[i] for i in keep], len(keep)))
    variants = spark.createDataFrame(
        rows,
        "session_id string, removed string, event_types array<string>, store_ids array<string>, session_length int",
    )
    # the removal model's main fit (the published column) and its bootstrap fits (baseline.members follows
    # the ensemble), scored from the saved Spark ML models
    fits = removal_model_probabilities(models, summary, variants)
    assert len(fits) == len(summary["members"]) + 1
    each = []
    for scored in fits:
        full = scored[scored.removed == ""].set_index("session_id").p
        without = scored[scored.removed != ""]
        each.append(100 * (without.session_id.map(full) - without.p).groupby(without.removed).mean())
    brute = each[0]
    assert len(brute) >= 5
    np.testing.assert_allclose(published.reindex(brute.index), brute, atol=1e-9)
    # the bootstrap fits are fits of other data: their removal effects differ from the main fit's
    assert len(each) == 2 and (each[0] - each[1]).abs().max() > 1e-3


EVENT_TABLE = "gradient_attribution_no_funnel"  # the event table's Delta copy has no parquet copy under report/


def _check_blend(spark, out, sessions, metrics, csv):
    """The removal effects' blend: the training processes' validation predictions are the model's (every
    validation session once, their log loss the one training reported); the weight is the grid's lowest
    validation log loss recomputed here in numpy from them and the saved baseline's own scores; and the
    published removal effect is that blend of the two models' columns."""
    mine = pd.read_parquet(out / "train_shards" / train.PREDICTIONS)
    validation = sessions.where("split = 'validation'").select("session_id", "label", "event_types", "store_ids")
    labels = validation.select("session_id", "label").toPandas().set_index("session_id").label
    assert sorted(mine.session_id) == sorted(labels.index)
    y = mine.session_id.map(labels).to_numpy(float)
    p = mine.prediction.to_numpy(float)
    assert -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)) == pytest.approx(metrics["validation"]["log_loss"])
    models = out / "model" / baseline.DIRECTORY / baseline.MODELS
    summary = json.loads((out / "model" / baseline.DIRECTORY / baseline.SUMMARY).read_text())
    pb = removal_model_probabilities(models, summary, validation.drop("label"))[0].set_index("session_id")
    q = mine.session_id.map(pb.p).to_numpy(float)
    losses = {}
    for w in np.linspace(0, 1, 21):
        blend = np.clip(w * p + (1 - w) * q, 1e-7, 1 - 1e-7)
        losses[round(float(w), 2)] = -np.mean(y * np.log(blend) + (1 - y) * np.log(1 - blend))
    chosen = metrics["baseline"]["blend"]
    assert chosen["validation_sessions"] == len(mine)
    assert chosen["transformer_weight"] == pytest.approx(min(losses, key=lambda k: (losses[k], -k)))
    for w, loss in chosen["validation_log_loss"].items():
        assert loss == pytest.approx(losses[round(float(w), 2)], rel=1e-9)
    w = chosen["transformer_weight"]
    rows = csv.dropna(subset=["removal_effect_pp"])
    assert len(rows) >= 5
    np.testing.assert_allclose(
        rows.removal_effect_pp, w * rows.removal_transformer_pp + (1 - w) * rows.removal_baseline_pp, atol=1e-9
    )


def _check_mlflow(out, sessions, events, metrics) -> None:
    """The pipeline's MLflow run (its run id's, in outputs/mlflow.db): FINISHED, with the model's metrics
    and every file of the report's directory; the registered model, loaded back through MLflow, scores the
    test sessions as the attribute stage did (the event table's prediction)."""
    import mlflow
    from pyspark.sql import functions as F

    uri = f"sqlite:///{out}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("session-attribution")
    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.`attribution.run_id` = 't-train'")
    assert run.info.status == "FINISHED" and run.info.run_name == "t-train"
    assert run.data.metrics["test_roc_auc"] == pytest.approx(metrics["test"]["roc_auc"])
    assert run.data.metrics["baseline_test_roc_auc"] == pytest.approx(metrics["baseline"]["test"]["roc_auc"])
    assert run.data.metrics["blend_weight"] == metrics["baseline"]["blend"]["transformer_weight"]
    assert run.data.metrics["attribute.events"] == events.count()
    assert run.data.tags["model_sha256"] == metrics["model_sha256"] == run.data.tags["scored_with_model_sha256"]
    assert run.data.params["train.epochs"] == "3"
    history = client.get_metric_history(run.info.run_id, "epoch_validation_roc_auc")
    assert [m.step for m in history] == [h["epoch"] for h in metrics["history"]]
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "report")}
    assert logged == {p.name for p in (out / "report").iterdir() if p.is_file()}
    assert {"index.html", "event_type_attribution_no_funnel.csv", "model_comparison.csv"} <= logged

    (version,) = client.search_model_versions("name='session-conversion'")
    assert version.run_id == run.info.run_id
    assert version.tags["model_sha256"] == metrics["model_sha256"]
    assert version.tags["model_location"] == str(out / "model")
    model = mlflow.pyfunc.load_model(f"models:/session-conversion/{version.version}")
    test = sessions.where("split = 'test'").toPandas()
    scored = model.predict(test)
    assert len(scored) == len(test) and scored.session_id.tolist() == test.session_id.tolist()
    published = events.groupBy("session_id").agg(F.first("prediction").alias("published")).toPandas()
    both = scored.merge(published, on="session_id", validate="one_to_one")
    assert len(both) == len(test)
    # float32 forwards of differently padded batches: equal to rounding
    np.testing.assert_allclose(both.prediction, both.published, rtol=0, atol=1e-6)
    np.testing.assert_allclose(both.logit, np.log(both.published / (1 - both.published)), rtol=0, atol=1e-4)


def _every_table_read_by_polars_and_duckdb(out):
    """Every published table, as Delta and as parquet, read by Polars and DuckDB (docs/outputs.md, Reading
    the tables from another engine): the rows and types deltalake and pyarrow read, and the CSV's rows."""
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    delta = sorted((out / "report" / "delta").iterdir())
    parquet = sorted((out / "report" / "parquet").iterdir())
    assert len(delta) >= 12 and [p.name for p in parquet] == [p.name for p in delta if p.name != EVENT_TABLE]
    for table in delta:
        expected = pl.from_arrow(DeltaTable(str(table)).to_pyarrow_table())
        got = pl.read_delta(str(table))
        assert got.schema == expected.schema and got.height == expected.height, table.name
        stated = {c: schema.column_type(c) for c in got.columns}  # docs/columns.md's type column
        assert {c: _polars_type(t) for c, t in got.schema.items()} == stated, table.name
    for table in parquet:
        expected = ds.dataset(str(table), format="parquet", partitioning="hive").to_table()
        files = f"{table}/*/*.parquet"
        got = pl.scan_parquet(files, hive_partitioning=True, try_parse_hive_dates=False).collect()
        assert got.height == expected.num_rows, table.name
        assert got.drop("run_id").schema == pl.from_arrow(expected.drop(["run_id"])).schema, table.name
        rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{files}', hive_partitioning = true)").fetchall()
        assert rows == [(expected.num_rows,)], table.name
        described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{files}', hive_partitioning = false)")
        types = {name: _duckdb_type(kind) for name, kind, *_ in described.fetchall()}
        assert types == {c: schema.column_type(c) for c in types}, table.name
        # every method's rows: the _by_method CSV where the table has methods, else the CSV
        by_method = out / "report" / f"{table.name}_by_method.csv"
        csv = by_method if by_method.exists() else out / "report" / f"{table.name}.csv"
        assert len(pd.read_csv(csv)) == expected.num_rows, table.name


def _polars_type(dtype) -> str:
    """A Polars type in Spark SQL's words, as docs/columns.md states types."""
    import polars as pl

    if isinstance(dtype, pl.List):
        return f"array<{_polars_type(dtype.inner)}>"
    if isinstance(dtype, pl.Struct):
        return "struct<" + ", ".join(f"{f.name}: {_polars_type(f.dtype)}" for f in dtype.fields) + ">"
    if isinstance(dtype, pl.Datetime):
        assert dtype.time_zone == "UTC", dtype  # a timestamp is an instant, read in UTC
        return "timestamp"
    simple = {pl.String: "string", pl.Float64: "double", pl.Int64: "bigint", pl.Int32: "int"}
    simple.update({pl.Boolean: "boolean", pl.Date: "date"})
    return simple[dtype.base_type()]


def _duckdb_type(kind: str) -> str:
    """A DuckDB type name in Spark SQL's words."""
    if kind.endswith("[]"):
        return f"array<{_duckdb_type(kind[:-2])}>"
    if kind.startswith("STRUCT("):
        fields, depth, start = [], 0, len("STRUCT(")
        for i, ch in enumerate(kind[start:-1], start):  # split on the commas outside nested parentheses
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                fields.append(kind[start:i].strip())
                start = i + 1
        fields.append(kind[start:-1].strip())
        return "struct<" + ", ".join(f"{f.split(' ', 1)[0]}: {_duckdb_type(f.split(' ', 1)[1])}" for f in fields) + ">"
    simple = {"VARCHAR": "string", "DOUBLE": "double", "BIGINT": "bigint", "INTEGER": "int", "BOOLEAN": "boolean"}
    simple.update({"DATE": "date", "TIMESTAMP WITH TIME ZONE": "timestamp"})
    return simple[kind]
