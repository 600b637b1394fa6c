"""What the removal effects cost: the attribution stage with and without them, side by side in one run.

    python -m bench.bench_removal [--scale 16] [--repeats 2] [--sessions 2000] [--model-size seed|trained]

Needs the embedded default's outputs (``make run``). The stage (read the sessions, the UDF, write the
event table) runs on the embedded default's test sessions ``--scale`` times over (16x: about 1.2M
events), with gradient x input only (the cheapest method, so the strictest ratio) and the full-sized
model (192 wide, 3 layers; untrained: the cost does not depend on the weights). Runs alternate
(without, with, without, with, ...) and the best of each is kept, so the machine's noise falls on both.
Then the report's tables (:func:`attribution.report.build_tables`, one Spark job for the lift and effect
statistics plus one for the removal statistics) on the event table just written, beside the stage.

A third variant adds the pair table's interactions (``attribution.removal_pairs``, 10 by default) to
the removal effects: their own cost is the ratio of the two.

Goals: the removal effects add at most 25% to the stage's time; the pairs add at most 25% to the stage
with the removal effects (the context tables' bar); the report's tables stay within 10% of the
stage's time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from attribution.stages import attribute as attribute_stage
from bench.bench_attribute import GRAD_X_INPUT_ONLY, RESULTS, ROOT, scaled_sessions, seed_sized_model
from bench.machine import best_alternating, machine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--sessions", type=int, default=None, help="attribution.removal_sessions (default: the config's)")
    p.add_argument("--model-size", choices=("seed", "trained"), default="seed")
    args = p.parse_args()

    from attribution import report
    from attribution.config_loader import load_config
    from attribution.io import read_table
    from attribution.spark import build_spark

    trained = (ROOT / "outputs" / "model").resolve()
    if not trained.exists():
        raise SystemExit("no model under outputs/model: run `make run` first")
    base = load_config(ROOT / "conf" / "local.yaml", GRAD_X_INPUT_ONLY)
    sample = base.attribution.removal_sessions if args.sessions is None else args.sessions
    spark = build_spark(base.spark)
    sessions = scaled_sessions(spark, base, args.scale)
    model = seed_sized_model(str(trained)) if args.model_size == "seed" else str(trained)

    def conf_for(removal: float, out: str, pairs: int | None = None):
        return load_config(
            ROOT / "conf" / "local.yaml",
            [
                *GRAD_X_INPUT_ONLY,
                f"sessions.sessions_path={sessions}",
                f"attribution.output_path={RESULTS / out}",
                f"attribution.summary_path={RESULTS / (out + '_summary.json')}",
                f"train.model_path={model}",
                "attribution.delta_path=null",
                f"attribution.removal_sessions={removal}",
                f"report.output_path={RESULTS / 'removal_report'}",
                *([] if pairs is None else [f"attribution.removal_pairs={pairs}"]),
            ],
        )

    variants = {
        "without": conf_for(0, "removal_without_out"),
        "no_pairs": conf_for(sample, "removal_no_pairs_out", pairs=0),
        "with": conf_for(sample, "removal_with_out"),
    }
    for conf in variants.values():  # warm: Python workers, torch, the model cache
        attribute_stage.run(spark, conf)
    best = best_alternating(variants, lambda c: attribute_stage.run(spark, c).summary, args.repeats)

    report_seconds = {}
    for name, conf in ((k, variants[k]) for k in ("without", "with")):
        events = read_table(spark, conf.output(conf.attribution.output_path), "parquet", {}, "attribution")
        report.build_tables(events, conf)  # warm
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            report.build_tables(events, conf)
            times.append(time.perf_counter() - t0)
        report_seconds[name] = min(times)
    spark.stop()

    without, no_pairs, with_ = best["without"], best["no_pairs"], best["with"]
    result = {
        "machine": machine(),
        "scale": args.scale,
        "model": args.model_size,
        "removal_sessions_configured": sample,
        "events": with_[1]["events"],
        "sessions": with_[1]["sessions"],
        "removal_sessions": with_[1]["removal_sessions"],
        "removal_forward_passes": with_[1]["removal_forward_passes"],
        "stage_seconds_without": without[0],
        "stage_seconds_without_pairs": no_pairs[0],
        "stage_seconds_with": with_[0],
        "removal_pairs": with_[1].get("removal_pairs"),
        "removal_overhead": no_pairs[0] / without[0] - 1,
        "pairs_overhead": with_[0] / no_pairs[0] - 1,
        "report_tables_seconds_without": report_seconds["without"],
        "report_tables_seconds_with": report_seconds["with"],
        "report_over_stage": report_seconds["with"] / with_[0],
    }
    print(f"machine: {result['machine']}")
    print(
        f"attribute stage, {result['events']:,} events in {result['sessions']:,} sessions, {args.model_size} model, "
        f"grad_x_input: {without[0]:.1f}s without removal effects, {no_pairs[0]:.1f}s with them "
        f"(removal_sessions {sample}: {result['removal_sessions']:,} sessions) = +{100 * result['removal_overhead']:.0f}% "
        f"(goal <= 25%); {with_[0]:.1f}s with the pair interactions too ({len(result['removal_pairs'] or [])} pairs, "
        f"{result['removal_forward_passes']:,} forward passes in all) = +{100 * result['pairs_overhead']:.0f}% over the "
        "removal effects alone (goal <= 25%)"
    )
    print(
        f"report tables: {report_seconds['without']:.1f}s without removal columns, {report_seconds['with']:.1f}s with "
        f"= {100 * result['report_over_stage']:.0f}% of the stage (goal <= 10%)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"removal_{args.model_size}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"results in {Path(out)}")


if __name__ == "__main__":
    main()
