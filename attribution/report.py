"""The report stage: lift tables from the event-level table, written as CSV/Delta/parquet, the seed's
4-panel picture and the printed key insights.

Only the aggregated tables (event types, position bins, stores, type x position) reach the driver.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from attribution import aggregate, ground_truth, sinks
from attribution.config import Config
from attribution.io import join, read_table

log = logging.getLogger(__name__)

# table name -> the seed's file name (CSV) / Delta and parquet directory name
TABLES = {
    "event_type": "event_type_attribution_no_funnel",
    "position": "position_attribution_no_funnel",
    "store": "store_attribution_no_funnel",
    "type_position": "event_type_position_attribution_no_funnel",
}
PICTURE = "attention_attribution_analysis.png"


def build_tables(events: DataFrame, conf: Config) -> dict[str, pa.Table]:
    """Every table, for every method in the event table, from one Spark job, as Arrow (they are small),
    each with the run_id first."""
    out = aggregate.tables(aggregate.long_format(events), conf.report.store_min_events, conf.report.heatmap_positions)
    run_id = conf.run.run_id or ""
    return {name: t.add_column(0, "run_id", pa.array([run_id] * t.num_rows, pa.string())) for name, t in out.items()}


def frames(tables: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    """pandas views of the tables, for the picture and the insights."""
    return {name: t.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get) for name, t in tables.items()}


def _seed_columns(name: str, table: pa.Table) -> pa.Table:
    """The seed's columns first (its readers select them by name), the rest after."""
    first = {
        "event_type": ["event_type", "not_converted", "converted", "attribution_lift"],
        "position": ["position_bin", "not_converted", "converted", "attribution_lift"],
        "store": ["rank", "store_id", "store_name", "mean_attribution", "event_count", "sessions"],
        "type_position": ["event_type", "position", "mean_attribution", "events"],
    }[name]
    return table.select(first + [c for c in table.column_names if c not in first])


# A staging step: stages some outputs, nothing visible yet; returns them and where each will appear.
Step = Callable[[], tuple[list[sinks.Staged], dict[str, str]]]


def stage_all(steps: Iterable[Step]) -> tuple[list[sinks.Staged], dict[str, str]]:
    """Run every step; if one fails, what the earlier ones staged is removed and the error raised."""
    staged: list[sinks.Staged] = []
    where: dict[str, str] = {}
    try:
        for step in steps:
            more, places = step()
            staged += more
            where.update(places)
    except BaseException:
        for s in staged:
            s.abort()
        raise
    return staged, where


def stage_tables(
    spark, tables: dict[str, pa.Table], conf: Config, extra: tuple[Step, ...] = ()
) -> tuple[list[sinks.Staged], dict[str, str]]:
    """Every output of ``tables`` staged, nothing visible yet: CSV (the default method under the seed's
    names, and every method in ``*_by_method.csv``), Delta, parquet, then each of ``extra``."""
    base = conf.output(conf.report.output_path)

    def lift_table(name: str, table: pa.Table) -> tuple[list[sinks.Staged], dict[str, str]]:
        stem = TABLES[name]
        ordered = _seed_columns(name, table)
        steps: list[Step] = []
        if "csv" in conf.report.formats:
            default = ordered.filter(pc.equal(ordered["method"], conf.report.default_method))
            location = join(base, f"{stem}.csv")
            steps.append(lambda: ([sinks.stage_csv(default, location)], {f"{stem}.csv": location}))
        by_method = f"{stem}_by_method.csv"
        steps.append(lambda: stage_table(spark, ordered, stem, conf, csv_name=by_method))
        staged, where = stage_all(steps)
        return staged, {k: v for k, v in where.items() if k != by_method}

    steps = [lambda name=name, table=table: lift_table(name, table) for name, table in tables.items()]
    return stage_all([*steps, *extra])


def stage_table(
    spark, table: pa.Table, stem: str, conf: Config, csv_name: str | None = None
) -> tuple[list[sinks.Staged], dict[str, str]]:
    """One table staged in each of ``report.formats`` under the report directory: ``csv_name`` (default
    ``{stem}.csv``), ``delta/{stem}`` and ``parquet/{stem}`` (both partitioned by run_id)."""
    base = conf.output(conf.report.output_path)
    run_id = conf.run.run_id or ""
    name = csv_name or f"{stem}.csv"
    formats = {
        "csv": (name, lambda: sinks.stage_csv(table, join(base, name))),
        "delta": (f"delta/{stem}", lambda: sinks.stage_delta(spark, table, join(base, f"delta/{stem}"), run_id)),
        "parquet": (f"parquet/{stem}", lambda: sinks.stage_parquet(table, join(base, f"parquet/{stem}"), run_id)),
    }
    return stage_all(
        [
            lambda key=key, stage=stage: ([stage()], {key: join(base, key)})
            for fmt, (key, stage) in formats.items()
            if fmt in conf.report.formats
        ]
    )


def write_tables(spark, tables: dict[str, pa.Table], conf: Config) -> dict[str, str]:
    """Stage every output, then publish them all (renames and Delta commits: milliseconds)."""
    staged, where = stage_tables(spark, tables, conf)
    for s in staged:
        s.publish()
    return where


# --------------------------------------------------------------------------------------------------
# The picture
# --------------------------------------------------------------------------------------------------


def picture(tables: dict[str, pd.DataFrame], method: str, top: int = 15) -> bytes:
    """The seed's four panels as PNG bytes."""
    import io

    fig = figure(tables, method, top)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _converted_vs_not(ax, table: pd.DataFrame, label: str, horizontal: bool) -> None:
    """Side-by-side bars of the mean attribution in non-converted and converted sessions, per ``label``."""
    import numpy as np

    at = np.arange(len(table))
    draw, ticks = (ax.barh, ax.set_yticks) if horizontal else (ax.bar, ax.set_xticks)
    draw(at - 0.2, table["not_converted"], 0.4, label="not converted", color="#90a4ae")
    draw(at + 0.2, table["converted"], 0.4, label="converted", color="#1565c0")
    ticks(at, table[label])
    ax.legend()


def figure(tables: dict[str, pd.DataFrame], method: str, top: int = 15):
    """The seed's four panels: lift with CI, position, converted vs not, type x position heatmap."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe off the main thread

    et = tables["event_type"][tables["event_type"]["method"] == method].copy()
    pos = tables["position"][tables["position"]["method"] == method].copy()
    tp = tables["type_position"][tables["type_position"]["method"] == method]

    fig = Figure(figsize=(18, 13))
    axes = fig.subplots(2, 2)
    fig.suptitle(f"Which steps drive conversion? Attribution by {method} (funnel events excluded)", fontsize=15)

    # 1. top event types by lift, CI whiskers
    ax = axes[0, 0]
    top_et = et.reindex(et["attribution_lift"].abs().sort_values(ascending=False).index).head(top)
    top_et = top_et.sort_values("attribution_lift")
    colors = ["#2e7d32" if v > 0 else "#c62828" for v in top_et["attribution_lift"]]
    err = (1.959963984540054 * top_et["lift_se"]).fillna(0).to_numpy()
    ax.barh(top_et["event_type"], top_et["attribution_lift"], xerr=err, color=colors, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_title(f"Top {len(top_et)} event types by attribution lift (95% CI)")
    ax.set_xlabel("lift = mean attribution (converted) - (not converted)")

    # 2. attribution by position, converted vs not
    ax = axes[0, 1]
    _converted_vs_not(ax, pos, "position_bin", horizontal=False)
    ax.set_title("Mean attribution by position in session")
    ax.set_xlabel("position (1-based)")
    ax.set_ylabel("mean attribution per event")

    # 3. converted vs not per event type
    ax = axes[1, 0]
    _converted_vs_not(ax, et.sort_values("converted", ascending=True).tail(top), "event_type", horizontal=True)
    ax.set_title("Mean attribution per event type, converted vs not")
    ax.set_xlabel("mean attribution per event")

    # 4. heatmap event type x position
    ax = axes[1, 1]
    grid = tp.pivot_table(index="event_type", columns="position", values="mean_attribution", fill_value=0.0)
    image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(grid.index)), grid.index)
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
    ax.set_title("Mean attribution: event type x position")
    ax.set_xlabel("position (1-based)")
    fig.colorbar(image, ax=ax, label="mean attribution")

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


# --------------------------------------------------------------------------------------------------
# Key insights, as the seed's script prints them
# --------------------------------------------------------------------------------------------------


def _lift_text(row) -> str:
    if pd.isna(row["lift_se"]):
        return f"{row['attribution_lift']:+.4f} (no CI: one side has too few sessions)"
    ci = f"[{row['lift_ci_low']:+.4f}, {row['lift_ci_high']:+.4f}]"
    noise = "" if row["significant"] else "  (CI crosses 0: not distinguishable from noise)"
    return f"{row['attribution_lift']:+.4f} 95% CI {ci}{noise}"


def key_insights(tables: dict[str, pd.DataFrame], method: str, n: int = 5) -> str:
    et = tables["event_type"][tables["event_type"]["method"] == method]
    pos = tables["position"][tables["position"]["method"] == method]
    st = tables["store"][tables["store"]["method"] == method]
    lines = [
        f"KEY INSIGHTS ({method})",
        f"Top {n} event types by attribution lift (the seed's measure; length-adjusted = attribution x session "
        "length, 1.0 = an average share, free of the session-length confound):",
    ]
    for _, r in et.sort_values("attribution_lift", ascending=False).head(n).iterrows():
        lines.append(f"  {r['event_type']:<40} {_lift_text(r)}; length-adjusted lift {r['length_adjusted_lift']:+.3f}")
    lines.append("Lift by position in session:")
    for _, r in pos.iterrows():
        lines.append(f"  {r['position_bin']:<8} {_lift_text(r)}")
    lines.append(f"Top {n} stores by mean attribution (at least the minimum support):")
    for _, r in st.sort_values("rank").head(n).iterrows():
        lines.append(
            f"  {int(r['rank']):>2}. {str(r['store_name']):<28} {r['mean_attribution']:.4f} "
            f"({int(r['event_count']):,} events, {int(r['sessions']):,} sessions)"
        )
    return "\n".join(lines)


def run(spark, conf: Config) -> dict:
    """Read the event-level table, build and write every table, the picture; return a summary."""
    started = time.time()
    events = read_table(spark, conf.output(conf.attribution.output_path), "parquet", {}, "attribution")
    tables = build_tables(events, conf)
    base = conf.output(conf.report.output_path)
    method = conf.report.default_method
    views = frames(tables)
    truth, recovered = ground_truth_of(conf), None
    if truth is not None:
        stores = ground_truth.store_scores(aggregate.long_format(events))
        recovered = ground_truth.recovery(views, stores, truth, conf.run.run_id or "")
    faithful = faithfulness_of(conf, events)
    extra = [lambda: ([sinks.stage_bytes(join(base, PICTURE), drawn.result())], {PICTURE: join(base, PICTURE)})]
    if recovered is not None and recovered.num_rows:
        extra.append(lambda: stage_table(spark, recovered, GROUND_TRUTH_TABLE, conf))
    # Everything is staged first (the picture drawn on a thread meanwhile), then published at once, so
    # a run that fails or is killed before the end leaves the previous run's outputs as they were.
    with ThreadPoolExecutor(max_workers=1) as pool:
        drawn = pool.submit(picture, views, method, conf.report.top_event_types)
        staged, outputs = stage_tables(spark, tables, conf, extra=tuple(extra))
    for s in staged:
        s.publish()
    result = {
        "run_id": conf.run.run_id,
        "rows": {name: int(t.num_rows) for name, t in tables.items()},
        "outputs": outputs,
        "insights": key_insights(views, method),
        "seconds": round(time.time() - started, 2),
    }
    if recovered is not None and recovered.num_rows:
        result["ground_truth"] = ground_truth.summary(recovered, method)
        result["insights"] += "\n" + ground_truth_text(recovered.to_pandas(), method)
    elif recovered is not None:
        result["insights"] += (
            f"\n{conf.generate.ground_truth_path} does not describe these events (no event types in common): "
            "no planted-driver comparison"
        )
    if faithful:
        result["most_faithful"] = faithful
        result["insights"] += "\n" + faithful_text(faithful)
    return result


GROUND_TRUTH_TABLE = "ground_truth_recovery"


def ground_truth_of(conf: Config) -> dict | None:
    """The planted drivers, when the input is the generated dataset and its ground truth is there."""
    if conf.input.path != conf.generate.output_path:
        return None
    return ground_truth.load(conf.generate.ground_truth_path)


def faithfulness_of(conf: Config, events) -> dict | None:
    """The faithfulness stage's verdict, when it evaluated this event table (same model) in this run."""
    import json

    from attribution.io import InputError, read_bytes

    try:
        summary = json.loads(read_bytes(conf.output(conf.faithfulness.summary_path)))
    except (InputError, FileNotFoundError, ValueError):
        return None
    shas = [r[0] for r in events.select("model_sha256").distinct().limit(2).collect()]
    if summary.get("run_id") != conf.run.run_id or shas != [summary.get("model_sha256")]:
        return None
    return summary.get("most_faithful") or None


def ground_truth_text(recovered: pd.DataFrame, method: str) -> str:
    lines = ["Planted-driver recovery (synthetic data: the generator's known effects):"]
    for _, r in recovered.iterrows():
        if r["check"] == "store_precision_at_5" or r["method"] == method or r["check"].startswith("event_type_c"):
            mark = "ok" if r["agrees"] else "MISSES"
            lines.append(f"  {r['method']:<22} {r['check']:<34} {r['value']:+.3f}  ({r['expected']}: {mark})")
    return "\n".join(lines)


def faithful_text(verdict: dict) -> str:
    noise = "" if verdict["beats_random"] else " (but not distinguishable from a random order)"
    return (
        f"Most faithful method on this data: {verdict['by_comprehensiveness']} by comprehensiveness{noise}, "
        f"{verdict['by_sufficiency']} by sufficiency (see attribution_faithfulness.csv)."
    )
