"""The report stage's time relative to the attribution stage, on the same sessions, side by side.

    python -m bench.bench_report [--repeats 2]

Uses the embedded default's model and sessions (``make run`` first). Attribution runs grad_x_input only
(the default method, the cheapest: the ratio is the strictest there). Both warm, best of ``--repeats``.
Goal (issue #5): report <= 10% of attribution.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from attribution import report
from attribution.config import load_config
from attribution.spark import build_spark
from bench.machine import machine
from udfs import attribution_udf

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    out = RESULTS / "report_bench"
    conf = load_config(
        ROOT / "conf" / "local.yaml",
        [
            "attribution.methods=[grad_x_input]",
            f"attribution.output_path={out / 'events'}",
            f"attribution.summary_path={out / 'attribute_summary.json'}",
            f"report.output_path={out / 'report'}",
            f"sessions.sessions_path={(ROOT / 'outputs' / 'sessions').resolve()}",
            f"train.model_path={(ROOT / 'outputs' / 'model').resolve()}",
            "run.run_id=bench",
        ],
    )
    spark = build_spark(conf.spark)
    attribution_udf.run(spark, conf)  # warm
    report.run(spark, conf)
    best = {"attribute": float("inf"), "report": float("inf")}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        summary = attribution_udf.run(spark, conf)
        best["attribute"] = min(best["attribute"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        report.run(spark, conf)
        best["report"] = min(best["report"], time.perf_counter() - t0)
    ratio = best["report"] / best["attribute"]
    result = {"machine": machine(), "events": summary["events"], "seconds": best, "report_over_attribute": ratio}
    print(f"machine: {result['machine']}")
    print(
        f"{summary['events']:,} events: attribute (grad_x_input) {best['attribute']:.1f}s, report {best['report']:.1f}s "
        f"= {100 * ratio:.0f}% (goal <= 10%)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report.json").write_text(json.dumps(result, indent=1))
    spark.stop()


if __name__ == "__main__":
    main()
