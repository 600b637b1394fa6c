"""Training throughput through TorchDistributor: 1 process vs 2 on this machine, side by side.

    python -m bench.bench_train [--epochs 2] [--repeats 1]

Uses the embedded default's training shards (``make run`` first; built here if missing) and the model of
conf/local.yaml. Both runs use all cores: 1 process x N threads vs 2 processes x N/2 threads (DDP over
gloo). Prints train sessions/s of each and their ratio; results in bench/results/train.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from attribution import train
from attribution.config_loader import load_config
from attribution.model import ModelSpec
from attribution.spark import build_spark
from bench.embedded import ensure_sessions
from bench.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument(
        "--seed-model", action="store_true", help="the original analysis's model sizes (192 wide, 3 layers, ff 512)"
    )
    args = p.parse_args()
    conf = load_config(ROOT / "conf" / "local.yaml", [f"run.output_dir={ROOT / 'outputs'}"])
    if args.seed_model:
        from attribution.config import ModelConf

        conf = dataclasses.replace(conf, model=ModelConf())
    spark = build_spark(conf.spark)
    sessions_path = conf.output(conf.sessions.sessions_path)
    ensure_sessions(sessions_path)
    shards = str(RESULTS / "train_shards")
    vocab, _, counts = train.prepare_shards(spark, conf, sessions_path, shards, 2)
    spec = ModelSpec.of(conf.model, vocab, conf.session.max_length)
    cores = os.cpu_count() or 1
    runs: dict[str, list[float]] = {"1": [], "2": []}
    for _ in range(args.repeats):
        for n in (1, 2):
            c = dataclasses.replace(
                conf,
                train=dataclasses.replace(
                    conf.train, num_processes=n, threads_per_process=max(1, cores // n), patience=args.epochs
                ),
            )
            params = train.worker_params(c, spec.to_dict(), vocab, shards, args.epochs)
            result = train.distribute(c, params)
            runs[str(n)].append(result.train_sessions_per_second)
    best = {n: max(v) for n, v in runs.items()}
    out = {
        "machine": machine(),
        "model": dataclasses.asdict(conf.model),
        "train_sessions": counts["train"],
        "epochs": args.epochs,
        "sessions_per_second": best,
        "two_over_one": best["2"] / best["1"],
    }
    print(f"machine: {out['machine']}")
    print(
        f"training throughput: 1 process x {cores} threads {best['1']:,.0f} sessions/s; "
        f"2 processes x {max(1, cores // 2)} threads {best['2']:,.0f} sessions/s; ratio {out['two_over_one']:.2f}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"train{'_seed_model' if args.seed_model else ''}.json").write_text(json.dumps(out, indent=1))
    spark.stop()


if __name__ == "__main__":
    main()
