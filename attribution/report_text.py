"""Plain-text renderings of run summaries for the console."""

from __future__ import annotations

from attribution.methods import REGISTRY


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


def format_attribute_summary(summary: dict) -> str:
    lines = [
        f"attribute: {summary['sessions']:,} {summary['split']} sessions ({summary['converted_sessions']:,} converted), "
        f"{summary['events']:,} events, methods {', '.join(summary['methods'])}, {summary['seconds']:.0f}s "
        f"({summary['events'] / max(summary['seconds'], 1e-9):,.0f} events/s end to end)",
    ]
    lines.append(
        f"{summary['model_batches']:,} model batches, padding efficiency {100 * summary['padding_efficiency']:.1f}%, "
        f"{summary['oom_splits']} out-of-memory splits, Python worker peak memory {summary['python_worker_peak_rss_mb']:,.0f} MiB"
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
