"""Attribute every session's prediction to its events: ``spark-submit jobs/attribute.py --conf ... [--split all]``.

Reads the sessions (the test split by default) and the model directory, scores them in a pandas/Arrow UDF
on GPU or CPU executors and writes the event-level table ``gradient_attribution_no_funnel``.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING

from attribution.config_loader import validate
from attribution.stages import attribute, tracked
from jobs._cli import main_of

if TYPE_CHECKING:
    import argparse

    from pyspark.sql import SparkSession

    from attribution.config import Config


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default=None, help="train, validation, test (default: attribution.split) or all")
    p.add_argument("--model", default=None, help="model directory (default: <output_dir>/<train.model_path>)")


def _body(spark: SparkSession, conf: Config, args: argparse.Namespace) -> int:
    if args.split:
        conf = dataclasses.replace(conf, attribution=dataclasses.replace(conf.attribution, split=args.split))

        validate(conf)
    print(tracked.run("attribute", lambda: attribute.run(spark, conf, model_path=args.model), conf).text())
    return 0


main = main_of(__doc__, _body, _args)

if __name__ == "__main__":
    sys.exit(main())
