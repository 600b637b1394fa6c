"""The faithfulness pass's cost relative to the attribution pass, on the same sessions, side by side.

    python -m bench.bench_faithfulness [--sessions 2000] [--repeats 2] [--spark]

Uses the embedded default's model and test sessions (``make run`` first). In process, on the same
sessions, alternating, best of ``--repeats``:
  attribution    attribute_sessions with the embedded default's methods (all four, IG with 32 steps),
                 and with grad_x_input alone (the cheapest method)
  faithfulness   evaluate_sessions with the default k set (1, 3, 5 events; 10, 20, 50%), the deletion
                 curve and 5 random orders: for the four methods' scores, and for grad_x_input's alone
With ``--spark`` also the two Spark stages end to end on the same sessions (faithfulness.max_sessions
set to all the test sessions): attribute (read -> UDF -> event table and its Delta) vs faithfulness
(event table -> sample -> UDF -> per-session table -> the two summary tables, CSV/Delta/parquet, PNG).
Goal: the faithfulness pass at most 1.5x the attribution pass's cost.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch

from attribution.attribute import AttributionOptions, attribute_sessions
from attribution.faithfulness import FaithfulnessOptions, evaluate_sessions
from attribution.features import encode_sessions
from attribution.methods import get
from attribution.model import load_artifact
from attribution.stages import attribute as attribute_stage
from attribution.stages import faithfulness as faithfulness_stage
from bench.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ALL = ("grad_x_input", "attention", "attention_rollout", "integrated_gradients")
SCORE_KEYS = [get(m).attribution for m in ALL]  # attribute_sessions' keys of the normalized scores


def in_process(n_sessions: int, repeats: int) -> dict:
    loaded = load_artifact(str(ROOT / "outputs" / "model"))
    table = ds.dataset(ROOT / "outputs" / "sessions", partitioning="hive").to_table()
    table = table.filter(pc.equal(table["split"], "test")).slice(0, n_sessions)
    enc = encode_sessions(table, loaded.vocab, loaded.spec.continuous)
    ids = table.column("session_id").to_pylist()
    model = loaded.model
    options = FaithfulnessOptions()
    scores = attribute_sessions(model, enc, AttributionOptions(methods=ALL), batch_size=256, max_positions=8192)
    runs = {
        "attribution_all_methods": lambda: attribute_sessions(
            model, enc, AttributionOptions(methods=ALL), batch_size=256, max_positions=8192
        ),
        "attribution_grad_x_input": lambda: attribute_sessions(
            model, enc, AttributionOptions(methods=("grad_x_input",)), batch_size=256, max_positions=8192
        ),
        "faithfulness_all_methods": lambda: evaluate_sessions(
            model, enc, [scores[k] for k in SCORE_KEYS], ids, options
        ),
        "faithfulness_grad_x_input": lambda: evaluate_sessions(
            model, enc, [scores["gradient_attribution"]], ids, options
        ),
    }
    best = dict.fromkeys(runs, float("inf"))
    stats: dict = {}
    for _ in range(repeats):
        for name, fn in runs.items():  # alternating, so a noisy minute hits every one alike
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    evaluate_sessions(model, enc, [scores[k] for k in SCORE_KEYS], ids, options, stats_out=stats)
    return {
        "sessions": len(enc),
        "events": int(enc.offsets[-1]),
        "seconds": best,
        "faithfulness_forward_positions_per_event": stats["forward_positions"] / int(enc.offsets[-1]),
        "ratio_all_methods": best["faithfulness_all_methods"] / best["attribution_all_methods"],
        "ratio_grad_x_input": best["faithfulness_grad_x_input"] / best["attribution_grad_x_input"],
        "torch_threads": torch.get_num_threads(),
    }


def spark_stages() -> dict:
    from attribution.config_loader import load_config
    from attribution.spark import build_spark

    out = RESULTS / "faithfulness_bench"
    overrides = [
        f"attribution.output_path={out / 'events'}",
        f"attribution.delta_path={out / 'report' / 'delta' / 'gradient_attribution_no_funnel'}",
        f"attribution.summary_path={out / 'attribute_summary.json'}",
        f"faithfulness.sessions_path={out / 'per_session'}",
        f"faithfulness.summary_path={out / 'faithfulness_summary.json'}",
        "faithfulness.max_sessions=1000000",
        f"report.output_path={out / 'report'}",
        f"train.model_path={(ROOT / 'outputs' / 'model').resolve()}",
        f"sessions.sessions_path={(ROOT / 'outputs' / 'sessions').resolve()}",
        "run.run_id=bench",
    ]
    conf = load_config(ROOT / "conf" / "local.yaml", overrides)
    spark = build_spark(conf.spark)
    attribute_stage.run(spark, conf)  # warm: the Python workers, torch and the model cache
    t0 = time.perf_counter()
    attributed = attribute_stage.run(spark, conf).summary
    attribute_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    faithful = faithfulness_stage.run(spark, conf).summary
    faith_s = time.perf_counter() - t0
    return {
        "sessions": attributed["sessions"],
        "faithfulness_sessions": faithful["sessions"],
        "attribute_seconds": attribute_s,
        "faithfulness_seconds": faith_s,
        "of_which_evaluation": faithful["evaluate_seconds"],
        "ratio": faith_s / attribute_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--spark", action="store_true")
    args = p.parse_args()
    result = {"machine": machine(), "in_process": in_process(args.sessions, args.repeats)}
    r = result["in_process"]
    s = r["seconds"]
    print(
        f"machine: {result['machine']}; {r['sessions']:,} test sessions, {r['events']:,} events, {r['torch_threads']} threads"
    )
    print(
        f"attribution, all four methods (IG 32 steps) {s['attribution_all_methods']:.2f}s; "
        f"faithfulness of the four {s['faithfulness_all_methods']:.2f}s = {r['ratio_all_methods']:.2f}x (goal <= 1.5x)"
    )
    print(
        f"attribution, grad_x_input alone {s['attribution_grad_x_input']:.2f}s; "
        f"faithfulness of grad_x_input alone {s['faithfulness_grad_x_input']:.2f}s = {r['ratio_grad_x_input']:.1f}x"
    )
    print(f"faithfulness: {r['faithfulness_forward_positions_per_event']:.0f} forward positions per event")
    if args.spark:
        result["spark"] = sp = spark_stages()
        print(
            f"spark, {sp['sessions']:,} sessions: attribute stage {sp['attribute_seconds']:.1f}s, faithfulness stage "
            f"{sp['faithfulness_seconds']:.1f}s (of which the UDF pass {sp['of_which_evaluation']:.1f}s) "
            f"= {sp['ratio']:.2f}x"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "faithfulness.json").write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
