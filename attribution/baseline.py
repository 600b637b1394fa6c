"""The counts baseline: what a one-second regression on per-session counts answers, fitted in every run
so the sequence model has to earn its place on the user's data.

**Features.** Per session, the count of each event type, each store, each position bin and (with
``baseline.type_by_position``, the default) each pair of event type and position bin among the model-input
events (a sparse vector, Spark ML's ``CountVectorizer`` fitted on the training split; a value seen in fewer
than ``baseline.min_sessions`` training sessions has no feature of its own). The pairs let the baseline
weigh a step by where it falls (a card click among the first five events apart from one later on), which
per-session counts of types alone cannot. The previous step, repeats in context and the last step are not
in it: that is what the transformer may add.

**Model.** Spark ML's ``LogisticRegression`` with an elastic-net penalty, ``regParam`` chosen by the
validation split's log loss from ``baseline.reg_params``. Everything runs in Spark: the features, the fits,
and the validation and test metrics (:func:`curve_metrics`: a histogram of the predictions per label in
``BINS`` bins, one group-by, so only the histogram reaches the driver; and a Spark mean for the log loss).
Only the fitted coefficients (one per feature), the training counts of the type-and-bin pairs and the
histograms reach the driver.

**Coefficients** are log-odds per event: one more event of a type in a bin moves the baseline's logit by
the type's, the bin's and the pair's coefficients. **Per-event log-odds** (``per_event_log_odds``) fold
the pairs back into one number per key: an event type's coefficient plus its pairs' coefficients averaged
over where its training events fall (a bin's likewise over the types in it; a store's is its coefficient).
That is the same unit as the transformer's effect per event (``effect_log_odds``), so the report puts them
side by side (``baseline_log_odds``) and orders the keys by them.

**Bootstrap fits** (``baseline.members``): members - 1 more fits at the chosen ``regParam`` on bootstrap
resamples of the training sessions (:func:`member_fits`). The removal effects' CI pairs each with one of
the transformer's ensemble members, so its model part holds the baseline's estimation error too
(attribution/removal_tables.py); the published values stay the main fit's.

**The removal model** (``baseline.order_penalties``): the baseline whose removal effects enter the blend.
Beside the counts it may have generic order terms (:func:`order_tokens`: for each pair of event types
u, t, whether a t comes after the first u; each type's repeats; the first and the last event's type),
their L2 penalty a multiple of the counts' (their features divided by its square root), fitted at the
counts' chosen ``regParam``; the validation log loss picks a multiple, kept only when it beats the
counts alone by more than Z95 paired standard errors (:class:`RemovalModel`). The bootstrap fits and the blend weight are then the removal model's. The model
comparison and the per-event log-odds stay the counts fit's: they ask what a sequence model adds to
counts.

**Outputs**, in ``<model>/baseline/``: ``baseline.json`` (the settings, the chosen ``regParam``, the
validation and test metrics, the coefficients per key, the bootstrap fits' under ``members``) and
``test_predictions/`` (parquet: session_id, label, baseline_prediction: the counts fit's), which the
report pairs with the transformer's predictions on the same sessions (:func:`paired_comparison`); with
order terms tried, ``removal_model`` in ``baseline.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from pyspark import SparkContext
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.feature import CountVectorizer, CountVectorizerModel, ElementwiseProduct, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import Vectors
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from scipy.stats import rankdata

from attribution.config import BaselineConf
from attribution.events import position_bin
from attribution.io import join, read_bytes, write_text
from attribution.schema import EVENT_TYPE, POSITION_BIN, STORE_ID
from attribution.spark import default_parallelism
from attribution.statistics import Z95, roc_auc_ci

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# feature prefix -> the report table's key column whose rows it matches
STORE_PREFIX = "store"
PREFIXES = {EVENT_TYPE: EVENT_TYPE, POSITION_BIN: POSITION_BIN, STORE_PREFIX: STORE_ID}
# the pair of an event type and a position bin: ``event_type_x_position_bin=m_card_click@1-5``
CROSS_PREFIX = f"{EVENT_TYPE}_x_{POSITION_BIN}"
CROSS_SEPARATOR = "@"  # between the event type and the bin of a pair (no bin's name holds it)
# The order terms of the removal model (``baseline.order_penalties``), each a token prefix whose key is an
# event type, or for a pair ``u>t``: the pair is 1 when a t comes after the session's first u (once per
# session), repeats count a type's events after its first, first and last mark the session's first and
# last event's type.
ORDER_PAIR_PREFIX = "order_pair"
REPEAT_PREFIX = "repeat"
FIRST_PREFIX = "first_event"
LAST_PREFIX = "last_event"
ORDER_SEPARATOR = ">"  # between the earlier and the later event type of an order pair
SEPARATOR = "="
DIRECTORY = "baseline"
SUMMARY = "baseline.json"
PREDICTIONS = "test_predictions"
# Spark ML through a Spark Connect client hangs here: a Spark ML object's finalizer sends a gRPC call to
# release the server's copy, and pyspark 4.1's client deadlocks when one runs during another Connect call
# (SPARK-55020, SPARK-57655). Turning the garbage collector off during the fit did not avoid it.
CONNECT_SKIP = (
    "not fitted under Spark Connect: pyspark 4.1's Spark ML client can deadlock releasing a model "
    "(SPARK-55020); run the train stage from a classic session for the comparison"
)
MODELS = "spark_ml"  # the fitted CountVectorizerModel and the chosen LogisticRegressionModel, Spark ML's format


def _tag(prefix: str, value: Column) -> Column:
    return F.concat(F.lit(prefix + SEPARATOR), value.cast("string"))


def event_tokens(event_type: Column, store: Column, position: Column, type_by_position: bool = True) -> Column:
    """One event's tokens at a 1-based ``position``: ``event_type=m_card_view``, ``position_bin=1-5``, with
    ``type_by_position`` ``event_type_x_position_bin=m_card_view@1-5``, and ``store=17`` when it has a
    store. The tokens name the coefficients that attribution/removal_tables.py reads back by prefix."""
    bin_ = position_bin(position)
    parts = [_tag(EVENT_TYPE, event_type), _tag(POSITION_BIN, bin_)]
    if type_by_position:
        parts.append(F.concat(F.lit(CROSS_PREFIX + SEPARATOR), event_type.cast("string"), F.lit(CROSS_SEPARATOR), bin_))
    own = F.array(*parts)
    return F.when(store.isNull(), own).otherwise(F.concat(own, F.array(_tag(STORE_PREFIX, store))))


def tokens(sessions: DataFrame, type_by_position: bool = True) -> Column:
    """Per session, the tokens of its model-input events in order (:func:`event_tokens`)."""
    stores = F.col("store_ids")
    return F.flatten(
        F.transform(F.col("event_types"), lambda t, i: event_tokens(t, stores[i], i + 1, type_by_position))
    )


def order_tokens(sessions: DataFrame) -> Column:
    """Per session, the order terms' tokens of its model-input events (the prefixes above): an
    ``order_pair=u>t`` for each pair of types u != t where a t comes after the first u (once), a
    ``repeat=t`` for each event of a type after its first, and ``first_event=`` and ``last_event=`` of the
    first and the last event's type. Computed on the events as they are, so on a session with a key's
    events removed (attribution/baseline_removal.py) the same definitions give the shorter session's."""
    types = F.col("event_types")

    def tag(prefix: str, *parts: Column) -> Column:
        return F.concat(F.lit(prefix + SEPARATOR), *parts)

    before = lambda i: F.array_distinct(F.slice(types, 1, i))  # noqa: E731 - the types before index i
    pairs = F.array_distinct(
        F.flatten(
            F.transform(
                types,
                lambda t, i: F.transform(
                    F.filter(before(i), lambda u: u != t),
                    lambda u: tag(ORDER_PAIR_PREFIX, u, F.lit(ORDER_SEPARATOR), t),
                ),
            )
        )
    )
    repeats = F.transform(types, lambda t, i: F.when(F.array_contains(before(i), t), tag(REPEAT_PREFIX, t)))
    ends = F.when(
        F.size(types) > 0, F.array(tag(FIRST_PREFIX, types[0]), tag(LAST_PREFIX, F.element_at(types, -1)))
    ).otherwise(F.array().cast("array<string>"))
    return F.filter(F.concat(pairs, repeats, ends), lambda x: x.isNotNull())


def per_event_log_odds(coefficients: dict[str, dict[str, float]], pair_counts: dict[str, int]) -> dict:
    """One log-odds per event type, position bin and store (the module's docstring): a type's coefficient
    plus its pairs' coefficients weighted by ``pair_counts`` (training events per ``type@bin``), a bin's
    likewise over its types, a store's coefficient. A key without a coefficient of its own counts 0 for
    it, as in the fit; only keys with a coefficient or a pair are listed."""
    pairs = coefficients.get(CROSS_PREFIX, {})
    by: dict[str, dict[str, list[float]]] = {EVENT_TYPE: {}, POSITION_BIN: {}}  # key -> [pair sum, events]
    for pair, n in pair_counts.items():
        kind, _, b = pair.rpartition(CROSS_SEPARATOR)
        for prefix, key in ((EVENT_TYPE, kind), (POSITION_BIN, b)):
            total = by[prefix].setdefault(key, [0.0, 0])
            total[0] += n * pairs.get(pair, 0.0)
            total[1] += n
    out: dict[str, dict[str, float]] = {}
    for prefix in PREFIXES:
        own = coefficients.get(prefix, {})
        folded = by.get(prefix, {})
        keys = set(own) | set(folded)
        out[prefix] = {
            k: own.get(k, 0.0) + (folded[k][0] / folded[k][1] if k in folded and folded[k][1] else 0.0)
            for k in sorted(keys)
        }
    return out


@dataclass(frozen=True)
class BaselineResult:
    """What the train stage keeps of the baseline: the chosen ``regParam``, the validation ROC-AUC of each
    one tried and the log loss that chose it, the test metrics and the coefficients per key (prefix -> key
    -> log-odds per event)."""

    reg_param: float
    validation_roc_auc: dict[str, float]
    validation_log_loss: dict[str, float]
    test: dict[str, float]
    coefficients: dict[str, dict[str, float]]
    intercept: float
    features: int
    pair_counts: dict[str, int]  # training events per event type and position bin (``type@bin``)
    blend: dict | None = None  # :func:`blend_weight`'s choice, or None (no blend)
    iterations: dict[str, int] | None = None  # the optimizer's iterations per regParam tried
    # the bootstrap fits at the chosen regParam (:func:`member_fits`): intercept, coefficients, iterations
    members: list[dict] | None = None
    # the removal model's choice, fit and validation log losses (:class:`RemovalModel`), or None (no order
    # terms tried: the removal effects are the counts fit's)
    removal_model: dict | None = None

    def converged(self, conf: BaselineConf) -> bool | None:
        """Whether the chosen fit stopped before ``conf.max_iter``: by Spark's tolerance, not the cap. None
        when the iterations are unknown."""
        n = (self.iterations or {}).get(str(self.reg_param))
        return None if n is None else n < conf.max_iter

    def to_dict(self, conf: BaselineConf) -> dict:
        pairs = " and their pairs" if conf.type_by_position else ""
        return {
            "model": f"logistic regression on per-session counts of event types, stores and position bins{pairs}",
            "type_by_position": conf.type_by_position,
            "elastic_net_param": conf.elastic_net_param,
            "standardization": conf.standardization,
            "reg_params_tried": list(conf.reg_params),
            "reg_param": self.reg_param,
            "max_iter": conf.max_iter,
            "iterations": self.iterations,
            "converged": self.converged(conf),
            "validation_roc_auc": self.validation_roc_auc,
            "validation_log_loss": self.validation_log_loss,
            "test": self.test,
            "features": self.features,
            "intercept": self.intercept,
            "coefficients": self.coefficients,
            "training_pair_events": self.pair_counts,
            "per_event_log_odds": per_event_log_odds(self.coefficients, self.pair_counts),
            "blend": self.blend,
            "members": self.members or [],
            "order_penalties_tried": list(conf.order_penalties),
            "removal_model": self.removal_model,
        }


# Predictions are histogrammed into this many equal bins from the lowest prediction to the highest for the
# ROC and PR curves: two predictions in one bin count as tied, which moves an AUC by at most the share of
# positive-negative pairs that fall in one bin. Spanning the predictions' own range, not [0, 1], keeps
# that share at 0 for a model whose predictions all lie close together (a model near chance, a short
# training): with fewer sessions than bins, distinct predictions rarely share one.
BINS = 100_000
ROWS_PER_PARTITION = 250_000


def curve_metrics(predictions: DataFrame, label: str = "label", score: str = "baseline_prediction") -> dict:
    """ROC-AUC and PR-AUC (average precision) of ``score`` for ``label`` (0/1), from a histogram per label
    computed in Spark (only the bins reach the driver); NaN without both classes. Also the rows counted
    (``sessions``) and the positives among them."""
    bounds = predictions.agg(F.min(score), F.max(score)).first()
    assert bounds is not None  # an aggregate has one row
    low, high = bounds  # both None without rows
    width = (high - low) / BINS if low is not None else 0.0
    scaled = (F.col(score) - F.lit(low)) / F.lit(width) if width > 0 else F.lit(0.0)  # one value: all tied
    binned = F.least(F.floor(scaled), F.lit(BINS - 1)).cast("long")
    hist = (
        predictions.groupBy(binned.alias("bin"))
        .agg(F.sum(F.col(label).cast("long")).alias("pos"), F.sum((1 - F.col(label)).cast("long")).alias("neg"))
        .toArrow()
        .to_pandas()
        .sort_values("bin", ascending=False)  # from the highest predictions down
    )
    pos, neg = hist["pos"].to_numpy(float), hist["neg"].to_numpy(float)
    p, n = pos.sum(), neg.sum()
    counts = {"sessions": int(p + n), "positives": int(p)}
    if p == 0 or n == 0:
        return {"roc_auc": float("nan"), "pr_auc": float("nan"), **counts}
    neg_below = n - np.cumsum(neg)  # negatives in lower bins
    auc = float((pos * (neg_below + 0.5 * neg)).sum() / (p * n))
    true_pos = np.cumsum(pos)
    precision = true_pos / (true_pos + np.cumsum(neg))
    average_precision = float((pos / p * precision).sum())
    return {"roc_auc": auc, "pr_auc": average_precision, **counts}


def _without_summary(model: LogisticRegressionModel) -> LogisticRegressionModel:
    """``model`` without its training summary. A fitted model keeps the summary, which holds the
    SparkSession; once the session has used an ``Observation`` (sessionization and training do), the
    model can't be serialized into its prediction UDF (Spark 4.1: ObservationManager is not
    serializable). The summary's setter is package-private in Scala, so public in the JVM. A Spark
    Connect model has no JVM object here and no such closure: it is returned as it is."""
    java = getattr(model, "_java_obj", None)
    context = SparkContext._active_spark_context
    if java is not None and context is not None and context._jvm is not None:
        java.setSummary(context._jvm.scala.Option.empty())
    return model


def fit(
    sessions: DataFrame,
    conf: BaselineConf,
    predictions_path: str,
    model_dir: str,
    transformer_validation: DataFrame | None = None,
    members: int = 1,
    seed: int = 0,
) -> BaselineResult:
    """Fit the baseline on ``sessions`` (the sessions table, with ``split``): features from the training
    split, ``regParam`` by the validation split's log loss, test metrics, the test split's predictions
    written to ``predictions_path``, the fitted Spark ML models saved under ``model_dir``. With
    ``transformer_validation`` (session_id, prediction: the transformer's P(convert) of the validation
    sessions), the blend weight of the removal effects (:func:`blend_weight`). With ``members`` above 1,
    that many - 1 bootstrap fits beside it (:func:`member_fits`, from ``seed``)."""
    ordered = bool(conf.order_penalties)
    data = sessions.select(
        "session_id",
        "split",
        F.col("label").cast("double").alias("label"),
        tokens(sessions, conf.type_by_position).alias("tokens"),
        *([order_tokens(sessions).alias("order_tokens")] if ordered else []),
    )
    train = data.where(F.col("split") == "train")
    pair_counts = _pair_counts(train) if conf.type_by_position else {}
    vectorizer = _vectorizer(train, conf, "tokens", "features", join(model_dir, "count_vectorizer"))
    order_vectorizer = (
        _vectorizer(train, conf, "order_tokens", "order_features", join(model_dir, ORDER_VECTORIZER))
        if ordered
        else None
    )
    # Each optimizer iteration is a Spark job over every partition, so scheduling, not arithmetic, sets its
    # time on small data: about ROWS_PER_PARTITION sessions a partition, at most the default parallelism.
    # (On the embedded default's 29k sessions, 3 fits took 3.2 s in one partition, 5-9 s in two.)
    partitions = max(1, min(default_parallelism(sessions.sparkSession), math.ceil(data.count() / ROWS_PER_PARTITION)))
    featured = vectorizer.transform(data)
    if order_vectorizer is not None:
        featured = order_vectorizer.transform(featured)
    featured = (
        featured.select("session_id", "split", "label", "features", *(["order_features"] if ordered else []))
        .coalesce(partitions)
        .cache()
    )
    removal_rows: DataFrame | None = None  # the removal model's scaled features, when it has order terms
    try:
        train_rows = featured.where(F.col("split") == "train")
        validation = featured.where(F.col("split") == "validation")
        scores, losses, models, iterations = {}, {}, {}, {}
        for reg in conf.reg_params:
            models[reg], done = _fit_one(train_rows, conf, reg)
            if done is not None:
                iterations[str(reg)] = done
            scores[reg], losses[reg] = _validation_scores(models[reg], validation)
        # The validation log loss chooses: the baseline's removal effects are differences of probabilities,
        # and a penalty that zeroes most coefficients can keep the ROC-AUC (the order) while it flattens
        # the probabilities. Ties: the stronger penalty.
        best = min(conf.reg_params, key=lambda r: (losses[r], -r))
        model = models[best]
        model.write().overwrite().save(join(model_dir, "logistic_regression"))
        removal = (
            _removal_model(
                featured,
                conf,
                best,
                (model, losses[best]),
                vectorizer.vocabulary,
                order_vectorizer.vocabulary,
                model_dir,
            )
            if order_vectorizer is not None
            else None
        )
        blend_model, blend_rows = model, validation
        if removal is None or removal.model is None:
            boots = member_fits(train_rows, conf, best, members, seed, vectorizer.vocabulary, model_dir)
        else:
            removal_rows = removal.rows(featured).cache()
            train_scaled = removal_rows.where(F.col("split") == "train")
            boots = member_fits(train_scaled, conf, best, members, seed, removal.vocabulary, model_dir, removal.factor)
            blend_model, blend_rows = removal.model, removal_rows.where(F.col("split") == "validation")
        blend = (
            None
            if transformer_validation is None
            else blend_weight(_scored(blend_model, blend_rows), transformer_validation)
        )
        test = _scored(model, featured.where(F.col("split") == "test"))
        test.write.mode("overwrite").parquet(predictions_path)
        metrics = _test_metrics(sessions.sparkSession.read.parquet(predictions_path))
    finally:
        featured.unpersist()
        if removal_rows is not None:
            removal_rows.unpersist()
    coefficients = _by_prefix(vectorizer.vocabulary, model.coefficients.toArray())
    return BaselineResult(
        reg_param=best,
        validation_roc_auc={str(r): float(s) for r, s in scores.items()},
        validation_log_loss={str(r): v for r, v in losses.items()},
        test=metrics,
        coefficients=coefficients,
        intercept=float(model.intercept),
        features=len(vectorizer.vocabulary),
        pair_counts=pair_counts,
        blend=blend,
        iterations=iterations or None,
        members=boots,
        removal_model=None if removal is None else removal.to_dict(),
    )


def _vectorizer(
    train: DataFrame, conf: BaselineConf, tokens_column: str, features: str, path: str
) -> CountVectorizerModel:
    """A CountVectorizer of ``tokens_column`` fitted on the training sessions (a token in fewer than
    ``conf.min_sessions`` of them has no feature), saved at ``path``."""
    fitted = CountVectorizer(
        inputCol=tokens_column, outputCol=features, minDF=float(conf.min_sessions), vocabSize=conf.max_features
    ).fit(train)
    fitted.write().overwrite().save(path)
    return fitted


def _validation_scores(model: LogisticRegressionModel, validation: DataFrame) -> tuple[float, float]:
    """A fit's validation ROC-AUC and mean log loss (inf without validation sessions)."""
    scored = _scored(model, validation).cache()
    try:
        auc = float(curve_metrics(scored)["roc_auc"])
        loss = scored.agg(F.avg(_log_loss_column())).first()
    finally:
        scored.unpersist()
    return auc, float("inf") if loss is None or loss[0] is None else float(loss[0])


ORDER_VECTORIZER = "order_count_vectorizer"  # the order terms' CountVectorizerModel, beside count_vectorizer
ORDER_MODEL = "logistic_regression_order"  # the removal model's fit when it has the order terms
COUNTS_ALONE = "counts alone"  # the removal model's choice without order terms, in its validation log loss


@dataclass(frozen=True)
class RemovalModel:
    """The baseline whose removal effects the blend uses (``baseline.order_penalties``): the counts fit, or
    the counts and the order terms at the order penalty with the lowest validation log loss when it lowers
    the counts alone's by more than :data:`~attribution.statistics.Z95` standard errors of the paired
    per-session difference (``improvement``: its mean, SE and z; the candidate penalty tested).
    ``penalty`` (None: the counts alone), ``factor`` (each feature's scale in the fit: 1 for the counts,
    1/sqrt(penalty) for the order terms, so their L2 penalty is ``penalty`` times the counts'), the
    fitted ``model`` on scaled features, the ``vocabulary`` (counts', then order terms') and the
    coefficients per prefix and key in the unscaled unit (log-odds per token)."""

    penalty: float | None
    validation_log_loss: dict[str, float]
    model: LogisticRegressionModel | None
    vocabulary: list[str]
    factor: np.ndarray | None
    iterations: int | None
    candidate: float | None = None  # the penalty with the lowest validation log loss, kept or not
    improvement: dict | None = None  # its paired improvement over the counts alone (:func:`_paired_improvement`)

    def rows(self, featured: DataFrame) -> DataFrame:
        """``featured``'s sessions with ``features`` the counts and order terms scaled by ``factor``."""
        return _scaled(featured, self.factor)

    def to_dict(self) -> dict:
        out: dict = {
            "order_penalty": self.penalty,
            "validation_log_loss": self.validation_log_loss,
            "candidate_penalty": self.candidate,
            "improvement": self.improvement,
        }
        if self.model is not None and self.factor is not None:
            out |= {
                "features": len(self.vocabulary),
                "iterations": self.iterations,
                "intercept": float(self.model.intercept),
                "coefficients": _by_prefix(self.vocabulary, self.model.coefficients.toArray() * self.factor),
            }
        return out


def _scaled(featured: DataFrame, factor: np.ndarray | None) -> DataFrame:
    """session_id, split, label and ``features``: the counts and the order terms side by side, each
    multiplied by ``factor``."""
    assembled = VectorAssembler(inputCols=["features", "order_features"], outputCol="assembled").transform(featured)
    scaled = ElementwiseProduct(
        scalingVec=Vectors.dense(factor.tolist() if factor is not None else []),
        inputCol="assembled",
        outputCol="scaled",
    ).transform(assembled)
    return scaled.select("session_id", "split", "label", F.col("scaled").alias("features"))


def _paired_improvement(counts: DataFrame, order: DataFrame) -> dict:
    """The order fit's improvement on the counts fit's validation log loss, session by session (both
    :func:`_scored` on the same sessions): the mean per-session difference (counts' minus order's), its
    standard error, z (mean / SE; 0 when the SE is 0) and the sessions, in one Spark aggregation."""
    loss = _log_loss_column()
    a = counts.select("session_id", loss.alias("a"))
    b = order.select("session_id", loss.alias("b"))
    row = (
        a.join(b, "session_id")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.avg(F.col("a") - F.col("b")).alias("mean"),
            F.stddev_samp(F.col("a") - F.col("b")).alias("sd"),
        )
        .first()
    )
    assert row is not None
    n = int(row["n"])
    mean = float(row["mean"]) if row["mean"] is not None else 0.0
    se = float(row["sd"]) / math.sqrt(n) if row["sd"] is not None and n > 1 else 0.0
    return {"log_loss": mean, "se": se, "z": mean / se if se > 0 else 0.0, "sessions": n}


def _removal_model(
    featured: DataFrame,
    conf: BaselineConf,
    reg_param: float,
    counts_fit: tuple[LogisticRegressionModel, float],
    counts_vocabulary: list[str],
    order_vocabulary: list[str],
    model_dir: str,
) -> RemovalModel:
    """The counts and the order terms fitted at the counts' chosen ``reg_param``, the order terms' L2 penalty
    each of ``conf.order_penalties`` times the counts' (their features divided by its square root; with
    ``standardization`` off the penalty is on the coefficients as they are). The validation log loss
    picks the penalty (ties: the stronger), and its fit is kept when its paired improvement on the counts
    alone (``counts_fit``: the counts fit and its validation log loss) exceeds Z95 standard errors: with
    several candidates the lowest validation log loss is partly luck, and where order does not matter a
    fit that wins by noise moves the removal effects for nothing."""
    counts_model, counts_loss = counts_fit
    vocabulary = [*counts_vocabulary, *order_vocabulary]
    losses: dict[str, float] = {COUNTS_ALONE: counts_loss}
    if not order_vocabulary:  # no order term in enough training sessions
        return RemovalModel(None, losses, None, vocabulary, None, None)
    fits: dict[float, RemovalModel] = {}
    for penalty in conf.order_penalties:
        factor = np.concatenate([np.ones(len(counts_vocabulary)), np.full(len(order_vocabulary), penalty**-0.5)])
        rows = _scaled(featured, factor).cache()
        try:
            model, iterations = _fit_one(rows.where(F.col("split") == "train"), conf, reg_param)
            _, losses[f"{penalty:g}"] = _validation_scores(model, rows.where(F.col("split") == "validation"))
        finally:
            rows.unpersist()
        fits[penalty] = RemovalModel(penalty, losses, model, vocabulary, factor, iterations)
    best = fits[min(fits, key=lambda p: (losses[f"{p:g}"], -p))]
    assert best.model is not None
    validation = featured.where(F.col("split") == "validation")
    improvement = _paired_improvement(_scored(counts_model, validation), _scored(best.model, best.rows(validation)))
    if improvement["z"] <= Z95:
        return RemovalModel(None, losses, None, vocabulary, None, None, best.penalty, improvement)
    best.model.write().overwrite().save(join(model_dir, ORDER_MODEL))
    return RemovalModel(
        best.penalty, losses, best.model, vocabulary, best.factor, best.iterations, best.penalty, improvement
    )


def _fit_one(rows: DataFrame, conf: BaselineConf, reg_param: float) -> tuple[LogisticRegressionModel, int | None]:
    """One elastic-net fit of ``rows`` at ``reg_param``: the model without its training summary, and the
    optimizer's iterations (None where Spark kept no summary)."""
    fitted = LogisticRegression(
        featuresCol="features",
        labelCol="label",
        regParam=reg_param,
        elasticNetParam=conf.elastic_net_param,
        standardization=conf.standardization,
        maxIter=conf.max_iter,
    ).fit(rows)
    iterations = int(fitted.summary.totalIterations) if getattr(fitted, "hasSummary", False) else None
    return _without_summary(fitted), iterations


def _by_prefix(vocabulary: list[str], weights: np.ndarray) -> dict[str, dict[str, float]]:
    """A fit's coefficients per prefix and key, from its features' tokens and weights."""
    coefficients: dict[str, dict[str, float]] = {p: {} for p in (*PREFIXES, CROSS_PREFIX)}
    for token, weight in zip(vocabulary, weights, strict=True):
        prefix, _, key = token.partition(SEPARATOR)
        coefficients.setdefault(prefix, {})[key] = float(weight)
    return coefficients


# the bootstrap fits' Spark ML models under the baseline's models directory: member_1, member_2, ...
MEMBER_MODEL = "logistic_regression_member_{}"


def member_fits(
    train_rows: DataFrame,
    conf: BaselineConf,
    reg_param: float,
    members: int,
    seed: int,
    vocabulary: list[str],
    model_dir: str,
    factor: np.ndarray | None = None,
) -> list[dict]:
    """``members`` - 1 fits at the chosen ``reg_param`` on bootstrap resamples of the training sessions
    (Spark's Poisson sampling with replacement, seeds ``seed`` + 1, + 2, ...; the features as the main fit
    counted them), so the removal effects' CI can count the baseline's own estimation error as the
    transformer's ensemble counts the transformer's (attribution/removal_tables.py). Each: its intercept,
    coefficients and iterations; its Spark ML model saved as :data:`MEMBER_MODEL`. With ``factor`` (the
    removal model's feature scales, :class:`RemovalModel`), the coefficients are given unscaled."""
    fits = []
    for m in range(1, members):
        resample = train_rows.sample(withReplacement=True, fraction=1.0, seed=seed + m)
        model, iterations = _fit_one(resample, conf, reg_param)
        model.write().overwrite().save(join(model_dir, MEMBER_MODEL.format(m)))
        fits.append(
            {
                "seed": seed + m,
                "intercept": float(model.intercept),
                "coefficients": _by_prefix(
                    vocabulary, model.coefficients.toArray() * (1.0 if factor is None else factor)
                ),
                "iterations": iterations,
            }
        )
    return fits


# the blend weights tried: the transformer's share of the blended P(convert)
BLEND_GRID = tuple(i / 20 for i in range(21))


def blend_weight(baseline_validation: DataFrame, transformer_validation: DataFrame) -> dict:
    """The transformer's weight ``w`` in the blend ``w x P_transformer + (1 - w) x P_baseline`` with the
    lowest log loss on the validation sessions both models scored (one Spark aggregation over
    :data:`BLEND_GRID`; ties, to rounding: the larger w). The blend is a model of its own: its removal effect of a key
    is the same blend of the two models' removal effects, which is what the report publishes
    (attribution/removal_tables.py). Returns the weight, the log loss at every weight tried and the
    sessions; with no session in common the weight is 1 (the transformer alone)."""
    eps = 1e-7
    joined = baseline_validation.join(transformer_validation, "session_id")

    def loss(w: float) -> Column:
        p = F.lit(w) * F.col("prediction") + F.lit(1.0 - w) * F.col("baseline_prediction")
        p = F.least(F.greatest(p, F.lit(eps)), F.lit(1 - eps))
        return F.avg(-(F.col("label") * F.log(p) + (1 - F.col("label")) * F.log(1 - p)))

    row = joined.agg(F.count(F.lit(1)).alias("n"), *[loss(w).alias(f"w{i}") for i, w in enumerate(BLEND_GRID)]).first()
    assert row is not None
    n = int(row["n"])
    losses = {w: float(row[f"w{i}"]) for i, w in enumerate(BLEND_GRID) if row[f"w{i}"] is not None}
    # ties (to rounding: w x p + (1 - w) x p is p only to the last bits): the larger weight
    lowest = min(losses.values()) if n else 0.0
    best = max(w for w, v in losses.items() if v <= lowest + 1e-12 * max(1.0, abs(lowest))) if n else 1.0
    return {
        "transformer_weight": best,
        "validation_sessions": n,
        "validation_log_loss": {str(w): v for w, v in losses.items()},
    }


def _pair_counts(train: DataFrame) -> dict[str, int]:
    """Training events per event type and position bin (``type@bin``), counted in Spark: the weights that
    fold the pairs' coefficients into one per type and per bin (:func:`per_event_log_odds`)."""
    start = len(CROSS_PREFIX + SEPARATOR) + 1  # substring is 1-based
    token = F.explode("tokens").alias("token")
    pairs = train.select(token).where(F.col("token").startswith(CROSS_PREFIX + SEPARATOR))
    counted = pairs.groupBy(F.substring("token", start, 1_000_000).alias("pair")).count().collect()
    return {str(r["pair"]): int(r["count"]) for r in counted}


def _scored(model: LogisticRegressionModel, rows: DataFrame) -> DataFrame:
    """session_id, label (int) and the baseline's P(convert) of ``rows``."""
    return model.transform(rows).select(
        "session_id",
        F.col("label").cast("int").alias("label"),
        vector_to_array(F.col("probability"))[1].alias("baseline_prediction"),
    )


def _log_loss_column() -> Column:
    """Each session's log loss of ``baseline_prediction`` for ``label`` (predictions clipped to 1e-7)."""
    eps = 1e-7
    p = F.least(F.greatest(F.col("baseline_prediction"), F.lit(eps)), F.lit(1 - eps))
    return -(F.col("label") * F.log(p) + (1 - F.col("label")) * F.log(1 - p))


def _test_metrics(predictions: DataFrame) -> dict:
    """ROC-AUC (with its 95% CI), PR-AUC and log loss of the test split, computed in Spark."""
    row = predictions.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum("label").alias("positives"),
        F.avg(_log_loss_column()).alias("log_loss"),
        F.avg("baseline_prediction").alias("mean_prediction"),
    ).first()
    assert row is not None
    n, positives = int(row["n"]), int(row["positives"] or 0)
    curves = curve_metrics(predictions)
    auc, pr = curves["roc_auc"], curves["pr_auc"]
    low, high = roc_auc_ci(auc, positives, n - positives)
    return {
        "roc_auc": auc,
        "roc_auc_ci": [low, high],
        "pr_auc": pr,
        "log_loss": float(row["log_loss"]) if row["log_loss"] is not None else float("nan"),
        "sessions": n,
        "positive_rate": positives / n if n else float("nan"),
        "mean_prediction": float(row["mean_prediction"]) if row["mean_prediction"] is not None else float("nan"),
    }


def train_and_write(
    spark: SparkSession,
    sessions: DataFrame,
    conf: BaselineConf,
    model_path: str,
    transformer_validation: DataFrame | None = None,
    members: int = 1,
    seed: int = 0,
) -> dict:
    """Fit the baseline and write it beside the model (``<model>/baseline/``); returns its summary. With
    ``transformer_validation`` and ``conf.blend``, the summary holds the removal effects' blend; with
    ``members`` above 1, the bootstrap fits (:func:`member_fits`)."""
    where = join(model_path, DIRECTORY)
    blend_with = transformer_validation if conf.blend else None
    result = fit(sessions, conf, join(where, PREDICTIONS), join(where, MODELS), blend_with, members, seed)
    summary = result.to_dict(conf)
    write_text(join(where, SUMMARY), json.dumps(summary, indent=1))
    return summary


def log_odds_per_key(summary: dict | None) -> dict[str, dict[str, float]] | None:
    """The summary's per-event log-odds per prefix and key (:func:`per_event_log_odds`); a summary written
    before the type-and-bin pairs has only its coefficients, which are the same thing without pairs."""
    if not summary:
        return None
    return summary.get("per_event_log_odds") or summary.get("coefficients")


def transformer_weight(summary: dict | None) -> float | None:
    """The transformer's weight in the removal effects' blend (:func:`blend_weight`), or None: no baseline,
    no blend (``baseline.blend`` false, or a summary written before the blend)."""
    blend = (summary or {}).get("blend")
    return None if not blend else float(blend["transformer_weight"])


def removal_order_terms(summary: dict | None) -> bool:
    """Whether the removal effects' baseline is the fit with order terms (:class:`RemovalModel`)."""
    return "coefficients" in ((summary or {}).get("removal_model") or {})


def read_summary(model_path: str) -> dict:
    """The baseline's summary written beside the model; an InputError or FileNotFoundError when none is."""
    return json.loads(read_bytes(join(join(model_path, DIRECTORY), SUMMARY)))


def predictions_location(model_path: str) -> str:
    return join(join(model_path, DIRECTORY), PREDICTIONS)


# --------------------------------------------------------------------------------------------------
# Paired comparison on the same test sessions (DeLong), and the coefficients beside the tables
# --------------------------------------------------------------------------------------------------


def _structural(labels: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The ROC-AUC and DeLong's structural components (V10 per positive, V01 per negative), midranks."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    m, n = len(pos), len(neg)
    ranks = rankdata(np.concatenate([pos, neg]))
    auc = (ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (ranks[:m] - rankdata(pos)) / n
    v01 = 1.0 - (ranks[m:] - rankdata(neg)) / m
    return float(auc), v10, v01


def delong(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """ROC-AUC of ``a`` and of ``b`` on the same sessions and their paired difference a - b with its 95%
    CI (DeLong, DeLong & Clarke-Pearson 1988). NaN when a class is missing."""
    labels = np.asarray(labels).astype(int)
    m, n = int((labels == 1).sum()), int((labels == 0).sum())
    if m < 2 or n < 2:
        nan = float("nan")
        return {"auc_a": nan, "auc_b": nan, "difference": nan, "se": nan, "ci_low": nan, "ci_high": nan}
    auc_a, v10a, v01a = _structural(labels, np.asarray(a, float))
    auc_b, v10b, v01b = _structural(labels, np.asarray(b, float))
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    cov = s10 / m + s01 / n
    var = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    diff, se = auc_a - auc_b, math.sqrt(var)
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": diff,
        "se": se,
        "ci_low": diff - Z95 * se,
        "ci_high": diff + Z95 * se,
    }


# what the paired difference's CI says
BEATS, NO_BETTER, WORSE = (
    "beats the counts baseline",
    "no better than the counts baseline",
    "worse than the counts baseline",
)


def verdict(ci_low: float, ci_high: float) -> str | None:
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return None
    return BEATS if ci_low > 0 else WORSE if ci_high < 0 else NO_BETTER


def with_coefficients(table: pa.Table, prefix: str, coefficients: dict[str, dict[str, float]] | None) -> pa.Table:
    """``table`` with ``baseline_log_odds``: the baseline's log-odds per event of the row's key
    (``coefficients``: :func:`log_odds_per_key`; null for a key without a feature of its own), appended
    last."""
    key = PREFIXES[prefix]
    values = (coefficients or {}).get(prefix, {})
    keys = table[key].cast(pa.string()).to_pylist() if table.num_rows else []
    column = pa.array([values.get(k) if k is not None else None for k in keys], pa.float64())
    return table.append_column("baseline_log_odds", column)


def rank_agreement(model: dict[str, float], baseline: dict[str, float]) -> tuple[float, int]:
    """Spearman's rank correlation of two effects per key over the keys both have, and that count."""
    keys = sorted(k for k in model if k in baseline and math.isfinite(model[k]) and math.isfinite(baseline[k]))
    if len(keys) < 3:
        return float("nan"), len(keys)
    a = rankdata([model[k] for k in keys])
    b = rankdata([baseline[k] for k in keys])
    if a.std() == 0 or b.std() == 0:
        return float("nan"), len(keys)
    return float(np.corrcoef(a, b)[0, 1]), len(keys)
