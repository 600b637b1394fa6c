"""Does what a person reads recover the drivers planted in the synthetic data? (``generate`` writes them.)

Every check scores the **published tables** (the same rows, columns and order as the CSVs, the picture
and the insights), per method:

- ``event_type_effect_spearman``: Spearman rank correlation of the event-type table's headline, the
  effect (mean signed contribution per event), with each event type's planted effect per occurrence:
  the order in which the table lists the event types. Methods with a signed contribution only
  (grad_x_input, integrated_gradients).
- ``event_type_effect_vs_removal_spearman``: the same order (the effect) against the other truth the
  generator writes, the planted model's own removal effect per event type (``true_removal_effect_pp``,
  below). The per-occurrence effect says what one event does; the removal effect also counts how often
  and how early the event type occurs in a session, so the two truths order the event types a little
  differently.
- ``event_type_lift_spearman``: the same for ``attribution_lift``, the original analysis's measure, kept to show why
  it does not order the tables: lift compares normalized shares between converted and non-converted
  sessions, so a strongly negative event type gets a large share in both.
- ``event_type_removal_spearman``: Spearman rank correlation of the event-type table's
  ``removal_effect_pp`` with the planted model's own removal effect per event type (``generate`` computes
  it: ``true_removal_effect_pp``). Event types split by discovery feature are left out (removing one
  feature's clicks is not removing every click). The same for every method: it needs none.
- ``removal_ci_coverage_event_type`` / ``removal_ci_coverage_position_bin``: the share of event types
  (whole, not split by discovery feature) and of position bins whose published 95% removal CI
  (``removal_ci_low_pp`` .. ``removal_ci_high_pp``) holds the planted model's removal effect: does the
  interval a person quotes hold the truth? The bar is 0.8; a CI of session sampling alone held 3 of 10
  event types on the embedded default.
- ``removal_mae_pp``: the mean absolute error, in percentage points, of the published removal effects of
  those event types and position bins against the planted ones. The bar, 0.75 pp, is half of what a single
  model gave on the embedded default (1.52 pp; docs/scenarios.md).
- ``removal_sign_errors``: how many of those keys whose planted removal effect is at least 1 pp from 0 are
  published with the opposite sign. The bar is none. The detail names them, each with its CI.
- ``removal_wrong_directions``: of those sign errors, how many have a CI that excludes 0: a direction the
  page states, and the wrong one. A sign error whose CI holds 0 is published as "can't tell". The bar is none.
- ``store_precision_at_5``: of the 5 stores with the largest planted positive effects, how many are the
  store table's top 5 rows (ranked by the shrunk effect net of event type and position).
- ``position_direction_spearman``: planted effects shrink with position; the Spearman correlation of
  position bin order with the position table's mean |effect| per event (signed methods; the
  length-adjusted attribution for the others) should be negative.

The pair and context tables, against the planted model's own pair interactions
(``true_pair_interaction``, every scenario) and the order effects of ``generate.effects=ordered``
(``order_effects``):

- ``pairs_flagged_without_interaction``: of the pair table's pairs whose planted interaction on the logit
  is under :data:`PAIR_NULL` in size, the share flagged (``work together`` or ``stand in for each
  other``): journeys the table invents. The bar is 0.1.
- ``pair_sign_errors``: flagged pairs whose planted interaction is at least :data:`PAIR_NULL` the other
  way. The bar is none.
- ``pair_planted_rank`` (ordered effects): the planted pair's rank in the pair table (by
  |interaction_log_odds|), which must be at most 3 with the verdict ``work together``.
- ``occurrence_planted_direction`` (ordered effects, signed methods): the occurrence type's first
  occurrence counts more than its repeats: in the occurrence table its ``1st`` row's CI must lie above
  its ``2nd`` row's; the value is the difference of their effects (the planted one: first_effect -
  repeat_effect). A context table's level depends on the method's baseline (an integrated-gradients
  contribution is measured from the PAD event), so the check reads the difference, not the sign.
- ``recency_planted_direction`` (ordered effects, signed methods): the last-step type hurts as the last
  step only: its ``last`` row's CI in the recency table must lie below its ``earlier`` row's; the value
  is the earlier row's effect minus the last row's (planted: -last_effect, above 0).

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
from numpy.typing import ArrayLike

from attribution.errors import InputError
from attribution.faithfulness import spearman
from attribution.io import read_bytes
from attribution.schema import POSITION_BINS

ACCEPTANCE = 0.8  # the rank correlation the default method must reach on the embedded default
COVERAGE = 0.8  # the share of keys whose removal CI must hold the planted removal effect
MAE_PP = 0.75  # the removal effects' mean absolute error (pp) must be at most this
SIGN_PP = 1.0  # a planted removal effect this far from 0 (pp) must be published with its sign
PAIR_NULL = 0.1  # a planted pair interaction smaller than this on the logit counts as none
PAIR_FLAGGED = 0.1  # the share of such pairs the pair table may flag
PAIR_RANK = 3  # the planted pair must rank this high


def _spearman(a: ArrayLike, b: ArrayLike) -> float:
    return spearman(np.asarray(a, float), np.asarray(b, float))


def _overall(df: pd.DataFrame, prefix: str) -> pd.Series:
    """The mean of a per-label column over all events (both labels, weighted by their events)."""
    conv, nconv = df["events_converted"].fillna(0), df["events_not_converted"].fillna(0)
    total = df[f"{prefix}_converted"].fillna(0) * conv + df[f"{prefix}_not_converted"].fillna(0) * nconv
    return total / (conv + nconv).where(conv + nconv > 0)


def load(path: str) -> dict | None:
    try:
        return json.loads(read_bytes(path))
    except (InputError, FileNotFoundError):
        return None


def recovery(tables: dict[str, pd.DataFrame], truth: dict, run_id: str = "") -> pa.Table:
    """One row per (method, check) on the published tables: value, what the planted model implies,
    whether it agrees."""
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
        et["n"] = et["events"].fillna(0)
        signed = et["effect_log_odds"].notna().any()
        grouped = et.assign(e=et["effect_log_odds"] * et["n"], l=et["attribution_lift"] * et["n"])
        by_name = grouped.groupby("event_name")[["e", "l", "n"]].sum()
        if len(by_name) < 3:  # not the data the ground truth was written for
            continue
        planted = by_name.index.map(effects).to_numpy(float)
        if signed:
            rho = _spearman(by_name["e"] / by_name["n"], planted)
            rows.append(
                _row(method, "event_type_effect_spearman", rho, f">= {ACCEPTANCE}", rho >= ACCEPTANCE, len(by_name))
            )
        rho = _spearman(by_name["l"] / by_name["n"], planted)
        rows.append(_row(method, "event_type_lift_spearman", rho, f">= {ACCEPTANCE}", rho >= ACCEPTANCE, len(by_name)))
        true_removal = truth.get("true_removal_effect_pp", {}).get("event_type", {})
        removable = by_name[by_name.index.isin(list(true_removal))]
        if signed and len(removable) >= 3:
            rho = _spearman(removable["e"] / removable["n"], removable.index.map(true_removal).to_numpy(float))
            rows.append(
                _row(
                    method,
                    "event_type_effect_vs_removal_spearman",
                    rho,
                    f">= {ACCEPTANCE}",
                    rho >= ACCEPTANCE,
                    len(removable),
                )
            )
        if true_removal and "removal_effect_pp" in et.columns:
            whole = et[(et["event_type"] == et["event_name"]) & et["removal_effect_pp"].notna()]
            whole = whole[whole["event_name"].isin(list(true_removal))]
            if len(whole) >= 3:
                rho = _spearman(whole["removal_effect_pp"], whole["event_name"].map(true_removal))
                rows.append(
                    _row(method, "event_type_removal_spearman", rho, f">= {ACCEPTANCE}", rho >= ACCEPTANCE, len(whole))
                )

        if true_removal:
            positions = tables["position"][tables["position"]["method"] == method]
            rows += _removal_checks(method, et, positions, truth["true_removal_effect_pp"])

        st = tables["store"][tables["store"]["method"] == method].sort_values("rank")
        top = st.head(5)
        hits = len(set(top["store_id"].astype(str)) & top_planted)
        detail = (
            "table's top 5: "
            + ", ".join(map(str, top["store_name"]))
            + "; planted: "
            + ", ".join(n for _, _, n in planted_stores)
        )
        chance = f"chance {5 / max(len(st), 1):.2f}"
        rows.append(_row(method, "store_precision_at_5", hits / 5, f">= 0.6 ({chance})", hits >= 3, len(st), detail))

        rows += _pair_checks(method, tables.get("pair"), truth)
        if signed and "order_effects" in truth:
            rows += _context_checks(method, tables, truth["order_effects"])

        pos = tables["position"][tables["position"]["method"] == method].copy()
        pos["order"] = pos["position_bin"].map({b: i for i, b in enumerate(POSITION_BINS)})
        pos["magnitude"] = pos["mean_abs_effect_log_odds"] if signed else _overall(pos, "length_adjusted")
        pos = pos.dropna(subset=["magnitude", "order"])
        rho = _spearman(pos["order"], pos["magnitude"]) if len(pos) > 1 else float("nan")
        rows.append(
            _row(method, "position_direction_spearman", rho, "< 0 (early events matter more)", rho < 0, len(pos))
        )
    out = pd.DataFrame(rows, columns=["method", "check", "value", "expected", "agrees", "compared", "detail"])
    out.insert(0, "run_id", run_id)
    return pa.Table.from_pandas(out, preserve_index=False)


def _removal_checks(method: str, et: pd.DataFrame, positions: pd.DataFrame, truth: dict) -> list[dict]:
    """Coverage, MAE and sign rows of the published removal effects against the planted ones."""
    needed = ["removal_effect_pp", "removal_ci_low_pp", "removal_ci_high_pp"]
    parts = [
        ("event_type", et[et["event_type"] == et["event_name"]].set_index("event_name"), truth.get("event_type", {})),
        ("position_bin", positions.set_index("position_bin"), truth.get("position_bin", {})),
    ]
    rows, errors, compared = [], [], 0
    signs: list[str] = []  # the sign errors, named with their CI
    wrong = 0  # of those, the CIs that exclude 0
    # the two models' own effects where the published one blends them: their errors in the MAE row's detail
    alone: dict[str, list[float]] = {"removal_transformer_pp": [], "removal_baseline_pp": []}
    for dim, table, planted in parts:
        if not set(needed) <= set(table.columns):
            continue
        table = table[table.index.isin(list(planted)) & table["removal_effect_pp"].notna()]
        if not len(table):
            continue
        true = table.index.map(planted).to_numpy(float)
        est = table["removal_effect_pp"].to_numpy(float)
        low, high = table["removal_ci_low_pp"].to_numpy(float), table["removal_ci_high_pp"].to_numpy(float)
        covered = (low <= true) & (true <= high)
        quoted = [
            f"{k} {e:+.2f} [{lo:+.2f}, {hi:+.2f}] vs {t:+.2f}"
            for k, e, lo, hi, t in zip(table.index, est, low, high, true, strict=True)
        ]
        missed = [q for q, c in zip(quoted, covered, strict=True) if not c]
        share = float(covered.mean())
        rows.append(
            _row(
                method,
                f"removal_ci_coverage_{dim}",
                share,
                f">= {COVERAGE}",
                share >= COVERAGE,
                len(table),
                "missed: " + "; ".join(missed) if missed else "every CI holds the planted effect",
            )
        )
        errors += list(np.abs(est - true))
        for column, errs in alone.items():
            if column in table.columns:
                errs += list(np.abs(table[column].to_numpy(float) - true))
        flipped = (np.abs(true) >= SIGN_PP) & (np.sign(est) != np.sign(true))
        signs += [q for q, f in zip(quoted, flipped, strict=True) if f]
        wrong += int((flipped & ((low > 0) | (high < 0))).sum())
        compared += len(table)
    if compared:
        mae = float(np.mean(errors))
        names = {"removal_transformer_pp": "the transformer alone", "removal_baseline_pp": "the counts baseline alone"}
        others = [
            f"{names[c]} {np.mean(e):.2f} pp"
            for c, e in alone.items()
            if len(e) == compared and np.isfinite(e).all() and not np.allclose(e, errors)
        ]
        detail = "; ".join(others)
        rows.append(_row(method, "removal_mae_pp", mae, f"<= {MAE_PP}", mae <= MAE_PP, compared, detail))
        rows.append(_row(method, "removal_sign_errors", len(signs), "0", not signs, compared, "; ".join(signs)))
        rows.append(_row(method, "removal_wrong_directions", wrong, "0", wrong == 0, compared))
    return rows


def _pair_checks(method: str, pairs: pd.DataFrame | None, truth: dict) -> list[dict]:
    """The pair table against the planted pair interactions (module docstring)."""
    planted = {(p["first_event_type"], p["second_event_type"]): p for p in truth.get("true_pair_interaction", [])}
    if pairs is None or not len(pairs) or not planted:
        return []
    keys = list(zip(pairs["first_event_type"], pairs["second_event_type"], strict=True))
    true = np.array([planted[k]["interaction_log_odds"] if k in planted else np.nan for k in keys])
    flagged = pairs["interaction_verdict"].isin(["work together", "stand in for each other"]).to_numpy()
    estimate = pairs["interaction_log_odds"].to_numpy(float)
    known = np.isfinite(true)
    rows = []
    null = known & (np.abs(true) < PAIR_NULL)
    if null.any():
        share = float(flagged[null].mean())
        invented = [f"{a} → {b}" for (a, b), f, n in zip(keys, flagged, null, strict=True) if f and n]
        rows.append(
            _row(
                method,
                "pairs_flagged_without_interaction",
                share,
                f"<= {PAIR_FLAGGED}",
                share <= PAIR_FLAGGED,
                int(null.sum()),
                "flagged: " + ", ".join(invented) if invented else "none flagged",
            )
        )
    real = known & (np.abs(true) >= PAIR_NULL) & flagged
    wrong = real & (np.sign(estimate) != np.sign(true))
    rows.append(_row(method, "pair_sign_errors", int(wrong.sum()), "0", not wrong.any(), int(real.sum())))
    order = truth.get("order_effects", {}).get("pair")
    if order:
        key = (order["first_event_type"], order["second_event_type"])
        at = [i for i, k in enumerate(keys) if k == key]
        rank = float(pairs["rank"].iloc[at[0]]) if at else float("nan")
        verdict = pairs["interaction_verdict"].iloc[at[0]] if at else "not in the table"
        rows.append(
            _row(
                method,
                "pair_planted_rank",
                rank,
                f"<= {PAIR_RANK}, work together",
                bool(at) and rank <= PAIR_RANK and verdict == "work together",
                len(pairs),
                f"{key[0]} → {key[1]}: {verdict}",
            )
        )
    return rows


def _context_checks(method: str, tables: dict[str, pd.DataFrame], order: dict) -> list[dict]:
    """The occurrence and recency tables' rows of the planted order effects (module docstring)."""
    rows = []

    def cell(kind: str, column: str, event_type: str, context: str) -> pd.Series | None:
        table = tables.get(kind)
        if table is None:
            return None
        at = table[(table["method"] == method) & (table["event_type"] == event_type) & (table[column] == context)]
        return at.iloc[0] if len(at) else None

    for check, kind, column, (high, low), planted in (
        ("occurrence_planted_direction", "occurrence", "occurrence", ("1st", "2nd"), order["occurrence"]),
        ("recency_planted_direction", "recency", "recency", ("earlier", "last"), order["recency"]),
    ):
        event_type = planted["event_type"]
        above, below = cell(kind, column, event_type, high), cell(kind, column, event_type, low)
        if above is None or below is None:
            rows.append(_row(method, check, float("nan"), "", False, 0, f"{event_type}: no {high} or {low} row"))
            continue
        difference = float(above["effect_log_odds"] - below["effect_log_odds"])
        shown = "; ".join(
            f"{name} {r['effect_log_odds']:+.3f} [{r['effect_ci_low']:+.3f}, {r['effect_ci_high']:+.3f}]"
            for name, r in ((high, above), (low, below))
        )
        rows.append(
            _row(
                method,
                check,
                difference,
                f"> 0, {high}'s CI above {low}'s",
                bool(above["effect_ci_low"] > below["effect_ci_high"]),
                2,
                f"{event_type}: {shown}",
            )
        )
    return rows


def _row(method: str, check: str, value: float, expected: str, agrees: bool, compared: int, detail: str = "") -> dict:
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
    key = "event_type_effect_spearman" if "event_type_effect_spearman" in mine else "event_type_lift_spearman"
    out["default_method"] = default_method
    out["default_method_rank_correlation"] = mine.get(key)
    out["default_method_passes"] = bool(mine.get(key) is not None and mine[key] >= ACCEPTANCE)
    return out
