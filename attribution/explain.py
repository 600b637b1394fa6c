"""One session explained: its events ranked by attribution, every method's score, the signed
contribution and the prediction; a table and a small PNG."""

from __future__ import annotations

import pandas as pd
from pyspark.sql import functions as F

from attribution.config import Config
from attribution.io import InputError, join, read_table, write_bytes

SCORES = ("gradient_attribution", "contribution", "attention_attribution", "rollout_attribution", "ig_attribution")


def session_events(spark, conf: Config, session_id: str) -> pd.DataFrame:
    """The session's rows of the event-level table (one session: small), ranked by gradient_attribution."""
    events = read_table(spark, conf.output(conf.attribution.output_path), "parquet", {}, "attribution")
    rows = events.where(F.col("session_id") == session_id).toPandas()
    if rows.empty:
        raise InputError(
            f"session {session_id!r} is not in {conf.output(conf.attribution.output_path)} "
            f"(it attributes the {conf.attribution.split} split; run jobs/attribute.py --split all for every session)"
        )
    rows = rows.sort_values("event_position")
    rows.insert(0, "rank", rows["gradient_attribution"].rank(ascending=False, method="first").astype(int))
    return rows.sort_values("rank")


def format_table(rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    head = (
        f"session {first['session_id']}: label {int(first['label'])} "
        f"({'converted' if first['label'] else 'not converted'}), predicted P(convert) {first['prediction']:.3f}, "
        f"{int(first['session_length'])} events"
    )
    cols = ["rank", "event_position", "event_type", "store_name", *[c for c in SCORES if c in rows.columns]]
    return head + "\n" + rows[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")


def picture(rows: pd.DataFrame) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = rows.sort_values("event_position")
    labels = [
        f"{p}: {t}" + (f" @ {s}" if isinstance(s, str) else "")
        for p, t, s in zip(ordered["event_position"], ordered["event_type"], ordered["store_name"], strict=True)
    ]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(ordered) + 1.5))
    colors = ["#2e7d32" if c >= 0 else "#c62828" for c in ordered["contribution"]]
    ax.barh(range(len(ordered)), ordered["gradient_attribution"], color=colors)
    ax.set_yticks(range(len(ordered)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("gradient attribution (green: pushes towards conversion, red: away)")
    first = ordered.iloc[0]
    ax.set_title(f"{first['session_id']}  P(convert) = {first['prediction']:.3f}, label {int(first['label'])}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def run(spark, conf: Config, session_id: str) -> tuple[str, str]:
    rows = session_events(spark, conf, session_id)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in session_id)
    location = join(conf.output(conf.report.output_path), f"explain/{safe}.png")
    write_bytes(location, picture(rows))
    return format_table(rows), location
