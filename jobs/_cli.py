"""What every job shares: ``--conf``/``--set`` parsing, logging, the SparkSession, clean failures."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Optional

from attribution.config import Config, ConfigError, load_config
from attribution.features import FeatureMismatch
from attribution.io import InputError
from attribution.model import ArtifactError
from attribution.sessionize import ReconciliationError
from attribution.spark import EnvironmentProblem, build_spark, qualify_output_dir
from attribution.train import TrainingError
from udfs.attribution_udf import AttributionReconciliationError

log = logging.getLogger("jobs")

# Problems the user can fix: print one clear line and exit 2, no Java stack trace.
USER_ERRORS = (ConfigError, InputError, EnvironmentProblem, FeatureMismatch, ArtifactError, TrainingError)
# Counts that don't reconcile: a bug, never the user's; one line and exit 3.
INTERNAL_ERRORS = (ReconciliationError, AttributionReconciliationError)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--conf", default=None, help="YAML config (conf/local.yaml, conf/cluster.yaml); defaults if omitted")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="dotted.key=value",
        help="override one config value, e.g. --set session.max_length=50 (repeatable; value is YAML)",
    )
    return p


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def with_run_id(conf: Config) -> Config:
    """Give the run an id when the config leaves it empty (UTC time, sortable)."""
    if conf.run.run_id:
        return conf
    import dataclasses

    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return dataclasses.replace(conf, run=dataclasses.replace(conf.run, run_id=run_id))


def main_of(
    description: str,
    body: Callable[[object, Config, argparse.Namespace], int | None],
    extra: Optional[Callable[[argparse.ArgumentParser], None]] = None,
) -> Callable[[Optional[Sequence[str]]], int]:
    """Build a ``main(argv)`` that parses arguments, loads config, builds Spark and runs ``body``."""

    def main(argv: Optional[Sequence[str]] = None) -> int:
        p = parser(description)
        if extra:
            extra(p)
        args = p.parse_args(argv)
        setup_logging()
        import attribution

        # Where the code came from: the checkout, an installed wheel, or the --py-files zip on a cluster.
        log.info("session-attribution code from %s", os.path.dirname(attribution.__file__))
        try:
            conf = with_run_id(load_config(args.conf, args.overrides))
            spark = build_spark(conf.spark)
            conf = qualify_output_dir(spark, conf)
            code = body(spark, conf, args)
            return int(code or 0)
        except USER_ERRORS as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except INTERNAL_ERRORS as exc:
            print(f"internal error (please report): {exc}", file=sys.stderr)
            return 3

    return main
