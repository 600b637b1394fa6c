"""Train the session transformer: ``spark-submit jobs/train.py --conf conf/cluster.yaml [--set k=v ...]``.

Reads the sessions table, builds vocabularies in Spark, trains through TorchDistributor and writes the
model directory (safetensors weights, JSON config and vocabularies, sha256) with metrics.json.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from attribution.stages import tracked, train
from jobs._cli import main_of

if TYPE_CHECKING:
    import argparse

    from pyspark.sql import SparkSession

    from attribution.config import Config


def _body(spark: SparkSession, conf: Config, args: argparse.Namespace) -> int:
    print(tracked.run("train", lambda: train.run(spark, conf), conf).text())
    return 0


main = main_of(__doc__, _body, window=True)

if __name__ == "__main__":
    sys.exit(main())
