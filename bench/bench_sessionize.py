"""Sessionization vs a plain read + sort + write of the same events, side by side in one run.

    python -m bench.bench_sessionize [--sizes 1,4,16] [--repeats 2]

For each size (millions of raw events, synthetic, generated once and cached under bench/results/data):
  baseline    read parquet -> repartition by (user, device) -> sort within partitions by (user, device,
              timestamp) -> write parquet: the least any sessionizer has to do (the ratio's base)
  global_sort read parquet -> orderBy(user, device, timestamp) -> write parquet: the literal "read + sort
              + write" (a sampling pass and a range shuffle), reported beside it
  sessionize  the whole stage (attribution.sessionize.run): validate + quarantine, dedupe, sessions,
              label, funnel removal, arrays, split, summary with reconciliation

Runs alternate (baseline, sessionize, baseline, ...) and the best of ``--repeats`` is kept, because the
machine is shared and noisy. Goals: sessionize <= 2.5x the read + sort by (user, device, timestamp)
+ write, printed against both sorts; 4x events <= 4.5x time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from attribution.config_loader import load_config
from attribution.spark import build_spark
from attribution.stages import generate as generate_stage
from attribution.stages import sessionize as sessionize_stage
from bench.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EVENTS_PER_USER = 36.5  # measured on the generator's defaults over 2 days (bots aside)


def conf_for(millions: float, workdir: Path):
    n_users = int(millions * 1_000_000 / EVENTS_PER_USER)
    data = workdir / f"events_{millions:g}M"
    return load_config(
        ROOT / "conf" / "local.yaml",
        [
            f"generate.n_users={n_users}",
            f"generate.n_bot_users={max(1, int(millions))}",
            f"generate.partitions={max(8, int(millions * 4))}",
            f"generate.output_path={data}/raw",
            f"generate.stores_path={data}/stores",
            f"generate.ground_truth_path={data}/ground_truth.json",
            f"input.path={data}/raw",
            f"stores.path={data}/stores",
            f"run.output_dir={workdir}/out_{millions:g}M",
            "spark.conf.spark.driver.memory=8g",
            "spark.conf.spark.sql.shuffle.partitions=16",
        ],
    )


def baseline(spark, conf, out: str) -> None:
    c = conf.input.columns
    (
        spark.read.parquet(conf.input.path)
        .repartition(c.user_id, c.device_id)
        .sortWithinPartitions(c.user_id, c.device_id, c.event_ts)
        .write.mode("overwrite")
        .parquet(out)
    )


def global_sort(spark, conf, out: str) -> None:
    c = conf.input.columns
    spark.read.parquet(conf.input.path).orderBy(c.user_id, c.device_id, c.event_ts).write.mode("overwrite").parquet(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,4,16", help="millions of raw events, comma-separated")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", default=str(RESULTS / "data"))
    args = ap.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",")]
    workdir = Path(args.workdir)
    confs = {m: conf_for(m, workdir) for m in sizes}
    spark = build_spark(confs[sizes[0]].spark)
    spark.sparkContext.setLogLevel("ERROR")
    rows = []
    for m in sizes:
        conf = confs[m]
        if not Path(conf.generate.ground_truth_path).exists():
            t0 = time.time()
            generate_stage.run(spark, conf)
            print(f"generated {m:g}M-event dataset in {time.time() - t0:.0f}s", flush=True)
        events = spark.read.parquet(conf.input.path).count()
        best_base, best_global, best_sess, summary = float("inf"), float("inf"), float("inf"), None
        for _ in range(args.repeats):
            t0 = time.time()
            baseline(spark, conf, str(workdir / f"baseline_{m:g}M"))
            best_base = min(best_base, time.time() - t0)
            t0 = time.time()
            global_sort(spark, conf, str(workdir / f"baseline_{m:g}M"))
            best_global = min(best_global, time.time() - t0)
            t0 = time.time()
            summary = sessionize_stage.run(spark, conf).summary
            best_sess = min(best_sess, time.time() - t0)
        row = {
            "events": events,
            "baseline_s": round(best_base, 2),
            "global_sort_s": round(best_global, 2),
            "sessionize_s": round(best_sess, 2),
            "ratio": round(best_sess / best_base, 2),
            "ratio_vs_global_sort": round(best_sess / best_global, 2),
            "events_per_s": round(events / best_sess),
            "sessions_kept": summary["sessions"]["kept"],
        }
        rows.append(row)
        print(
            f"{events:>12,} events  baseline {best_base:7.1f}s  global sort {best_global:7.1f}s  "
            f"sessionize {best_sess:7.1f}s  ratio {row['ratio']:.2f}x (vs global sort {row['ratio_vs_global_sort']:.2f}x)  "
            f"({row['events_per_s']:,} events/s, {row['sessions_kept']:,} sessions)",
            flush=True,
        )
    scaling = [
        {
            "from_events": a["events"],
            "to_events": b["events"],
            "events_x": round(b["events"] / a["events"], 2),
            "time_x": round(b["sessionize_s"] / a["sessionize_s"], 2),
        }
        for a, b in zip(rows, rows[1:], strict=False)
    ]
    print("\n| events | baseline (s) | global sort (s) | sessionize (s) | ratio | vs global sort | events/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['events']:,} | {r['baseline_s']} | {r['global_sort_s']} | {r['sessionize_s']} | {r['ratio']}x "
            f"| {r['ratio_vs_global_sort']}x | {r['events_per_s']:,} |"
        )
    for s in scaling:
        print(f"scaling: {s['events_x']}x the events took {s['time_x']}x the time")
    result = {"machine": machine(), "spark": spark.version, "rows": rows, "scaling": scaling, "repeats": args.repeats}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sessionize.json").write_text(json.dumps(result, indent=2))
    print(f"machine: {result['machine']}; results in {RESULTS / 'sessionize.json'}")
    for m in sizes:  # keep the generated data (slow to make), drop the outputs
        shutil.rmtree(workdir / f"baseline_{m:g}M", ignore_errors=True)
        shutil.rmtree(workdir / f"out_{m:g}M", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
