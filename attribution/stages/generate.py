"""The generate stage: the embedded synthetic clickstream, its stores dimension and its planted truth
(:mod:`attribution.generate` holds the generator)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pyspark.sql import SparkSession

from attribution import scenarios
from attribution.catalogue import store_table
from attribution.config import Config
from attribution.generate import DIRTY_KINDS, generate_events
from attribution.planted_truth import ground_truth
from attribution.stages.results import GenerateResult

log = logging.getLogger(__name__)


def run(spark: SparkSession, conf: Config) -> GenerateResult:
    """Generate and write the raw events, the stores dimension and the ground truth."""
    g = conf.generate
    events = generate_events(spark, conf)
    scenario = scenarios.get(g.scenario)
    if scenario.raw_format == "csv":  # with a header
        events.write.mode("overwrite").option("header", "true").csv(g.output_path)
        written = spark.read.option("header", "true").csv(g.output_path)
    else:
        events.write.mode("overwrite").parquet(g.output_path)
        written = spark.read.parquet(g.output_path)
    if scenario.stores_dimension:
        stores = spark.createDataFrame(store_table(g.n_stores))
        stores.coalesce(1).write.mode("overwrite").parquet(g.stores_path)
    counts = {
        (r["planted_dirty_kind"] or "clean"): int(r["n"])
        for r in written.groupBy("planted_dirty_kind").count().withColumnRenamed("count", "n").collect()
    }
    truth = ground_truth(conf)
    truth["rows"] = sum(counts.values())
    truth["planted_dirty_rows"] = {k: counts.get(k, 0) for k in DIRTY_KINDS}
    Path(g.ground_truth_path).parent.mkdir(parents=True, exist_ok=True)
    Path(g.ground_truth_path).write_text(json.dumps(truth, indent=2))
    log.info("generated %d raw events into %s", truth["rows"], g.output_path)
    summary = {"rows": truth["rows"], "planted_dirty_rows": truth["planted_dirty_rows"]}
    return GenerateResult(summary, truth["rows"], truth["planted_dirty_rows"], g.output_path)
