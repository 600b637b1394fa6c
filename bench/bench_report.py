"""The report stage's time relative to the attribution stage, on the same event table, side by side.

    python -m bench.bench_report [--scales 1,4] [--seed-model] [--repeats 2]

Uses the embedded default's model and test sessions (``make run`` first), at 1x and ``scale`` x the
sessions (the same sessions copied under new ids). Attribution runs grad_x_input only (the default
method and the cheapest, so the ratio is the strictest) and includes its sinks: the event-level parquet
and its Delta publication. The report reads that table and writes every lift table (CSV, Delta,
parquet) and the picture. Both warm, best of ``--repeats``. ``--seed-model``: an untrained model of the
original analysis's sizes (the cluster's), whose cost per event is the production one.
Goal: report <= 10% of attribution.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from attribution.config_loader import load_config
from attribution.spark import build_spark
from attribution.stages import attribute as attribute_stage
from attribution.stages import report as report_stage
from bench.bench_attribute import GRAD_X_INPUT_ONLY, scaled_sessions, seed_sized_model
from bench.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def measure(spark, conf, repeats: int) -> dict:
    attribute_stage.run(spark, conf)  # warm: Python workers, torch, the model cached
    report_stage.run(spark, conf)
    best = {"attribute": float("inf"), "report": float("inf")}
    for _ in range(repeats):
        t0 = time.perf_counter()
        summary = attribute_stage.run(spark, conf).summary
        if time.perf_counter() - t0 < best["attribute"]:
            best["attribute"] = time.perf_counter() - t0
            best["of_which_delta_publish"] = summary["published"]["delta"]["seconds"]
        t0 = time.perf_counter()
        report_stage.run(spark, conf)
        best["report"] = min(best["report"], time.perf_counter() - t0)
    return {"events": summary["events"], "seconds": best, "report_over_attribute": best["report"] / best["attribute"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--scales", default="1,4")
    p.add_argument("--seed-model", action="store_true")
    args = p.parse_args()
    out = RESULTS / "report_bench"
    model = (ROOT / "outputs" / "model").resolve()
    if args.seed_model:
        model = Path(seed_sized_model(str(model)))
    overrides = [
        *GRAD_X_INPUT_ONLY,
        f"attribution.output_path={out / 'events'}",
        f"attribution.delta_path={out / 'report' / 'delta' / 'gradient_attribution_no_funnel'}",
        f"attribution.summary_path={out / 'attribute_summary.json'}",
        f"report.output_path={out / 'report'}",
        f"train.model_path={model}",
        "run.run_id=bench",
    ]
    base = load_config(ROOT / "conf" / "local.yaml", overrides)
    spark = build_spark(base.spark)
    result = {"machine": machine(), "model": "full-sized" if args.seed_model else "local", "runs": {}}
    print(f"machine: {result['machine']}; {result['model']} model")
    for scale in (int(x) for x in args.scales.split(",")):
        sessions = (ROOT / "outputs" / "sessions").resolve() if scale == 1 else scaled_sessions(spark, base, scale)
        conf = load_config(ROOT / "conf" / "local.yaml", [*overrides, f"sessions.sessions_path={sessions}"])
        r = result["runs"][f"{scale}x"] = measure(spark, conf, args.repeats)
        s = r["seconds"]
        print(
            f"{scale}x: {r['events']:,} events: attribute (grad_x_input, with the Delta publication "
            f"{s['of_which_delta_publish']:.1f}s) {s['attribute']:.1f}s, report {s['report']:.1f}s "
            f"= {100 * r['report_over_attribute']:.0f}% (goal <= 10%)",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"report{'_seed_model' if args.seed_model else ''}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1))
    spark.stop()


if __name__ == "__main__":
    main()
