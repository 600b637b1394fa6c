"""The whole analysis: generate (embedded default) -> sessionize -> train -> attribute -> report.

``make run`` calls ``python -m jobs.pipeline --conf conf/local.yaml``. On a cluster each stage is its own
spark-submit, so a team can re-attribute with a new model without re-sessionizing.
"""

from __future__ import annotations

import logging
import sys
import time

from attribution import generate, sessionize, train
from attribution.report_text import format_attribute_summary, format_sessionize_summary, format_train_metrics
from jobs._cli import main_of
from udfs import attribution_udf

log = logging.getLogger("jobs.pipeline")

STAGES = ("generate", "sessionize", "train", "attribute", "report")
# Stages whose code has not landed yet, with the issue that builds them.
NOT_YET = {"report": "issue #5"}


def _args(p) -> None:
    p.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"comma-separated subset of {','.join(STAGES)} (default: all)",
    )


def _body(spark, conf, args) -> int:
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        print(f"error: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}", file=sys.stderr)
        return 2
    timings = {}
    for stage in STAGES:
        if stage not in wanted:
            continue
        t0 = time.time()
        if stage == "generate":
            if conf.input.path != conf.generate.output_path:
                print(f"[generate] skipped: input.path ({conf.input.path}) is not the embedded dataset")
                continue
            counts = generate.run(spark, conf)
            print(f"[generate] {counts['rows']:,} raw events -> {conf.generate.output_path}")
        elif stage == "sessionize":
            summary = sessionize.run(spark, conf)
            print("[sessionize] " + format_sessionize_summary(summary).replace("\n", "\n  "))
        elif stage == "train":
            metrics = train.run(spark, conf)
            print("[train] " + format_train_metrics(metrics, conf.output(conf.train.model_path)).replace("\n", "\n  "))
        elif stage == "attribute":
            summary = attribution_udf.run(spark, conf)
            print("[attribute] " + format_attribute_summary(summary).replace("\n", "\n  "))
        else:
            print(f"[{stage}] not implemented yet ({NOT_YET[stage]}); skipped")
            continue
        timings[stage] = round(time.time() - t0, 1)
    print(f"pipeline done in {sum(timings.values()):.0f}s {timings}; outputs under {conf.run.output_dir}/")
    missing = [s for s in wanted if s in NOT_YET]
    if missing:
        print(f"still missing: {', '.join(f'{s} ({NOT_YET[s]})' for s in missing)}")
    return 0


main = main_of(__doc__, _body, _args)

if __name__ == "__main__":
    sys.exit(main())
