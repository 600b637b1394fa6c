"""Refit the counts baseline of finished scenario runs with the current code, the transformer and its
validation predictions as they are, so a change to the baseline alone is scored without training again:

    python -m bench.refit_baseline bench/results/scenarios/renamed-ordered-11 [more run directories]
    python -m bench.bench_scenarios --ordered-seeds 11 ... --report-only
    python -m bench.refit_baseline --set 'baseline.order_penalties=[]' RUN   # the counts alone, to compare

Each run's ``out/model/baseline/`` and the baseline entry of ``out/model/metrics.json`` are rewritten as
the train stage writes them (conf/local.yaml's baseline settings, ``run.seed`` the scenario's seed, as
many fits as the ensemble's members), then the report stage reads them.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from attribution import baseline
from attribution.config_loader import load_config
from attribution.spark import build_spark
from attribution.train import predictions_location

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="bench_scenarios run directories (out/ under each)")
    p.add_argument("--set", action="append", default=[], help="a config override (dotted.key=value; repeat it)")
    args = p.parse_args()
    conf = load_config(str(ROOT / "conf" / "local.yaml"), args.set)
    spark = build_spark(conf.spark)
    for run in map(Path, args.runs):
        started = time.time()
        out = run / "out"
        seed = int(re.search(r"-(\d+)$", run.name).group(1))  # type: ignore[union-attr]
        sessions = spark.read.parquet(str(out / "sessions"))
        validation = spark.read.parquet(predictions_location(str(out / "train_shards")))
        summary = baseline.train_and_write(
            spark,
            sessions,
            conf.baseline,
            str(out / "model"),
            validation,
            members=conf.baseline.fits(conf.train.ensemble_members),
            seed=seed,
        )
        summary["seconds"] = round(time.time() - started, 2)
        metrics_path = out / "model" / "metrics.json"
        metrics = json.loads(metrics_path.read_text())
        metrics["baseline"] = summary
        metrics_path.write_text(json.dumps(metrics, indent=1))
        removal = summary.get("removal_model") or {}
        print(
            f"{run.name}: order penalty {removal.get('order_penalty')}, transformer weight "
            f"{(summary.get('blend') or {}).get('transformer_weight')}, {summary['seconds']} s",
            flush=True,
        )
    spark.stop()


if __name__ == "__main__":
    main()
