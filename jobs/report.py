"""Lift tables, CSV/Delta/parquet outputs and the 4-panel picture: ``spark-submit jobs/report.py --conf ...``.

Reads the event-level table written by jobs/attribute.py.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from attribution.stages import report, tracked
from jobs._cli import main_of

if TYPE_CHECKING:
    import argparse

    from pyspark.sql import SparkSession

    from attribution.config import Config


def _body(spark: SparkSession, conf: Config, args: argparse.Namespace) -> int:
    result = tracked.run("report", lambda: report.run(spark, conf), conf)
    print(result.insights)
    for name, where in result.outputs.items():
        print(f"  {name:<55} {where}")
    return 0


main = main_of(__doc__, _body)

if __name__ == "__main__":
    sys.exit(main())
