"""Bad-input cases through the jobs' command line, all in one process and one Spark session, printed as
JSON: each case's exit code, last line of stderr and, for a run that succeeds, its summary's counts.

``python -m tests.connect_cases classic|connect|sc://host:port DIR``: a classic session, a Spark Connect
server the job starts on this machine, or a running Spark Connect server. ``tests/test_connect.py``
compares the outputs of the kinds of session.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent

GOOD = [  # two clean sessions of 3 events
    ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),
    ("u1", "d1", "2025-01-15 10:00:10", "m_card_click"),
    ("u1", "d1", "2025-01-15 10:00:20", "store_page_load"),
    ("u2", "d2", "2025-01-15 11:00:00", "m_card_view"),
    ("u2", "d2", "2025-01-15 11:00:10", "m_search_query"),
    ("u2", "d2", "2025-01-15 11:00:20", "store_page_load"),
]
BAD = [  # one row per reason
    (None, "d1", "2025-01-15 10:00:00", "m_card_view"),
    ("u1", " ", "2025-01-15 10:00:00", "m_card_view"),
    ("u1", "d1", "15/01/2025 noon", "m_card_view"),
    ("u1", "d1", "2999-01-01 00:00:00", "m_card_view"),
    ("u1", "d1", "2025-01-15 10:00:05", "m_card_veiw"),
]


def _events(rows) -> pa.Table:
    names = ("user_id", "device_id", "event_timestamp", "event_name")
    return pa.table({n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)})


def inputs(root: Path) -> dict[str, str]:
    """The input tables of the cases, written with pyarrow (the same files for both kinds of session)."""
    made = {}
    for name, rows in (("good", GOOD + BAD), ("empty", [])):
        (root / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(_events(rows), root / name / "part-00000.parquet")
        made[name] = str(root / name)
    corrupt = root / "corrupt"
    corrupt.mkdir(parents=True, exist_ok=True)
    pq.write_table(_events(GOOD), corrupt / "part-00000.parquet")
    (corrupt / "part-99999-broken.parquet").write_bytes(b"PAR1 this is not a parquet file at all")
    made["corrupt"] = str(corrupt)
    return made


def cases(root: Path) -> dict[str, tuple[str, list[str]]]:
    made = inputs(root)
    return {
        "config_error": ("sessionize", ["session.max_lenght=5"]),
        "missing_input": ("sessionize", [f"input.path={root}/nowhere"]),
        "missing_column": ("sessionize", [f"input.path={ROOT}/tests/data/no_event_name.csv", "input.format=csv"]),
        "corrupt_file": ("sessionize", [f"input.path={made['corrupt']}"]),
        "empty_input": ("sessionize", [f"input.path={made['empty']}"]),
        "bad_rows_quarantined": ("sessionize", [f"input.path={made['good']}"]),
        "no_model": ("attribute", [f"train.model_path={root}/no_model", "attribution.split=all"]),
        # the UDF on the sessions just written, with an untrained model saved here
        "attribute": ("attribute", [f"train.model_path={root}/model", "attribution.split=all"]),
    }


def _save_model(root: Path) -> None:
    """An untrained small model for the sessions written by the sessionize case, the same in every mode."""
    from tests.helpers import save_random_model, vocab_of

    sessions = pq.read_table(root / "out" / "sessions")
    save_random_model(root / "model", vocab_of(sessions), max_length=30, seed=3)


def run(mode: str, root: Path) -> dict:
    from jobs import attribute, sessionize

    mains = {"sessionize": sessionize.main, "attribute": attribute.main}
    known = json.dumps(["m_card_view", "m_card_click", "store_page_load", "m_search_query"])
    common = [
        f"run.output_dir={root}/out",
        "run.run_id=cases",
        "stores.path=null",
        "input.format=parquet",
        f"events.known_events={known}",
        *[f"input.columns.{c}=null" for c in ("store_id", "discovery_feature", "event_rank")],
    ]
    if mode == "connect":
        common.append("spark.conf.spark.api.mode=connect")
    elif mode.startswith("sc://"):
        common.append(f"spark.remote={mode}")
    results = {}
    for name, (job, sets) in cases(root).items():
        if name == "attribute":
            _save_model(root)
        argv = ["--conf", str(ROOT / "conf" / "local.yaml")]
        for s in (*common, *sets):
            argv += ["--set", s]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = mains[job](argv)
        lines = err.getvalue().strip().splitlines()
        last = next((x for x in reversed(lines) if x.startswith("error")), None)
        result = {"exit": code, "error": last.replace(str(root), "<DIR>") if last else None}
        if code == 0 and job == "sessionize":
            summary = json.loads((root / "out" / "sessionize_summary.json").read_text())
            result["counts"] = {k: summary[k] for k in ("rows_read", "rows", "sessions", "kept_sessions_by_split")}
        if code == 0 and job == "attribute":
            summary = json.loads((root / "out" / "attribute_summary.json").read_text())
            counts = ("sessions", "events", "unknown_tokens", "model_batches", "events_by_device", "removal_sessions")
            result["counts"] = {k: summary[k] for k in counts}
            events = pq.read_table(root / "out" / "gradient_attribution_no_funnel").to_pandas()
            events = events.sort_values(["session_id", "event_position"])
            result["scores"] = events[["prediction", "contribution", "removal_effect_type"]].to_numpy().tolist()
        results[name] = result
    if results["attribute"]["exit"] == 0:
        results["attribute"]["baseline_removal"] = _baseline_removal(root, common)
    return results


# a counts baseline of two fits for the attribute case's event table, its removal model with order terms:
# the report's baseline removal effects (a mapInArrow whose function carries the fits) run on the same
# session as the jobs
BASELINE = {
    "intercept": -1.0,
    "coefficients": {"event_type": {"m_card_view": 0.4}},
    "removal_model": {
        "order_penalty": 10.0,
        "intercept": -1.0,
        "coefficients": {
            "event_type": {"m_card_view": 0.4, "m_card_click": 0.9, "m_search_query": -0.3},
            "position_bin": {"1-5": 0.2},
            "order_pair": {"m_card_view>m_card_click": 0.7, "m_search_query>m_card_view": -0.4},
            "repeat": {"m_card_view": -0.1},
            "first_event": {"m_search_query": 0.3},
            "last_event": {"m_card_click": 0.5},
        },
    },
    "members": [{"intercept": -0.8, "coefficients": {"event_type": {"m_card_view": 0.1, "m_card_click": 1.2}}}],
    "blend": {"transformer_weight": 0.5},
}


def _baseline_removal(root: Path, common: list[str]) -> list[list]:
    """Per (kind, key, session) of the attribute case's removal sample: the blend's removal effect, the
    baseline's and the members', sorted."""
    from attribution import removal_tables
    from attribution.config_loader import load_config
    from attribution.spark import build_spark

    # the jobs' session (getOrCreate), whose code the first job shipped
    conf = load_config(ROOT / "conf" / "local.yaml", [*common, "spark.ship_code=false"])
    spark = build_spark(conf.spark)
    events = spark.read.parquet(str(root / "out" / "gradient_attribution_no_funnel"))
    rows = removal_tables.removal_rows(events, BASELINE)
    assert rows is not None
    table = rows.where("db is not null").select("kind", "key", "session_id", "d", "db", "dm").toPandas()
    table = table.sort_values(["kind", "key", "session_id"])
    return [[r.kind, r.key, r.session_id, r.d, r.db, list(r.dm)] for r in table.itertuples()]


if __name__ == "__main__":
    mode, where = sys.argv[1], Path(sys.argv[2])
    print("CASES " + json.dumps(run(mode, where)))
