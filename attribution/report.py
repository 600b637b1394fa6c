"""The report stage: effect tables from the event-level table, written as CSV/Delta/parquet, a 4-panel
picture, the printed key insights and ``index.html``, a one-page summary.

The headline everywhere is the **effect**: the mean signed contribution per event, in log-odds, with a
session-clustered 95% CI (``attribution.aggregate``). The seed's lift columns stay in the tables for
compatibility, after the effect columns. Before anything else the report states whether the model
predicts better than chance: if it doesn't, no driver can be read from the tables, and every table
carries ``model_status = at_chance``.

Only the aggregated tables (event types, position bins, stores, type x position) reach the driver.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from attribution import aggregate, ground_truth, sinks
from attribution.config import Config
from attribution.io import InputError, join, read_table, run_days

log = logging.getLogger(__name__)

# table name -> the seed's file name (CSV) / Delta and parquet directory name
TABLES = {
    "event_type": "event_type_attribution_no_funnel",
    "position": "position_attribution_no_funnel",
    "store": "store_attribution_no_funnel",
    "type_position": "event_type_position_attribution_no_funnel",
}
PICTURE = "attention_attribution_analysis.png"


def build_tables(
    events: DataFrame | None, conf: Config, status: str = "unknown", statistics: tuple | None = None
) -> dict[str, pa.Table]:
    """Every table, for every method in the event table, from one Spark job, as Arrow (they are small),
    each with the run_id and the status (``ok``, ``at_chance``, ``insufficient_data``, ``unknown``) first.
    ``statistics``: (lift statistics, removal statistics) already collected, from stored days."""
    r = conf.report
    if statistics is None:
        assert events is not None, "the tables come from the events or from stored statistics"
        long = aggregate.long_format(events)
        stats, removal = None, aggregate.removal_stats(events)
    else:
        long, (stats, removal) = None, statistics
    out = aggregate.tables(
        long,
        r.store_min_events,
        r.heatmap_positions,
        min_sessions=r.store_min_sessions,
        removal=removal,
        stats=stats,
    )
    run_id = conf.run.run_id or ""
    if status in NO_VERDICT:  # a model at chance, or too little data, supports no verdict
        out = {name: _no_verdict(t, NO_VERDICT[status]) for name, t in out.items()}
    return {
        name: t.add_column(0, "run_id", pa.array([run_id] * t.num_rows, pa.string())).add_column(
            1, "model_status", pa.array([status] * t.num_rows, pa.string())
        )
        for name, t in out.items()
    }


AT_CHANCE_VERDICT = "indistinguishable from noise (the model is at chance)"
INSUFFICIENT_VERDICT = "indistinguishable from noise (insufficient data)"
# status -> the verdict every effect gets under it
NO_VERDICT = {"at_chance": AT_CHANCE_VERDICT, "insufficient_data": INSUFFICIENT_VERDICT}


def _no_verdict(table: pa.Table, verdict: str = AT_CHANCE_VERDICT) -> pa.Table:
    """``table`` with every effect verdict replaced by ``verdict`` (where there is one)."""
    if "effect_verdict" not in table.column_names:
        return table
    column = table["effect_verdict"]
    replaced = pc.if_else(pc.is_null(column), column, pa.scalar(verdict, pa.string()))
    return table.set_column(table.column_names.index("effect_verdict"), "effect_verdict", replaced)


def frames(tables: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    """pandas views of the tables, for the picture and the insights."""
    return {name: t.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get) for name, t in tables.items()}


def _seed_columns(name: str, table: pa.Table) -> pa.Table:
    """The key and the effect columns first, then the seed's columns (its readers select them by name),
    then the rest."""
    effect = [*aggregate.EFFECT_COLUMNS, *aggregate.REMOVAL_COLUMNS]
    first = {
        "event_type": ["event_type", *effect, "events", "sessions", "not_converted", "converted", "attribution_lift"],
        "position": ["position_bin", *effect, "events", "sessions", "not_converted", "converted", "attribution_lift"],
        "store": [
            "rank",
            "store_id",
            "store_name",
            *aggregate.STORE_EFFECT_COLUMNS,
            *aggregate.REMOVAL_COLUMNS,
            "mean_attribution",
            "event_count",
            "sessions",
        ],
        "type_position": ["event_type", "position", "effect_log_odds", "mean_attribution", "events"],
    }[name]
    return table.select(first + [c for c in table.column_names if c not in first])


def model_status(conf: Config, shas: list[str]) -> dict:
    """Does the model that scored the event table predict better than chance? From its metrics.json: the
    test ROC-AUC with a 95% CI (Hanley-McNeil). ``at_chance`` when the CI includes 0.5 or the AUC is
    below ``report.min_test_auc``; ``unknown`` without metrics for the model that scored the table."""
    from attribution.io import InputError, read_bytes
    from attribution.metrics import roc_auc_ci
    from attribution.model import model_location

    location = join(model_location(conf.output(conf.train.model_path), conf.train.model_version), "metrics.json")
    try:
        metrics = json.loads(read_bytes(location))
    except (InputError, FileNotFoundError, ValueError):
        return {"status": "unknown", "reason": f"no model metrics at {location}"}
    if shas != [metrics.get("model_sha256")]:
        return {"status": "unknown", "reason": f"the event table was scored by another model than {location}"}
    test = metrics["test"]
    auc, n = float(test["roc_auc"]), int(test["sessions"])
    positives = int(round(float(test["positive_rate"]) * n)) if n else 0
    low, high = roc_auc_ci(auc, positives, n - positives)
    floor = conf.report.min_test_auc
    at_chance = not math.isfinite(auc) or not low > 0.5 or auc < floor
    out = {
        "status": "at_chance" if at_chance else "ok",
        "test_roc_auc": auc,
        "test_roc_auc_ci": [low, high],
        "test_sessions": n,
        "test_positives": positives,
        "min_test_auc": floor,
        "sessions": metrics.get("sessions", {}),
    }
    leak = metrics.get("leakage_check")
    if leak:
        out["leakage_check_roc_auc"] = leak["test"]["roc_auc"]
    return out


def data_status(status: dict, sessions: int, converted: int, minimum: int, day: str | None = None) -> dict:
    """``status`` turned ``insufficient_data`` when the event table holds fewer than ``minimum`` sessions,
    or no converted or no non-converted session: too little to read drivers from. A model at chance stays
    ``at_chance`` (the more basic reason), with the data's problem recorded beside it."""
    where = f" of {day}" if day else ""
    reason = None
    if sessions < minimum:
        reason = f"{sessions:,} sessions{where}, fewer than report.min_sessions ({minimum:,})"
    elif converted == 0 or converted == sessions:
        reason = f"{'none' if converted == 0 else 'all'} of the {sessions:,} sessions{where} converted"
    out = {**status, "data_sessions": sessions, "data_converted": converted}
    if reason and status["status"] == "at_chance":
        out["insufficient_data"] = reason
    elif reason:
        out.update({"status": "insufficient_data", "model_status": status["status"], "reason": reason})
    return out


def status_text(status: dict) -> str:
    """The model's status in one sentence, to lead the insights and the page."""
    if status["status"] == "insufficient_data":
        return f"INSUFFICIENT DATA ({status['reason']}): no driver can be read from these tables."
    if status["status"] == "unknown":
        return f"Model quality unknown ({status['reason']}): read the tables with care."
    low, high = status["test_roc_auc_ci"]
    auc = f"test ROC-AUC {status['test_roc_auc']:.3f}, 95% CI [{low:.3f}, {high:.3f}], {status['test_sessions']:,} sessions"
    if status["status"] == "at_chance":
        return (
            f"THE MODEL PREDICTS NO BETTER THAN CHANCE ({auc}; floor {status['min_test_auc']:.2f}): no driver can "
            "be read from these tables. Conversion may not depend on these events, or the model needs more data."
        )
    return f"The model predicts conversion better than chance ({auc})."


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
    formats: dict[str, tuple[str, Callable[[], sinks.Staged]]] = {
        "csv": (name, lambda: sinks.stage_csv(table, join(base, name))),
        "delta": (f"delta/{stem}", lambda: sinks.stage_delta(spark, table, join(base, f"delta/{stem}"), run_id)),
        "parquet": (f"parquet/{stem}", lambda: sinks.stage_parquet(table, join(base, f"parquet/{stem}"), run_id)),
    }
    steps: list[Step] = [
        lambda key=key, stage=stage: ([stage()], {key: join(base, key)})  # type: ignore[misc]
        for fmt, (key, stage) in formats.items()
        if fmt in conf.report.formats
    ]
    return stage_all(steps)


def write_tables(spark, tables: dict[str, pa.Table], conf: Config) -> dict[str, str]:
    """Stage every output, then publish them all (renames and Delta commits: milliseconds)."""
    staged, where = stage_tables(spark, tables, conf)
    for s in staged:
        s.publish()
    return where


# --------------------------------------------------------------------------------------------------
# The picture
# --------------------------------------------------------------------------------------------------


VERDICT_COLORS = {"drives conversion": "#2e7d32", "holds conversion back": "#c62828"}
NOISE_COLOR = "#9e9e9e"
EFFECT_UNIT = "mean signed contribution per event (log-odds)"


def _signed(table: pd.DataFrame) -> bool:
    return "effect_log_odds" in table and table["effect_log_odds"].notna().any()


def picture(tables: dict[str, pd.DataFrame], method: str, top: int = 15, status: dict | None = None) -> bytes:
    """The four panels as PNG bytes."""
    import io

    fig = figure(tables, method, top, status)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _bars(ax, labels, values, low, high, verdicts, horizontal: bool = True, center=None) -> None:
    """Bars coloured by verdict (grey: indistinguishable from noise or no CI), with 95% CI whiskers around
    ``center`` (default: the bars' values; the stores' whiskers are their raw effect's, around it)."""
    import numpy as np

    values = np.asarray(values, float)
    center = values if center is None else np.asarray(center, float)
    err = np.vstack([center - np.asarray(low, float), np.asarray(high, float) - center])
    err = np.clip(np.where(np.isfinite(err), err, 0.0), 0.0, None)
    colors = [VERDICT_COLORS.get(v, NOISE_COLOR) for v in verdicts]
    at = np.arange(len(values))
    if horizontal:
        ax.barh(at, values, color=colors)
        ax.errorbar(center, at, xerr=err, fmt="none" if center is values else "o", color="black", capsize=3)
        ax.set_yticks(at, labels)
        ax.axvline(0, color="black", linewidth=0.8)
    else:
        ax.bar(at, values, color=colors)
        ax.errorbar(at, center, yerr=err, fmt="none" if center is values else "o", color="black", capsize=3)
        ax.set_xticks(at, labels)
        ax.axhline(0, color="black", linewidth=0.8)


def figure(tables: dict[str, pd.DataFrame], method: str, top: int = 15, status: dict | None = None):
    """Four panels, each in the effect's unit with 95% CIs: event types, positions, stores (net of type and
    position, shrunk), and the type x position heatmap. A method without a signed contribution
    (attention) shows the seed's lift and mean attribution instead, and says so."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe off the main thread

    et = tables["event_type"][tables["event_type"]["method"] == method].copy()
    pos = tables["position"][tables["position"]["method"] == method].copy()
    st = tables["store"][tables["store"]["method"] == method].copy()
    tp = tables["type_position"][tables["type_position"]["method"] == method]
    signed = _signed(et)

    fig = Figure(figsize=(18, 13))
    axes = fig.subplots(2, 2)
    title = f"Which steps drive conversion? Effects by {method} (funnel events excluded)"
    warn = status.get("status") if status else None
    if warn == "at_chance":
        title = "MODEL AT CHANCE: no driver can be read here. " + title
    elif warn == "insufficient_data":
        title = "INSUFFICIENT DATA: no driver can be read here. " + title
    fig.suptitle(title, fontsize=15, color="#c62828" if warn in NO_VERDICT else "black")

    # 1. event types: the headline, strongest first (top of the panel)
    ax = axes[0, 0]
    if signed:
        top_et = et.dropna(subset=["effect_log_odds"]).head(top).iloc[::-1]
        _bars(
            ax,
            top_et["event_type"],
            top_et["effect_log_odds"],
            top_et["effect_ci_low"],
            top_et["effect_ci_high"],
            top_et["effect_verdict"],
        )
        ax.set_title(f"Top {len(top_et)} event types by effect on conversion (95% CI)")
        ax.set_xlabel(EFFECT_UNIT + "; green drives, red holds back, grey: noise")
    else:
        top_et = et.head(top).iloc[::-1]
        verdicts = ["drives conversion" if v > 0 else "holds conversion back" for v in top_et["attribution_lift"]]
        _bars(
            ax,
            top_et["event_type"],
            top_et["attribution_lift"],
            top_et["lift_ci_low"],
            top_et["lift_ci_high"],
            verdicts,
        )
        ax.set_title(f"Top {len(top_et)} event types by the seed's attribution lift (95% CI; {method} has no sign)")
        ax.set_xlabel("lift = mean attribution (converted) - (not converted)")

    # 2. positions: the effect by bin (1-based), and how much the events move the logit either way
    ax = axes[0, 1]
    if signed:
        _bars(
            ax,
            pos["position_bin"],
            pos["effect_log_odds"],
            pos["effect_ci_low"],
            pos["effect_ci_high"],
            pos["effect_verdict"],
            horizontal=False,
        )
        ax.plot(range(len(pos)), pos["mean_abs_effect_log_odds"], "o--", color="#1565c0", label="mean |effect|")
        ax.legend()
        ax.set_ylabel(EFFECT_UNIT)
        ax.set_title("Effect by position in session (95% CI)")
    else:
        _bars(
            ax,
            pos["position_bin"],
            pos["attribution_lift"],
            pos["lift_ci_low"],
            pos["lift_ci_high"],
            ["" for _ in range(len(pos))],
            horizontal=False,
        )
        ax.set_ylabel("attribution lift")
        ax.set_title("The seed's attribution lift by position in session (95% CI)")
    ax.set_xlabel("position (1-based)")

    # 3. stores: ranked by the shrunk effect beyond their events' type and position
    ax = axes[1, 0]
    top_st = st.sort_values("rank").head(min(top, 10)).iloc[::-1]
    if signed:
        _bars(
            ax,
            top_st["store_name"].astype(str),
            top_st["shrunk_net_effect_log_odds"],
            top_st["net_effect_ci_low"],
            top_st["net_effect_ci_high"],
            top_st["effect_verdict"],
            center=top_st["net_effect_log_odds"],
        )
        ax.set_title("Top stores by effect beyond their type and position (bars: shrunk; dots: raw with 95% CI)")
        ax.set_xlabel(EFFECT_UNIT)
    else:
        ax.barh(top_st["store_name"].astype(str), top_st["mean_attribution"], color=NOISE_COLOR)
        ax.set_title(f"Top stores by mean attribution (the seed's ranking; {method} has no sign)")
        ax.set_xlabel("mean attribution per event")

    # 4. heatmap event type x position
    ax = axes[1, 1]
    value = "effect_log_odds" if signed else "mean_attribution"
    grid = tp.pivot_table(index="event_type", columns="position", values=value, fill_value=0.0)
    bound = float(abs(grid.to_numpy()).max()) if grid.size else 1.0
    image = ax.imshow(
        grid.to_numpy(),
        aspect="auto",
        cmap="RdBu" if signed else "viridis",
        vmin=-bound if signed else None,
        vmax=bound if signed else None,
    )
    ax.set_yticks(range(len(grid.index)), grid.index)
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
    ax.set_title(f"{'Effect' if signed else 'Mean attribution'}: event type x position")
    ax.set_xlabel("position (1-based)")
    fig.colorbar(image, ax=ax, label=EFFECT_UNIT if signed else "mean attribution")

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


# --------------------------------------------------------------------------------------------------
# Key insights
# --------------------------------------------------------------------------------------------------


def _lift_text(row) -> str:
    if pd.isna(row["lift_se"]):
        return f"{row['attribution_lift']:+.4f} (no CI: one side has too few sessions)"
    ci = f"[{row['lift_ci_low']:+.4f}, {row['lift_ci_high']:+.4f}]"
    noise = "" if row["significant"] else "  (CI crosses 0: not distinguishable from noise)"
    return f"{row['attribution_lift']:+.4f} 95% CI {ci}{noise}"


def _effect_text(row, prefix: str = "effect") -> str:
    value = row[f"{prefix}_log_odds"]
    low, high = row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"]
    if pd.isna(low) or pd.isna(high):
        return f"{value:+.4f} (no CI: too few sessions)"
    return f"{value:+.4f} 95% CI [{low:+.4f}, {high:+.4f}]"


def removal_pp(row) -> str | None:
    """``+10.57 pp [+9.41, +11.73]``: a row's removal effect and its CI; None when it has none."""
    value = row.get("removal_effect_pp")
    if value is None or pd.isna(value):
        return None
    low, high = row.get("removal_ci_low_pp"), row.get("removal_ci_high_pp")
    ci = "" if pd.isna(low) or pd.isna(high) else f" [{low:+.2f}, {high:+.2f}]"
    return f"{value:+.2f} pp{ci}"


def removal_text(row) -> str:
    """``; removal effect +10.57 pp [+9.41, +11.73]`` (empty when the row has none)."""
    text = removal_pp(row)
    return f"; removal effect {text}" if text else ""


REMOVAL_MEANING = (
    "Removal effect = how much higher the model's P(convert) is with the key's events than with them removed, "
    "in percentage points (95% CI), over the sessions of the removal sample that have the key."
)


def _support(row, events: str = "events") -> str:
    return f"{int(row[events]):,} events, {int(row['sessions']):,} sessions"


def ranked_drivers(et: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(drivers strongest first, detractors strongest first, the rest) of one method's event types."""
    drivers = et[et["effect_verdict"] == "drives conversion"].sort_values("effect_log_odds", ascending=False)
    detractors = et[et["effect_verdict"] == "holds conversion back"].sort_values("effect_log_odds")
    rest = et[~et.index.isin(drivers.index) & ~et.index.isin(detractors.index)]
    return drivers, detractors, rest


def key_insights(tables: dict[str, pd.DataFrame], method: str, n: int = 5, status: dict | None = None) -> str:
    et = tables["event_type"][tables["event_type"]["method"] == method]
    pos = tables["position"][tables["position"]["method"] == method]
    st = tables["store"][tables["store"]["method"] == method]
    lines = [f"KEY INSIGHTS ({method})"]
    if status:
        lines.append(status_text(status))
    if not _signed(et):
        lines.append(
            f"{method} has no signed contribution, so no effect: event types by the seed's attribution lift "
            "(it compares normalized shares and is confounded by session length; prefer a signed method):"
        )
        for _, r in et.head(n).iterrows():
            lines.append(f"  {r['event_type']:<40} {_lift_text(r)}")
        lines.append("Lift by position in session:")
        for _, r in pos.iterrows():
            lines.append(f"  {r['position_bin']:<8} {_lift_text(r)}")
        lines.append(f"Top {n} stores by mean attribution (the seed's ranking):")
        for _, r in st.sort_values("rank").head(n).iterrows():
            lines.append(
                f"  {int(r['rank']):>2}. {str(r['store_name']):<28} {r['mean_attribution']:.4f} ({_support(r, 'event_count')})"
            )
        return "\n".join(lines)
    lines.append(f"Effect = {EFFECT_UNIT}; + pushes towards conversion, - away; 95% CIs are session-clustered.")
    if "removal_effect_pp" in et.columns and et["removal_effect_pp"].notna().any():
        lines.append(REMOVAL_MEANING)
    drivers, detractors, rest = ranked_drivers(et)
    if drivers.empty and detractors.empty:
        lines.append("No driver stands out: every event type's effect is indistinguishable from noise.")
    if status and status.get("status") == "at_chance":
        lines.append("(Effects below are what this model computes; with the model at chance they mean nothing.)")
    elif status and status.get("status") == "insufficient_data":
        lines.append("(Effects below are computed on too little data to mean anything.)")
    if not drivers.empty:
        lines.append(f"Drivers (CI above 0), strongest first ({min(n, len(drivers))} of {len(drivers)}):")
        for _, r in drivers.head(n).iterrows():
            lines.append(f"  {r['event_type']:<40} {_effect_text(r)} ({_support(r)}{removal_text(r)})")
    if not detractors.empty:
        lines.append(f"Detractors (CI below 0), strongest first ({min(n, len(detractors))} of {len(detractors)}):")
        for _, r in detractors.head(n).iterrows():
            lines.append(f"  {r['event_type']:<40} {_effect_text(r)} ({_support(r)}{removal_text(r)})")
    if not rest.empty:
        lines.append("Indistinguishable from noise: " + ", ".join(map(str, rest["event_type"])))
    lines.append("Effect by position in session (mean |effect|: how much the events there move the prediction):")
    for _, r in pos.iterrows():
        lines.append(
            f"  {r['position_bin']:<8} {_effect_text(r)}; mean |effect| {r['mean_abs_effect_log_odds']:.4f}"
            f"{removal_text(r)}"
        )
    ranked = st.sort_values("rank")
    lines.append(
        f"Top {min(n, len(ranked))} stores by effect beyond their events' type and position (shrunk towards 0 by "
        "support):"
    )
    if ranked.empty:
        lines.append("  (no store reaches the minimum support, or the events carry no store)")
    for _, r in ranked.head(n).iterrows():
        verdict = r["effect_verdict"]
        noise = "" if pd.isna(verdict) or verdict in VERDICT_COLORS else f"; {verdict}"
        lines.append(
            f"  {int(r['rank']):>2}. {str(r['store_name']):<28} {r['shrunk_net_effect_log_odds']:+.4f} "
            f"(raw {_effect_text(r, 'net_effect')}; {_support(r, 'event_count')}{noise}{removal_text(r)})"
        )
    lines.append(
        "The tables keep the seed's attribution_lift for compatibility; it compares normalized shares between "
        "converted and non-converted sessions, is confounded by session length, and does not rank them."
    )
    return "\n".join(lines)


def run(spark, conf: Config) -> dict:
    """Read the event-level table, build and write every table, the picture and index.html; return a
    summary."""
    from attribution import page

    started = time.time()
    events = run_days(
        read_table(spark, conf.output(conf.attribution.output_path), "parquet", {}, "attribution"), conf.run
    )
    shas = [r[0] for r in events.select("model_sha256").distinct().limit(2).collect()]
    if not shas:
        day = f" of {conf.run.date}" if conf.run.date else ""
        raise InputError(
            f"the event table {conf.output(conf.attribution.output_path)} has no rows{day}: nothing to report "
            "(run the attribute stage for it first)"
        )
    statistics = None
    if conf.run.date is not None:  # day mode: keep the day's statistics; the tables cover the window
        write_day_statistics(spark, conf, events)
        days = window_of(conf)
        statistics, (sessions, converted) = statistics_of_days(spark, conf, days)
        if len(days) > 1:
            import dataclasses

            label = f"{conf.run.run_id}-last{len(days)}d"
            conf = dataclasses.replace(conf, run=dataclasses.replace(conf.run, run_id=label))
    else:
        sessions, converted = _sessions_of(events)
    span = (
        conf.run.date
        if not conf.report.window_days or conf.report.window_days == 1
        else (f"the {conf.report.window_days} days to {conf.run.date}")
    )
    status = data_status(model_status(conf, shas), sessions, converted, conf.report.min_sessions, span)
    tables = build_tables(events, conf, status["status"], statistics)
    base = conf.output(conf.report.output_path)
    method = conf.report.default_method
    views = frames(tables)
    truth, recovered = ground_truth_of(conf), None
    if truth is not None:
        recovered = ground_truth.recovery(views, truth, conf.run.run_id or "")
    faithful = faithfulness_of(conf, shas)
    insights = key_insights(views, method, status=status)
    if recovered is not None and recovered.num_rows:
        insights += "\n" + ground_truth_text(recovered.to_pandas(), method)
    elif recovered is not None:
        insights += (
            f"\n{conf.generate.ground_truth_path} does not describe these events (no event types in common): "
            "no planted-driver comparison"
        )
    if faithful:
        insights += "\n" + faithful_text(faithful)

    planted = None
    if recovered is not None and recovered.num_rows:
        checks = ground_truth.summary(recovered, method)
        planted = planted_sentence(checks, recovered.to_pandas(), method)

    drawn: Future[bytes]  # the picture, drawn on a thread while the tables are staged (below)

    def html() -> bytes:
        return page.render(views, method, status, faithful, drawn.result(), conf.run.run_id or "", planted=planted)

    extra = [
        lambda: ([sinks.stage_bytes(join(base, PICTURE), drawn.result())], {PICTURE: join(base, PICTURE)}),
        lambda: ([sinks.stage_bytes(join(base, page.PAGE), html())], {page.PAGE: join(base, page.PAGE)}),
    ]
    if recovered is not None and recovered.num_rows:
        extra.append(lambda: stage_table(spark, recovered, GROUND_TRUTH_TABLE, conf))
    # Everything is staged first (the picture drawn on a thread meanwhile), then published at once, so
    # a run that fails or is killed before the end leaves the previous run's outputs as they were.
    with ThreadPoolExecutor(max_workers=1) as pool:
        drawn = pool.submit(picture, views, method, conf.report.top_event_types, status)
        staged, outputs = stage_tables(spark, tables, conf, extra=tuple(extra))
    for s in staged:
        s.publish()
    result = {
        "run_id": conf.run.run_id,
        "model_status": status,
        "rows": {name: int(t.num_rows) for name, t in tables.items()},
        "outputs": outputs,
        "insights": insights,
        "seconds": round(time.time() - started, 2),
    }
    if recovered is not None and recovered.num_rows:
        result["ground_truth"] = checks
    if faithful:
        result["most_faithful"] = faithful
    return result


GROUND_TRUTH_TABLE = "ground_truth_recovery"


def _sessions_of(events) -> tuple[int, int]:
    """(sessions, converted sessions) of an event table: its rows at position 0, one per session."""
    from pyspark.sql import functions as F

    n, converted = events.where(F.col("event_position") == 0).agg(F.count(F.lit(1)), F.sum("label")).first()
    return int(n), int(converted or 0)


def write_day_statistics(spark, conf: Config, events) -> None:
    """Store the day's additive statistics, replacing the day's partition of each, under report.stats_path:
    ``key_sums`` (per key, the sums over sessions: a few rows per key), ``store_rows`` (per store, session
    and type x position cell: a store's net effect is measured against the window's cell means, so it is
    resolved when the window is read), ``cells``, ``removal_rows`` (the sampled sessions' removal effects)
    and ``sessions`` (per label). A window's tables are computed from them (:func:`statistics_of_days`)."""
    day_text = conf.run.date
    assert day_text is not None, "day statistics are written in day mode"
    from pyspark.sql import functions as F

    from attribution.sessionize import _partitioned_write, day_partition
    from attribution.sinks import remove_tree

    long = aggregate.long_format(events)
    r = conf.report
    rows = aggregate.session_rows(long, max_position=r.heatmap_positions)
    cells = aggregate.cell_sums(long)
    parts = {
        "key_sums": aggregate.key_sums(rows, cells),
        "store_rows": rows.where(F.col("kind") == "store"),
        "cells": cells,
        "removal_rows": aggregate.removal_rows(events),
    }
    # the day of a session is the day being reported (its partition), also for the heatmap's rows
    day = F.lit(conf.run.date).cast("date")
    sessions_today = events.where(F.col("event_position") == 0).select("label")
    counts = sessions_today.groupBy("label").count().withColumn("session_date", day)
    parts["sessions"] = counts
    base = conf.output(r.stats_path)
    for name, df in parts.items():
        location = join(base, name)
        remove_tree(day_partition(location, day_text))
        if df is not None:
            _partitioned_write(df.withColumn("session_date", day).write, day_text).parquet(location)


def window_of(conf: Config) -> list[str]:
    """The days a day-mode report covers: report.window_days days up to run.date (the day alone by
    default), oldest first."""
    import datetime as dt

    assert conf.run.date is not None, "a window is of day mode"
    last = dt.date.fromisoformat(conf.run.date)
    n = conf.report.window_days or 1
    return [(last - dt.timedelta(days=n - 1 - i)).isoformat() for i in range(n)]


def statistics_of_days(spark, conf: Config, days: list[str]) -> tuple[tuple, tuple[int, int]]:
    """((lift statistics, removal statistics), (sessions, converted)) of ``days`` from the stored daily
    statistics; a day without them is a one-line error naming it."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    base = conf.output(conf.report.stats_path)
    first, last = F.lit(days[0]).cast("date"), F.lit(days[-1]).cast("date")

    def read(name: str):
        df = spark.read.parquet(join(base, name))
        return df.where(F.col("session_date").between(first, last))

    try:
        counts = (
            read("sessions")
            .groupBy("session_date")
            .agg(F.sum("count").alias("n"), F.sum(F.when(F.col("label") == 1, F.col("count"))).alias("converted"))
            .collect()
        )
    except AnalysisException as exc:  # no statistics at all under stats_path
        raise InputError(f"no daily statistics under {base}: run the report with --date for each day first") from exc
    have = {str(r["session_date"]) for r in counts}
    missing = [d for d in days if d not in have]
    if missing:
        raise InputError(
            f"report.window_days={len(days)}: no statistics for {', '.join(missing)} under {base}; run the report "
            "with --date for those days first"
        )
    sessions = sum(int(r["n"]) for r in counts)
    converted = sum(int(r["converted"] or 0) for r in counts)
    stats = aggregate.window_statistics(read("key_sums"), read("store_rows"), read("cells")).toArrow()
    try:
        removal = aggregate.removal_from(read("removal_rows"))
    except AnalysisException:  # no day had removal effects (attribution.removal_sessions 0)
        removal = None
    return (stats, removal), (sessions, converted)


def ground_truth_of(conf: Config) -> dict | None:
    """The planted drivers, when the input is the generated dataset and its ground truth is there."""
    if conf.input.path != conf.generate.output_path:
        return None
    return ground_truth.load(conf.generate.ground_truth_path)


def faithfulness_of(conf: Config, shas: list[str]) -> dict | None:
    """The faithfulness stage's verdict, when it evaluated this event table (same model) in this run."""
    import json

    from attribution.io import InputError, read_bytes

    try:
        summary = json.loads(read_bytes(conf.output(conf.run.day_file(conf.faithfulness.summary_path))))
    except (InputError, FileNotFoundError, ValueError):
        return None
    if summary.get("run_id") != conf.run.run_id or shas != [summary.get("model_sha256")]:
        return None
    return summary.get("most_faithful") or None


def ground_truth_text(recovered: pd.DataFrame, method: str) -> str:
    lines = ["Planted-driver recovery (synthetic data: the generator's known effects):"]
    for _, r in recovered.iterrows():
        if r["check"] == "store_precision_at_5" or r["method"] == method or r["check"].startswith("event_type_e"):
            mark = "ok" if r["agrees"] else "MISSES"
            lines.append(f"  {r['method']:<22} {r['check']:<34} {r['value']:+.3f}  ({r['expected']}: {mark})")
    return "\n".join(lines)


def planted_sentence(summary: dict, recovered: pd.DataFrame, method: str) -> str:
    """One sentence on how well the published tables of ``method`` recover the planted drivers."""
    mine = recovered[recovered["method"] == method].set_index("check")["value"]
    parts = [
        f"the event-type table's order has rank correlation {summary['default_method_rank_correlation']:+.2f} "
        "with the planted effects"
    ]
    if "store_precision_at_5" in mine:
        parts.append(f"{int(round(5 * mine['store_precision_at_5']))} of its top 5 stores are planted top-5 stores")
    if "position_direction_spearman" in mine:
        right = mine["position_direction_spearman"] < 0
        parts.append("early positions matter most, as planted" if right else "positions do not show the planted decay")
    return "; ".join(parts) + " (ground_truth_recovery.csv)."


def faithful_text(verdict: dict) -> str:
    noise = "" if verdict["beats_random"] else " (but not distinguishable from a random order)"
    return (
        f"Most faithful method on this data: {verdict['by_comprehensiveness']} by comprehensiveness{noise}, "
        f"{verdict['by_sufficiency']} by sufficiency (see attribution_faithfulness.csv)."
    )
