"""Generate the embedded synthetic clickstream: ``python -m jobs.generate --conf conf/local.yaml``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from attribution.stages import generate
from jobs._cli import main_of

if TYPE_CHECKING:
    import argparse

    from pyspark.sql import SparkSession

    from attribution.config import Config


def _body(spark: SparkSession, conf: Config, args: argparse.Namespace) -> int:
    counts = generate.run(spark, conf)
    print(
        f"generated {counts.rows:,} raw events into {conf.generate.output_path} "
        f"(planted dirty rows: {counts.planted_dirty_rows})"
    )
    return 0


main = main_of(__doc__, _body, tracked=False)  # the embedded dataset, not an analysis run

if __name__ == "__main__":
    sys.exit(main())
