"""Explain one session: ``python -m jobs.explain --conf conf/local.yaml --session-id ID``.

Prints its events ranked by attribution with every method's score, the signed contribution and the
prediction, and writes a small PNG under <output_dir>/report/explain/.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from attribution.stages import explain
from jobs._cli import main_of

if TYPE_CHECKING:
    import argparse

    from pyspark.sql import SparkSession

    from attribution.config import Config


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session-id", required=True, help="a session_id of the event-level table")


def _body(spark: SparkSession, conf: Config, args: argparse.Namespace) -> int:
    explained = explain.run(spark, conf, args.session_id)
    print(explained.table)
    print(f"picture: {explained.picture}")
    return 0


main = main_of(__doc__, _body, _args, tracked=False)  # one session read back, not a run

if __name__ == "__main__":
    sys.exit(main())
