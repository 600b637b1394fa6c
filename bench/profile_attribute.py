"""Where the attribution stage's own time goes, part by part, on the embedded default's test sessions 16
times over (1.2M events), with the model taken out (a UDF returning zero scores):

    python -m bench.profile_attribute [--scale 16] [--repeats 3]

Each variant adds one part to the one before and runs the plan to its end through Spark's ``noop`` sink
(everything computed, nothing written) except the last, which writes the event table as the stage does:

  read       read the sessions and select the UDF's input columns
  round trip + the Arrow round trip through the Python worker (mapInArrow, zero scores)
  explode    + the explode to one row per event (the event table's columns)
  write      + the parquet write partitioned by session_date (the zero-score stage of bench_attribute
             with attribution.writer=spark)
  worker     the round trip's way in only: the UDF's worker flattens and writes the event table itself
             and returns a manifest (attribution.writer=arrow, the default; udfs/event_files.py)
  way in     Spark reads the sessions, turns the rows into Arrow and hands them to a Python worker that
             counts them and returns one row: what the worker's path costs before its own work
  pyarrow    pyarrow reads the same parquet files, columns and split in this process (the machine's
             threads): what the way in would cost if each worker read its own files

Best of ``--repeats`` alternating runs. Needs the embedded default's outputs (``make run``).
"""

from __future__ import annotations

import argparse
import json
import time

from bench.bench_attribute import GRAD_X_INPUT_ONLY, RESULTS, ROOT, scaled_sessions, zero_scores
from bench.machine import machine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    import pyarrow.dataset as ds

    from attribution.config_loader import load_config
    from attribution.events import event_table
    from attribution.model import read_artifact
    from attribution.spark import build_spark
    from attribution.stages.attribute import sessions_to_score
    from udfs.attribution_udf import scoring_input
    from udfs.event_files import event_files, write_event_table

    base = load_config(ROOT / "conf" / "local.yaml", GRAD_X_INPUT_ONLY)
    spark = build_spark(base.spark)
    path = str(scaled_sessions(spark, base, args.scale))
    conf = load_config(
        ROOT / "conf" / "local.yaml",
        [
            *GRAD_X_INPUT_ONLY,
            f"sessions.sessions_path={path}",
            f"train.model_path={(ROOT / base.output(base.train.model_path)).resolve()}",
        ],
    )
    _, _, vocab = read_artifact(conf.output(conf.train.model_path))
    methods = list(conf.attribution.methods)
    # what the pyarrow part reads: the UDF's input columns of the configured split
    columns = scoring_input(sessions_to_score(spark, conf), methods, vocab.fields)[0].columns
    split = None if conf.attribution.split == "all" else ds.field("split") == conf.attribution.split

    def plan(part: str):
        selected, schema = scoring_input(sessions_to_score(spark, conf), methods, vocab.fields)
        if part == "read":
            return selected
        scored = selected.mapInArrow(zero_scores(methods, vocab.fields), schema)
        if part == "round trip":
            return scored
        return event_table(scored, "bench", "none")

    def run(part: str) -> None:
        if part == "write":
            out = str(RESULTS / "attribution_profile_out")
            plan("explode").write.mode("overwrite").partitionBy("session_date").parquet(out)
        elif part == "way in":
            selected, _ = scoring_input(sessions_to_score(spark, conf), methods, vocab.fields)
            selected.mapInArrow(count_rows, "n long").write.format("noop").mode("overwrite").save()
        elif part == "pyarrow":
            ds.dataset(path, format="parquet").to_table(columns=columns, filter=split)
        elif part == "worker":
            out = str(RESULTS / "attribution_profile_worker_out")
            selected, schema = scoring_input(sessions_to_score(spark, conf), methods, vocab.fields)
            files = event_files(spark, schema, out, "bench", "none", vocab_fields=vocab.fields)
            write_event_table(selected, zero_scores(methods, vocab.fields), files, out)
        else:
            plan(part).write.format("noop").mode("overwrite").save()

    parts = ("read", "round trip", "explode", "write", "worker", "way in", "pyarrow")
    for part in parts:  # warm: Python workers, file listing
        run(part)
    best = dict.fromkeys(parts, float("inf"))
    for _ in range(args.repeats):
        for part in parts:
            t0 = time.perf_counter()
            run(part)
            best[part] = min(best[part], time.perf_counter() - t0)
    events = plan("explode").count()
    print(f"machine: {machine()}; {events:,} events, best of {args.repeats}")
    before = 0.0
    for part in parts[:4]:
        print(f"  {part:<11} {best[part]:5.2f} s (+{best[part] - before:.2f} s)")
        before = best[part]
    print(
        f"  {'worker':<11} {best['worker']:5.2f} s: the read, the way in, the flatten and the write in the worker; "
        f"{best['write'] / best['worker']:.2f}x faster than Spark's explode and write"
    )
    print(
        f"  {'way in':<11} {best['way in']:5.2f} s: Spark's read and rows-to-Arrow into the worker; pyarrow reading "
        f"the same files {best['pyarrow']:.2f} s ({best['way in'] / best['pyarrow']:.1f}x less)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "profile_attribute.json").write_text(
        json.dumps({"machine": machine(), "events": events, "seconds": best}, indent=1)
    )
    spark.stop()


def count_rows(batches):
    """A Python worker that takes the sessions in and returns only how many it got."""
    import pyarrow as pa

    n = sum(batch.num_rows for batch in batches)
    yield pa.RecordBatch.from_pydict({"n": [n]})


if __name__ == "__main__":
    main()
