"""The machine a benchmark ran on, in one line (no Spark needed, so GPU-only runs can use it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB RAM, {platform.system()} {platform.machine()}"


def best_alternating(variants: dict, run, repeats: int) -> dict:
    """Run ``run(config)`` for each of ``variants`` (name -> config) in turn, ``repeats`` rounds, so the
    machine's noise falls on all of them alike; per name, (the best seconds, that run's result)."""
    import time

    best: dict = {}
    for _ in range(repeats):
        for name, conf in variants.items():
            t0 = time.perf_counter()
            result = run(conf)
            seconds = time.perf_counter() - t0
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, result)
    return best
