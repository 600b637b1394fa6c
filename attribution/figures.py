"""The pictures: the report's four panels, the faithfulness panels and one explained session, as PNG
bytes (matplotlib's object API, no global state, so figures can be drawn from threads)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from attribution.report import DIRECTIONS, EFFECT_UNIT, NO_VERDICT, PP_UNIT, is_signed, pp_scale

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# bar colours by verdict; grey for the rest (indistinguishable from noise, or no CI)
VERDICT_COLORS = dict(zip(DIRECTIONS, ("#2e7d32", "#c62828"), strict=True))


def faithfulness_picture(views: dict, methods: list[str]) -> bytes:
    """Three panels: AOPC per method beside random (95% CI), comprehensiveness by k, method agreement."""

    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure

    faith, agree = views["faithfulness"], views["agreement"]
    fig = Figure(figsize=(18, 5.5))
    axes = fig.subplots(1, 3)
    fig.suptitle("Is the attribution right? Faithfulness against random orders, and agreement between methods")

    ax = axes[0]
    at = np.arange(len(methods))
    for offset, metric, color in ((-0.2, "aopc_comprehensiveness", "#1565c0"), (0.2, "aopc_sufficiency", "#ef6c00")):
        rows = faith[faith["metric"] == metric].set_index("method").reindex(methods)
        err = (rows["ci_high"] - rows["value"]).to_numpy()
        ax.bar(at + offset, rows["value"], 0.38, yerr=err, capsize=3, color=color, label=metric.replace("_", " "))
        ax.scatter(at + offset, rows["random_baseline"], marker="_", s=600, color="black", zorder=3)
    ax.scatter([], [], marker="_", s=200, color="black", label="random order")
    ax.set_xticks(at, methods, rotation=15)
    ax.set_ylabel("mean |change in P(convert)|")
    ax.set_title("AOPC: comprehensiveness (higher better), sufficiency (lower better)")
    top = faith[faith["metric"].str.startswith("aopc")]["ci_high"].max()
    ax.set_ylim(0, 1.4 * top if top > 0 else 1)  # room for the legend above the bars
    ax.legend(fontsize=8, ncol=3, loc="upper left")

    ax = axes[1]
    comp = faith[faith["metric"] == "comprehensiveness"]
    ks = list(dict.fromkeys(comp["k"]))
    # k counts events (1, 3, 5) or a share of the session (10%, 20%, 50%): two units, so two lines per
    # method, never one line joining a count to a share
    units = [[k for k in ks if not str(k).endswith("%")], [k for k in ks if str(k).endswith("%")]]
    x_of = {k: i for i, k in enumerate(ks)}
    rand = comp.groupby("k", sort=False)["random_baseline"].mean()
    for m in methods:
        rows = comp[comp["method"] == m].set_index("k")
        shade: str | None = None  # the method's color, the same on both of its lines
        for unit in (u for u in units if u):
            (line,) = ax.plot(
                [x_of[k] for k in unit],
                rows["value"].reindex(unit),
                marker="o",
                color=shade,
                label=None if shade else m,
            )
            shade = to_hex(line.get_color())
    for i, unit in enumerate(u for u in units if u):
        ax.plot(
            [x_of[k] for k in unit],
            rand.reindex(unit),
            linestyle="--",
            color="black",
            label="random order" if i == 0 else None,
        )
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_xlabel("k: events removed (1, 3, 5), or a share of the session (%)")
    ax.set_ylabel("comprehensiveness: |P(x) - P(x without top k)|")
    ax.set_title("Removing each method's top-k events")
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[2]
    grid = np.eye(len(methods))
    for _, r in agree.iterrows():
        i, j = methods.index(r["method"]), methods.index(r["other_method"])
        grid[i, j] = grid[j, i] = r["median"]
    image = ax.imshow(grid, vmin=-1, vmax=1, cmap="RdBu")
    ax.set_xticks(range(len(methods)), methods, rotation=15)
    ax.set_yticks(range(len(methods)), methods)
    for i in range(len(methods)):
        for j in range(len(methods)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=9)
    ax.set_title("Median per-session Spearman between methods")
    fig.colorbar(image, ax=ax)

    fig.tight_layout(rect=(0, 0, 1, 0.93))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


NOISE_COLOR = "#9e9e9e"


def report_picture(tables: dict[str, pd.DataFrame], method: str, top: int = 15, status: dict | None = None) -> bytes:
    """The four panels as PNG bytes."""

    fig = report_figure(tables, method, top, status)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


STORE_UNIT = "net effect per event beyond its type and position (log-odds)"


def _pp_axis(ax: Axes, scale: float | None, which: str) -> None:
    """A second axis in percentage points (log-odds x ``scale``) on top (``x``) or right (``y``)."""
    if scale is None:
        return
    functions = (lambda v: v * scale, lambda v: v / scale)
    if which == "x":
        ax.secondary_xaxis("top", functions=functions).set_xlabel(PP_UNIT)
    else:
        ax.secondary_yaxis("right", functions=functions).set_ylabel(PP_UNIT)


def _bars(
    ax: Axes,
    labels: Sequence[str],
    values: ArrayLike,
    low: ArrayLike,
    high: ArrayLike,
    verdicts: Sequence[str | None],
    horizontal: bool = True,
    center: ArrayLike | None = None,
) -> None:
    """Bars coloured by verdict (grey: indistinguishable from noise or no CI), with 95% CI whiskers around
    ``center`` (default: the bars' values; the stores' whiskers are their raw effect's, around it)."""
    import numpy as np

    values = np.asarray(values, float)
    center = values if center is None else np.asarray(center, float)
    err = np.vstack([center - np.asarray(low, float), np.asarray(high, float) - center])
    err = np.clip(np.where(np.isfinite(err), err, 0.0), 0.0, None)
    colors = [VERDICT_COLORS.get(v or "", NOISE_COLOR) for v in verdicts]
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


def report_figure(tables: dict[str, pd.DataFrame], method: str, top: int = 15, status: dict | None = None) -> Figure:
    """Four panels in the effect's unit: event types, positions and stores (net of type and position,
    shrunk), each with 95% CIs, and the type x position heatmap of the mean effect (a cell has too few
    sessions for a CI). With the test split's conversion rate in ``status``, the event-type and position
    panels also read in percentage points (a second axis: the effect x 100 p (1 - p)). A method without a
    signed contribution (attention) shows the original analysis's lift and mean attribution instead, and says so."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe off the main thread

    et = tables["event_type"][tables["event_type"]["method"] == method].copy()
    pos = tables["position"][tables["position"]["method"] == method].copy()
    st = tables["store"][tables["store"]["method"] == method].copy()
    tp = tables["type_position"][tables["type_position"]["method"] == method]
    signed = is_signed(et)
    scale = pp_scale(status) if status else None

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
        _pp_axis(ax, scale, "x")
    else:
        top_et = et.head(top).iloc[::-1]
        verdicts = [DIRECTIONS[0] if v > 0 else DIRECTIONS[1] for v in top_et["attribution_lift"]]
        _bars(
            ax,
            top_et["event_type"],
            top_et["attribution_lift"],
            top_et["lift_ci_low"],
            top_et["lift_ci_high"],
            verdicts,
        )
        ax.set_title(
            f"Top {len(top_et)} event types by the original analysis's attribution lift (95% CI; {method} has no sign)"
        )
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
        _pp_axis(ax, scale, "y")
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
        ax.set_title("The original analysis's attribution lift by position in session (95% CI)")
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
        ax.set_xlabel(STORE_UNIT)
    else:
        ax.barh(top_st["store_name"].astype(str), top_st["mean_attribution"], color=NOISE_COLOR)
        ax.set_title(f"Top stores by mean attribution (the original analysis's ranking; {method} has no sign)")
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
    ax.set_title(f"{'Effect' if signed else 'Mean attribution'}: event type x position (means, no CI)")
    ax.set_xlabel("position (1-based)")
    fig.colorbar(image, ax=ax, label=EFFECT_UNIT if signed else "mean attribution")

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def session_picture(rows: pd.DataFrame) -> bytes:
    """One explained session's events as bars of the report method's score (signed: green towards
    conversion, red away), in session order."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = rows.sort_values("event_position")
    by = rows.attrs.get("ranked_by", "gradient_attribution")
    labels = [
        f"{p}: {t}" + (f" @ {s}" if isinstance(s, str) else "")
        for p, t, s in zip(ordered["position"], ordered["event_type"], ordered["store_name"], strict=True)
    ]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(ordered) + 1.5))
    signed = bool(rows.attrs.get("signed"))
    colors = ["#2e7d32" if c >= 0 else "#c62828" for c in ordered[by]] if signed else "#1565c0"
    ax.barh(range(len(ordered)), ordered[by], color=colors)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(ordered)), labels)
    ax.invert_yaxis()
    method = rows.attrs.get("method", "")
    ax.set_xlabel(
        f"{method} signed contribution (log-odds; green: towards conversion, red: away)"
        if signed
        else f"{method} attribution (share of the session; no sign)"
    )
    first = ordered.iloc[0]
    ax.set_title(f"{first['session_id']}  P(convert) = {first['prediction']:.3f}, label {int(first['label'])}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")  # the long axis label whole
    plt.close(fig)
    return buf.getvalue()
