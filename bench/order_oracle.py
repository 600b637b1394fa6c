"""What the data allows for the order-dependent scenario's effects: a logistic regression given the
planted design, on a run of ``generate.effects=ordered`` (docs/scenarios.md, "What the data allows for
the order effects"):

    python -m bench.order_oracle bench/results/scenarios/renamed-ordered-1

Its features are each event type's count per position bin (the additive part) and the three order terms
the generator plants: an A before a B, the occurrence type present, the session ending on the last-step
type. It is fitted on the training split (ridge 0.001) and scored on the test split; the standard errors
come from the Hessian. Prints the order terms' coefficients against the planted ones, and the test
ROC-AUC with and without the order terms, beside the run's transformer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import torch

from attribution.metrics import roc_auc
from attribution.schema import POSITION_BIN_UPPER, POSITION_BINS


def design(types: list[list[str]], vocab: dict[str, int], order: dict) -> np.ndarray:
    """Per session: counts by (event type, position bin), then the pair, occurrence and last-step terms."""
    first, second = order["pair"]["first_event_type"], order["pair"]["second_event_type"]
    occurrence, last = order["occurrence"]["event_type"], order["recency"]["event_type"]
    bins = len(POSITION_BINS)
    x = np.zeros((len(types), len(vocab) * bins + 3))
    for row, session in enumerate(types):
        for position, event in enumerate(session):
            x[row, vocab[event] * bins + int(np.searchsorted(POSITION_BIN_UPPER, position + 1))] += 1
        seen_first = False
        for event in session:
            seen_first = seen_first or event == first
            if event == second and seen_first:
                x[row, -3] = 1
                break
        x[row, -2] = float(occurrence in session)
        x[row, -1] = float(bool(session) and session[-1] == last)
    return x


def fit(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Ridge logistic regression (intercept first, not penalized) and the coefficients' standard errors."""
    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        z = xt @ w[1:] + w[0]
        value = torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="sum")
        value = value + ridge * (w[1:] ** 2).sum()
        value.backward()
        return value

    opt.step(loss)
    w = w.detach()
    p = torch.sigmoid(xt @ w[1:] + w[0])
    xa = torch.cat([torch.ones(len(x), 1, dtype=torch.float64), xt], 1)
    hessian = xa.T @ (xa * (p * (1 - p))[:, None]) + 2 * ridge * torch.eye(xa.shape[1], dtype=torch.float64)
    return w.numpy(), torch.sqrt(torch.diag(torch.linalg.pinv(hessian))).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a bench_scenarios run directory of the ordered family (data/ and out/ under it)")
    args = p.parse_args()
    run = Path(args.run)
    order = json.loads((run / "data" / "ground_truth.json").read_text())["order_effects"]
    table = ds.dataset(run / "out" / "sessions").to_table(columns=["event_types", "label", "split"])
    types = table.column("event_types").to_pylist()
    y = np.asarray(table.column("label").to_pylist(), dtype=float)
    split = np.asarray(table.column("split").to_pylist())
    vocab = {e: i for i, e in enumerate(sorted({e for s in types for e in s}))}
    x = design(types, vocab, order)
    train, test = split == "train", split == "test"
    used = x[train].std(0) > 0
    used[-3:] = True
    w, se = fit(x[train][:, used], y[train])
    without = x.copy()
    without[:, -3:] = 0
    w0, _ = fit(without[train][:, used], y[train])
    first, second = order["pair"]["first_event_type"], order["pair"]["second_event_type"]
    has_first = np.array([first in s for s in types])
    has_second = np.array([second in s for s in types])
    pair = x[:, -3] == 1
    print(
        f"pair {first} -> {second}: {int((has_second & ~pair).sum()):,} sessions with a {second} and no {first} "
        f"before it, {int((has_first & ~has_second).sum()):,} with a {first} and no {second}"
    )
    # the occurrence term is the type's presence beside its counts: the first occurrence's effect less a
    # repeat's (the counts carry the repeats' effect)
    occurrence = order["occurrence"]["first_effect"] - order["occurrence"]["repeat_effect"]
    planted = (order["pair"]["effect"], occurrence, order["recency"]["last_effect"])
    for name, k, value in zip(("pair", "occurrence", "last step"), (-3, -2, -1), planted, strict=True):
        print(f"  {name}: {w[k]:+.3f} +- {se[k]:.3f} (z {w[k] / se[k]:.1f}); planted {value:+.2f}")
    with_terms = roc_auc(y[test], x[test][:, used] @ w[1:] + w[0])
    without_terms = roc_auc(y[test], without[test][:, used] @ w0[1:] + w0[0])
    print(f"test ROC-AUC with the order terms {with_terms:.4f}, without {without_terms:.4f}")
    metrics = run / "out" / "model" / "metrics.json"
    if metrics.exists():
        print(f"the run's transformer: test ROC-AUC {json.loads(metrics.read_text())['test']['roc_auc']:.4f}")


if __name__ == "__main__":
    main()
