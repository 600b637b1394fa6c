"""Faithfulness of each attribution method and agreement between them: ``spark-submit jobs/faithfulness.py --conf ...``.

Reads the event-level table written by jobs/attribute.py, the sessions table and the model; writes
``attribution_faithfulness`` and ``attribution_agreement`` (CSV, Delta, parquet) and
``attribution_faithfulness.png`` under the report directory.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from attribution.stages import faithfulness, tracked
from jobs._cli import main_of

if TYPE_CHECKING:
    import argparse

    from pyspark.sql import SparkSession

    from attribution.config import Config


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model directory (default: <output_dir>/<train.model_path>)")


def _body(spark: SparkSession, conf: Config, args: argparse.Namespace) -> int:
    print(tracked.run("faithfulness", lambda: faithfulness.run(spark, conf, model_path=args.model), conf).text())
    return 0


main = main_of(__doc__, _body, _args)

if __name__ == "__main__":
    sys.exit(main())
