"""Write docs/columns.md: what every column of every published table means, read from
``attribution.schema.COLUMN_GROUPS`` (each column defined once) and ``TABLE_COLUMN_GROUPS`` (which groups
each table's columns come from). ``tests/test_readme.py`` fails when the page differs from what this
writes, and ``tests/test_train.py`` when a real run publishes a column the schema does not define.

    python -m scripts.columns_doc            # rewrite docs/columns.md
    python -m scripts.columns_doc --check    # exit 1 when docs/columns.md is out of date
"""

from __future__ import annotations

from pathlib import Path

from attribution.schema import COLUMN_GROUPS, TABLE_COLUMN_GROUPS, column_type
from scripts._docgen import write_or_check

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "columns.md"
HEADER = """# What every column means

The columns of every table the pipeline publishes: the report's CSVs (and the same tables as Delta and
parquet), the `_by_method` CSVs (every method's rows), and the event-level table. Each column is
defined once, by group; the first table says which groups each table's columns come from. This page is
written from `attribution/schema.py` by `python -m scripts.columns_doc`; a test fails when it differs,
and another when a run publishes a column that is not here.

Units: **log-odds** are on the model's logit (how strongly one event pushes); **pp** are percentage
points of P(convert) (how much a step moves conversion). [reading.md](reading.md) says which to quote.

**Types** are Spark SQL's, as the Delta tables declare them: `string`, `double` (64-bit float), `bigint`
(64-bit integer), `int` (32-bit), `boolean`, `date`, `timestamp` (UTC), `array<...>`, `struct<...>`.
Polars reads them as `String`, `Float64`, `Int64`, `Int32`, `Boolean`, `Date`, `Datetime(us, UTC)`,
`List`, `Struct`; DuckDB as `VARCHAR`, `DOUBLE`, `BIGINT`, `INTEGER`, `BOOLEAN`, `DATE`,
`TIMESTAMP WITH TIME ZONE`, `[]`, `STRUCT`. In the CSVs every column is text.
"""


def render() -> str:
    lines = [HEADER, "| table | its columns' groups |", "|---|---|"]
    for stem, groups in TABLE_COLUMN_GROUPS.items():
        lines.append(f"| `{stem}` | " + ", ".join(f"[{g}](#{g.replace('_', '-')})" for g in groups) + " |")
    for group, (title, columns) in COLUMN_GROUPS.items():
        lines += [
            "",
            f'<a id="{group.replace("_", "-")}"></a>',
            f"## {title}",
            "",
            "| column | type | meaning |",
            "|---|---|---|",
        ]
        lines += [f"| `{column}` | `{column_type(column)}` | {meaning} |" for column, meaning in columns.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return write_or_check(TARGET, render(), "python -m scripts.columns_doc", argv)


if __name__ == "__main__":
    raise SystemExit(main())
