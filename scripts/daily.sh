#!/usr/bin/env bash
# The daily schedule, as a scheduler calls it (one command per run; every stage is its own spark-submit).
#
#   scripts/daily.sh init 2025-01-01 2025-01-28      # first time: sessionize those days, train the first model on them
#   scripts/daily.sh day 2025-01-29                  # every day after: sessionize, attribute, faithfulness, report
#   scripts/daily.sh backfill 2025-01-29 2025-02-04  # the day's stages for each day of a range, one application per stage
#   scripts/daily.sh retrain 2025-01-08 2025-02-04   # a new model on the (already sessionized) days of a window
#
# Cold start: `init` on a window of days, then `day` (or `backfill`) for the days after it, so no day is
# attributed by a model trained on it. `day` and `backfill` need a model (`init` or `retrain` first).
# A day's stages read only that local day (input.date_column, pushed down) and replace only its
# partitions, so a failed or repeated day is rerun with the same command. Exit codes: 0 done, 2 a problem
# to fix (including a day without events, sessions or conversions, or no model yet: one line names it),
# 3 an internal error.
#
# Environment: SUBMIT (default "spark-submit", add --master and resources), CONF (default
# conf/cluster.yaml), TRAIN_GPU (extra spark-submit flags for training, e.g. one GPU per task), GPU (for
# attribution and faithfulness, e.g. a quarter GPU per task), FAITHFULNESS (1, the default: measure each
# day's methods on the sample faithfulness.max_sessions; 0: skip), WINDOW (a number of days: after a
# day's report, also the report of the WINDOW days up to it, from the days' stored statistics).
set -euo pipefail

SUBMIT=${SUBMIT:-spark-submit}
CONF=${CONF:-conf/cluster.yaml}
TRAIN_GPU=${TRAIN_GPU:-}
GPU=${GPU:-}
FAITHFULNESS=${FAITHFULNESS:-1}
WINDOW=${WINDOW:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  sed -n '2,9p' "$0" >&2
  exit 2
}

days() {  # the jobs' day arguments: --date D, or --from A --to B
  if [ "$#" -eq 1 ]; then echo "--date $1"; else echo "--from $1 --to $2"; fi
}

stage() {  # stage JOB [extra spark-submit flags]: the job over the run's days
  local job=$1; shift
  # shellcheck disable=SC2086
  $SUBMIT "$@" "$ROOT/jobs/$job.py" --conf "$CONF" $DAYS
}

[ "$#" -ge 2 ] || usage
case "$1" in
  day)      [ "$#" -eq 2 ] || usage; DAYS=$(days "$2") ;;
  init|backfill|retrain) [ "$#" -eq 3 ] || usage; DAYS=$(days "$2" "$3") ;;
  *) usage ;;
esac

case "$1" in
  init)
    stage sessionize
    # shellcheck disable=SC2086
    stage train $TRAIN_GPU
    echo "first model trained on $2..$3: run '$0 day D' for the days after $3"
    ;;
  retrain)
    # shellcheck disable=SC2086
    stage train $TRAIN_GPU
    ;;
  day|backfill)
    stage sessionize
    # shellcheck disable=SC2086
    stage attribute $GPU
    if [ "$FAITHFULNESS" = 1 ]; then
      # shellcheck disable=SC2086
      stage faithfulness $GPU
    fi
    stage report
    if [ -n "$WINDOW" ]; then
      last=${3:-$2}
      $SUBMIT "$ROOT/jobs/report.py" --conf "$CONF" --date "$last" --set "report.window_days=$WINDOW"
    fi
    ;;
esac
