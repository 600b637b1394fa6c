"""The embedded default's pipeline as a Spark Connect client beside a classic session, stage by stage, in
one run.

    python -m bench.bench_connect [--repeats 1]

Each run is ``python -m jobs.pipeline --conf conf/local.yaml --stages sessionize,...,report`` as a process
of its own over the embedded dataset (generated first if ``data/`` lacks it): with a classic session,
and with ``spark.api.mode=connect`` (a Spark Connect server on this machine, which the job starts, and the
job as its gRPC client). The two alternate for ``--repeats`` rounds. Reported, per stage and mode: the
best seconds (each stage's time from the run's manifest), the ratio Connect / classic, and each process's
wall time, which includes starting Spark (and for Connect, its server). Both modes must give the same
model (sha256) and the same event count, or the comparison is void.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.bench_attribute import RESULTS, ROOT
from bench.machine import machine

STAGES = ("sessionize", "train", "attribute", "faithfulness", "report")
MODES = {"classic": [], "connect": ["spark.conf.spark.api.mode=connect"]}


def pipeline(mode: str, out) -> dict:
    """One run of the stages in ``mode``; its per-stage seconds, wall seconds, model sha and event count."""
    sets = [f"run.output_dir={out}", "run.run_id=bench", *MODES[mode]]
    argv = [sys.executable, "-m", "jobs.pipeline", "--conf", "conf/local.yaml", "--stages", ",".join(STAGES)]
    for s in sets:
        argv += ["--set", s]
    t0 = time.perf_counter()
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"the {mode} run failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "stages": manifest["timings_s"],
        "wall_s": round(wall, 1),
        "model_sha256": manifest["model"]["sha256"],
        "events": manifest["stages"]["attribute"]["events"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=1, help="rounds of (classic, connect)")
    args = p.parse_args()

    if not (ROOT / "data" / "raw_events").exists():
        subprocess.run(
            [sys.executable, "-m", "jobs.pipeline", "--conf", "conf/local.yaml", "--stages", "generate"],
            cwd=ROOT,
            check=True,
        )
    work = RESULTS / "connect"
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            runs[mode].append(pipeline(mode, work / mode))
    shas = {r["model_sha256"] for rs in runs.values() for r in rs}
    events = {r["events"] for rs in runs.values() for r in rs}
    best = {m: {s: min(r["stages"][s] for r in rs) for s in STAGES} for m, rs in runs.items()}
    walls = {m: min(r["wall_s"] for r in rs) for m, rs in runs.items()}
    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "repeats": args.repeats,
        "same_model_and_events": len(shas) == 1 and len(events) == 1,
        "model_sha256": sorted(shas),
        "events": sorted(events),
        "best_stage_seconds": best,
        "ratio_connect_over_classic": {s: round(best["connect"][s] / max(best["classic"][s], 1e-9), 2) for s in STAGES},
        "wall_seconds": walls,
        "runs": runs,
    }
    print(f"machine: {result['machine']}")
    print(f"{'stage':<14}{'classic s':>11}{'connect s':>11}{'ratio':>8}")
    for s in STAGES:
        c, k = best["classic"][s], best["connect"][s]
        print(f"{s:<14}{c:>11.1f}{k:>11.1f}{result['ratio_connect_over_classic'][s]:>8.2f}")
    total_c, total_k = sum(best["classic"].values()), sum(best["connect"].values())
    print(f"{'all stages':<14}{total_c:>11.1f}{total_k:>11.1f}{total_k / total_c:>8.2f}")
    print(
        f"{'process wall':<14}{walls['classic']:>11.1f}{walls['connect']:>11.1f}{walls['connect'] / walls['classic']:>8.2f}"
    )
    print(f"same model and event count in both modes: {result['same_model_and_events']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "connect.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"results in {out}")
    if not result["same_model_and_events"]:
        raise SystemExit("the two modes gave different models or event counts: the comparison is void")


if __name__ == "__main__":
    main()
