"""Plain-text renderings of run summaries for the console."""

from __future__ import annotations


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
