"""``report/index.html``: the answer on one static, self-contained page (the picture is embedded), for a
reader with a minute: whether the model can be trusted, the drivers and detractors with their effects
and CIs, positions, top stores, which method and why, and the data and model behind it.

Effects are shown in log-odds (the tables' unit) and as approximate percentage points of conversion:
``effect x p(1 - p) x 100`` at the test sessions' conversion rate p, the slope of the logistic curve there,
so "+1.2 pp" reads as "one more such event moves P(convert) by about 1.2 points for an average session".
Beside them, the removal effect is measured in percentage points, not approximated: how much higher the
model's P(convert) is with all of the key's events than without them (``attribution/removal.py``).
"""

from __future__ import annotations

import base64
import html
import math

import pandas as pd

from attribution.baseline import BEATS
from attribution.methods import REGISTRY
from attribution.report import DIRECTIONS, EFFECT_UNIT, is_signed, pp_scale
from attribution.report_text import (
    NO_PAIR,
    NO_REMOVAL_QUOTABLE,
    PAIR_CAVEAT,
    PAIR_MEANING,
    PAIRS_GATED,
    QUOTABLE,
    REMOVAL_MEANING,
    SIGN_MARK,
    SIGN_NOTE,
    baseline_sentence,
    flagged_pairs,
    pairs_gated,
    ranked_drivers,
    removal_pp,
    signs_disagree,
    status_text,
)

PAGE = "index.html"


def _fmt(value: float | None, digits: int = 3, signed: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _effect_cells(row: pd.Series, scale: float | None, prefix: str = "effect") -> str:
    value, low, high = row[f"{prefix}_log_odds"], row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"]
    ci = f"[{_fmt(low)}, {_fmt(high)}]"
    pp = "-"
    if scale is not None and not pd.isna(value):
        pp = f"{value * scale:+.2f} pp"
        if not (pd.isna(low) or pd.isna(high)):
            pp += f" [{low * scale:+.2f}, {high * scale:+.2f}]"
    return f"<td class=num>{_fmt(value)}</td><td class=num>{ci}</td><td class=num>{pp}</td>"


def _removal_cell(row: pd.Series) -> str:
    return f"<td class='num removal'>{removal_pp(row) or '-'}</td>"


BASELINE_REMOVAL_HEAD = "each model's own removal, pp: sequence model / counts baseline"


def _baseline_removal_cell(row: pd.Series) -> str:
    """The transformer's and the counts baseline's own removal effects of the row's key (the published one
    blends them; the CI's model-choice part is the distance between them); '-' without a baseline."""

    def pp(column: str) -> str | None:
        value = row.get(column)
        return None if value is None or pd.isna(value) else f"{value:+.2f}"

    baseline, own = pp("removal_baseline_pp"), pp("removal_transformer_pp")
    text = "-" if baseline is None else f"{own or '-'} / {baseline} pp"
    return f"<td class='num baseline-removal'>{text}</td>"


def _mark_cell(row: pd.Series, prefix: str = "effect") -> str:
    """The note column: the sign mark when the row's effect and removal effect point opposite ways."""
    return f"<td class=mark>{SIGN_MARK if signs_disagree(row, prefix) else ''}</td>"


def _sign_note(rows: pd.DataFrame, prefix: str = "effect") -> list[str]:
    """The line under a table that says why its marked rows are marked; none when no row is."""
    marked = any(signs_disagree(r, prefix) for _, r in rows.iterrows())
    return [f"<p class=sign-note>{html.escape(SIGN_NOTE)}</p>"] if marked else []


def _table(head: list[str], rows: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(f"<tr>{r}</tr>" for r in rows) or f"<tr><td colspan={len(head)}>none</td></tr>"
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


JOURNEY_TABLES = {  # context table -> its column, and how a row's context reads in a sentence
    "occurrence": ("occurrence", "as its {} occurrence in the session"),
    "context": ("previous_event_type", "right after {}"),
    "recency": ("recency", "as the session's {} event"),
}


def _journey_rows(tables: dict[str, pd.DataFrame], method: str, n: int) -> list[tuple[str, pd.Series]]:
    """The context rows whose effect differs most from their type's overall effect, with a CI that
    excludes 0 (a verdict), strongest difference first."""
    found = []
    for kind in JOURNEY_TABLES:
        table = tables.get(kind)
        if table is None or "effect_log_odds" not in table or not len(table):
            continue
        rows = table[(table["method"] == method) & table["effect_verdict"].isin(DIRECTIONS)]
        for _, r in rows.iterrows():
            found.append((kind, r))
    found.sort(key=lambda kr: -abs(kr[1]["effect_log_odds"] - (kr[1]["type_effect_log_odds"] or 0.0)))
    return found[:n]


def _journeys(tables: dict[str, pd.DataFrame], method: str, n: int = 6) -> list[str]:
    """The "Journeys" section: what order, repeats and the last step change, from the context tables."""
    if not any(k in tables for k in JOURNEY_TABLES):
        return []
    esc = html.escape
    out = [
        "<h2>Journeys</h2>",
        "<p>What a sequence model adds: an event type's effect in one context (its occurrence in the session, "
        "the step just before it, its distance from the end), beside its effect over all its events. "
        "The contexts that differ most, with a 95% CI that excludes 0 "
        "(event_type_occurrence_, event_type_context_ and event_type_recency_attribution_no_funnel.csv):</p>",
    ]
    out += _pairs(tables.get("pair"))
    rows = _journey_rows(tables, method, n)
    if not rows:
        out.append("<p id=journeys>No context stands out: every context's effect is indistinguishable from noise.</p>")
        return out
    items = []
    for kind, r in rows:
        column, phrase = JOURNEY_TABLES[kind]
        where = phrase.format(r[column])
        items.append(
            f"<li><b>{esc(str(r['event_type']))}</b> {esc(where)}: {_fmt(r['effect_log_odds'])} log-odds per event "
            f"[{_fmt(r['effect_ci_low'])}, {_fmt(r['effect_ci_high'])}], against {_fmt(r['type_effect_log_odds'])} "
            f"over all its events ({int(r['sessions']):,} sessions)</li>"
        )
    out.append("<ul id=journeys>" + "".join(items) + "</ul>")
    return out


def _pairs(pairs: pd.DataFrame | None, n: int = 3) -> list[str]:
    """The Journeys section's pairs: the strongest flagged pairs of the pair table, one sentence each."""
    if pairs is None or not len(pairs):
        return []
    esc = html.escape
    out = [
        f"<p>Pairs of steps: for the {len(pairs)} ordered pairs seen in most sessions (A before B), the "
        "interaction = the removal effect of removing both minus the two removal effects apart, on the "
        "model's logit (event_pair_attribution_no_funnel.csv). Below 0, the two work together; above 0, "
        "they stand in for each other.</p>"
    ]
    flagged = flagged_pairs(pairs)
    if flagged.empty:
        out.append(f"<p id=pairs>{esc(PAIRS_GATED if pairs_gated(pairs) else NO_PAIR)}</p>")
        return out
    out.append(f"<p class=warn id=pair-caveat>{esc(PAIR_CAVEAT)}</p>")
    items = [
        f"<li><b>{esc(str(r['first_event_type']))}</b> then <b>{esc(str(r['second_event_type']))}</b> "
        f"{esc(r['interaction_verdict'])}: {esc(PAIR_MEANING[r['interaction_verdict']])} "
        f"({_fmt(r['interaction_log_odds'])} log-odds [{_fmt(r['interaction_ci_low'])}, "
        f"{_fmt(r['interaction_ci_high'])}], {r['interaction_pp']:+.2f} pp; {int(r['sessions']):,} sessions)</li>"
        for _, r in flagged.head(n).iterrows()
    ]
    out.append("<ul id=pairs>" + "".join(items) + "</ul>")
    return out


CAUSATION_CAVEAT = (
    "These numbers are associations through the model, not causal effects: they say how the model's "
    "prediction moves with a step in sessions like these, not what would happen if the app added or removed "
    "the step. Test a change (an experiment) before acting on it."
)


def scope_sentence(
    split: str, sessions: int, converted: int, first_day: str | None, last_day: str | None, model: str
) -> str:
    """The tables' scope in one sentence: which split, how many sessions, which days, which model."""
    which = "every session" if split == "all" else f"the {split} split"
    days = (
        ""
        if first_day is None
        else (f" of {first_day}" if first_day == last_day else f" from {first_day} to {last_day}")
    )
    return (
        f"Scope: {which}, {sessions:,} sessions ({converted:,} converted){days}; model {model[:12]}. Counts such as "
        "attributable_conversions are of these sessions, not of a day's full traffic."
    )


def calibration_sentence(status: dict) -> str:
    """Calibration in the large: the model's mean predicted P(convert) on the test split against the rate."""
    mean, rate = status["test_mean_prediction"], status["test_positive_rate"]
    gap = 100 * (mean - rate)
    way = "high" if gap > 0 else "low"
    return (
        f"calibration: the mean predicted P(convert) on the test split is {mean:.3f} against a conversion rate of "
        f"{rate:.3f}: the predictions run {abs(gap):.1f} percentage points {way} on average, and the removal "
        "effects are differences of such predictions"
    )


def attributable_sentence(drivers: pd.DataFrame) -> str | None:
    """How many conversions the top driver's removal effect comes to, and over which sessions; None when
    there is no driver or no removal effect."""
    if drivers.empty or "attributable_conversions" not in drivers:
        return None
    top = drivers.iloc[0]
    owed = top["attributable_conversions"]
    if pd.isna(owed):
        return None
    return (
        f"{top['event_type']}: the model predicts about {owed:,.0f} more conversions among the "
        f"{int(top['sessions']):,} scored sessions with it than without it (attributable_conversions, the "
        "removal effect x those sessions). That counts the scored sessions (the test split by default), not "
        "a day's traffic: for the day's volume, scale it by the day's sessions with the step over these."
    )


def _reliability(bins: list[dict]) -> str:
    """The reliability curve as a table: per bin of predicted P(convert), the test sessions in it, their
    mean prediction and their conversion rate (equal for a calibrated model)."""
    rows = [
        f"<td>{b['low']:.1f}-{b['high']:.1f}</td><td class=num>{int(b['sessions']):,}</td>"
        f"<td class=num>{b['mean_prediction']:.3f}</td><td class=num>{b['positive_rate']:.3f}</td>"
        for b in bins
    ]
    head = ["predicted P(convert)", "test sessions", "mean prediction", "conversion rate"]
    return "reliability, on the test split: <div id=reliability>" + _table(head, rows) + "</div>"


def render(
    tables: dict[str, pd.DataFrame],
    method: str,
    status: dict,
    faithful: dict | None,
    png: bytes,
    run_id: str,
    n: int = 5,
    planted: str | None = None,
    comparison: dict | None = None,
    scope: str | None = None,
) -> bytes:
    """The page as UTF-8 bytes; ``planted``: a sentence on the planted-driver check, on synthetic data;
    ``comparison``: the transformer against the counts baseline (:func:`attribution.report.model_comparison`);
    ``scope``: which sessions, days and model the tables cover (:func:`scope_sentence`)."""

    et = tables["event_type"][tables["event_type"]["method"] == method]
    pos = tables["position"][tables["position"]["method"] == method]
    st = tables["store"][tables["store"]["method"] == method].sort_values("rank")
    scale = pp_scale(status)
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>Which steps drive conversion? ({esc(run_id)})</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}.warn{background:#ffebee;color:#b71c1c;"
        "padding:1em;font-weight:bold}.ok{background:#e8f5e9;padding:1em}img{max-width:100%}</style></head><body>",
        f"<h1>Which steps drive conversion?</h1><p>run <code>{esc(run_id)}</code>, method <b>{esc(method)}</b></p>",
        f"<p id=model-status class={'warn' if status['status'] != 'ok' else 'ok'}>{esc(status_text(status))}</p>",
    ]
    if scope:
        parts.append(f"<p id=scope>{esc(scope)}</p>")
    parts.append(f"<p id=caveat>{esc(CAUSATION_CAVEAT)}</p>")
    against_baseline = baseline_sentence(comparison)
    if against_baseline:
        beats = comparison is not None and comparison.get("verdict") == BEATS
        parts.append(f"<p id=baseline class={'ok' if beats else 'warn'}>{esc(against_baseline)}</p>")
    if is_signed(et):
        drivers, detractors, rest = ranked_drivers(et)
        has_removal = "removal_effect_pp" in et.columns and bool(et["removal_effect_pp"].notna().any())
        parts.append(f"<p id=quotable><b>{esc(QUOTABLE if has_removal else NO_REMOVAL_QUOTABLE)}</b></p>")
        removal = "removal effect, pp [95% CI]: quote this"
        per_event = "≈ pp per event [95% CI]"
        head = [
            "event type",
            removal,
            f"effect per event ({EFFECT_UNIT})",
            "95% CI",
            per_event,
            "events",
            "sessions",
            BASELINE_REMOVAL_HEAD,
            "note",
        ]

        def rows(df: pd.DataFrame) -> list[str]:
            return [
                f"<td class=event-type>{esc(str(r['event_type']))}</td>{_removal_cell(r)}{_effect_cells(r, scale)}"
                f"<td class=num>{int(r['events']):,}</td><td class=num>{int(r['sessions']):,}</td>"
                f"{_baseline_removal_cell(r)}{_mark_cell(r)}"
                for _, r in df.head(n).iterrows()
            ]

        if drivers.empty and detractors.empty:
            parts.append(
                "<p id=no-driver><b>No driver stands out</b>: every event type's effect is "
                "indistinguishable from noise.</p>"
            )
        types = len(et)
        parts += [
            f"<h2 id=drivers-count>Top drivers: {len(drivers)} of {types} event types drive conversion</h2>",
            f"<div id=drivers>{_table(head, rows(drivers))}</div>",
            f"<h2 id=detractors-count>Top detractors: {len(detractors)} of {types} event types hold it back</h2>",
            f"<div id=detractors>{_table(head, rows(detractors))}</div>",
        ]
        parts.append(f"<p>{esc(REMOVAL_MEANING)}</p>")
        owed = attributable_sentence(drivers)
        if owed:
            parts.append(f"<p id=attributable>{esc(owed)}</p>")
        parts += _sign_note(pd.concat([drivers.head(n), detractors.head(n)]))
        if not rest.empty:
            parts.append("<p>Indistinguishable from noise: " + esc(", ".join(map(str, rest["event_type"]))) + "</p>")
        parts.append("<h2>By position in the session</h2>")
        parts.append(
            "<div id=positions>"
            + _table(
                [
                    "position (1-based)",
                    removal,
                    "effect per event",
                    "95% CI",
                    per_event,
                    "mean |effect|",
                    "events",
                    BASELINE_REMOVAL_HEAD,
                    "note",
                ],
                [
                    f"<td>{esc(str(r['position_bin']))}</td>{_removal_cell(r)}{_effect_cells(r, scale)}"
                    f"<td class=num>{_fmt(r['mean_abs_effect_log_odds'], signed=False)}</td>"
                    f"<td class=num>{int(r['events']):,}</td>{_baseline_removal_cell(r)}{_mark_cell(r)}"
                    for _, r in pos.iterrows()
                ],
            )
            + "</div>"
        )
        parts += _sign_note(pos)
        parts.append(
            "<h2>Top stores</h2><p>Effect per event beyond what the events' type and position explain, shrunk "
            "towards 0 by support; ranked by the shrunk effect. The removal effect takes all of the store's "
            "events out, type and position included.</p>"
        )
        top = st.head(n)
        store_rows = [
            f"<td class=num>{int(r['rank'])}</td><td class=store>{esc(str(r['store_name']))}</td>{_removal_cell(r)}"
            f"<td class=num>{_fmt(r['shrunk_net_effect_log_odds'])}</td>{_effect_cells(r, scale, 'net_effect')}"
            f"<td class=num>{int(r['sessions']):,}</td>{_baseline_removal_cell(r)}{_mark_cell(r, 'net_effect')}"
            for _, r in top.iterrows()
        ]
        head = [
            "rank",
            "store",
            removal,
            "shrunk effect",
            "raw effect",
            "95% CI",
            per_event,
            "sessions",
            BASELINE_REMOVAL_HEAD,
            "note",
        ]
        parts.append(f"<div id=stores>{_table(head, store_rows)}</div>")
        parts += _sign_note(top, "net_effect")
    else:
        parts.append(
            f"<p>{esc(method)} has no signed contribution: the tables are ordered by the original analysis's lift. "
            f"Choose {esc(' or '.join(m.name for m in REGISTRY.values() if m.signed))} as report.default_method "
            "for effects.</p>"
        )
    parts += _journeys(tables, method)
    parts.append("<h2>Which method, and why</h2>")
    if is_signed(et):
        parts.append(
            f"<p>The tables use <b>{esc(method)}</b> (report.default_method): it gives every event a signed "
            "contribution to the prediction, in log-odds, which an effect needs. Attention methods say where the "
            "model looked, not which way an event pushes.</p>"
        )
    if planted is not None:
        parts.append(f"<p>On this synthetic data, with known planted drivers: {esc(planted)}</p>")
    if faithful:
        noise = "" if faithful.get("beats_random") else " (but not distinguishable from a random order)"
        parts.append(
            f"<p id=faithful>Most faithful on this data: <b>{esc(str(faithful['by_comprehensiveness']))}</b> by "
            f"comprehensiveness{esc(noise)} (removing the events it ranks first moves the model's prediction the "
            f"most), <b>{esc(str(faithful['by_sufficiency']))}</b> by sufficiency (the events it ranks first, kept "
            "alone, keep the prediction closest to the whole session's); attribution_faithfulness.csv.</p>"
        )
    else:
        parts.append("<p>No faithfulness evaluation for this model in this run (jobs/faithfulness.py).</p>")
    parts.append("<h2>Data and model</h2><ul>")
    sessions = status.get("sessions") or {}
    if sessions:
        parts.append("<li>sessions: " + esc(", ".join(f"{k} {v:,}" for k, v in sessions.items())) + "</li>")
    if "test_roc_auc" in status:
        low, high = status["test_roc_auc_ci"]
        parts.append(f"<li>test ROC-AUC {status['test_roc_auc']:.3f} (95% CI {low:.3f}-{high:.3f}; 0.5 is chance)</li>")
    if "test_mean_prediction" in status:
        parts.append(f"<li id=calibration>{esc(calibration_sentence(status))}</li>")
    if status.get("test_reliability"):
        parts.append("<li>" + _reliability(status["test_reliability"]) + "</li>")
    if "leakage_check_roc_auc" in status:
        parts.append(
            f"<li>leakage check: the same model with the funnel events kept scores {status['leakage_check_roc_auc']:.3f}; "
            "the funnel gives the answer away, which is why it is excluded</li>"
        )
    parts.append("</ul>")
    image = base64.b64encode(png).decode()
    parts.append(
        f"<h2>The picture</h2><img alt='effects by event type, position, store' src='data:image/png;base64,{image}'>"
    )
    parts.append("</body></html>")
    return "\n".join(parts).encode()
