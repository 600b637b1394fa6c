"""The packaged job under the real spark-submit, in local mode, from outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import raw_events

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_spark_submit_runs_the_zipped_job(spark, tmp_path):
    spark_submit = Path(sys.executable).parent / "spark-submit"
    if not spark_submit.exists():
        spark_submit = Path(shutil.which("spark-submit") or "")
    assert spark_submit.is_file(), "spark-submit comes with pyspark"
    from scripts.package import build_zip

    package = build_zip(tmp_path / "dist" / "session_attribution.zip")
    rows = [
        ("u1", "d1", "2025-01-15 10:00:00", "m_card_view"),
        ("u1", "d1", "2025-01-15 10:00:10", "m_card_click"),
        ("u1", "d1", "2025-01-15 10:00:30", "action_place_order"),
        ("u2", "d2", "2025-01-15 11:00:00", "home_page_load"),
        ("u2", "d2", "2025-01-15 11:00:05", "m_search_query"),
    ]
    raw_events(spark, rows).write.parquet(str(tmp_path / "raw"))
    # the entry point, copied away from the checkout: imports must come from the zip
    work = tmp_path / "work"
    work.mkdir()
    main = work / "sessionize_main.py"
    shutil.copy(ROOT / "jobs" / "sessionize.py", main)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    res = subprocess.run(
        [
            str(spark_submit),
            "--master",
            "local[1]",
            "--py-files",
            str(package),
            str(main),
            "--conf",
            str(ROOT / "conf" / "local.yaml"),
            "--set",
            f"input.path={tmp_path}/raw",
            "--set",
            "stores.path=null",
            "--set",
            f"run.output_dir={tmp_path}/out",
            "--set",
            "spark.master=null",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"session-attribution code from {package}/attribution" in res.stdout + res.stderr
    summary = json.loads((tmp_path / "out" / "sessionize_summary.json").read_text())
    assert summary["rows_read"] == 5 and summary["sessions"]["kept"] == 2
