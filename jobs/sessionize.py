"""Sessionize raw events: ``spark-submit jobs/sessionize.py --conf conf/cluster.yaml [--set k=v ...]``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from attribution.stages import sessionize, tracked
from jobs._cli import main_of

if TYPE_CHECKING:
    import argparse

    from pyspark.sql import SparkSession

    from attribution.config import Config


def _body(spark: SparkSession, conf: Config, args: argparse.Namespace) -> int:
    print(tracked.run("sessionize", lambda: sessionize.run(spark, conf), conf).text())
    return 0


main = main_of(__doc__, _body)

if __name__ == "__main__":
    sys.exit(main())
