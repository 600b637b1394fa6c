"""A day's run over a multi-day table costs what it costs over that day alone, side by side in one run.

    python -m bench.bench_daily [--days 7] [--users 3000] [--repeats 3]

Generates ``--days`` days of the synthetic clickstream, writes it as a warehouse table partitioned by
the local date (``event_date``), and copies one day's partition into a table of its own. Then the
sessionize stage for that day (``--date``, ``input.date_column=event_date``) runs over both tables,
alternating, the best of ``--repeats`` each. Reported: the rows each run read (its summary), the files
its scan read (Spark's ``numFiles`` metric of the file scan, from a probe of the same filter) against the
files in the table, and the time ratio; and, for scale, the whole table sessionized without --date.

Then, with the embedded default's trained model (``make run`` first), every day is attributed and reported
in day mode (every session, ``attribution.split=all``), and the report of the last day alone is timed beside the report of the whole window of
``--days`` days (``report.window_days``), which reads the days' stored statistics, not their events.

Goals: the day over the multi-day table reads only that day's rows and files, and costs
about what the single-day table costs (ratio near 1); the window's report costs about what a day's does.
"""

from __future__ import annotations

import argparse
import json
import shutil

from attribution.stages import attribute as attribute_stage
from attribution.stages import generate as generate_stage
from attribution.stages import report as report_stage
from attribution.stages import sessionize as sessionize_stage
from bench.bench_attribute import RESULTS, ROOT
from bench.machine import best_alternating, machine


def files_read(spark, conf) -> int:
    """The files the day's scan reads: the numFiles metric of the file scan after running it."""
    from attribution import sessionize
    from attribution.io import read_table

    previous = spark.conf.get("spark.sql.adaptive.enabled")
    spark.conf.set("spark.sql.adaptive.enabled", "false")  # the plan object that runs is the one inspected
    try:
        df = sessionize.day_scope(read_table(spark, conf.input.path, "parquet", {}, "input"), conf)
        plan = df._jdf.queryExecution().executedPlan()
        plan.executeCollect()
        leaves = plan.collectLeaves()
        total = 0
        for i in range(leaves.size()):
            metric = leaves.apply(i).metrics().get("numFiles")
            if metric.isDefined():
                total += int(metric.get().value())
        return total
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", previous)


def window_report(spark, work, start: str, days: int, repeats: int) -> dict | None:
    """Sessionize, attribute and report every day in day mode, then time the last day's report alone and
    the report of the whole window from the stored statistics (alternating, best of ``repeats``)."""
    import datetime as dt

    from attribution.config_loader import load_config

    model = ROOT / "outputs" / "model"
    if not model.exists():
        print("no trained model under outputs/model (make run): the window's report is not measured")
        return None
    dates = [(dt.date.fromisoformat(start) + dt.timedelta(days=i)).isoformat() for i in range(days)]

    def conf_for(day: str, *sets: str):
        return load_config(
            ROOT / "conf" / "local.yaml",
            [
                f"input.path={work / 'by_date'}",
                "input.date_column=event_date",
                f"stores.path={work / 'stores'}",
                f"run.output_dir={work / 'out_window'}",
                f"train.model_path={model.resolve()}",
                "attribution.methods=[grad_x_input]",
                "attribution.split=all",
                "report.default_method=grad_x_input",
                f"run.date={day}",
                f"run.run_id=day-{day}",
                *sets,
            ],
        )

    events = 0
    for day in dates:
        conf = conf_for(day)
        sessionize_stage.run(spark, conf)
        events += attribute_stage.run(spark, conf).events
        report_stage.run(spark, conf)
    last = dates[-1]
    variants = {"day": conf_for(last), "window": conf_for(last, f"report.window_days={days}")}
    best = best_alternating(variants, lambda c: report_stage.run(spark, c), repeats)
    return {
        "last_day": last,
        "window_events": events,
        "day_seconds": best["day"][0],
        "window_seconds": best["window"][0],
        "window_over_day": best["window"][0] / best["day"][0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from pyspark.sql import functions as F

    from attribution.config_loader import load_config
    from attribution.spark import build_spark

    work = RESULTS / "daily"
    start = "2025-01-15"
    gen = load_config(
        ROOT / "conf" / "local.yaml",
        [
            f"generate.n_users={args.users}",
            f"generate.n_days={args.days}",
            f"generate.start_date={start}",
            f"generate.output_path={work / 'raw'}",
            f"generate.stores_path={work / 'stores'}",
            f"generate.ground_truth_path={work / 'truth.json'}",
        ],
    )
    spark = build_spark(gen.spark)
    if not (work / "by_date").exists():
        generate_stage.run(spark, gen)
        raw = spark.read.parquet(str(work / "raw"))
        day_of = F.substring("event_timestamp", 1, 10).try_cast("date")
        raw.withColumn("event_date", day_of).write.partitionBy("event_date").parquet(str(work / "by_date"))
    day = "2025-01-18" if args.days >= 4 else start
    single = work / "one_day"
    shutil.rmtree(single, ignore_errors=True)
    shutil.copytree(work / "by_date" / f"event_date={day}", single / f"event_date={day}")

    def conf_for(table: str, out: str, one_day: bool = True):
        return load_config(
            ROOT / "conf" / "local.yaml",
            [
                f"input.path={work / table}",
                "input.date_column=event_date",
                f"stores.path={work / 'stores'}",
                f"run.output_dir={work / out}",
                *([f"run.date={day}"] if one_day else []),
            ],
        )

    variants = {"multi_day": conf_for("by_date", "out_multi"), "one_day": conf_for("one_day", "out_one")}
    whole = conf_for("by_date", "out_whole", one_day=False)
    for conf in variants.values():  # warm
        sessionize_stage.run(spark, conf)
    best = best_alternating(variants, lambda c: sessionize_stage.run(spark, c).summary, args.repeats)
    whole_seconds = [
        best_alternating({"whole": whole}, lambda c: sessionize_stage.run(spark, c).summary, args.repeats)["whole"][0]
    ]
    files = {name: files_read(spark, conf) for name, conf in variants.items()}
    table_files = sum(1 for _ in (work / "by_date").rglob("*.parquet"))
    total_rows = spark.read.parquet(str(work / "by_date")).count()
    window = window_report(spark, work, start, args.days, args.repeats)
    spark.stop()

    multi, one = best["multi_day"], best["one_day"]
    result = {
        "machine": machine(),
        "days_in_table": args.days,
        "rows_in_table": total_rows,
        "files_in_table": table_files,
        "day": day,
        "rows_read": {k: v[1]["rows_read"] for k, v in best.items()},
        "files_read": files,
        "seconds": {k: v[0] for k, v in best.items()},
        "ratio_multi_over_one": multi[0] / one[0],
        "whole_table_seconds": min(whole_seconds),
        "report": window,
    }
    print(f"machine: {result['machine']}")
    print(
        f"sessionize --date {day}: over the {args.days}-day table ({total_rows:,} rows, {table_files} files) read "
        f"{multi[1]['rows_read']:,} rows from {files['multi_day']} files in {multi[0]:.1f}s; over the day alone "
        f"read {one[1]['rows_read']:,} rows from {files['one_day']} files in {one[0]:.1f}s; "
        f"ratio {result['ratio_multi_over_one']:.2f} (goal: about 1); the whole table without --date: "
        f"{result['whole_table_seconds']:.1f}s"
    )
    if window:
        print(
            f"report of {window['last_day']} alone: {window['day_seconds']:.1f}s; of the {args.days} days to it "
            f"(report.window_days, from the stored statistics): {window['window_seconds']:.1f}s = "
            f"{window['window_over_day']:.2f}x ({window['window_events']:,} events in the window)"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "daily.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
