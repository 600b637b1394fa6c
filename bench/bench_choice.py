"""What the removal CI's model-choice part costs the report: ``report.build_tables`` on the same event
table without and with the counts baseline's removal effects, side by side.

    python -m bench.bench_choice [--repeats 3]

Uses ``make run``'s outputs (the event table and ``<model>/baseline/baseline.json``). The two builds
alternate in one Spark application after one warm build of each; best of ``--repeats``. Prints both
times and the ratio (with / without); results in bench/results/choice.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from attribution import baseline, report
from attribution.config_loader import load_config
from attribution.spark import build_spark
from bench.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    conf = load_config(ROOT / "conf" / "local.yaml")
    spark = build_spark(conf.spark)
    events = spark.read.parquet(str(ROOT / conf.run.output_dir / conf.attribution.output_path)).cache()
    rows = events.count()
    summary = baseline.read_summary(report.model_dir(conf))
    variants = {"without": None, "with": summary}
    best = dict.fromkeys(variants, float("inf"))
    for repeat in range(args.repeats + 1):
        for name, counts_model in variants.items():
            t0 = time.perf_counter()
            report.build_tables(events, conf, counts_model=counts_model)
            if repeat:  # the first round warms both
                best[name] = min(best[name], time.perf_counter() - t0)
    out = {
        "machine": machine(),
        "events": rows,
        "baseline_features": summary.get("features"),
        "seconds": best,
        "with_over_without": best["with"] / best["without"],
    }
    print(
        f"report.build_tables on {rows:,} events: {best['without']:.2f}s without the baseline's removal effects, "
        f"{best['with']:.2f}s with them; ratio {out['with_over_without']:.2f}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "choice.json").write_text(json.dumps(out, indent=1))
    spark.stop()


if __name__ == "__main__":
    main()
