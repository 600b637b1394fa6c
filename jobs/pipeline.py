"""The whole analysis: generate (embedded default) -> sessionize -> train -> attribute -> faithfulness -> report.

``make run`` calls ``python -m jobs.pipeline --conf conf/local.yaml``. On a cluster each stage is its own
spark-submit, so a team can re-attribute with a new model without re-sessionizing.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from attribution.config import redacted
from attribution.io import write_text
from attribution.stages import attribute, faithfulness, generate, report, sessionize, tracked, train
from attribution.stages.results import StageResult
from jobs._cli import main_of

if TYPE_CHECKING:
    import argparse

    from pyspark.sql import SparkSession

    from attribution.config import Config

log = logging.getLogger("jobs.pipeline")


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline: ``run`` does it and returns its typed result, or None when the stage has
    nothing to do with this config."""

    name: str
    run: Callable[[SparkSession, Config], StageResult | None]


def _generate(spark: SparkSession, conf: Config) -> StageResult | None:
    if conf.input.path != conf.generate.output_path:
        print(f"[generate] skipped: input.path ({conf.input.path}) is not the embedded dataset")
        return None
    return generate.run(spark, conf)


# The stages in the order they run: each reads what the ones before it wrote.
REGISTRY = {
    s.name: s
    for s in (
        Stage("generate", _generate),
        Stage("sessionize", sessionize.run),
        Stage("train", train.run),
        Stage("attribute", attribute.run),
        Stage("faithfulness", faithfulness.run),
        Stage("report", report.run),
    )
}
STAGES = tuple(REGISTRY)


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"comma-separated subset of {','.join(STAGES)} (default: all)",
    )


def _body(spark: SparkSession, conf: Config, args: argparse.Namespace) -> int:
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in REGISTRY]
    if unknown:
        print(f"error: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}", file=sys.stderr)
        return 2
    timings: dict[str, float] = {}
    results: dict[str, dict] = {}
    for stage in REGISTRY.values():
        if stage.name not in wanted:
            continue
        t0 = time.time()
        done = tracked.run(stage.name, functools.partial(stage.run, spark, conf), conf)
        if done is None:
            continue
        results[stage.name] = done.manifest_entry()
        print(f"[{stage.name}] " + done.text().replace("\n", "\n  "))
        timings[stage.name] = round(time.time() - t0, 1)
    write_manifest(conf, timings, results)
    print(f"pipeline done in {sum(timings.values()):.0f}s {timings}; outputs under {conf.run.output_dir}/")
    return 0


def write_manifest(conf: Config, timings: dict, results: dict) -> None:
    """``manifest.json``: the config (credentials redacted), each stage's timing and summary, the model's
    sha256 and metrics (with the leakage check), the report's output locations."""
    manifest = {
        "run_id": conf.run.run_id,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": redacted(conf.to_dict()),
        "timings_s": timings,
        "stages": results,
    }
    if "train" in results:
        manifest["model"] = {
            "path": results["train"].get("model_path", conf.output(conf.train.model_path)),
            "sha256": results["train"]["model_sha256"],
            "test_roc_auc": results["train"]["test"]["roc_auc"],
            "leakage_check_test_roc_auc": results["train"].get("leakage_check", {}).get("test", {}).get("roc_auc"),
        }
    report = results.get("report", {})
    if "ground_truth" in report:
        manifest["ground_truth"] = report["ground_truth"]
    if "faithfulness" in results:
        manifest["faithfulness"] = {
            "most_faithful": results["faithfulness"]["most_faithful"],
            "sessions": results["faithfulness"]["sessions"],
            "table": results["faithfulness"]["outputs"].get("attribution_faithfulness.csv"),
        }
    write_text(conf.output("manifest.json"), json.dumps(manifest, indent=1, default=str))


main = main_of(__doc__, _body, _args)

if __name__ == "__main__":
    sys.exit(main())
