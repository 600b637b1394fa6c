"""Plain text for the console: each stage's summary, the model status and the report's key insights."""

from __future__ import annotations

import math

import pandas as pd

from attribution.baseline import BEATS, NO_BETTER
from attribution.methods import REGISTRY
from attribution.report import DIRECTIONS, EFFECT_UNIT, NO_ORDER_EVIDENCE_VERDICT, is_signed


def format_sessionize_summary(summary: dict) -> str:
    rows = summary["rows"]
    read = summary["rows_read"]
    width = max(len(k) for k in rows) + 2
    lines = [f"sessionize: {read:,} rows read, every one accounted for:"]
    for key, n in rows.items():
        if n:
            lines.append(f"  {key:<{width}}{n:>12,}  {100.0 * n / max(read, 1):6.2f}%")
    lines.append(f"  {'total':<{width}}{summary['rows_accounted']:>12,}")
    s = summary["sessions"]
    split = summary["kept_sessions_by_split"]
    kept = max(s["kept"], 1)
    lines.append(
        f"sessions: {s['total']:,} found, {s['kept']:,} kept "
        f"({s['short_session']:,} too short, {s['bot_like_device_day']:,} on bot-like device-days); "
        f"converted {summary['kept_sessions_converted']:,} ({100.0 * summary['kept_sessions_converted'] / kept:.1f}%); "
        f"split train {split['train']:,} / validation {split['validation']:,} / test {split['test']:,}"
    )
    if "outputs" in summary:
        lines.append(
            f"wrote sessions to {summary['outputs']['sessions']}, quarantine to {summary['outputs']['quarantine']}"
        )
    return "\n".join(lines)


def format_train_metrics(metrics: dict, model_path: str) -> str:
    t = metrics["test"]
    lines = [
        f"train: best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, "
        f"{metrics['train_sessions_per_second']:,.0f} sessions/s with {metrics['num_processes']} process(es), "
        f"{metrics['training_seconds']:.0f}s",
        f"test ({t['sessions']:,} sessions, {100 * t['positive_rate']:.1f}% converted): ROC-AUC {t['roc_auc']:.4f}, "
        f"PR-AUC {t['pr_auc']:.4f}, log loss {t['log_loss']:.4f}",
    ]
    if metrics.get("still_improving"):
        lines.append("validation AUC still rising at the last epoch: raise train.epochs")
    rate = metrics.get("context_rate")
    if rate and rate["multiple"] < rate["scale"]:
        lines.append(
            f"the context path learned at {rate['multiple']:.2f}x the model's rate, not {rate['scale']:g}x: "
            f"{rate['train_sessions']:,} training sessions, under train.context_full_sessions ({rate['full_sessions']:,})"
        )
    members = metrics.get("members") or []
    if members:
        lines.append(
            f"{len(members)} more ensemble member(s) for the removal effects' model uncertainty "
            "(train.ensemble_members): test ROC-AUC " + ", ".join(f"{m['test']['roc_auc']:.4f}" for m in members)
        )
    base = metrics.get("baseline")
    if base and "skipped" in base:
        lines.append(f"counts baseline {base['skipped']}")
    elif base:
        bt = base["test"]
        lines.append(
            f"counts baseline (logistic regression, regParam {base['reg_param']:g}, {base['features']:,} features): "
            f"test ROC-AUC {bt['roc_auc']:.4f}, PR-AUC {bt['pr_auc']:.4f}, log loss {bt['log_loss']:.4f}, "
            f"{base['seconds']:.0f}s{_iterations(base)}{_bootstrap_fits(base)}{_removal_model(base)}"
        )
    leak = metrics.get("leakage_check")
    if leak:
        lt = leak["test"]
        lines.append(
            f"leakage check: with the funnel events kept the same model reaches test ROC-AUC {lt['roc_auc']:.4f} "
            f"(+{lt['roc_auc'] - t['roc_auc']:.4f}): the funnel gives the answer away, which is why it is excluded"
        )
    unknown = metrics.get("unknown_tokens", {}).get("test", {})
    if any(unknown.values()):
        lines.append(
            "unknown values in test (mapped to <UNK>): " + ", ".join(f"{f} {n:,}" for f, n in unknown.items() if n)
        )
    lines.append(f"model {metrics['model_sha256'][:12]}... written to {model_path}/")
    return "\n".join(lines)


def _iterations(base: dict) -> str:
    """The chosen fit's optimizer iterations, and whether it stopped at ``baseline.max_iter`` rather than by
    Spark's tolerance; empty for a summary without them."""
    n = (base.get("iterations") or {}).get(str(base["reg_param"]))
    if n is None:
        return ""
    if base.get("converged") is False:
        return f", {n} iterations: stopped at baseline.max_iter before Spark's tolerance"
    return f", {n} iterations"


def _bootstrap_fits(base: dict) -> str:
    """The baseline's bootstrap fits for the removal CI (``baseline.members``), and any that stopped at
    ``baseline.max_iter``; empty without them."""
    fits = base.get("members") or []
    if not fits:
        return ""
    capped = sum(1 for f in fits if f.get("iterations") is not None and f["iterations"] >= base.get("max_iter", 0))
    note = f", {capped} of them stopped at baseline.max_iter" if capped else ""
    return f"; {len(fits)} more fit(s) on bootstrap resamples for the removal CI's model part{note}"


def _removal_model(base: dict) -> str:
    """The removal effects' baseline (``baseline.order_penalties``): the counts alone or the fit with order
    terms, and the validation log loss that chose it; empty when no order terms were tried."""
    removal = base.get("removal_model")
    if not removal:
        return ""
    losses = removal.get("validation_log_loss") or {}
    alone = losses.get("counts alone")
    penalty = removal.get("order_penalty")
    if penalty is None:
        candidate, gain = removal.get("candidate_penalty"), removal.get("improvement") or {}
        why = (
            f"order terms at {candidate:g}x lowered the validation log loss by {gain['log_loss']:.4f}, "
            f"{gain['z']:.1f} standard errors: within noise"
            if candidate is not None and gain
            else "no order term in enough training sessions"
        )
        return f"; removal effects' baseline: the counts alone ({why})"
    capped = (removal.get("iterations") or 0) >= base.get("max_iter", float("inf"))
    return (
        f"; removal effects' baseline: counts with order terms at {penalty:g}x the penalty (validation log loss "
        f"{losses.get(f'{penalty:g}', float('nan')):.4f} against {alone:.4f} for the counts alone"
        f"{', stopped at baseline.max_iter' if capped else ''})"
    )


def format_attribute_summary(summary: dict) -> str:
    lines = [
        f"attribute: {summary['sessions']:,} {summary['split']} sessions ({summary['converted_sessions']:,} converted), "
        f"{summary['events']:,} events, methods {', '.join(summary['methods'])}, {summary['seconds']:.0f}s "
        f"({summary['events'] / max(summary['seconds'], 1e-9):,.0f} events/s end to end)",
    ]
    if summary["model_batches"] is None:  # Spark Connect dropped the UDF's counters (attribution.observed)
        lines.append("the scoring UDF's counters (batches, padding, memory) did not reach the driver")
    else:
        lines.append(
            f"{summary['model_batches']:,} model batches, padding efficiency {100 * summary['padding_efficiency']:.1f}%, "
            f"{summary['oom_splits']} out-of-memory splits, Python worker peak memory "
            f"{summary['python_worker_peak_rss_mb']:,.0f} MiB"
        )
    for m in (REGISTRY[name] for name in summary["methods"] if name in REGISTRY):
        for column, meaning in m.session_columns:
            value = summary.get(column)
            if value:
                lines.append(f"{meaning}: mean |value| {value['mean_abs']:.2e}, max {value['max_abs']:.2e}")
    unknown = {f: n for f, n in summary["unknown_tokens"].items() if n}
    if unknown:
        lines.append(
            "values unknown to the model (scored as <UNK>): " + ", ".join(f"{f} {n:,}" for f, n in unknown.items())
        )
    drift = summary.get("drift") or {}
    if drift.get("flagged") or (summary.get("date") and drift):
        auc = "undefined (one class)" if drift["roc_auc"] is None else f"{drift['roc_auc']:.3f}"
        model = "unknown" if drift["model_test_roc_auc"] is None else f"{drift['model_test_roc_auc']:.3f}"
        flag = " DRIFT: more than attribution.max_auc_drop below the model's test AUC" if drift.get("flagged") else ""
        lines.append(f"ROC-AUC of these sessions {auc} vs the model's test {model}{flag}")
    lines.append(f"wrote {summary['output']} (model {summary['model_sha256'][:12]}...)")
    return "\n".join(lines)


def format_faithfulness_summary(summary: dict) -> str:
    best = summary["most_faithful"]
    lines = [
        f"faithfulness: {summary['sessions']:,} sessions, methods {', '.join(summary['methods'])}, "
        f"each against {summary['random_draws']} random orders; k = {', '.join(summary['k'])}; "
        f"{summary['seconds']:.0f}s",
        "AOPC comprehensiveness (mean |change in P(convert)| when a method's top-k events are removed; random order):",
    ]
    for method, v in summary["aopc"].items():
        lines.append(f"  {method:<22} {v['comprehensiveness']:.4f}  (random {v['random']:.4f})")
    if best:
        verdict = "" if best["beats_random"] else " - but not distinguishable from a random order"
        lines.append(
            f"most faithful on this data: {best['by_comprehensiveness']} by comprehensiveness{verdict}; "
            f"{best['by_sufficiency']} by sufficiency"
        )
    if summary["agreement_median_spearman"]:
        lines.append(
            "median per-session Spearman: "
            + "; ".join(f"{k} {v:+.2f}" for k, v in summary["agreement_median_spearman"].items())
        )
    return "\n".join(lines)


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


def _lift_text(row: pd.Series) -> str:
    if pd.isna(row["lift_se"]):
        return f"{row['attribution_lift']:+.4f} (no CI: one side has too few sessions)"
    ci = f"[{row['lift_ci_low']:+.4f}, {row['lift_ci_high']:+.4f}]"
    noise = "" if row["significant"] else "  (CI crosses 0: not distinguishable from noise)"
    return f"{row['attribution_lift']:+.4f} 95% CI {ci}{noise}"


def _effect_text(row: pd.Series, prefix: str = "effect") -> str:
    value = row[f"{prefix}_log_odds"]
    low, high = row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"]
    if pd.isna(low) or pd.isna(high):
        return f"{value:+.4f} (no CI: too few sessions)"
    return f"{value:+.4f} 95% CI [{low:+.4f}, {high:+.4f}]"


def removal_pp(row: pd.Series) -> str | None:
    """``+10.57 pp [+9.41, +11.73]``: a row's removal effect and its CI; None when it has none."""
    value = row.get("removal_effect_pp")
    if value is None or pd.isna(value):
        return None
    low, high = row.get("removal_ci_low_pp"), row.get("removal_ci_high_pp")
    ci = "" if pd.isna(low) or pd.isna(high) else f" [{low:+.2f}, {high:+.2f}]"
    return f"{value:+.2f} pp{ci}"


def removal_text(row: pd.Series) -> str:
    """``; removal effect +10.57 pp [+9.41, +11.73]`` (empty when the row has none)."""
    text = removal_pp(row)
    return f"; removal effect {text}" if text else ""


REMOVAL_MEANING = (
    "Removal effect = how much higher the model's P(convert) is with the key's events than with them removed, "
    "in percentage points, over the sessions of the removal sample that have the key and the ensemble's models; "
    "with the counts baseline beside the model and baseline.blend on (the default), the model is the blend of "
    "the two that the validation split chose. Its 95% CI counts another sample of sessions, with more than one model "
    "(train.ensemble_members) another training run, and with the counts baseline another kind of model (the "
    "distance between the two models' own removal effects, removal_transformer_pp and removal_baseline_pp, "
    "counted one standard error)."
)


# which figure answers which question, in the words the page and the insights use
QUOTABLE = (
    "The figure to quote is the removal effect: how many percentage points higher the model's P(convert) is "
    "for a session with the step's events than without them. The effect, in log-odds, says how strongly one "
    "such event pushes; its ≈ pp is that one push for an average session."
)
NO_REMOVAL_QUOTABLE = (
    "Removal effects are off (attribution.removal_sessions is 0): the effect's ≈ pp, one event's push for an "
    "average session, is the closest figure to quote."
)
SIGN_MARK = "†"
SIGN_NOTE = (
    f"{SIGN_MARK} The effect and the removal effect point opposite ways. They measure different things: the "
    "effect is one event's push, averaged over the key's events; the removal effect takes every event of the "
    "key out of a session at once, and the events after them move up into the freed positions. A frequent step "
    "with a small push per event, or one whose weight comes from the events around it, can differ."
)


def _direction(value: float, low: float, high: float) -> int:
    """+1 or -1 when the CI lies wholly on one side of 0, else 0."""
    if pd.isna(value) or pd.isna(low) or pd.isna(high):
        return 0
    return 1 if low > 0 else -1 if high < 0 else 0


def signs_disagree(row: pd.Series, prefix: str = "effect") -> bool:
    """Whether the row's effect (``prefix``: ``effect`` or ``net_effect``) and its removal effect point
    opposite ways, with at least one of the two CIs excluding 0 (two values near 0 of opposite signs are
    noise, not a disagreement)."""
    value, removal = row.get(f"{prefix}_log_odds"), row.get("removal_effect_pp")
    if value is None or removal is None or pd.isna(value) or pd.isna(removal) or value * removal >= 0:
        return False
    effect = _direction(value, row.get(f"{prefix}_ci_low"), row.get(f"{prefix}_ci_high"))
    removed = _direction(removal, row.get("removal_ci_low_pp"), row.get("removal_ci_high_pp"))
    return effect != 0 or removed != 0


def _support(row: pd.Series, events: str = "events") -> str:
    return f"{int(row[events]):,} events, {int(row['sessions']):,} sessions"


def ranked_drivers(et: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(drivers strongest first, detractors strongest first, the rest) of one method's event types."""
    drives, holds_back = DIRECTIONS
    drivers = et[et["effect_verdict"] == drives].sort_values("effect_log_odds", ascending=False)
    detractors = et[et["effect_verdict"] == holds_back].sort_values("effect_log_odds")
    rest = et[~et.index.isin(drivers.index) & ~et.index.isin(detractors.index)]
    return drivers, detractors, rest


def key_insights(
    tables: dict[str, pd.DataFrame],
    method: str,
    n: int = 5,
    status: dict | None = None,
    comparison: dict | None = None,
) -> str:
    et = tables["event_type"][tables["event_type"]["method"] == method]
    pos = tables["position"][tables["position"]["method"] == method]
    st = tables["store"][tables["store"]["method"] == method]
    lines = [f"KEY INSIGHTS ({method})"]
    if status:
        lines.append(status_text(status))
    against_baseline = baseline_sentence(comparison)
    if against_baseline:
        lines.append(against_baseline)
    if not is_signed(et):
        lines.append(
            f"{method} has no signed contribution, so no effect: event types by the original analysis's attribution lift "
            "(it compares normalized shares and is confounded by session length; prefer a signed method):"
        )
        for _, r in et.head(n).iterrows():
            lines.append(f"  {r['event_type']:<40} {_lift_text(r)}")
        lines.append("Lift by position in session:")
        for _, r in pos.iterrows():
            lines.append(f"  {r['position_bin']:<8} {_lift_text(r)}")
        lines.append(f"Top {n} stores by mean attribution (the original analysis's ranking):")
        for _, r in st.sort_values("rank").head(n).iterrows():
            lines.append(
                f"  {int(r['rank']):>2}. {str(r['store_name']):<28} {r['mean_attribution']:.4f} ({_support(r)})"
            )
        lines += pair_lines(tables.get("pair"), n=3)
        return "\n".join(lines)
    lines.append(f"Effect = {EFFECT_UNIT}; + pushes towards conversion, - away; 95% CIs are session-clustered.")
    if "removal_effect_pp" in et.columns and et["removal_effect_pp"].notna().any():
        lines += [REMOVAL_MEANING, QUOTABLE]
    marked = False

    def mark(row: pd.Series, prefix: str = "effect") -> str:
        nonlocal marked
        if not signs_disagree(row, prefix):
            return ""
        marked = True
        return f" {SIGN_MARK}"

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
            lines.append(f"  {r['event_type']:<40} {_effect_text(r)} ({_support(r)}{removal_text(r)}){mark(r)}")
    if not detractors.empty:
        lines.append(f"Detractors (CI below 0), strongest first ({min(n, len(detractors))} of {len(detractors)}):")
        for _, r in detractors.head(n).iterrows():
            lines.append(f"  {r['event_type']:<40} {_effect_text(r)} ({_support(r)}{removal_text(r)}){mark(r)}")
    if not rest.empty:
        lines.append("Indistinguishable from noise: " + ", ".join(map(str, rest["event_type"])))
    lines.append("Effect by position in session (mean |effect|: how much the events there move the prediction):")
    for _, r in pos.iterrows():
        lines.append(
            f"  {r['position_bin']:<8} {_effect_text(r)}; mean |effect| {r['mean_abs_effect_log_odds']:.4f}"
            f"{removal_text(r)}{mark(r)}"
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
        noise = "" if pd.isna(verdict) or verdict in DIRECTIONS else f"; {verdict}"
        lines.append(
            f"  {int(r['rank']):>2}. {str(r['store_name']):<28} {r['shrunk_net_effect_log_odds']:+.4f} "
            f"(raw {_effect_text(r, 'net_effect')}; {_support(r)}{noise}{removal_text(r)})"
            f"{mark(r, 'net_effect')}"
        )
    if marked:
        lines.append(SIGN_NOTE)
    lines += pair_lines(tables.get("pair"), n=3)
    lines.append(
        "The tables keep the original analysis's attribution_lift for compatibility; it compares normalized shares between "
        "converted and non-converted sessions, is confounded by session length, and does not rank them."
    )
    return "\n".join(lines)


# the pair table's standing: checked against planted truth, it flags pairs that do not interact
PAIR_CAVEAT = (
    "On planted data this table also flags some pairs that do not interact beside the real ones, even where the "
    "model predicts better than the counts baseline (docs/scenarios.md): read a flagged pair as a lead to test, "
    "not a finding."
)
# what a pair verdict means, in the words the insights and the page use
PAIR_MEANING = {
    "work together": "each one's effect depends on the other being in the session",
    "stand in for each other": "either one alone keeps much of what the two do",
}


# why no pair is flagged where the gate of report.pair_needs_better_model withheld the verdicts
PAIRS_GATED = (
    "No pair is read as interacting: the sequence model predicts these sessions no better than the counts "
    "baseline (model_comparison.csv), which has no interactions, so the data give no evidence that any pair's "
    "interaction is real."
)
NO_PAIR = "No pair interacts: every pair's interaction is indistinguishable from noise."


def pairs_gated(pairs: pd.DataFrame | None) -> bool:
    """Did the model comparison withhold the pair table's verdicts (``attribution.report.gate_pairs``)?"""
    if pairs is None or "interaction_verdict" not in pairs:
        return False
    return bool((pairs["interaction_verdict"] == NO_ORDER_EVIDENCE_VERDICT).any())


def flagged_pairs(pairs: pd.DataFrame | None) -> pd.DataFrame:
    """The pair table's rows with a verdict (CI on the logit excluding 0), in the table's order."""
    if pairs is None or not len(pairs):
        return pd.DataFrame()
    return pairs[pairs["interaction_verdict"].isin(list(PAIR_MEANING))].sort_values("rank")


def pair_lines(pairs: pd.DataFrame | None, n: int = 3) -> list[str]:
    """The insights' lines on the pair table: its strongest flagged pairs, or that none is flagged."""
    if pairs is None or not len(pairs):
        return []
    flagged = flagged_pairs(pairs)
    head = (
        f"Pairs of steps (A before B; interaction = removal effect of both - each one's, on the logit; "
        f"{len(pairs)} most frequent pairs, event_pair_attribution_no_funnel.csv):"
    )
    if flagged.empty:
        return [head, f"  {PAIRS_GATED if pairs_gated(pairs) else NO_PAIR}"]
    lines = [head, f"  ({PAIR_CAVEAT})"]
    for _, r in flagged.head(n).iterrows():
        lines.append(
            f"  {r['first_event_type']} -> {r['second_event_type']}: {r['interaction_verdict']} "
            f"({PAIR_MEANING[r['interaction_verdict']]}); {r['interaction_log_odds']:+.3f} log-odds "
            f"[{r['interaction_ci_low']:+.3f}, {r['interaction_ci_high']:+.3f}], {r['interaction_pp']:+.2f} pp; "
            f"{int(r['sessions']):,} sessions"
        )
    return lines


def ground_truth_text(recovered: pd.DataFrame, method: str) -> str:
    lines = ["Planted-driver recovery (synthetic data: the generator's known effects):"]
    for _, r in recovered.iterrows():
        if r["check"] == "store_precision_at_5" or r["method"] == method or r["check"].startswith("event_type_e"):
            mark = "ok" if r["agrees"] else "MISSES"
            lines.append(f"  {r['method']:<22} {r['check']:<37} {r['value']:+.3f}  ({r['expected']}: {mark})")
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


def baseline_sentence(comparison: dict | None) -> str | None:
    """One sentence: does the sequence model beat the counts baseline on this data, and by how much; when
    it does not, which tables a counts regression gives as well (rank correlation 0.8 or more)."""
    if not comparison or comparison.get("verdict") is None:
        return None
    low, high = comparison["difference_ci"]

    def signed(x: float) -> str:  # a difference that rounds to 0 reads +0.000, not -0.000
        return f"{round(x, 3) + 0.0:+.3f}"

    numbers = (
        f"test ROC-AUC {comparison['transformer_roc_auc']:.3f} against {comparison['baseline_roc_auc']:.3f} "
        f"({signed(comparison['difference'])}, 95% CI [{signed(low)}, {signed(high)}], paired on "
        f"{comparison['sessions']:,} test sessions)"
    )
    blend = blend_sentence(comparison.get("transformer_weight"), bool(comparison.get("removal_order_terms")))
    if comparison["verdict"] == BEATS:
        return (
            "The sequence model beats the counts baseline (logistic regression on per-session counts) on this "
            f"data: {numbers}.{blend}"
        )
    names = {
        "event_type_order_spearman": "event types",
        "position_order_spearman": "positions",
        "store_order_spearman": "stores",
    }
    agree = [
        f"{names[c]} ({rho:.2f})"
        for c, rho in comparison.get("agreement", {}).items()
        if rho is not None and math.isfinite(rho) and rho >= 0.8
    ]
    also = (
        f" The counts baseline orders these as the model does (rank correlation): {', '.join(agree)}."
        if agree
        else " Its orderings differ from the model's on every table (rank correlation below 0.8)."
    )
    word, how = ("is no better than", "as well") if comparison["verdict"] == NO_BETTER else ("is worse than", "better")
    return (
        f"The sequence model {word} the counts baseline (logistic regression on per-session counts) on this "
        f"data: {numbers}; a simpler model answers {how} here.{also}{blend}"
    )


ORDER_TERMS_SENTENCE = (
    " The counts baseline's part is its fit with order terms (pairs, repeats, first and last step), which the "
    "validation split chose over counts alone."
)


def blend_sentence(weight: float | None, order_terms: bool = False) -> str:
    """`` The removal effects are ...``: which blend of the two models the removal effects are (the
    transformer's weight chosen by the validation log loss, attribution/baseline.py); empty without one.
    ``order_terms``: the removal effects' baseline has the order terms the validation split chose, which
    the sentence says."""
    if weight is None:
        return ""
    if order_terms and weight < 1.0:
        return blend_sentence(weight) + ORDER_TERMS_SENTENCE
    if weight >= 1.0:
        return (
            " The validation split gives the counts baseline no weight: the removal effects are the sequence model's."
        )
    if weight <= 0.0:
        return (
            " The validation split gives the sequence model no weight: the removal effects are the counts "
            "baseline's (removal_transformer_pp keeps the sequence model's own)."
        )
    return (
        f" The removal effects are those of the blend the validation split's log loss chose: {weight:.2f} x the "
        f"sequence model's P(convert) + {1 - weight:.2f} x the counts baseline's (each model's own effect: "
        "removal_transformer_pp, removal_baseline_pp)."
    )
