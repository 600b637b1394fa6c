"""What order terms would do for a counts regression's removal effects, on scenario runs
(docs/scenarios.md, "Order terms in a counts regression"):

    python -m bench.order_terms bench/results/scenarios/renamed-ordered-11 [more run directories]

A ridge logistic regression (ridge 1 on the summed log loss, intercept free), fitted on a run's training
split, with the features of the counts baseline's form: per session, each event type's count in each
position bin and each store's count (stores in at least 5 training sessions). Then the same with generic
order terms beside them, the context path's kinds (attribution/model.py) told no planted form: for every
ordered pair of event types (u, t), whether a t comes after the session's first u (once per session);
per event type, its repeats (its count less one), whether it is the session's first event and whether it
is its last. The order terms' ridge is the counts' times each ``--scales`` value, and the validation
split's log loss picks one of them or the counts alone. For each, the mean absolute error of the
removal effects (every event of a key gone, the gap closed, P(convert) before minus after, averaged over
the test sessions with the key) against the generator's true removal effects over 15 keys (10 event
types, 5 position bins), in percentage points, beside the run's published transformer and counts
baseline.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from attribution.schema import POSITION_BIN_UPPER, POSITION_BINS
from bench.order_oracle import fit
from bench.removal_oracle import _removed

MIN_STORE_SESSIONS = 5


def features(types: list[str], stores: list[str | None], names: list[str], store_ids: dict, order: bool) -> np.ndarray:
    """One session's counts (type x bin, store) and, with ``order``, its generic order terms."""
    t_ids = {t: i for i, t in enumerate(names)}
    bins = len(POSITION_BINS)
    x = np.zeros(len(names) * bins + len(store_ids))
    for p, (t, s) in enumerate(zip(types, stores, strict=True)):
        if t in t_ids:
            x[t_ids[t] * bins + int(np.searchsorted(POSITION_BIN_UPPER, p + 1))] += 1
        if s in store_ids:
            x[len(names) * bins + store_ids[s]] += 1
    if not order:
        return x
    n = len(names)
    pair, count, first, last = np.zeros((n, n)), np.zeros(n), np.zeros(n), np.zeros(n)
    seen: set[int] = set()
    for t in types:
        j = t_ids.get(t)
        if j is None:
            continue
        for u in seen - {j}:
            pair[u, j] = 1.0
        seen.add(j)
        count[j] += 1
    if types and types[0] in t_ids:
        first[t_ids[types[0]]] = 1.0
    if types and types[-1] in t_ids:
        last[t_ids[types[-1]]] = 1.0
    return np.concatenate([x, pair[~np.eye(n, dtype=bool)], np.maximum(count - 1, 0), first, last])


def one_run(run: Path, scales: list[float]) -> list[dict]:
    truth = json.loads((run / "data" / "ground_truth.json").read_text())
    table = ds.dataset(run / "out" / "sessions").to_table(columns=["event_types", "store_ids", "label", "split"])
    types, stores = table.column("event_types").to_pylist(), table.column("store_ids").to_pylist()
    y = np.asarray(table.column("label").to_pylist(), dtype=float)
    split = np.asarray(table.column("split").to_pylist())
    names = sorted(truth["event_type_effects"])
    train, validation, test = split == "train", split == "validation", np.flatnonzero(split == "test")
    seen = Counter(s for i in np.flatnonzero(train) for s in set(stores[i]) if s is not None)
    store_ids = {s: i for i, s in enumerate(sorted(k for k, v in seen.items() if v >= MIN_STORE_SESSIONS))}
    x = np.stack([features(t, s, names, store_ids, True) for t, s in zip(types, stores, strict=True)])
    counts = len(names) * len(POSITION_BINS) + len(store_ids)
    keys = [("event_type", t) for t in names] + [("position_bin", b) for b in POSITION_BINS]
    # per key, the test sessions with it, whole and without the key
    pairs = {}
    for key in keys:
        whole, less = [], []
        for i in test:
            gone = _removed(types[i], key)
            if gone is None:
                continue
            kept = np.flatnonzero(~gone)
            whole.append(x[i])
            less.append(features([types[i][j] for j in kept], [stores[i][j] for j in kept], names, store_ids, True))
        pairs[key] = (np.array(whole), np.array(less))
    rows = []
    for scale in [0.0, *scales]:
        columns = np.arange(counts) if scale == 0 else np.arange(x.shape[1])
        factor = np.ones(x.shape[1])
        if scale:
            factor[counts:] = 1 / np.sqrt(scale)  # ridge on w for x / sqrt(k) is ridge x k on x's weights
        z = x[:, columns] * factor[columns]
        w, _ = fit(z[train], y[train], ridge=1.0)

        def p(m: np.ndarray, w=w, columns=columns, factor=factor) -> np.ndarray:
            return 1 / (1 + np.exp(-((m[:, columns] * factor[columns]) @ w[1:] + w[0])))

        pv = p(x[validation])
        loss = float(-np.mean(y[validation] * np.log(pv) + (1 - y[validation]) * np.log(1 - pv)))
        errors = [
            abs(100 * float((p(a) - p(b)).mean()) - truth["true_removal_effect_pp"][k][v])
            for (k, v), (a, b) in pairs.items()
        ]
        rows.append({"run": run.name, "order_ridge": scale, "validation_log_loss": loss, "mae": float(np.mean(errors))})
    report = run / "out" / "report"
    published = pd.concat(
        [
            pd.read_csv(report / "event_type_attribution_no_funnel.csv").set_index("event_type"),
            pd.read_csv(report / "position_attribution_no_funnel.csv").set_index("position_bin"),
        ]
    )
    for part in ("removal_transformer_pp", "removal_baseline_pp", "removal_effect_pp"):
        mae = np.mean([abs(published.loc[v, part] - truth["true_removal_effect_pp"][k][v]) for k, v in keys])
        for r in rows:
            r[part] = float(mae)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="bench_scenarios run directories (data/ and out/ under each)")
    p.add_argument("--scales", default="1,10,100,1000,10000", help="the order terms' ridge over the counts'")
    args = p.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    print(
        "| run | counts alone | order terms at ridge x"
        + " | x".join(f"{s:g}" for s in scales)
        + " | picked by validation | published: transformer, counts baseline, blend |"
    )
    print("|---|" + "---:|" * (len(scales) + 3))
    for run in args.runs:
        rows = one_run(Path(run), scales)
        best = min(rows, key=lambda r: r["validation_log_loss"])
        picked = "counts alone" if best["order_ridge"] == 0 else f"x{best['order_ridge']:g}"
        r0 = rows[0]
        print(
            f"| {Path(run).name} | "
            + " | ".join(f"{r['mae']:.2f}" for r in rows)
            + f" | {best['mae']:.2f} ({picked}) | {r0['removal_transformer_pp']:.2f}, {r0['removal_baseline_pp']:.2f}, "
            f"{r0['removal_effect_pp']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
