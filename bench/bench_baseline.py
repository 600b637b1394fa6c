"""What the counts baseline costs the train stage: the stage with the baseline on and off, side by side.

    python -m bench.bench_baseline [--repeats 1]

Runs the train stage of conf/local.yaml (leakage check off) on the embedded default's sessions (``make
run`` first; sessionized here if missing), once with ``baseline.enabled`` false and once true, in one
Spark application, alternating when repeated. Prints both stage times, the baseline's own seconds and the
ratio (stage with / stage without); results in bench/results/baseline.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from attribution.config_loader import load_config
from attribution.spark import build_spark
from attribution.stages import train as train_stage
from bench.embedded import SESSIONS, ensure_sessions
from bench.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    work = RESULTS / "baseline_run"
    common = [
        f"run.output_dir={work}",
        f"sessions.sessions_path={SESSIONS}",
        "train.leakage_check=false",
    ]
    conf = load_config(ROOT / "conf" / "local.yaml", common)
    spark = build_spark(conf.spark)
    ensure_sessions(conf.output(conf.sessions.sessions_path))
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    baseline_seconds: list[float] = []
    for _ in range(args.repeats):
        for name in ("off", "on"):
            c = load_config(ROOT / "conf" / "local.yaml", [*common, f"baseline.enabled={name == 'on'}"])
            t0 = time.time()
            metrics = train_stage.run(spark, c).summary
            seconds[name].append(time.time() - t0)
            if name == "on":
                baseline_seconds.append(metrics["baseline"]["seconds"])
    best = {k: min(v) for k, v in seconds.items()}
    out = {
        "machine": machine(),
        "train_stage_seconds": best,
        "baseline_seconds": min(baseline_seconds),
        "with_over_without": best["on"] / best["off"],
    }
    print(f"machine: {out['machine']}")
    print(
        f"train stage without the baseline {best['off']:.1f}s, with it {best['on']:.1f}s "
        f"(the baseline's own {out['baseline_seconds']:.1f}s); ratio {out['with_over_without']:.3f}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "baseline.json").write_text(json.dumps(out, indent=1))
    spark.stop()


if __name__ == "__main__":
    main()
