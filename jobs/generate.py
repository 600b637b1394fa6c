"""Generate the embedded synthetic clickstream: ``python -m jobs.generate --conf conf/local.yaml``."""

from __future__ import annotations

import sys

from attribution.stages import generate
from jobs._cli import main_of


def _body(spark, conf, args) -> int:
    counts = generate.run(spark, conf)
    print(
        f"generated {counts['rows']:,} raw events into {conf.generate.output_path} "
        f"(planted dirty rows: {counts['planted_dirty_rows']})"
    )
    return 0


main = main_of(__doc__, _body)

if __name__ == "__main__":
    sys.exit(main())
