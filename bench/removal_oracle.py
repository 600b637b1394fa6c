"""What the data allow for the removal effects: the published event-type and position-bin removal effects
of a run of ``generate.effects=random``, ``spread`` or ``ordered`` beside two references that know more than the
product can (docs/scenarios.md, "What the data allow for the removal effects"):

    python -m bench.removal_oracle bench/results/scenarios/renamed-random-9 [more run directories]

- ``planted``: the generator's own model (its base logit, event-type and store effects, position weights,
  order effects and session noise) applied to the run's test sessions as the pipeline made them. Against the truth,
  which the generator computes on sessions it draws itself, it measures what sessionization, truncation
  and the test split's sample do to the number before any model is fitted.
- ``oracle``: a logistic regression given the planted form, fitted on the run's training split (its
  features: per event type, and per store on the effect-bearing event types, the sum of the events'
  position weights; on the ordered family also its four order terms: a b after an a, the occurrence
  type present, its repeats, the session ending on the last-step type; ridge 1, as the store oracle),
  its removal effects on the test sessions. It knows
  which form the effects take, so it is the error no model of this data can be expected to beat.

Each removal is the pipeline's and the truth's: every event of the key gone, the gap closed, P(convert)
before minus after, averaged over the test sessions that have the key, in percentage points. Prints per
run the mean absolute error of the published effects, the planted model's and the oracle's against the
truth over the 15 keys (10 event types, 5 position bins), with the published blend's two parts (the
transformer's and the counts baseline's removal effects), then the keys with the largest published errors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from attribution.schema import POSITION_BIN_UPPER, POSITION_BINS
from bench.order_oracle import fit

# the published table's columns of the blend's parts, and the columns the summary compares with the truth
PARTS = (("transformer", "removal_transformer_pp"), ("baseline", "removal_baseline_pp"))
COLUMNS = ("published", "transformer", "baseline", "planted", "oracle")
NOISE_DRAWS = 64  # the planted model's session noise, integrated by these draws (the same for every key)


def _bin_bounds() -> dict[str, tuple[int, int]]:
    """Position bin -> (first, last) 1-based position."""
    lows = [1, *(u + 1 for u in POSITION_BIN_UPPER)]
    highs = [*POSITION_BIN_UPPER, 10**9]
    return {b: (lo, hi) for b, lo, hi in zip(POSITION_BINS, lows, highs, strict=True)}


def _weights(n: int, by_bin: dict[str, float]) -> np.ndarray:
    """The position weight of positions 1..n."""
    table = np.array([by_bin[b] for b in POSITION_BINS])
    return table[np.searchsorted(POSITION_BIN_UPPER, np.arange(1, n + 1))]


def features(
    types: list[str], stores: list[str | None], kept: np.ndarray, type_ids: dict, store_ids: dict, truth: dict
) -> np.ndarray:
    """One session's planted-form features with only the ``kept`` events, the gap closed."""
    x = np.zeros(len(type_ids) + len(store_ids))
    idx = np.flatnonzero(kept)
    w = _weights(len(idx), truth["position_weights"])
    applies = set(truth["store_effect_applies_to"])
    for weight, i in zip(w, idx, strict=True):
        x[type_ids[types[i]]] += weight
        s = stores[i]
        if s is not None and types[i] in applies and s in store_ids:
            x[len(type_ids) + store_ids[s]] += weight
    order = truth.get("order_effects")
    if order is None:
        return x
    return np.concatenate([x, order_terms([types[i] for i in idx], order)])


def order_terms(types: list[str], order: dict) -> np.ndarray:
    """The ordered family's planted order terms of a session's events (attribution/generate.py,
    event_contributions): a b after an a, whether the occurrence type occurs, its repeats, whether the
    session ends on the last-step type."""
    a, b = order["pair"]["first_event_type"], order["pair"]["second_event_type"]
    first_a = types.index(a) if a in types else len(types)
    paired = any(t == b for t in types[first_a + 1 :])
    c = sum(t == order["occurrence"]["event_type"] for t in types)
    ends = bool(types) and types[-1] == order["recency"]["event_type"]
    return np.array([float(paired), float(c > 0), float(max(c - 1, 0)), float(ends)])


def _removed(types: list[str], key: tuple[str, str]) -> np.ndarray | None:
    """The events a key's removal takes out of a session, or None when it has none."""
    kind, value = key
    n = len(types)
    if kind == "event_type":
        gone = np.array([t == value for t in types])
    else:
        lo, hi = _bin_bounds()[value]
        gone = (np.arange(1, n + 1) >= lo) & (np.arange(1, n + 1) <= hi)
    return gone if gone.any() else None


def one_run(run: Path) -> dict:
    truth = json.loads((run / "data" / "ground_truth.json").read_text())
    table = ds.dataset(run / "out" / "sessions").to_table(columns=["event_types", "store_ids", "label", "split"])
    types = table.column("event_types").to_pylist()
    stores = table.column("store_ids").to_pylist()
    y = np.asarray(table.column("label").to_pylist(), dtype=float)
    split = np.asarray(table.column("split").to_pylist())
    type_names = sorted(truth["event_type_effects"])
    type_ids = {t: i for i, t in enumerate(type_names)}
    store_names = sorted(truth["store_effects"])
    store_ids = {s: i for i, s in enumerate(store_names)}
    x = np.stack(
        [features(t, s, np.ones(len(t), bool), type_ids, store_ids, truth) for t, s in zip(types, stores, strict=True)]
    )
    train = split == "train"
    used = x[train].std(0) > 0
    w, _ = fit(x[train][:, used], y[train], ridge=1.0)
    coef = np.zeros(x.shape[1])
    coef[used] = w[1:]
    planted = np.array(
        [truth["event_type_effects"][t] for t in type_names]
        + [truth["store_effects"][s]["effect"] for s in store_names]
    )
    if (order := truth.get("order_effects")) is not None:
        planted = np.concatenate(
            [
                planted,
                [
                    order["pair"]["effect"],
                    order["occurrence"]["first_effect"],
                    order["occurrence"]["repeat_effect"],
                    order["recency"]["last_effect"],
                ],
            ]
        )
    noise = np.random.default_rng(0).normal(0.0, truth["noise_sd"], NOISE_DRAWS)

    def p_oracle(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(z @ coef + w[0])))

    def p_planted(z: np.ndarray) -> np.ndarray:
        logit = (z @ planted + truth["base_logit"])[:, None] + noise[None, :]
        return (1 / (1 + np.exp(-logit))).mean(1)

    test = np.flatnonzero(split == "test")
    keys = [("event_type", t) for t in type_names] + [("position_bin", b) for b in POSITION_BINS]
    rows = []
    for key in keys:
        full, without = [], []
        for i in test:
            gone = _removed(types[i], key)
            if gone is None:
                continue
            full.append(x[i])
            without.append(features(types[i], stores[i], ~gone, type_ids, store_ids, truth))
        a, b = np.array(full), np.array(without)
        rows.append(
            {
                "kind": key[0],
                "key": key[1],
                "sessions": len(full),
                "truth": truth["true_removal_effect_pp"][key[0]][key[1]],
                "planted": 100 * float((p_planted(a) - p_planted(b)).mean()),
                "oracle": 100 * float((p_oracle(a) - p_oracle(b)).mean()),
            }
        )
    frame = pd.DataFrame(rows)
    report = run / "out" / "report"
    published = {
        "event_type": pd.read_csv(report / "event_type_attribution_no_funnel.csv").set_index("event_type"),
        "position_bin": pd.read_csv(report / "position_attribution_no_funnel.csv").set_index("position_bin"),
    }
    # the blend's two parts, where the run blended (removal_baseline_pp is empty without the baseline)
    for col, source in (("published", "removal_effect_pp"), *PARTS):
        frame[col] = [float(published[k].loc[v, source]) for k, v in zip(frame.kind, frame.key, strict=True)]
    for col in COLUMNS:
        frame[f"{col}_error"] = frame[col] - frame.truth
    return {"run": run.name, "keys": frame}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="bench_scenarios run directories (data/ and out/ under each)")
    p.add_argument("--worst", type=int, default=3, help="the keys with the largest published errors to list")
    args = p.parse_args()
    results = [one_run(Path(r)) for r in args.runs]
    cols = COLUMNS
    print(
        "| run | MAE published | the transformer alone | the counts baseline alone | the planted model on the "
        "pipeline's sessions | the oracle |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        k = r["keys"]
        print(f"| {r['run']} | " + " | ".join(f"{k[f'{c}_error'].abs().mean():.2f} pp" for c in cols) + " |")
    means = [np.mean([r["keys"][f"{c}_error"].abs().mean() for r in results]) for c in cols]
    print("| **mean** | " + " | ".join(f"**{m:.2f} pp**" for m in means) + " |")
    for r in results:
        k = r["keys"].reindex(r["keys"].published_error.abs().sort_values(ascending=False).index)
        print(f"\n{r['run']}: key, test sessions with it, truth, published, planted model, oracle (pp)")
        for _, row in k.head(args.worst).iterrows():
            print(
                f"  {row.key}: {row.sessions}, {row.truth:+.2f}, {row.published:+.2f}, {row.planted:+.2f}, "
                f"{row.oracle:+.2f}"
            )


if __name__ == "__main__":
    main()
