"""Small builders for hand-written inputs."""

from __future__ import annotations

from attribution.sessionize import quarantined_events, sessions_all, valid_events, validated

RAW_SCHEMA = (
    "user_id string, device_id string, event_timestamp string, event_name string, store_id long, "
    "discovery_feature string, event_rank int"
)


def raw_events(spark, rows, schema: str = RAW_SCHEMA):
    """Rows as (user, device, timestamp text, event name[, store, feature, rank])."""
    n = len(schema.split(","))
    padded = [tuple(r) + (None,) * (n - len(r)) for r in rows]
    return spark.createDataFrame(padded, schema)


def sessionize_df(spark, rows, conf, stores=None, schema: str = RAW_SCHEMA):
    checked = validated(raw_events(spark, rows, schema), conf)
    return sessions_all(valid_events(checked), stores, conf)


def quarantine_df(spark, rows, conf, schema: str = RAW_SCHEMA):
    return quarantined_events(validated(raw_events(spark, rows, schema), conf))


# --------------------------------------------------------------------------------------------------
# Sessions tables without Spark, for the model tests: a known signal planted by hand.
# --------------------------------------------------------------------------------------------------

EVENTS = ("home_page_load", "m_card_view", "m_card_click", "store_page_load", "m_search_query")
STORES = tuple(f"s{i}" for i in range(12))


def synthetic_sessions(n: int, seed: int = 0, max_len: int = 30, split_of=None, full: bool = False):
    """A sessions table (the columns the model reads) with a planted rule: a session converts with
    probability 0.8 when it clicks a card of store s0 or s1, else 0.1. Returns a pyarrow Table; with
    ``full`` also event_types, event_ts and session_date, as the attribution stage reads them."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    cols = {
        k: []
        for k in (
            "session_id",
            "label",
            "split",
            "event_names",
            "discovery_features",
            "store_ids",
            "store_names",
            "store_categories",
            "store_tags",
            "is_new_vertical",
            "event_ranks",
            "seconds_from_prev",
            "session_length",
        )
    }
    for i in range(n):
        length = int(rng.integers(2, max_len + 1))
        names = list(rng.choice(EVENTS, size=length))
        stores = [
            str(rng.choice(STORES)) if e in ("m_card_view", "m_card_click", "store_page_load") else None for e in names
        ]
        driver = any(e == "m_card_click" and s in ("s0", "s1") for e, s in zip(names, stores, strict=True))
        label = int(rng.random() < (0.8 if driver else 0.1))
        cols["session_id"].append(f"sess{seed}_{i:06d}")
        cols["label"].append(label)
        r = i % 10
        cols["split"].append(split_of(i) if split_of else "train" if r < 7 else "validation" if r == 7 else "test")
        cols["event_names"].append(names)
        cols["discovery_features"].append(["Carousel" if s else None for s in stores])
        cols["store_ids"].append(stores)
        cols["store_names"].append([f"Store {s}" if s else None for s in stores])
        cols["store_categories"].append([("Pizza" if s in ("s0", "s2") else "Other") if s else None for s in stores])
        cols["store_tags"].append([None for _ in stores])
        cols["is_new_vertical"].append([(s == "s3") if s else None for s in stores])
        cols["event_ranks"].append([int(rng.integers(0, 20)) if s else None for s in stores])
        cols["seconds_from_prev"].append([0.0] + [float(rng.exponential(20)) for _ in range(length - 1)])
        cols["session_length"].append(length)
    schema = pa.schema(
        [
            ("session_id", pa.string()),
            ("label", pa.int32()),
            ("split", pa.string()),
            ("event_names", pa.list_(pa.string())),
            ("discovery_features", pa.list_(pa.string())),
            ("store_ids", pa.list_(pa.string())),
            ("store_names", pa.list_(pa.string())),
            ("store_categories", pa.list_(pa.string())),
            ("store_tags", pa.list_(pa.string())),
            ("is_new_vertical", pa.list_(pa.bool_())),
            ("event_ranks", pa.list_(pa.int32())),
            ("seconds_from_prev", pa.list_(pa.float64())),
            ("session_length", pa.int32()),
        ]
    )
    table = pa.table(cols, schema=schema)
    if not full:
        return table
    # the rest of the sessions table's columns the attribution stage reads
    import datetime as dt

    start = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.timezone.utc)
    ts = [
        [start + dt.timedelta(seconds=sum(g[: j + 1])) for j in range(len(g))]
        for g in table.column("seconds_from_prev").to_pylist()
    ]
    table = table.append_column("event_types", table.column("event_names"))
    table = table.append_column("event_ts", pa.array(ts, pa.list_(pa.timestamp("us", tz="UTC"))))
    return table.append_column("session_date", pa.array([start.date()] * n, pa.date32()))


def vocab_of(table, min_frequency: int = 1):
    """Vocabularies counted in plain Python (the reference for the Spark builder)."""
    from collections import Counter

    from attribution.features import Vocabularies
    from attribution.schema import MODEL_FIELDS

    tokens = {}
    for f in MODEL_FIELDS:
        c = Counter(v for row in table.column(f).to_pylist() for v in row if v is not None)
        kept = sorted((v for v, n in c.items() if n >= min_frequency), key=lambda v: (-c[v], v))
        if kept:
            tokens[f] = kept
    return Vocabularies(tokens=tokens, min_frequency=min_frequency)


def write_shards(table, root, n_shards: int = 2) -> None:
    """Lay ``table`` out as prepare_shards does: root/split=<s>/shard=<k>/part-0.parquet."""
    import zlib

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids = table.column("session_id").to_pylist()
    shard = [zlib.crc32(s.encode()) % n_shards for s in ids]
    import pyarrow as pa

    table = table.append_column("shard", pa.array(shard, pa.int32()))
    for split in ("train", "validation", "test"):
        for k in range(n_shards):
            part = table.filter(pc.and_(pc.equal(table["split"], split), pc.equal(table["shard"], k)))
            if part.num_rows:
                d = root / f"split={split}" / f"shard={k}"
                d.mkdir(parents=True, exist_ok=True)
                pq.write_table(part.drop_columns(["split", "shard"]), d / "part-0.parquet")


def random_model(vocab, max_length: int, seed: int, std: float, **sizes):
    """An untrained SessionTransformer in eval mode with N(0, std) weights: a harder test than trained
    weights, since nothing is near zero by luck."""
    import torch

    from attribution.model import ModelSpec, SessionTransformer

    torch.manual_seed(seed)
    spec = ModelSpec(
        fields=vocab.fields, vocab_sizes=tuple(vocab.size(f) for f in vocab.fields), max_length=max_length, **sizes
    )
    model = SessionTransformer(spec)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=std)
    return model.eval()


# The counts baseline's fits on the tests' small data stop at 30 optimizer iterations: each iteration is a
# Spark job, and the shipped 200 (conf/local.yaml) add about a minute to a pipeline test here. What the
# tests check of the pipeline does not depend on the optimum; tests/test_baseline.py checks the fit itself
# against scikit-learn and the iterations it records. One order penalty, not five, for the same reason:
# the pipeline runs the removal model's path, and tests/test_baseline.py checks the choice among several.
QUICK_BASELINE = ("baseline.max_iter=30", "baseline.order_penalties=[10]")


def small_pipeline_argv(data, out, n_users: int, *sets: str) -> list[str]:
    """The pipeline job's arguments for generate -> sessionize -> train -> attribute -> faithfulness ->
    report on ``n_users`` generated users (no bots) written under ``data``, outputs under ``out``; ``sets``
    as --set."""
    base = [
        f"generate.n_users={n_users}",
        "generate.n_bot_users=0",
        f"generate.output_path={data}/raw",
        f"generate.stores_path={data}/stores",
        f"generate.ground_truth_path={data}/truth.json",
        f"input.path={data}/raw",
        f"stores.path={data}/stores",
        f"run.output_dir={out}",
        "faithfulness.max_sessions=300",
        "train.ensemble_members=1",  # one model unless a test asks for the ensemble
        *QUICK_BASELINE,
    ]
    argv = ["--conf", "conf/local.yaml", "--stages", "generate,sessionize,train,attribute,faithfulness,report"]
    for s in (*base, *sets):
        argv += ["--set", s]
    return argv


def run_small_pipeline(data, out, n_users: int, *sets: str) -> None:
    """The small pipeline (:func:`small_pipeline_argv`) in this process, with its Spark session."""
    from jobs import pipeline

    assert pipeline.main(small_pipeline_argv(data, out, n_users, *sets)) == 0


def run_small_pipeline_elsewhere(data, out, n_users: int, *sets: str) -> None:
    """The small pipeline (:func:`small_pipeline_argv`) in a process of its own (``python -m jobs.pipeline``,
    from the checkout), e.g. as a Spark Connect client, which can't share this process with a classic session."""
    import subprocess
    import sys
    from pathlib import Path

    argv = [sys.executable, "-m", "jobs.pipeline", *small_pipeline_argv(data, out, n_users, *sets)]
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]


# The tests' one small transformer: cheap to score and to train, every part of the model present (6 heads,
# two layers, so attention rollout has layers to multiply through).
SMALL_MODEL = dict(
    d_model=24, n_heads=6, n_layers=2, ff_dim=32, field_dim=8, continuous_dim=4, dropout=0.1, additive_rank=2
)


def small_model_sets(**changes: object) -> list[str]:
    """:data:`SMALL_MODEL` as ``model.*`` config overrides (``--set`` values), with ``changes`` (a
    training test takes one layer, say, to train faster)."""
    return [f"model.{k}={v}" for k, v in {**SMALL_MODEL, **changes}.items()]


def save_random_model(path, vocab, max_length: int = 30, seed: int = 0):
    """An untrained SMALL_MODEL saved as an artifact at ``path``, as the train stage would; returns it loaded."""
    from attribution.model import load_artifact, save_artifact, weights_bytes

    model = random_model(vocab, max_length=max_length, seed=seed, std=0.2, **SMALL_MODEL)
    save_artifact(str(path), weights_bytes(model), model.spec, vocab)
    return load_artifact(str(path))


# Four sessions, hand-written. Event type A appears in s1 (converted), s2 (converted, twice), s3 (not).
EVENT_ROWS = [
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


def report_events(spark):
    """:data:`EVENT_ROWS` as an event-level table, as the attribute stage writes it (the columns the report reads)."""
    from pyspark.sql import functions as F

    from attribution.events import position_bin

    df = spark.createDataFrame(
        EVENT_ROWS,
        "session_id string, label int, event_position int, event_type string, store_id string, "
        "session_length int, gradient_attribution double, contribution double",
    )
    return (
        df.withColumn("position_bin", position_bin(F.col("event_position") + 1))
        .withColumn("store_name", F.col("store_id"))
        .withColumn("run_id", F.lit("r1"))
    )


def tables_of(events, **kw):
    """The report's tables of an event-level DataFrame, as pandas."""
    from attribution import aggregate

    return {k: t.to_pandas() for k, t in aggregate.tables(aggregate.long_format(events), **kw).items()}


def row_of(pdf, **keys):
    """The one row of ``pdf`` with the given column values."""
    for k, v in keys.items():
        pdf = pdf[pdf[k] == v]
    assert len(pdf) == 1, pdf
    return pdf.iloc[0]


def report_conf(tmp_path, run_id="r1", *extra):
    """A config writing under ``tmp_path`` with one method, grad_x_input."""
    from tests.conftest import make_conf

    return make_conf(f"run.output_dir={tmp_path}", f"run.run_id={run_id}", "attribution.methods=[grad_x_input]", *extra)


def ordered_pairs_by_sessions(sessions_types) -> list[tuple[str, str]]:
    """The ordered pairs of event types (a, b), a != b, with a's first event before b's last, in most of
    the sessions (each a list of event types) first, ties by name: the pair table's selection, counted in
    plain Python."""
    counted: dict = {}
    for types in sessions_types:
        first = {t: i for i, t in reversed(list(enumerate(types)))}
        last = {t: i for i, t in enumerate(types)}
        for a in first:
            for b in last:
                if a != b and first[a] < last[b]:
                    counted[(a, b)] = counted.get((a, b), 0) + 1
    return sorted(counted, key=lambda k: (-counted[k], k))


def removal_model_probabilities(models, summary: dict, frame) -> list:
    """The counts baseline's removal model scored from its saved Spark ML models, not from the summary's
    coefficients: per fit (the removal model, then its bootstrap fits ``logistic_regression_member_<k>``),
    ``frame``'s rows without their array columns plus ``p``, its P(convert) of each row's ``event_types``
    and ``store_ids``. The removal model is the counts fit (``logistic_regression``) or, where the summary's
    ``removal_model`` has order terms, ``logistic_regression_order``, whose features are the counts and the
    order terms divided by the square root of its order penalty, as it was fitted."""
    import math

    import numpy as np
    from pyspark.ml.classification import LogisticRegressionModel
    from pyspark.ml.feature import CountVectorizerModel

    from attribution import baseline

    removal = summary.get("removal_model") or {}
    ordered = "coefficients" in removal
    featured = CountVectorizerModel.load(str(models / "count_vectorizer")).transform(
        frame.withColumn("tokens", baseline.tokens(frame))
    )
    if ordered:
        order = CountVectorizerModel.load(str(models / baseline.ORDER_VECTORIZER))
        featured = order.transform(featured.withColumn("order_tokens", baseline.order_tokens(frame)))
    table = featured.toPandas()
    x = np.stack([v.toArray() for v in table.features])
    if ordered:
        scale = 1 / math.sqrt(removal["order_penalty"])
        x = np.hstack([x, np.stack([v.toArray() for v in table.order_features]) * scale])
    keys = table.drop(
        columns=[
            c
            for c in table.columns
            if c in ("event_types", "store_ids", "tokens", "order_tokens", "features", "order_features")
        ]
    )
    names = [baseline.ORDER_MODEL if ordered else "logistic_regression"]
    names += sorted(
        (p.name for p in models.glob(baseline.MEMBER_MODEL.format("*"))), key=lambda n: int(n.rsplit("_", 1)[1])
    )
    out = []
    for name in names:
        fitted = LogisticRegressionModel.load(str(models / name))
        w = fitted.coefficients.toArray()
        assert len(w) == x.shape[1], name
        out.append(keys.assign(p=1 / (1 + np.exp(-(x @ w + fitted.intercept)))))
    return out
