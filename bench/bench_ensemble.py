"""What the ensemble costs: the train and attribute stages with ``train.ensemble_members`` 1 and 3, side by side.

    python -m bench.bench_ensemble [--members 3]

Runs the train stage of conf/local.yaml (leakage check and counts baseline off) and then the attribute
stage (its four methods, removal effects on 2,000 sessions) on the embedded default's sessions (``make
run`` first; sessionized here if missing), once with one model and once with ``--members``, in one Spark
application. Prints each stage's time and the ratios (members / one); results in
bench/results/ensemble.json. The removal effects are the only part of the attribute stage the members
add to; the gradient methods read the first model alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from attribution.config_loader import load_config
from attribution.spark import build_spark
from attribution.stages import attribute as attribute_stage
from attribution.stages import train as train_stage
from bench.embedded import SESSIONS, ensure_sessions
from bench.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=3)
    args = p.parse_args()
    work = RESULTS / "ensemble_run"
    common = [
        f"sessions.sessions_path={SESSIONS}",
        "train.leakage_check=false",
        "baseline.enabled=false",
        "attribution.delta_path=null",
    ]
    conf = load_config(ROOT / "conf" / "local.yaml", [f"run.output_dir={work}", *common])
    spark = build_spark(conf.spark)
    ensure_sessions(conf.output(conf.sessions.sessions_path))
    seconds: dict[str, dict[str, float]] = {}
    for k in (1, args.members):
        c = load_config(
            ROOT / "conf" / "local.yaml", [f"run.output_dir={work / f'k{k}'}", *common, f"train.ensemble_members={k}"]
        )
        t0 = time.time()
        train_stage.run(spark, c)
        t1 = time.time()
        summary = attribute_stage.run(spark, c).summary
        t2 = time.time()
        seconds[str(k)] = {
            "train": t1 - t0,
            "attribute": t2 - t1,
            "removal_forward_passes": summary.get("removal_forward_passes"),
        }
    one, many = seconds["1"], seconds[str(args.members)]
    out = {
        "machine": machine(),
        "members": args.members,
        "seconds": seconds,
        "train_ratio": many["train"] / one["train"],
        "attribute_ratio": many["attribute"] / one["attribute"],
    }
    print(f"machine: {out['machine']}")
    for stage in ("train", "attribute"):
        print(
            f"{stage} stage: one model {one[stage]:.1f}s, {args.members} members {many[stage]:.1f}s; "
            f"ratio {out[f'{stage}_ratio']:.2f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ensemble.json").write_text(json.dumps(out, indent=1))
    spark.stop()


if __name__ == "__main__":
    main()
