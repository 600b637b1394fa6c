"""What every job shares: ``--conf``/``--set`` parsing, logging, the SparkSession, clean failures."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Optional, Protocol

import attribution
from attribution.config import Config
from attribution.config_loader import load_config
from attribution.errors import ConfigError, InputError
from attribution.features import FeatureMismatch
from attribution.model import ArtifactError
from attribution.sessionize import ReconciliationError
from attribution.spark import CODE_PACKAGES, EnvironmentProblem, build_spark, qualify_output_dir
from attribution.stages.attribute import AttributionReconciliationError
from attribution.tracking import TrackingError, check_reachable, session
from attribution.train_worker import TrainingError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("jobs")

# Problems the user can fix: print one clear line and exit 2, no Java stack trace.
USER_ERRORS = (
    ConfigError,
    InputError,
    EnvironmentProblem,
    FeatureMismatch,
    ArtifactError,
    TrainingError,
    TrackingError,
)
# Counts that don't reconcile: a bug, never the user's; one line and exit 3.
INTERNAL_ERRORS = (ReconciliationError, AttributionReconciliationError)


def executor_environment_problem(exc: BaseException) -> str | None:
    """One line for a job that failed because the executors' Python lacks a module (the Python traceback
    Spark brings back from a task names it); None for any other failure."""
    import re

    found = re.search(r"ModuleNotFoundError: No module named '([^']+)'", str(exc))
    if found is None:
        return None
    module = found.group(1)
    if module.split(".")[0] in CODE_PACKAGES:
        hint = (
            "the project's code did not reach them: give spark-submit --py-files dist/session_attribution.zip "
            "(make package), or, as a Spark Connect client, leave spark.ship_code on"
        )
    else:
        hint = (
            f"install {module.split('.')[0]} in the executors' Python environment (make package builds one for "
            "spark-submit --archives; a Spark Connect server's environment is the server's)"
        )
    return f"the executors' Python has no module {module!r}: {hint}"


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
    p.add_argument("--date", default=None, metavar="YYYY-MM-DD", help="run for this local day only (day mode)")
    p.add_argument("--from", dest="date_from", default=None, metavar="YYYY-MM-DD", help="backfill from this day")
    p.add_argument("--to", dest="date_to", default=None, metavar="YYYY-MM-DD", help="... to this day, inclusive")
    return p


def days_of(args: argparse.Namespace) -> list[str] | None:
    """The days a run covers: [--date], every day of --from..--to, or None (the whole input)."""
    import datetime as dt

    if args.date and (args.date_from or args.date_to):
        raise ConfigError("--date and --from/--to: give one day, or a range, not both")
    if bool(args.date_from) != bool(args.date_to):
        raise ConfigError("--from and --to go together (a backfill of the days between them, inclusive)")
    given = [args.date] if args.date else [args.date_from, args.date_to] if args.date_from else []
    parsed = []
    for value in given:
        try:
            parsed.append(dt.date.fromisoformat(value))
        except ValueError as exc:
            raise ConfigError(f"{value!r} is not a YYYY-MM-DD date") from exc
    if not parsed:
        return None
    first, last = parsed[0], parsed[-1]
    if last < first:
        raise ConfigError(f"--to {last} is before --from {first}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def for_day(conf: Config, day: str, user_run_id: Optional[str], date_to: Optional[str] = None) -> Config:
    """The config of one day's run: ``run.date`` set, and a run id of its own, the same on every rerun of
    the day (``day-YYYY-MM-DD``, or ``<run.run_id>-YYYY-MM-DD`` when one was given), so the outputs keyed
    by run id (the Delta tables, the report's parquet) replace that day's rows and no other's."""
    import dataclasses

    label = day if date_to is None else f"{day}_to_{date_to}"
    run_id = f"{user_run_id}-{label}" if user_run_id else f"day-{label}"
    return dataclasses.replace(conf, run=dataclasses.replace(conf.run, date=day, date_to=date_to, run_id=run_id))


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


class Main(Protocol):
    """A job's entry point: its arguments (``sys.argv[1:]`` when None) in, its exit code out."""

    def __call__(self, argv: Optional[Sequence[str]] = None) -> int: ...


def main_of(
    description: str,
    body: Callable[[SparkSession, Config, argparse.Namespace], int | None],
    extra: Optional[Callable[[argparse.ArgumentParser], None]] = None,
    window: bool = False,
    tracked: bool = True,
) -> Main:
    """Build a ``main(argv)`` that parses arguments, loads config, builds Spark and runs ``body``.

    With ``--date`` or ``--from/--to`` the body runs once per day, in order, in one Spark application,
    each with its day's config (:func:`for_day`); the first day that fails stops the run with its exit
    code. A ``window`` job (training) runs once over the whole range instead.

    A ``tracked`` job runs each body under its run id's MLflow run (:func:`attribution.tracking.session`),
    which ends ``FAILED`` when the body raises or returns an error code."""

    def run_body(spark: SparkSession, conf: Config, args: argparse.Namespace) -> int:
        if not tracked:
            return int(body(spark, conf, args) or 0)
        with session(conf) as tracker:
            code = int(body(spark, conf, args) or 0)
            if code and tracker is not None:
                tracker.fail()
        return code

    def main(argv: Optional[Sequence[str]] = None) -> int:
        p = parser(description)
        if extra:
            extra(p)
        args = p.parse_args(argv)
        setup_logging()

        # Where the code came from: the checkout, an installed wheel, or the --py-files zip on a cluster.
        log.info("session-attribution code from %s", os.path.dirname(attribution.__file__))
        try:
            loaded = load_config(args.conf, args.overrides)
            days = days_of(args)
            conf = with_run_id(loaded)
            if tracked:
                check_reachable(conf)
            spark = build_spark(conf.spark)
            conf = qualify_output_dir(spark, conf)
            if days is None:
                return run_body(spark, conf, args)
            if window:
                to = days[-1] if len(days) > 1 else None
                return run_body(spark, for_day(conf, days[0], loaded.run.run_id, to), args)
            for day in days:
                if len(days) > 1:
                    log.info("day %s (%d of %d)", day, days.index(day) + 1, len(days))
                code = run_body(spark, for_day(conf, day, loaded.run.run_id), args)
                if code:
                    return code
            return 0
        except USER_ERRORS as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except INTERNAL_ERRORS as exc:
            print(f"internal error (please report): {exc}", file=sys.stderr)
            return 3
        except Exception as exc:
            problem = executor_environment_problem(exc)
            if problem is None:
                raise
            print(f"error: {problem}", file=sys.stderr)
            return 2

    return main
