"""Does the store table's support filter hide a planted store the data show? (docs/scenarios.md, "What the
data allow for the stores"):

    python -m bench.store_support /tmp/scenarios/renamed-spread-1 [more bench_scenarios run directories]

The store table keeps a store seen in at least ``report.store_min_sessions`` sessions and
``report.store_min_events`` events. This recomputes each run's store rows from its event table with both
minimums at 1 (the run's own config otherwise), so every store has its net effect and its 95% CI, and then
counts, per method:

- ``planted``: the stores with a planted effect (``ground_truth.json``, ``store_effects``, nonzero) that
  the event table holds;
- ``CI excludes 0``: those whose net-effect CI (``net_effect_ci_low`` .. ``net_effect_ci_high``) lies on
  one side of 0, the planted side or not;
- ``hidden``: of those, the ones the run's own minimums leave out of the table. The bar is none;
- ``others hidden``: stores with no planted effect whose CI excludes 0 and which the minimums leave out:
  the noise the filter keeps off the page.

Each hidden planted store is named with its planted effect, net effect, CI and support.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml

from attribution.config_loader import load_config
from attribution.report import build_tables
from attribution.spark import build_spark


def _conf(run: Path):
    """The run's own config (its manifest's), with the store table's minimums at 1."""
    tree = json.loads((run / "out" / "manifest.json").read_text())["config"]
    minimums = tree["report"]["store_min_sessions"], tree["report"]["store_min_events"]
    tree["tracking"] = {**tree.get("tracking", {}), "enabled": False}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(tree, f)
    conf = load_config(f.name, ["report.store_min_sessions=1", "report.store_min_events=1"])
    Path(f.name).unlink()
    return conf, minimums


def one_run(spark, run: Path) -> list[dict]:
    conf, (min_sessions, min_events) = _conf(run)
    truth = json.loads((run / "data" / "ground_truth.json").read_text())
    planted = {str(k): v["effect"] for k, v in truth["store_effects"].items() if v["effect"] != 0}
    events = spark.read.parquet(str(Path(conf.run.output_dir) / conf.attribution.output_path))
    stores = build_tables(events, conf, status="ok")["store"].to_pandas()
    stores["store_id"] = stores["store_id"].astype(str)
    stores["is_planted"] = stores["store_id"].isin(planted)
    stores["excludes"] = (stores["net_effect_ci_low"] > 0) | (stores["net_effect_ci_high"] < 0)
    stores["hidden"] = stores["excludes"] & ((stores["sessions"] < min_sessions) | (stores["events"] < min_events))
    rows = []
    for method, s in stores.groupby("method"):
        hidden = s[s["is_planted"] & s["hidden"]]
        rows.append(
            {
                "run": f"{run.parent.name}/{run.name}",
                "method": method,
                "planted": int(s["is_planted"].sum()),
                "excludes_0": int((s["is_planted"] & s["excludes"]).sum()),
                "hidden": len(hidden),
                "others_hidden": int((~s["is_planted"] & s["hidden"]).sum()),
                "hidden_detail": [
                    f"{r.store_id} (planted {planted[r.store_id]:+.2f}, net {r.net_effect_log_odds:+.3f} "
                    f"[{r.net_effect_ci_low:+.3f}, {r.net_effect_ci_high:+.3f}], {r.sessions} sessions, "
                    f"{r.events} events)"
                    for r in hidden.itertuples()
                ],
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="bench_scenarios run directories (data/ and out/ under each)")
    args = p.parse_args()
    conf, _ = _conf(Path(args.runs[0]))
    spark = build_spark(conf.spark)
    rows = [row for run in args.runs for row in one_run(spark, Path(run))]
    spark.stop()
    print("| run | method | planted | CI excludes 0 | hidden | others hidden |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['run']} | {r['method']} | {r['planted']} | {r['excludes_0']} | {r['hidden']} | {r['others_hidden']} |"
        )
    for r in rows:
        for line in r["hidden_detail"]:
            print(f"hidden: {r['run']} {r['method']}: {line}")


if __name__ == "__main__":
    main()
