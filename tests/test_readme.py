"""The README's notebook example runs as written, so it cannot go stale.

The README's ``python`` blocks are executed with the names a notebook would have: ``spark`` (this
suite's session) and ``my_events_df`` / ``my_stores_df`` (a small generated dataset). Only the config
overrides change: the output directory goes to a temporary one, and the model and data are made small.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from attribution.stages import generate as generate_stage
from tests.conftest import make_conf
from tests.test_train import SMALL

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = '["run.output_dir=/tmp/attr", "run.run_id=first"]'

pytestmark = pytest.mark.slow


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_the_readme_notebook_example_runs_and_gives_the_tables(spark, tmp_path):

    blocks = python_blocks((ROOT / "README.md").read_text())
    assert blocks and all(OVERRIDES in b for b in blocks if "load_config" in b)
    data = tmp_path / "data"
    generate_stage.run(
        spark,
        make_conf(
            "generate.n_users=300",
            "generate.n_bot_users=0",
            f"generate.output_path={data}/raw",
            f"generate.stores_path={data}/stores",
            f"generate.ground_truth_path={data}/truth.json",
        ),
    )
    small = [
        f"run.output_dir={tmp_path}/out",
        "run.run_id=first",
        *[s for s in SMALL if not s.startswith("train.epochs")],
        "train.epochs=1",
        "train.num_processes=1",
        "train.leakage_check=false",
        "attribution.methods=[grad_x_input]",
        "report.default_method=grad_x_input",
        "attribution.removal_sessions=50",
    ]
    namespace = {
        "spark": spark,
        "my_events_df": spark.read.parquet(str(data / "raw")),
        "my_stores_df": spark.read.parquet(str(data / "stores")),
    }
    for block in blocks:
        exec(compile(block.replace(OVERRIDES, repr(small)), "README.md", "exec"), namespace)  # noqa: S102

    summary = namespace["sessionized"].summary
    events, tables = namespace["attributed"], namespace["reported"].summary
    assert summary["rows_read"] == summary["rows_accounted"] and summary["sessions"]["kept"] > 300
    event_table = pd.read_parquet(events.output)
    assert events.events == len(event_table) > 1000
    assert tables["rows"]["event_type"] > 0
    # The published table: each effect is the mean signed contribution of the type's events in the event
    # table, and the rows are in the effect's order, strongest driver first (README, How to read the answer).
    published = pd.read_csv(tmp_path / "out" / "report" / "event_type_attribution_no_funnel.csv")
    expected = event_table.groupby("event_type")["contribution"].mean()
    for _, row in published.iterrows():
        assert row.effect_log_odds == pytest.approx(expected[row.event_type], rel=1e-9, abs=1e-12)
    assert list(published.effect_log_odds) == sorted(published.effect_log_odds, reverse=True)


def test_the_config_reference_is_current_and_gives_every_key_a_meaning():
    """docs/config.md is what scripts/config_doc.py writes from attribution/config.py: a key added,
    renamed or left without a comment, or a job's option changed, fails here until the page is rewritten
    (python -m scripts.config_doc). Every key has a meaning and a row."""
    from scripts import config_doc

    rows = config_doc.keys()
    assert len(rows) > 100
    assert [key for _, key, meaning, _ in rows if not meaning] == []
    page = (ROOT / "docs" / "config.md").read_text()
    assert all(f"| `{key}` |" in page for _, key, _, _ in rows)
    assert all(f"| `{option.split(', ')[-1]}" in page or option in page for _, option, _ in config_doc.cli_options())
    assert page == config_doc.render(), "docs/config.md is stale: run python -m scripts.config_doc"


def test_the_columns_reference_is_current_and_defines_each_column_once_per_table():
    """docs/columns.md is what scripts/columns_doc.py writes from attribution/schema.py; every registered
    table has its columns' groups, and no column is defined in two groups of one table (one meaning)."""
    from attribution import schema
    from scripts import columns_doc

    assert (ROOT / "docs" / "columns.md").read_text() == columns_doc.render(), (
        "docs/columns.md is stale: run python -m scripts.columns_doc"
    )
    assert {k.stem for k in schema.TABLES.values()} <= set(schema.TABLE_COLUMN_GROUPS)
    for stem, groups in schema.TABLE_COLUMN_GROUPS.items():
        seen: dict[str, str] = {}
        for group in groups:
            for column in schema.COLUMN_GROUPS[group][1]:
                assert column not in seen, f"{stem}.{column} in {seen.get(column)} and {group}"
                seen[column] = group
        # each registered table's leading columns are defined
        kind = next((k for k in schema.TABLES.values() if k.stem == stem), None)
        for column in kind.first if kind else ():
            assert schema.column_meaning(stem, column)
    with pytest.raises(KeyError, match="store_attribution_no_funnel.event_count: defined in 0"):
        schema.column_meaning("store_attribution_no_funnel_by_method", "event_count")
    # every stated type names a defined column (a renamed column does not leave its type behind)
    defined = {c for _, columns in schema.COLUMN_GROUPS.values() for c in columns}
    assert set(schema.COLUMN_TYPES) <= defined, set(schema.COLUMN_TYPES) - defined
