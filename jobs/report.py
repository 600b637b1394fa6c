"""Lift tables, CSV/Delta/parquet outputs and the 4-panel picture: ``spark-submit jobs/report.py --conf ...``.

Reads the event-level table written by jobs/attribute.py.
"""

from __future__ import annotations

import sys

from attribution.stages import report
from jobs._cli import main_of


def _body(spark, conf, args) -> int:
    summary = report.run(spark, conf)
    print(summary["insights"])
    for name, where in summary["outputs"].items():
        print(f"  {name:<55} {where}")
    return 0


main = main_of(__doc__, _body)

if __name__ == "__main__":
    sys.exit(main())
