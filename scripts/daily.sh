#!/usr/bin/env bash
# The daily schedule, as a scheduler calls it (one command per run; every stage is its own spark-submit).
#
#   scripts/daily.sh day 2025-01-15                  # one day: sessionize, attribute, report
#   scripts/daily.sh backfill 2025-01-01 2025-01-14  # the same for each day of a range, in one application per stage
#   scripts/daily.sh retrain 2025-01-01 2025-01-28   # train on the sessions of a window of days
#
# A day's stages read only that local day (input.date_column, pushed down) and replace only its
# partitions, so a failed or repeated day is rerun with the same command. Exit codes: 0 done, 2 a problem
# to fix (including a day without events, sessions or conversions: one line names it), 3 an internal error.
#
# Environment: SUBMIT (default "spark-submit", add --master and resources), CONF (default conf/cluster.yaml),
# GPU (extra spark-submit flags for the model stages, default none), WINDOW (a number of days: after a
# day's report, also the report of the WINDOW days up to it, from the days' stored statistics).
set -euo pipefail

SUBMIT=${SUBMIT:-spark-submit}
CONF=${CONF:-conf/cluster.yaml}
GPU=${GPU:-}
WINDOW=${WINDOW:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  sed -n '2,8p' "$0" >&2
  exit 2
}

days() {  # the jobs' day arguments: --date D, or --from A --to B
  if [ "$#" -eq 1 ]; then echo "--date $1"; else echo "--from $1 --to $2"; fi
}

stage() {  # stage JOB [extra spark-submit flags] -- job arguments
  local job=$1; shift
  # shellcheck disable=SC2086
  $SUBMIT "$@" "$ROOT/jobs/$job.py" --conf "$CONF" $DAYS
}

[ "$#" -ge 2 ] || usage
case "$1" in
  day)      [ "$#" -eq 2 ] || usage; DAYS=$(days "$2") ;;
  backfill) [ "$#" -eq 3 ] || usage; DAYS=$(days "$2" "$3") ;;
  retrain)  [ "$#" -eq 3 ] || usage; DAYS=$(days "$2" "$3") ;;
  *) usage ;;
esac

if [ "$1" = retrain ]; then
  # shellcheck disable=SC2086
  stage train $GPU
  exit 0
fi
stage sessionize
# shellcheck disable=SC2086
stage attribute $GPU
stage report
if [ -n "$WINDOW" ]; then
  last=${3:-$2}
  $SUBMIT "$ROOT/jobs/report.py" --conf "$CONF" --date "$last" --set "report.window_days=$WINDOW"
fi
