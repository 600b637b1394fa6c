"""What the data allow for the store table: a logistic regression given the planted design, on runs of
``generate.effects=spread`` or ``random`` (docs/scenarios.md, "What the data allow for the stores"):

    python -m bench.store_oracle bench/results/scenarios/renamed-spread-1 [more run directories]

The planted model adds a store's effect only on the event types in ``store_effect_applies_to`` (clicks,
page loads, result taps), times the event's position weight. The oracle is given exactly that: its
features are each event type's count per position bin and, per store, the sum of the position weights of
that store's effect-bearing events. It is fitted on the training split (ridge 1, as the order oracle),
with standard errors from the Hessian, so it knows what no product can (which events carry a store's
effect, and how much each position counts) and uses only the evidence the run's data hold.

It ranks the stores with at least ``--min-sessions`` training sessions of effect-bearing events three ways
and prints each ranking's precision@5 against the five planted positive stores (the check
``ground_truth_recovery.csv`` makes of the store table):

- ``coefficient``: the fitted coefficient;
- ``z``: coefficient / standard error, which ranks first the stores whose effect the data show most
  surely (where all but a few stores have no effect, the best of the three);
- ``shrunk``: the coefficient shrunk towards 0 by its standard error under a normal prior fitted to them
  all (:func:`attribution.statistics.shrink` without support, the store table's empirical Bayes).

Then, per planted store, its effect, its training and test sessions of effect-bearing events, and its
coefficient, standard error and rank by z.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from attribution.schema import POSITION_BIN_UPPER, POSITION_BINS
from attribution.statistics import shrink
from bench.order_oracle import fit

RANKINGS = ("coefficient", "z", "shrunk")


def design(
    types: list[list[str]], stores: list[list[str | None]], weights: dict[str, float], applies: set[str]
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(features, store names, per-session presence of each store's effect-bearing events): each event
    type's count per position bin, then per store the sum of its effect-bearing events' position weights."""
    type_ids = {e: i for i, e in enumerate(sorted({e for s in types for e in s}))}
    names = sorted({s for session in stores for s in session if s is not None})
    store_ids = {s: i for i, s in enumerate(names)}
    bins = len(POSITION_BINS)
    by_bin = [weights[b] for b in POSITION_BINS]
    base = len(type_ids) * bins
    x = np.zeros((len(types), base + len(names)))
    for row, (session_types, session_stores) in enumerate(zip(types, stores, strict=True)):
        for position, (event, store) in enumerate(zip(session_types, session_stores, strict=True)):
            b = int(np.searchsorted(POSITION_BIN_UPPER, position + 1))
            x[row, type_ids[event] * bins + b] += 1
            if store is not None and event in applies:
                x[row, base + store_ids[store]] += by_bin[b]
    return x, names, x[:, base:] > 0


def precision_at_5(score: np.ndarray, names: list[str], planted: set[str]) -> int:
    top = np.argsort(-score, kind="stable")[:5]
    return sum(names[i] in planted for i in top)


def one_run(run: Path, min_sessions: int) -> dict:
    truth = json.loads((run / "data" / "ground_truth.json").read_text())
    effects = {k: v["effect"] for k, v in truth["store_effects"].items()}
    planted = sorted((k for k, v in effects.items() if v > 0), key=lambda k: -effects[k])[:5]
    table = ds.dataset(run / "out" / "sessions").to_table(columns=["event_types", "store_ids", "label", "split"])
    x, names, present = design(
        table.column("event_types").to_pylist(),
        table.column("store_ids").to_pylist(),
        truth["position_weights"],
        set(truth["store_effect_applies_to"]),
    )
    y = np.asarray(table.column("label").to_pylist(), dtype=float)
    split = np.asarray(table.column("split").to_pylist())
    train = split == "train"
    used = x[train].std(0) > 0
    w, se = fit(x[train][:, used], y[train], ridge=1.0)
    coef, coef_se = np.zeros(x.shape[1]), np.full(x.shape[1], np.inf)
    coef[used], coef_se[used] = w[1:], se[1:]
    base = x.shape[1] - len(names)
    coef, coef_se = coef[base:], coef_se[base:]
    support = present[train].sum(0)
    kept = support >= min_sessions
    scores = {
        "coefficient": coef,
        "z": coef / coef_se,
        "shrunk": shrink(coef, coef_se)[0],
    }
    hits = {k: precision_at_5(np.where(kept, v, -np.inf), names, set(planted)) for k, v in scores.items()}
    z = np.where(kept, scores["z"], -np.inf)
    test_support = present[split == "test"].sum(0)
    rows = []
    for name in planted:
        i = names.index(name)
        rank = int((z > z[i]).sum()) + 1 if kept[i] else None
        rows.append((name, effects[name], int(support[i]), int(test_support[i]), coef[i], coef_se[i], rank))
    return {"run": run.name, "stores": int(kept.sum()), "hits": hits, "planted": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="bench_scenarios run directories (data/ and out/ under each)")
    p.add_argument("--min-sessions", type=int, default=20, help="training sessions a ranked store needs")
    args = p.parse_args()
    results = [one_run(Path(r), args.min_sessions) for r in args.runs]
    print("| run | stores ranked | " + " | ".join(f"P@5 by {k}" for k in RANKINGS) + " |")
    print("|---|---:|" + "---:|" * len(RANKINGS))
    for r in results:
        print(f"| {r['run']} | {r['stores']} | " + " | ".join(f"{r['hits'][k] / 5:.1f}" for k in RANKINGS) + " |")
    means = {k: np.mean([r["hits"][k] / 5 for r in results]) for k in RANKINGS}
    print("| **mean** | | " + " | ".join(f"**{means[k]:.2f}**" for k in RANKINGS) + " |")
    for r in results:
        print(f"\n{r['run']}: planted store, effect, training / test sessions of its effect-bearing events,")
        print("coefficient +- standard error, rank by z")
        for name, effect, n_train, n_test, c, s, rank in r["planted"]:
            print(f"  {name}: {effect:+.2f}, {n_train} / {n_test}, {c:+.2f} +- {s:.2f}, rank {rank}")


if __name__ == "__main__":
    main()
