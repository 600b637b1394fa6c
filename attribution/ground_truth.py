"""Does the attribution recover the drivers planted in the synthetic data? (``generate`` writes them.)

From the report's tables, per method:

- ``event_type_contribution_spearman``: Spearman rank correlation of each event type's mean signed
  contribution with its planted effect (methods with a signed contribution: grad_x_input,
  integrated_gradients). The planted effect is per occurrence, so this is the like-for-like check.
- ``event_type_lift_spearman``: the same for ``attribution_lift``, the seed's measure. Lift compares
  normalized magnitudes between converted and non-converted sessions: a strongly negative event type
  gets a large |score| in both, so lift is not expected to order the planted effects well.
- ``store_precision_at_5``: of the 5 stores with the largest planted positive effects, how many are
  among the method's top 5 stores. A store's score here is its events' mean signed contribution (the
  normalized attribution for methods without one) *beyond what the event's type and position bin get
  on average*, among stores with at least ``STORE_MIN_EVENTS`` events: the raw mean of the store
  table mixes in which event types a store's events are (views or page loads) and, at the seed's
  minimum of 10 events, is dominated by small stores' noise.
- ``position_direction_spearman``: planted effects shrink with position; the Spearman correlation of
  position bin order with the bins' mean length-adjusted attribution (attribution x session length,
  free of the session-length confound) should be negative.

Event types labelled ``event - discovery feature`` are compared by their event name (weighted by events).
A method with fewer than 3 event types in common with the ground truth (the ground truth of another
dataset) gets no rows, and the report says the ground truth does not match the data.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa

from attribution.events import POSITION_BINS

ACCEPTANCE = 0.8  # the rank correlation the default method must reach on the embedded default
STORE_MIN_EVENTS = 100


def store_scores(long, min_events: int = STORE_MIN_EVENTS) -> pd.DataFrame:
    """Per (method, store) with at least ``min_events`` events: the mean score beyond the event's
    (event type, position bin) cell mean, in Spark (one job: the few cell means are broadcast)."""
    from pyspark.sql import functions as F

    score = F.coalesce(F.col("contribution"), F.col("attribution"))
    scored = long.where(F.col("store_id").isNotNull()).withColumn("score", score)
    cells = scored.groupBy("method", "event_type", "position_bin").agg(F.avg("score").alias("cell"))
    return (
        scored.join(F.broadcast(cells), ["method", "event_type", "position_bin"])
        .groupBy("method", "store_id", "store_name")
        .agg(F.avg(F.col("score") - F.col("cell")).alias("effect"), F.count(F.lit(1)).alias("events"))
        .where(F.col("events") >= min_events)
        .toPandas()
    )


def _spearman(a, b) -> float:
    from attribution.faithfulness import spearman

    return spearman(np.asarray(a, float), np.asarray(b, float))


def _overall(df: pd.DataFrame, prefix: str) -> pd.Series:
    """The mean of a per-label column over all events (both labels, weighted by their events)."""
    conv, nconv = df["events_converted"].fillna(0), df["events_not_converted"].fillna(0)
    total = df[f"{prefix}_converted"].fillna(0) * conv + df[f"{prefix}_not_converted"].fillna(0) * nconv
    return total / (conv + nconv).where(conv + nconv > 0)


def load(path: str) -> dict | None:
    from attribution.io import InputError, read_bytes

    try:
        return json.loads(read_bytes(path))
    except (InputError, FileNotFoundError):
        return None


def recovery(tables: dict[str, pd.DataFrame], stores: pd.DataFrame, truth: dict, run_id: str = "") -> pa.Table:
    """One row per (method, check): value, what the planted model implies, whether it agrees."""
    effects = truth["event_type_effects"]
    planted_stores = sorted(
        ((v["effect"], str(k), v["store_name"]) for k, v in truth["store_effects"].items() if v["effect"] > 0),
        reverse=True,
    )[:5]
    top_planted = {s for _, s, _ in planted_stores}
    rows = []
    for method in tables["event_type"]["method"].unique():
        et = tables["event_type"][tables["event_type"]["method"] == method].copy()
        et["event_name"] = et["event_type"].str.split(" - ").str[0]
        et = et[et["event_name"].isin(list(effects))]
        et["events"] = et["events_converted"].fillna(0) + et["events_not_converted"].fillna(0)
        signed = et["contribution_converted"].notna().any() or et["contribution_not_converted"].notna().any()
        grouped = et.assign(c=_overall(et, "contribution") * et["events"], l=et["attribution_lift"] * et["events"])
        by_name = grouped.groupby("event_name")[["c", "l", "events"]].sum()
        if len(by_name) < 3:  # not the data the ground truth was written for
            continue
        planted = by_name.index.map(effects).to_numpy(float)
        if signed:
            rho = _spearman(by_name["c"] / by_name["events"], planted)
            rows.append(
                _row(
                    method, "event_type_contribution_spearman", rho, f">= {ACCEPTANCE}", rho >= ACCEPTANCE, len(by_name)
                )
            )
        rho = _spearman(by_name["l"] / by_name["events"], planted)
        rows.append(_row(method, "event_type_lift_spearman", rho, f">= {ACCEPTANCE}", rho >= ACCEPTANCE, len(by_name)))

        st = stores[stores["method"] == method]
        top = st.sort_values(["effect", "store_id"], ascending=[False, True]).head(5)
        hits = len(set(top["store_id"].astype(str)) & top_planted)
        detail = (
            "method's top 5: "
            + ", ".join(map(str, top["store_name"]))
            + "; planted: "
            + ", ".join(n for _, _, n in planted_stores)
        )
        chance = f"chance {5 / max(len(st), 1):.2f}"
        rows.append(_row(method, "store_precision_at_5", hits / 5, f">= 0.6 ({chance})", hits >= 3, len(st), detail))

        pos = tables["position"][tables["position"]["method"] == method].copy()
        pos["order"] = pos["position_bin"].map({b: i for i, b in enumerate(POSITION_BINS)})
        pos["adjusted"] = _overall(pos, "length_adjusted")
        pos = pos.dropna(subset=["adjusted", "order"])
        rho = _spearman(pos["order"], pos["adjusted"]) if len(pos) > 1 else float("nan")
        rows.append(
            _row(method, "position_direction_spearman", rho, "< 0 (early events matter more)", rho < 0, len(pos))
        )
    out = pd.DataFrame(rows, columns=["method", "check", "value", "expected", "agrees", "compared", "detail"])
    out.insert(0, "run_id", run_id)
    return pa.Table.from_pandas(out, preserve_index=False)


def _row(method, check, value, expected, agrees, compared, detail="") -> dict:
    value = float(value)
    return {
        "method": method,
        "check": check,
        "value": value,
        "expected": expected,
        "agrees": bool(agrees) if not math.isnan(value) else False,
        "compared": int(compared),
        "detail": detail,
    }


def summary(table: pa.Table, default_method: str) -> dict:
    """The manifest's view: per method and check, the value; and whether the default method passes."""
    df = table.to_pandas()
    out: dict = {"checks": {}}
    for _, r in df.iterrows():
        out["checks"].setdefault(r["method"], {})[r["check"]] = r["value"]
    mine = out["checks"].get(default_method, {})
    key = (
        "event_type_contribution_spearman" if "event_type_contribution_spearman" in mine else "event_type_lift_spearman"
    )
    out["default_method"] = default_method
    out["default_method_rank_correlation"] = mine.get(key)
    out["default_method_passes"] = bool(mine.get(key) is not None and mine[key] >= ACCEPTANCE)
    return out
