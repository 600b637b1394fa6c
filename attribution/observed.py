"""The metrics an ``Observation`` gathered, or the same numbers counted again when they did not arrive.

The stages count rows as they write them (``DataFrame.observe``): exact, and with no extra pass. A classic
session fills an Observation before the action returns. A Spark Connect server of Spark 4.1 waits 100 ms
after the action for each observation's metrics and sends none when they come later (SPARK-54279: the
driver's listener bus delivers them, and a busy driver is often slower). The client's Observation then
stays empty, with nothing to tell it from an observation of no rows. :func:`metrics` turns that case into
a second query that counts the same thing, given by the caller, so a count the run reconciles or reports
is never a silently missing one; where nothing can count it again (a UDF's own counters), the caller gets
``None`` and says so in its summary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from attribution.spark import single_row

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Observation

log = logging.getLogger(__name__)

DROPPED = "the Spark Connect server sent no observed metrics (Spark 4.1 drops those that arrive over 100 ms after the action, SPARK-54279)"


def delivered(observation: Observation) -> tuple[dict, bool]:
    """(the observation's metrics, whether they are known to be complete). A classic session's are: {}
    there means no task ran over the observed rows (an input without files, a stage Spark skipped), where
    the session records an empty row. A Connect client's are when they hold anything."""
    jo = getattr(observation, "_jo", None)  # classic only; a Connect observation holds its row itself
    if jo is not None:
        return ({} if jo.getRow().size() == 0 else observation.get), True
    got = observation.get
    return got, bool(got)


def metrics(observation: Observation, what: str, recount: Callable[[], DataFrame]) -> dict:
    """``observation``'s metrics (sums over no rows are null: callers read ``get(name) or 0``), or, when
    they did not arrive, the one row of ``recount()``: an aggregate that counts the same rows again, with
    the metrics' names as its columns. ``what`` names the numbers in the warning a recount logs."""
    got, complete = delivered(observation)
    if complete:
        return got
    log.warning("%s: %s; counting them again", what, DROPPED)
    return single_row(recount()).asDict()


def metrics_if_delivered(observation: Observation, what: str) -> dict | None:
    """``observation``'s metrics, or ``None`` when they did not arrive and nothing else holds them (a UDF's
    own counters): the caller's summary shows them as null."""
    got, complete = delivered(observation)
    if complete:
        return got
    log.warning("%s: %s; they are left out of the summary", what, DROPPED)
    return None
