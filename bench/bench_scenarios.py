"""What a person reads, scored against randomized planted truth: the pipeline on the ``renamed`` scenario
family (another app's event and column names, CSV with epoch-ms times, no stores dimension, mapped by
config alone) with effects drawn from each seed, and on the null scenario (every effect 0).

    python -m bench.bench_scenarios [--seeds 1,2,3,4,5] [--null-seeds 1,2,3] [--users 12000]
                                    [--spread-seeds 1,2,3,4,5] [--ordered-seeds 1,2,3,4,5]
                                    [--train-seeds 100,200] [--set model.causal_events=true ...]

For each run it reads the published tables and ``ground_truth_recovery.csv`` (which scores them) and
prints one row; then the averages against the bars:

- random effects: the event-type table's order vs the planted truth, Spearman >= 0.9 on average and
  >= 0.8 on every seed, against both truths the generator writes (the per-occurrence effects, and the
  planted model's own removal effects); the store table's top 5 holds >= 4 of the planted top 5 (precision@5 >= 0.8);
  the position table shows the planted decay (Spearman < 0);
- random effects, removal: the published 95% CIs of the event types' and position bins' removal effects
  hold the planted model's removal effect for >= 80% of keys on average, no sign error where the planted
  effect is >= 1 pp from 0, and the mean absolute error;
- spread (``--spread-seeds``): the planted stores across the popularity range, three of five with 30-100
  test sessions: the store table's precision@5 (bar 0.6) and the removal scores above;
- ordered (``--ordered-seeds``): effects that depend on order (a pair, a first occurrence, a last step):
  the planted pair in the pair table's top 3 with the verdict "work together", the occurrence and
  last-step rows of the context tables in the planted direction with CIs excluding 0, each on >= 4 of 5
  seeds; the transformer's test AUC above the counts baseline's (paired difference's CI above 0) on >= 4;
- every family: at most 10% of the pairs whose planted interaction is under 0.1 log-odds flagged by the
  pair table (no invented journeys);
- null: at most 10% of the published keys (event types, position bins, stores) flagged as
  distinguishable from noise on average, and the insights say first that no driver can be read.

Results go to bench/results/scenarios.json. Stages: generate, sessionize, train (no leakage check),
attribute (grad_x_input and integrated_gradients), report.

``--train-seeds 100,200``: what training alone varies. Each random seed's generated data is also
sessionized, trained, attributed and reported with ``run.seed`` = the seed + each offset (``run.seed``
seeds training; the data and the sessions are the same), and the summary gives every data seed's
event-type order and store precision@5 over its training seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from attribution.scenarios import overrides

ROOT = Path(__file__).resolve().parent.parent
STAGES = "generate,sessionize,train,attribute,report"


def run_one(
    work: Path,
    effects: str,
    seed: int,
    users: int,
    days: int,
    extra: list[str],
    stages: str = STAGES,
    train_seed: int | None = None,
) -> dict:
    """One run on the data of ``seed``; with ``train_seed``, the data already generated for ``seed``
    trained with ``run.seed`` = ``train_seed``, into its own output directory."""
    from jobs import pipeline

    name = f"renamed-{effects}-{seed}"
    data = work / name / "data"
    if train_seed is not None:
        name = f"{name}-t{train_seed}"
    out = work / name / "out"
    sets = [
        *overrides("renamed", str(data)),
        f"generate.effects={effects}",
        f"generate.n_users={users}",
        f"generate.n_days={days}",
        "generate.n_bot_users=0",
        f"run.seed={seed if train_seed is None else train_seed}",
        f"run.run_id={name}",
        f"run.output_dir={out}",
        "train.leakage_check=false",
        "attribution.methods=[grad_x_input,integrated_gradients]",
        "report.default_method=integrated_gradients",
        *extra,
    ]
    argv = ["--conf", str(ROOT / "conf" / "local.yaml"), "--stages", stages]
    for s in sets:
        argv += ["--set", s]
    started = time.time()
    code = pipeline.main(argv)
    if code != 0:
        return {"run": name, "effects": effects, "seed": seed, "exit": code}
    if "report" not in stages.split(","):  # data (and a model) for later runs: nothing to score yet
        return {"run": name, "effects": effects, "seed": seed, "seconds": round(time.time() - started, 1)}
    report = out / "report"
    manifest = json.loads((out / "manifest.json").read_text())
    status = manifest["stages"]["report"]["model_status"]
    row = {
        "run": name,
        "effects": effects,
        "seed": seed,
        "train_seed": seed if train_seed is None else train_seed,
        "seconds": round(time.time() - started, 1),
        "test_roc_auc": status.get("test_roc_auc"),
        "model_status": status["status"],
    }
    recovered = (
        pd.read_csv(report / "ground_truth_recovery.csv") if (report / "ground_truth_recovery.csv").exists() else None
    )
    if recovered is not None:
        mine = recovered[recovered.method == "integrated_gradients"].set_index("check")
        row.update({k: float(v) for k, v in mine["value"].items()})
        # whether each planted order effect passed (its bar is more than its value)
        row.update({f"{k}_agrees": bool(v) for k, v in mine["agrees"].items() if "planted" in k})
        if "removal_mae_pp" in mine.index and isinstance(mine.loc["removal_mae_pp", "detail"], str):
            row["removal_mae_alone"] = mine.loc["removal_mae_pp", "detail"]  # each model's own, beside a blend
    flagged = total = 0
    for stem in ("event_type", "position", "store"):
        table = pd.read_csv(report / f"{stem}_attribution_no_funnel.csv")
        total += len(table)
        flagged += int(table.effect_verdict.isin(["drives conversion", "holds conversion back"]).sum())
    row["keys"], row["keys_flagged"] = total, flagged
    pairs_csv = report / "event_pair_attribution_no_funnel.csv"
    if pairs_csv.exists():
        pairs = pd.read_csv(pairs_csv)
        row["pairs"] = len(pairs)
        row["pairs_flagged"] = int(pairs.interaction_verdict.isin(["work together", "stand in for each other"]).sum())
    blend = (json.loads((out / "model" / "metrics.json").read_text()).get("baseline") or {}).get("blend")
    row["blend_transformer_weight"] = None if not blend else blend["transformer_weight"]
    comparison_csv = report / "model_comparison.csv"
    if comparison_csv.exists():
        model = pd.read_csv(comparison_csv).set_index("model").loc["transformer"]
        row["auc_difference"] = float(model.auc_difference)
        row["auc_difference_ci_low"] = float(model.auc_difference_ci_low)
        row["auc_difference_ci_high"] = float(model.auc_difference_ci_high)
    return row


def _mean(df: pd.DataFrame, column: str) -> float | None:
    """The mean of a check's values over runs (None when no run scored it)."""
    return float(df[column].mean()) if column in df else None


def _removal(df: pd.DataFrame) -> dict:
    """The published removal effects against the planted ones over a family's runs (ground_truth.py)."""
    return {
        "removal_ci_coverage_event_type_mean": _mean(df, "removal_ci_coverage_event_type"),
        "removal_ci_coverage_position_bin_mean": _mean(df, "removal_ci_coverage_position_bin"),
        "removal_mae_pp_mean": _mean(df, "removal_mae_pp"),
        "removal_sign_errors_total": int(df["removal_sign_errors"].sum()) if "removal_sign_errors" in df else None,
        # the sign errors whose CI excludes 0: a direction the page states, the wrong one
        "removal_wrong_directions_total": int(df["removal_wrong_directions"].sum())
        if "removal_wrong_directions" in df
        else None,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--null-seeds", default="1,2,3")
    p.add_argument(
        "--spread-seeds",
        default="",
        help="comma-separated seeds of generate.effects=spread: planted stores across the popularity range",
    )
    p.add_argument(
        "--ordered-seeds",
        default="",
        help="comma-separated seeds of generate.effects=ordered: a pair, an occurrence and a last-step effect",
    )
    p.add_argument("--users", type=int, default=12000)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "scenarios.json"), help="the summary's file")
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--work", default=str(ROOT / "bench" / "results" / "scenarios"))
    p.add_argument(
        "--set",
        action="append",
        default=[],
        help="a config override for every run (dotted.key=value; repeat it): a model or training variant",
    )
    p.add_argument(
        "--train-seeds",
        default="",
        help="comma-separated offsets: also train each random seed's data with run.seed = seed + offset",
    )
    p.add_argument(
        "--stages",
        default=STAGES,
        help="the stages each run runs (e.g. generate,attribute,report on runs already trained under --work)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rerun only the report stage on the runs already under --work (a change to the tables alone)",
    )
    args = p.parse_args(argv)
    work = Path(args.work)
    rows = []
    random_seeds, null_seeds, spread_seeds, ordered_seeds = (
        [int(s) for s in arg.split(",") if s]
        for arg in (args.seeds, args.null_seeds, args.spread_seeds, args.ordered_seeds)
    )
    runs = (("random", random_seeds), ("none", null_seeds), ("spread", spread_seeds), ("ordered", ordered_seeds))
    for effects, seeds in runs:
        for seed in seeds:
            stages = "report" if args.report_only else args.stages
            rows.append(run_one(work, effects, seed, args.users, args.days, args.set, stages))
            print(json.dumps(rows[-1]), flush=True)
    offsets = [int(s) for s in args.train_seeds.split(",") if s]
    retrained = []
    for seed in random_seeds:
        for offset in offsets:
            stages = "report" if args.report_only else "sessionize,train,attribute,report"
            retrained.append(run_one(work, "random", seed, args.users, args.days, args.set, stages, seed + offset))
            print(json.dumps(retrained[-1]), flush=True)
    df = pd.DataFrame(rows)
    if not args.report_only and "report" not in args.stages.split(","):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"users": args.users, "days": args.days, "runs": rows}, indent=1))
        return 0
    rnd, null, spread = df[df.effects == "random"], df[df.effects == "none"], df[df.effects == "spread"]
    ordered = df[df.effects == "ordered"]
    summary = {
        "machine": "2 shared cores, Spark local[2] (docs/scenarios.md)",
        "users": args.users,
        "days": args.days,
        "random": None
        if rnd.empty
        else {
            "seeds": len(rnd),
            "event_type_effect_spearman_mean": float(rnd.event_type_effect_spearman.mean()),
            "event_type_effect_spearman_min": float(rnd.event_type_effect_spearman.min()),
            # the same order against the other truth, the planted model's own removal effects
            "event_type_effect_vs_removal_spearman_mean": float(rnd.event_type_effect_vs_removal_spearman.mean()),
            "event_type_effect_vs_removal_spearman_min": float(rnd.event_type_effect_vs_removal_spearman.min()),
            "event_type_lift_spearman_mean": float(rnd.event_type_lift_spearman.mean()),
            # the removal column against the planted model's own removal effects
            "event_type_removal_spearman_mean": float(rnd.event_type_removal_spearman.mean()),
            "event_type_removal_spearman_min": float(rnd.event_type_removal_spearman.min()),
            "store_precision_at_5_mean": float(rnd.store_precision_at_5.mean()),
            "position_direction_right": int((rnd.position_direction_spearman < 0).sum()),
            **_removal(rnd),
            # the pair table on additive effects: pairs flagged where the planted interaction is under 0.1
            "pairs_flagged_without_interaction_mean": _mean(rnd, "pairs_flagged_without_interaction"),
            "pair_sign_errors_total": int(rnd["pair_sign_errors"].sum()) if "pair_sign_errors" in rnd else None,
        },
        "null": {
            "seeds": len(null),
            "keys_flagged_share_mean": float((null["keys_flagged"] / null["keys"]).mean()) if len(null) else None,
            "pairs_flagged_share_mean": float((null["pairs_flagged"] / null["pairs"]).mean())
            if len(null) and "pairs" in null
            else None,
            "at_chance": int((null.model_status == "at_chance").sum()),
        },
        "runs": rows,
    }
    if len(spread):
        summary["spread"] = {
            "seeds": len(spread),
            "store_precision_at_5_mean": _mean(spread, "store_precision_at_5"),
            "event_type_effect_spearman_mean": _mean(spread, "event_type_effect_spearman"),
            **_removal(spread),
        }
    if len(ordered):
        summary["ordered"] = {
            "seeds": len(ordered),
            # the planted pair in the pair table's top 3 with the verdict "work together"
            "pair_planted_top3": int(
                ordered.get("pair_planted_rank_agrees", pd.Series(dtype=bool)).fillna(False).sum()
            ),
            "pair_planted_ranks": [None if pd.isna(v) else int(v) for v in ordered.get("pair_planted_rank", [])],
            # the first occurrence's CI above the second's; the last step's below the earlier ones'
            "occurrence_direction_right": int(
                ordered.get("occurrence_planted_direction_agrees", pd.Series(dtype=bool)).fillna(False).sum()
            ),
            "occurrence_differences": [float(v) for v in ordered.get("occurrence_planted_direction", [])],
            "recency_direction_right": int(
                ordered.get("recency_planted_direction_agrees", pd.Series(dtype=bool)).fillna(False).sum()
            ),
            "recency_differences": [float(v) for v in ordered.get("recency_planted_direction", [])],
            "pairs_flagged_without_interaction_mean": _mean(ordered, "pairs_flagged_without_interaction"),
            "pair_sign_errors_total": int(ordered["pair_sign_errors"].sum()) if "pair_sign_errors" in ordered else None,
            # the transformer against the counts baseline: the paired AUC difference's CI above 0
            "auc_beats_baseline": int((ordered.get("auc_difference_ci_low", pd.Series(dtype=float)) > 0).sum()),
            "auc_difference": [float(v) for v in ordered.get("auc_difference", [])],
            "event_type_effect_spearman_mean": _mean(ordered, "event_type_effect_spearman"),
            **_removal(ordered),
        }
    if retrained:
        every = pd.concat([rnd, pd.DataFrame(retrained)], ignore_index=True)
        every = every[every.get("exit", pd.Series(0, index=every.index)).fillna(0) == 0]
        summary["training_seeds"] = {
            "offsets": offsets,
            "runs": len(every),
            "event_type_effect_spearman_mean": float(every.event_type_effect_spearman.mean()),
            "event_type_effect_vs_removal_spearman_mean": float(every.event_type_effect_vs_removal_spearman.mean()),
            "store_precision_at_5_mean": float(every.store_precision_at_5.mean()),
            # per data seed: the values over its training seeds, the data seed's own first
            "by_seed": {
                str(seed): {
                    "train_seeds": [int(t) for t in g.train_seed],
                    "event_type_effect_spearman": [round(float(v), 3) for v in g.event_type_effect_spearman],
                    "event_type_effect_vs_removal_spearman": [
                        round(float(v), 3) for v in g.event_type_effect_vs_removal_spearman
                    ],
                    "store_precision_at_5": [float(v) for v in g.store_precision_at_5],
                }
                for seed, g in every.groupby("seed", sort=True)
            },
            "runs_retrained": retrained,
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
