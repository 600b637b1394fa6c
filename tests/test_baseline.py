"""The counts baseline: its features and fit in Spark, the paired comparison against a brute-force
DeLong, and the sentence a person reads in both directions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from attribution import baseline, page
from attribution.config import BaselineConf
from attribution.report_text import baseline_sentence, format_train_metrics, key_insights
from tests.helpers import removal_model_probabilities


def _brute_delong(y, a, b):
    """DeLong's paired variance from its definition: psi(x, y) over every (positive, negative) pair."""
    y = np.asarray(y)

    def components(s):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    auc_a, v10a, v01a = components(np.asarray(a, float))
    auc_b, v10b, v01b = components(np.asarray(b, float))
    m, n = len(v10a), len(v01a)
    var = (
        np.var(v10a, ddof=1) / m
        + np.var(v01a, ddof=1) / n
        + np.var(v10b, ddof=1) / m
        + np.var(v01b, ddof=1) / n
        - 2 * (np.cov(v10a, v10b)[0, 1] / m + np.cov(v01a, v01b)[0, 1] / n)
    )
    return auc_a, auc_b, auc_a - auc_b, math.sqrt(var)


def test_delong_matches_its_definition_and_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.3
    a = np.round(y * 0.8 + rng.normal(0, 1, 300), 1)  # rounded: ties, which the midranks must count as 1/2
    b = np.round(y * 0.3 + rng.normal(0, 1, 300), 1)
    got = baseline.delong(y.astype(int), a, b)
    auc_a, auc_b, diff, se = _brute_delong(y.astype(int), a, b)
    assert got["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert got["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert got["difference"] == pytest.approx(diff, abs=1e-12)
    assert got["se"] == pytest.approx(se, rel=1e-9)
    assert got["ci_low"] == pytest.approx(diff - 1.959963984540054 * se)
    # the same scores twice: no difference and no variance of it
    same = baseline.delong(y.astype(int), a, a)
    assert same["difference"] == 0 and same["se"] == 0


def test_delong_without_both_classes_is_nan_not_an_error():
    out = baseline.delong(np.zeros(10, int), np.arange(10.0), np.arange(10.0))
    assert math.isnan(out["difference"]) and baseline.verdict(out["ci_low"], out["ci_high"]) is None


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.01, 0.05, baseline.BEATS), (-0.01, 0.05, baseline.NO_BETTER), (-0.05, -0.01, baseline.WORSE)],
)
def test_the_comparison_verdict_reads_the_ci(low, high, expected):
    assert baseline.verdict(low, high) == expected


def test_rank_agreement_is_spearman_over_the_common_keys():
    model = {"a": 0.3, "b": 0.1, "c": -0.2, "d": 0.0}
    counts = {"a": 1.0, "b": 0.5, "c": -1.0, "e": 2.0}  # d and e are in one only
    rho, n = baseline.rank_agreement(model, counts)
    assert n == 3 and rho == pytest.approx(1.0)
    rho, _ = baseline.rank_agreement(model, {"a": -1.0, "b": 0.0, "c": 1.0})
    assert rho == pytest.approx(-1.0)


def test_with_coefficients_matches_keys_and_leaves_unknown_ones_null():
    table = pa.table({"store_id": pa.array(["7", "8", None]), "x": [1, 2, 3]})
    out = baseline.with_coefficients(table, "store", {"store": {"7": 0.25}})
    assert out.column_names == ["store_id", "x", "baseline_log_odds"]
    assert out["baseline_log_odds"].to_pylist() == [0.25, None, None]


def test_curve_metrics_from_the_histogram_equal_sklearn_when_no_bin_mixes_scores(spark):
    rng = np.random.default_rng(11)
    y = (rng.random(2000) < 0.25).astype(int)
    scores = np.round(np.clip(0.2 + 0.2 * y + rng.normal(0, 0.15, 2000), 0, 1), 3)  # ties, none across bins
    df = spark.createDataFrame(pd.DataFrame({"label": y, "baseline_prediction": scores}))
    got = baseline.curve_metrics(df)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert got["pr_auc"] == pytest.approx(average_precision_score(y, scores), abs=1e-12)
    assert (got["sessions"], got["positives"]) == (2000, int(y.sum()))
    one_class = baseline.curve_metrics(df.where("label = 0"))
    assert one_class["roc_auc"] != one_class["roc_auc"] and one_class["positives"] == 0
    assert one_class["sessions"] == 2000 - int(y.sum())


def test_curve_metrics_are_exact_for_predictions_that_lie_close_together(spark):
    """A model near chance, or briefly trained, predicts nearly the same for every session: 64 distinct
    predictions within 1e-5 of each other (all in one bin of 1e-5 were the bins spread over [0, 1]) still
    give sklearn's AUC and average precision, and predictions all equal give an AUC of exactly 0.5."""
    from pyspark.sql import functions as F

    rng = np.random.default_rng(3)
    y = (rng.random(64) < 0.2).astype(int)
    scores = 0.14 + rng.permutation(64) * 1.5e-7 + 1e-7 * y  # distinct, 1e-5 apart at most
    df = spark.createDataFrame(pd.DataFrame({"label": y, "baseline_prediction": scores}))
    got = baseline.curve_metrics(df)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert got["pr_auc"] == pytest.approx(average_precision_score(y, scores), abs=1e-12)
    same = baseline.curve_metrics(df.withColumn("baseline_prediction", F.lit(0.3)))
    assert same["roc_auc"] == 0.5 and same["pr_auc"] == pytest.approx(y.mean())


def _sessions(spark, n=3000, seed=5, late_good=0.0):
    """Sessions whose conversion follows a logistic model of the counts: +1.2 per 'good' event among the
    first five (``late_good`` per one later on), -1.2 per 'bad' one, +0.8 per event at store 's1', 0 for
    'plain'. The split is fixed by position so every split holds both classes."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(2, 15))
        types = list(rng.choice(["good", "bad", "plain", "plain"], size=length))
        stores = [str(rng.choice(["s1", "s2"])) if t == "plain" and rng.random() < 0.5 else None for t in types]
        good = sum(1.2 if p < 5 else late_good for p, t in enumerate(types) if t == "good")
        logit = -1.0 + good - 1.2 * types.count("bad") + 0.8 * stores.count("s1")
        label = int(rng.random() < 1 / (1 + math.exp(-logit)))
        split = ("train", "train", "train", "validation", "test")[i % 5]
        rows.append((f"s{i}", label, split, types, stores, length))
    schema = "session_id string, label int, split string, event_types array<string>, store_ids array<string>, session_length int"
    return spark.createDataFrame(rows, schema)


def _ordered_sessions(spark, n=4000, seed=9):
    """Sessions whose conversion depends on order alone (with a store's count): +1.6 when a 'b' follows
    the first 'a', -1.4 when the last event is a 'c', +0.8 per event at store 's1'."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(1, 12))
        types = [str(t) for t in rng.choice(["a", "b", "c", "plain"], size=length)]
        stores = [str(rng.choice(["s1", "s2"])) if t == "plain" and rng.random() < 0.5 else None for t in types]
        first_a = types.index("a") if "a" in types else length
        logit = -0.6 + 1.6 * ("b" in types[first_a + 1 :]) - 1.4 * (types[-1] == "c") + 0.8 * stores.count("s1")
        label = int(rng.random() < 1 / (1 + math.exp(-logit)))
        split = ("train", "train", "train", "validation", "test")[i % 5]
        rows.append((f"s{i}", label, split, types, stores, length))
    schema = "session_id string, label int, split string, event_types array<string>, store_ids array<string>, session_length int"
    return spark.createDataFrame(rows, schema)


def _order_tokens_by_hand(types):
    """The order terms' tokens from their definitions, as a sorted list."""
    pairs = {f"order_pair={u}>{t}" for i, t in enumerate(types) for u in types[:i] if u != t}
    repeats = [f"repeat={t}" for i, t in enumerate(types) if t in types[:i]]
    ends = [f"first_event={types[0]}", f"last_event={types[-1]}"] if types else []
    return sorted([*pairs, *repeats, *ends])


def test_the_order_tokens_follow_their_definitions(spark):
    cases = [[], ["a"], ["a", "a"], ["a", "b", "a", "c", "b", "b"], ["c", "b", "a"], ["x>y", "a", "x>y"]]
    frame = spark.createDataFrame([(c,) for c in cases], "event_types array<string>")
    got = [sorted(r.t) for r in frame.select(baseline.order_tokens(frame).alias("t")).collect()]
    assert got == [_order_tokens_by_hand(c) for c in cases]
    # a pair is once per session however often it holds; b after a, a after b, c after both
    assert got[3].count("order_pair=a>b") == 1 and "order_pair=b>a" in got[3] and "order_pair=c>a" not in got[3]


ORDERED_CONF = BaselineConf(reg_params=[0.001], min_sessions=5, order_penalties=[1.0, 100.0])


@pytest.fixture(scope="module")
def ordered_fit(spark, tmp_path_factory):
    """The baseline fitted on :func:`_ordered_sessions` with two order penalties and one bootstrap fit:
    the sessions, the summary and the models' directory."""
    root = tmp_path_factory.mktemp("ordered")
    sessions = _ordered_sessions(spark)
    result = baseline.fit(sessions, ORDERED_CONF, str(root / "pred"), str(root / "models"), members=2)
    return sessions, result.to_dict(ORDERED_CONF), root / "models"


def test_the_removal_model_takes_order_terms_when_the_validation_split_prefers_them(ordered_fit):
    """On sessions whose conversion depends on order, the validation log loss picks an order penalty over
    the counts alone, the order terms recover the planted signs, the removal effects and the bootstrap fits
    are the removal model's, and the model comparison's coefficients stay the counts fit's."""
    _, summary, _ = ordered_fit
    conf = ORDERED_CONF
    removal = summary["removal_model"]
    losses = removal["validation_log_loss"]
    assert set(losses) == {baseline.COUNTS_ALONE, *(f"{p:g}" for p in conf.order_penalties)}
    assert removal["order_penalty"] is not None and removal["candidate_penalty"] == removal["order_penalty"]
    assert losses[f"{removal['order_penalty']:g}"] == min(losses.values()) < losses[baseline.COUNTS_ALONE] - 0.01
    # kept because the improvement is beyond noise, session by session: the paired mean is the difference
    # of the two mean log losses (the same validation sessions), and z is far above Z95
    improvement = removal["improvement"]
    assert improvement["log_loss"] == pytest.approx(
        losses[baseline.COUNTS_ALONE] - losses[f"{removal['order_penalty']:g}"], abs=1e-9
    )
    assert improvement["z"] == pytest.approx(improvement["log_loss"] / improvement["se"]) and improvement["z"] > 4
    order = removal["coefficients"]
    assert order["order_pair"]["a>b"] > 0.7 and order["last_event"]["c"] < -0.6
    assert "order_pair" not in summary["coefficients"] and "order_pair" in summary["members"][0]["coefficients"]
    assert summary["members"][0]["coefficients"]["order_pair"]["a>b"] > 0.5
    from attribution import removal_tables

    assert removal_tables.baseline_fits(summary)[0]["coefficients"] is removal["coefficients"]


def test_order_terms_that_win_validation_by_noise_alone_are_not_kept(spark, tmp_path):
    """On sessions whose conversion depends on counts alone, one of the order fits has the lowest
    validation log loss of the candidates, but its paired improvement on the counts alone is within Z95
    standard errors: the removal model is the counts fit, and the summary names the candidate and why."""
    from attribution.statistics import Z95

    conf = BaselineConf(reg_params=[0.001], min_sessions=5, order_penalties=[1.0, 100.0])
    summary = baseline.fit(_sessions(spark), conf, str(tmp_path / "p"), str(tmp_path / "m")).to_dict(conf)
    removal = summary["removal_model"]
    assert removal["order_penalty"] is None and "coefficients" not in removal
    assert removal["candidate_penalty"] in conf.order_penalties
    assert abs(removal["improvement"]["z"]) <= Z95 and removal["improvement"]["sessions"] == 600
    assert not (tmp_path / "m" / baseline.ORDER_MODEL).exists()
    assert not baseline.removal_order_terms(summary)


def test_the_tokens_are_each_events_type_bin_pair_and_store(spark):
    one = ([["a"] * 6 + ["b"], [None] * 5 + ["9", None], 7],)
    frame = spark.createDataFrame(one, "event_types array<string>, store_ids array<string>, session_length int")
    got = frame.select(baseline.tokens(frame).alias("t")).first()["t"]
    pair = baseline.CROSS_PREFIX + "="
    expected = [tok for _ in range(5) for tok in ("event_type=a", "position_bin=1-5", pair + "a@1-5")]
    expected += ["event_type=a", "position_bin=6-10", pair + "a@6-10", "store=9"]
    expected += ["event_type=b", "position_bin=6-10", pair + "b@6-10"]
    assert got == expected
    plain = frame.select(baseline.tokens(frame, type_by_position=False).alias("t")).first()["t"]
    assert plain == [t for t in expected if not t.startswith(pair)]


def test_the_fit_recovers_the_planted_counts_and_writes_the_test_predictions(spark, tmp_path):
    sessions = _sessions(spark)
    conf = BaselineConf(reg_params=[0.001, 0.5], min_sessions=5, order_penalties=[])
    result = baseline.fit(sessions, conf, str(tmp_path / "pred"), str(tmp_path / "models"))
    summary = result.to_dict(conf)
    assert summary["removal_model"] is None  # no order terms tried: the removal effects are this fit's
    per_event = summary["per_event_log_odds"]
    assert per_event["event_type"]["bad"] < -0.8 and abs(per_event["event_type"]["plain"]) < 0.3
    assert per_event["store"]["s1"] > 0.4 and abs(per_event["store"].get("s2", 0.0)) < 0.3
    # 'good' drives conversion among the first five events only: its pairs tell the bins apart
    coef, pairs = result.coefficients["event_type"], result.coefficients[baseline.CROSS_PREFIX]
    early = coef.get("good", 0.0) + pairs.get("good@1-5", 0.0)
    late = coef.get("good", 0.0) + pairs.get("good@6-10", 0.0)
    assert early > 0.8 and abs(late) < 0.4
    # folded per event: between the two, weighted by the training events in each bin (counted here)
    train = [list(t) for t in sessions.where("split = 'train'").toPandas().event_types]
    counts = {
        b: sum(t[lo:hi].count("good") for t in train)
        for b, lo, hi in (("1-5", 0, 5), ("6-10", 5, 10), ("11-20", 10, 20))
    }
    assert {b: result.pair_counts[f"good@{b}"] for b in counts} == counts
    weighted = sum(n * (coef.get("good", 0.0) + pairs.get(f"good@{b}", 0.0)) for b, n in counts.items())
    assert per_event["event_type"]["good"] == pytest.approx(weighted / sum(counts.values()))
    # regParam: the one with the best validation log loss (0.5 shrinks the planted effects away)
    assert result.reg_param == min(conf.reg_params, key=lambda r: result.validation_log_loss[str(r)]) == 0.001
    predictions = pd.read_parquet(tmp_path / "pred")
    test = sessions.where("split = 'test'").toPandas()
    assert sorted(predictions.session_id) == sorted(test.session_id)
    merged = predictions.merge(test[["session_id", "label"]], on="session_id", suffixes=("", "_true"))
    assert (merged.label == merged.label_true).all()
    # the test metrics computed in Spark agree with sklearn on the written predictions
    # (binned into 1e5 bins: two predictions closer than 1e-5 count as tied)
    assert result.test["roc_auc"] == pytest.approx(roc_auc_score(merged.label, merged.baseline_prediction), abs=2e-4)
    assert result.test["sessions"] == len(test)
    # without the pairs the baseline cannot tell an early 'good' from a late one: a worse validation fit
    flat = baseline.fit(
        sessions,
        BaselineConf(reg_params=[0.001], type_by_position=False, order_penalties=[]),
        str(tmp_path / "p2"),
        str(tmp_path / "m2"),
    )
    assert baseline.CROSS_PREFIX not in flat.to_dict(conf)["per_event_log_odds"]
    assert flat.validation_log_loss["0.001"] > result.validation_log_loss["0.001"] + 0.005


def test_the_bootstrap_fits_are_fits_of_resampled_training_sessions(spark, tmp_path):
    """baseline.members 2: one more fit at the chosen regParam on a bootstrap resample of the training
    sessions. It sees the same planted effects (the same signs where they are strong) through other data
    (other coefficients), and its saved Spark ML model holds the coefficients the summary records."""
    from pyspark.ml.classification import LogisticRegressionModel

    sessions = _sessions(spark)
    conf = BaselineConf(reg_params=[0.001], min_sessions=5, order_penalties=[])
    result = baseline.fit(sessions, conf, str(tmp_path / "pred"), str(tmp_path / "models"), members=2, seed=40)
    summary = result.to_dict(conf)
    (member,) = summary["members"]
    assert member["seed"] == 41 and 0 < member["iterations"] <= conf.max_iter
    main, boot = result.coefficients["event_type"], member["coefficients"]["event_type"]
    assert boot["bad"] < -0.5 and main["bad"] < -0.5
    assert max(abs(boot[k] - main[k]) for k in main) > 0.02
    saved = LogisticRegressionModel.load(str(tmp_path / "models" / baseline.MEMBER_MODEL.format(1)))
    assert saved.intercept == pytest.approx(member["intercept"])
    flat = [v for prefix in member["coefficients"].values() for v in prefix.values()]
    assert sorted(saved.coefficients.toArray()) == pytest.approx(sorted(flat))
    # one fit: no bootstrap fits, and the summary says so
    assert baseline.fit(sessions, conf, str(tmp_path / "p1"), str(tmp_path / "m1")).to_dict(conf)["members"] == []


@pytest.mark.parametrize("standardization", [False, True])
def test_without_standardization_the_penalty_is_on_the_counts_own_coefficients(spark, tmp_path, standardization):
    """Independent expectation: Spark's ridge fit (elastic_net_param 0) without standardization minimizes the
    mean log loss plus reg / 2 x |coefficients|^2 on the raw counts, which is scikit-learn's L2 logistic
    regression with C = 1 / (n x reg) on the same count matrix; with standardization it is not (the
    penalty then weighs each coefficient by its count's standard deviation)."""
    from sklearn.linear_model import LogisticRegression

    sessions = _sessions(spark)
    reg = 0.05
    conf = BaselineConf(
        reg_params=[reg],
        elastic_net_param=0.0,
        min_sessions=1,
        max_iter=200,
        standardization=standardization,
        order_penalties=[],
    )
    result = baseline.fit(sessions, conf, str(tmp_path / "pred"), str(tmp_path / "models"))
    summary = result.to_dict(conf)
    assert summary["standardization"] is standardization
    # it stopped by Spark's tolerance, well before the cap: the fit below is the penalized optimum's
    assert summary["iterations"][str(reg)] < 200 and summary["converged"] is True
    train = sessions.where("split = 'train'").select(baseline.tokens(sessions).alias("t")).toPandas().t
    vocabulary = sorted({t for row in train for t in row})
    index = {t: i for i, t in enumerate(vocabulary)}
    x = np.zeros((len(train), len(vocabulary)))
    for r, row in enumerate(train):
        for t in row:
            x[r, index[t]] += 1
    y = sessions.where("split = 'train'").toPandas().label.to_numpy()
    reference = LogisticRegression(C=1 / (len(y) * reg), tol=1e-10, max_iter=10_000).fit(x, y)
    fitted = np.zeros(len(vocabulary))
    for prefix, coefficients in result.coefficients.items():
        for key, value in coefficients.items():
            fitted[index[f"{prefix}{baseline.SEPARATOR}{key}"]] = value
    gap = np.abs(fitted - reference.coef_[0]).max()
    if standardization:
        assert gap > 0.05
    else:
        assert gap < 0.02 and result.intercept == pytest.approx(reference.intercept_[0], abs=0.02)


@pytest.mark.parametrize("ordered", [False, True])
def test_the_baseline_removal_effects_equal_its_own_models_on_the_sessions_without_the_key(
    spark, tmp_path, ordered, request
):
    """removal_tables' baseline removal effect (from the coefficients, in a mapInArrow) against the saved
    Spark ML models scoring each session with and without each of its event types, bins and stores, the
    gap closed. ``ordered``: the removal model with order terms (on sessions where they win validation),
    scored from its saved fit on the counts and the order terms, the latter divided by the square root of
    its order penalty as in its fit."""

    from attribution import removal_tables
    from attribution.schema import POSITION_BIN_UPPER, POSITION_BINS

    if ordered:
        sessions, summary, models = request.getfixturevalue("ordered_fit")
        penalty = summary["removal_model"]["order_penalty"]
        assert penalty in ORDERED_CONF.order_penalties
    else:
        sessions = _sessions(spark, late_good=-0.6)
        conf = BaselineConf(reg_params=[0.001], min_sessions=5, order_penalties=[])
        summary = baseline.fit(sessions, conf, str(tmp_path / "pred"), str(tmp_path / "models")).to_dict(conf)
        assert summary["removal_model"] is None
        models = tmp_path / "models"

    def bin_of(position):  # 1-based
        return next(
            (b for b, u in zip(POSITION_BINS, POSITION_BIN_UPPER, strict=False) if position <= u), POSITION_BINS[-1]
        )

    picked = sessions.where("split = 'test'").limit(60).toPandas()
    events, variants = [], []
    for r in picked.itertuples():
        types, stores = list(r.event_types), list(r.store_ids)
        bins = [bin_of(i + 1) for i in range(len(types))]
        for i, (t, s, b) in enumerate(zip(types, stores, bins, strict=True)):
            events.append((r.session_id, i, t, s, b, 0.5, 0.0, 0.0, 0.0 if s is not None else None))
        variants.append((r.session_id, "", "", types, stores, len(types)))
        for kind, keys in (("event_type", types), ("position", bins), ("store", stores)):
            for key in {k for k in keys if k is not None}:
                keep = [i for i, k in enumerate(keys) if k != key]
                variants.append(
                    (r.session_id, kind, key, [types[i] for i in keep], [stores[i] for i in keep], len(keep))
                )
    frame = spark.createDataFrame(
        events,
        "session_id string, event_position int, event_type string, store_id string, position_bin string, "
        "prediction double, removal_effect_type double, removal_effect_position double, removal_effect_store double",
    )
    got = (
        removal_tables.removal_rows(frame, summary)
        .where("db is not null")
        .select("kind", "key", "session_id", "db")
        .toPandas()
    )
    rows = spark.createDataFrame(
        variants,
        "session_id string, kind string, key string, event_types array<string>, store_ids array<string>, session_length int",
    )
    scored = removal_model_probabilities(models, summary, rows)[0]
    full = scored[scored.kind == ""].set_index("session_id").p
    brute = scored[scored.kind != ""].assign(db=lambda d: d.session_id.map(full) - d.p)
    merged = brute.merge(got, on=["kind", "key", "session_id"], suffixes=("_brute", ""), how="outer")
    assert len(merged) == len(brute) > 300 and set(merged.kind) == {"event_type", "position", "store"}
    np.testing.assert_allclose(merged.db, merged.db_brute, atol=1e-9)
    # removing the first bin moves later events into it: the effect is not the bin's own weight alone
    assert merged[merged.kind == "position"].db.abs().max() > 0.01


def test_each_blend_member_pairs_a_transformer_member_with_a_baseline_fit(spark):
    """The removal CI's model part holds the baseline's own estimation error: with two fits of the
    baseline (the main one and two bootstrap fits), the k-th member of the blend is w x the transformer's
    k-th member + (1 - w) x the k-th fit's removal effect centred on the main fit's (the fits taken in
    turn), computed here by hand from the logistic function. The transformer's members agree, so any
    spread is the baseline's; the published value is the main fit's blend, as without the fits."""
    from attribution import removal_tables

    def sigmoid(z):
        return 1 / (1 + math.exp(-z))

    summary = {
        "intercept": -1.0,
        "coefficients": {"event_type": {"a": 1.0, "b": 0.5}},
        "members": [
            {"intercept": -0.5, "coefficients": {"event_type": {"a": 0.2, "b": 0.5}}},
            {"intercept": -1.0, "coefficients": {"event_type": {"b": 0.5}}},  # no feature for 'a': it counts 0
        ],
        "blend": {"transformer_weight": 0.25},
    }
    frame = spark.createDataFrame(
        [
            ("s1", i, t, None, "1-5", 0.6, 0.1 if t == "a" else 0.05, [0.1 if t == "a" else 0.05] * 4)
            for i, t in enumerate(["a", "b", "a"])
        ],
        "session_id string, event_position int, event_type string, store_id string, position_bin string, "
        "prediction double, removal_effect_type double, removal_effect_type_members array<double>",
    )
    got = removal_tables.removal_rows(frame, summary).where("kind = 'event_type' and key = 'a'").first()
    # removing both a's leaves the b at position 1
    fits = [(-1.0, 1.0), (-0.5, 0.2), (-1.0, 0.0)]
    db = [sigmoid(c + 2 * wa + 0.5) - sigmoid(c + 0.5) for c, wa in fits]
    pb = [sigmoid(c + 2 * wa + 0.5) for c, wa in fits]
    w = 0.25
    # the fits centred on the main fit's: the published value is the main fit's, the spread the fits'
    centred = [db[k % 3] - np.mean(db) + db[0] for k in range(4)]
    members = [w * 0.1 + (1 - w) * c for c in centred]
    assert got["dm"] == pytest.approx(members, abs=1e-12)
    assert got["d"] == pytest.approx(w * 0.1 + (1 - w) * db[0], abs=1e-12)
    assert got["db"] == pytest.approx(db[0], abs=1e-12) and got["dt"] == pytest.approx(0.1)
    assert got["p"] == pytest.approx(w * 0.6 + (1 - w) * pb[0], abs=1e-12)
    stats = removal_tables.removal_from(removal_tables.removal_rows(frame, summary)).to_pandas()
    a = stats[(stats.kind == "event_type") & (stats.key == "a")].iloc[0]
    assert a.models == 4 and a.model_var == pytest.approx(np.var(members, ddof=1), abs=1e-12) and a.model_var > 1e-4
    # a summary without bootstrap fits (written before them, or baseline.members 1): one fit, no spread of its own
    alone = removal_tables.removal_from(
        removal_tables.removal_rows(frame, {k: v for k, v in summary.items() if k != "members"})
    ).to_pandas()
    assert alone[(alone.kind == "event_type") & (alone.key == "a")].model_var.item() == pytest.approx(0.0, abs=1e-15)


def _comparison(verdict, agreement):
    return {
        "verdict": verdict,
        "sessions": 5710,
        "transformer_roc_auc": 0.802,
        "baseline_roc_auc": 0.772,
        "difference": 0.030 if verdict == baseline.BEATS else 0.004,
        "difference_ci": [0.02, 0.04] if verdict == baseline.BEATS else [-0.006, 0.014],
        "agreement": agreement,
    }


def test_the_baseline_sentence_says_which_way_and_which_tables_agree():
    beats = baseline_sentence(_comparison(baseline.BEATS, {}))
    assert beats.startswith("The sequence model beats the counts baseline")
    assert "0.802 against 0.772 (+0.030, 95% CI [+0.020, +0.040]" in beats and "5,710 test sessions" in beats
    agreement = {"event_type_order_spearman": 0.95, "position_order_spearman": 0.2, "store_order_spearman": 0.85}
    same = baseline_sentence(_comparison(baseline.NO_BETTER, agreement))
    assert same.startswith("The sequence model is no better than the counts baseline")
    assert "event types (0.95), stores (0.85)" in same and "positions" not in same
    assert "a simpler model answers as well here" in same
    worse = baseline_sentence(
        {**_comparison(baseline.WORSE, {}), "difference": -0.019, "difference_ci": [-0.033, -0.006]}
    )
    assert worse.startswith("The sequence model is worse than the counts baseline")
    assert "(-0.019, 95% CI [-0.033, -0.006]" in worse and "a simpler model answers better here" in worse
    # a difference that rounds to 0 carries no sign
    tied = baseline_sentence(
        {**_comparison(baseline.NO_BETTER, {}), "difference": -0.0002, "difference_ci": [-0.0062, 0.0058]}
    )
    assert "(+0.000, 95% CI [-0.006, +0.006]" in tied
    assert baseline_sentence(None) is None
    # the removal effects' blend: its weights, or which model alone; nothing without a blend
    assert "blend" not in beats and "weight" not in same
    blended = baseline_sentence({**_comparison(baseline.NO_BETTER, {}), "transformer_weight": 0.35})
    assert "blend the validation split's log loss chose: 0.35 x the sequence model's P(convert) + 0.65 x" in blended
    alone = baseline_sentence({**_comparison(baseline.BEATS, {}), "transformer_weight": 1.0})
    assert alone.endswith("gives the counts baseline no weight: the removal effects are the sequence model's.")
    counts = baseline_sentence({**_comparison(baseline.WORSE, {}), "transformer_weight": 0.0})
    assert "gives the sequence model no weight: the removal effects are the counts baseline's" in counts
    # with order terms in the removal baseline the sentence says so, and only where the baseline has weight
    assert "order terms" not in blended
    ordered = {"transformer_weight": 0.35, "removal_order_terms": True}
    assert "its fit with order terms" in baseline_sentence({**_comparison(baseline.NO_BETTER, {}), **ordered})
    unweighted = {"transformer_weight": 1.0, "removal_order_terms": True}
    assert "order terms" not in baseline_sentence({**_comparison(baseline.BEATS, {}), **unweighted})
    assert not baseline.removal_order_terms({"removal_model": {"order_penalty": None}})
    assert baseline.removal_order_terms({"removal_model": {"order_penalty": 1.0, "coefficients": {}}})


def test_the_page_and_the_insights_carry_the_baseline_sentence():
    et = pd.DataFrame(
        {
            "method": ["m"],
            "event_type": ["a"],
            "effect_log_odds": [0.2],
            "effect_ci_low": [0.1],
            "effect_ci_high": [0.3],
            "effect_verdict": ["drives conversion"],
            "events": [10],
            "sessions": [5],
        }
    )
    tables = {
        "event_type": et,
        "position": et.rename(columns={"event_type": "position_bin"}).assign(mean_abs_effect_log_odds=0.2),
        "store": pd.DataFrame(columns=["method", "rank", "store_name"]),
    }
    status = {"status": "ok", "test_roc_auc": 0.8, "test_roc_auc_ci": [0.78, 0.82], "test_sessions": 100}
    comparison = _comparison(baseline.NO_BETTER, {})
    html = page.render(tables, "m", status, None, b"", "r", comparison=comparison).decode()
    assert "<p id=baseline class=warn>The sequence model is no better than the counts baseline" in html
    text = key_insights(tables, "m", status=status, comparison=comparison)
    assert "is no better than the counts baseline" in text.splitlines()[2]


def test_the_blend_weight_is_the_grids_lowest_validation_log_loss(spark):
    """Two models' validation predictions where neither alone is best: the weight is the grid's lowest log
    loss of the blended P(convert), recomputed in numpy; a session only one model scored is left out; a
    blend of two identical models keeps the transformer (ties: the larger weight); no session in common
    keeps it too."""
    rng = np.random.default_rng(5)
    n = 400
    y = rng.integers(0, 2, n)
    # each model sees the label through noise of its own: averaging them is better than either
    p_t = 1 / (1 + np.exp(-(2.0 * (y - 0.5) + rng.normal(0, 1.5, n))))
    p_b = 1 / (1 + np.exp(-(2.0 * (y - 0.5) + rng.normal(0, 1.5, n))))
    ids = [f"s{i}" for i in range(n)]
    base = spark.createDataFrame(
        [(i, int(a), float(b)) for i, a, b in zip(ids, y, p_b, strict=True)] + [("extra", 1, 0.9)],
        "session_id string, label int, baseline_prediction double",
    )
    model = spark.createDataFrame(list(zip(ids, p_t.tolist(), strict=True)), "session_id string, prediction double")
    chosen = baseline.blend_weight(base, model)

    def loss(w):
        p = np.clip(w * p_t + (1 - w) * p_b, 1e-7, 1 - 1e-7)
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    expected = {round(w, 2): loss(w) for w in np.linspace(0, 1, 21)}
    best = min(expected, key=expected.get)
    assert 0.2 <= best <= 0.8  # neither model alone
    assert chosen["transformer_weight"] == pytest.approx(best) and chosen["validation_sessions"] == n
    assert {round(float(k), 2): v for k, v in chosen["validation_log_loss"].items()} == pytest.approx(expected)
    same = spark.createDataFrame(list(zip(ids, p_b.tolist(), strict=True)), "session_id string, prediction double")
    assert baseline.blend_weight(base, same)["transformer_weight"] == 1.0
    none = spark.createDataFrame([("other", 0.5)], "session_id string, prediction double")
    assert baseline.blend_weight(base, none) == {
        "transformer_weight": 1.0,
        "validation_sessions": 0,
        "validation_log_loss": {},
    }


def test_a_fit_stopped_by_max_iter_says_so_in_its_summary_and_the_train_stages_text(spark, tmp_path):
    """Two iterations cannot reach the optimum of the ridge fit above (the one that matches scikit-learn
    stops by the tolerance): the summary records the cap as hit and the train stage's text says so."""
    sessions = _sessions(spark)
    capped = BaselineConf(reg_params=[0.05], elastic_net_param=0.0, min_sessions=1, max_iter=2, order_penalties=[])
    fitted = baseline.fit(sessions, capped, str(tmp_path / "pred"), str(tmp_path / "models"), members=2)
    summary = fitted.to_dict(capped)
    assert summary["iterations"] == {"0.05": 2} and summary["converged"] is False and summary["max_iter"] == 2
    assert [m["iterations"] for m in summary["members"]] == [2]
    metrics = {
        "best_epoch": 1,
        "epochs_run": 1,
        "train_sessions_per_second": 10.0,
        "num_processes": 1,
        "training_seconds": 1.0,
        "model_sha256": "0" * 64,
        "test": {"sessions": 10, "positive_rate": 0.1, "roc_auc": 0.5, "pr_auc": 0.1, "log_loss": 0.3},
        "baseline": {**summary, "seconds": 1.0},
    }
    text = format_train_metrics(metrics, "m")
    assert "1s, 2 iterations: stopped at baseline.max_iter before Spark's tolerance; 1 more fit(s)" in text
    assert "for the removal CI's model part, 1 of them stopped at baseline.max_iter" in text
    metrics["baseline"]["converged"] = True
    metrics["baseline"]["members"][0]["iterations"] = 1
    text = format_train_metrics(metrics, "m")
    assert "1s, 2 iterations; 1 more fit(s)" in text and "baseline.max_iter" not in text
    metrics["baseline"]["members"] = []
    assert "more fit" not in format_train_metrics(metrics, "m")
    # the removal effects' baseline: which one the validation log loss chose, and a capped order fit
    assert "removal effects' baseline" not in format_train_metrics(metrics, "m")
    losses = {"counts alone": 0.52, "1": 0.51, "10": 0.515}
    metrics["baseline"]["removal_model"] = {"order_penalty": 1.0, "validation_log_loss": losses, "iterations": 2}
    text = format_train_metrics(metrics, "m")
    assert "counts with order terms at 1x the penalty (validation log loss 0.5100 against 0.5200" in text
    assert "against 0.5200 for the counts alone, stopped at baseline.max_iter)" in text
    metrics["baseline"]["removal_model"] = {
        "order_penalty": None,
        "validation_log_loss": losses,
        "candidate_penalty": 1.0,
        "improvement": {"log_loss": 0.01, "se": 0.008, "z": 1.25, "sessions": 600},
    }
    text = format_train_metrics(metrics, "m")
    assert "removal effects' baseline: the counts alone (order terms at 1x lowered the validation log loss by" in text
    assert "0.0100, 1.2 standard errors: within noise)" in text
