"""The GPU path of attribution gives the CPU path's numbers: every method, the embedded default's test
sessions, the same model. Run on a machine with CUDA (no Spark needed):

    python -m bench.gpu_check [--model outputs/model] [--sessions outputs/sessions]

Prints, per output, the largest absolute difference between CUDA and CPU, checks each normalized method
sums to 1 per session on the GPU, and that a batch too large for the memory it is given is split and
retried (the OOM path), with the same results. Exits 1 if any difference exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch

from attribution.attribute import METHODS, AttributionOptions, attribute_sessions
from attribution.features import encode_sessions
from attribution.methods import get
from attribution.model import load_artifact

ROOT = Path(__file__).resolve().parent.parent
# fp32 on both; reductions run in another order on the GPU. Scores are shares in [0, 1]; logits ~ O(1).
TOLERANCE = 1e-4


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "outputs" / "model"))
    p.add_argument("--sessions", default=str(ROOT / "outputs" / "sessions"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # as in the job: plain fp32
    torch.backends.cudnn.allow_tf32 = False
    loaded = load_artifact(args.model)
    table = ds.dataset(args.sessions, format="parquet").to_table(filter=pc.field("split") == "test")
    enc = encode_sessions(table, loaded.vocab, loaded.spec.continuous)
    opts = AttributionOptions(methods=METHODS)
    cpu = attribute_sessions(loaded.model.to("cpu"), enc, opts, batch_size=256, device="cpu", max_positions=8192)
    model = loaded.model.to("cuda")
    gpu = attribute_sessions(model, enc, opts, batch_size=1024, device="cuda", max_positions=32768)
    report: dict = {"device": torch.cuda.get_device_name(0), "sessions": len(enc), "events": int(enc.offsets[-1])}
    worst = 0.0
    for key in sorted(cpu):
        diff = float(np.max(np.abs(cpu[key] - gpu[key])))
        report[f"max_abs_diff_{key}"] = diff
        if key != "ig_completeness_gap":
            worst = max(worst, diff)
    sums = {}
    for m in METHODS:
        s = np.add.reduceat(gpu[get(m).attribution], enc.offsets[:-1])
        sums[m] = float(np.max(np.abs(s - 1.0)))
    report["max_abs_sum_minus_1"] = sums
    # The OOM path: cap the allocator (256 MiB above what is held) so one batch of every session can't
    # fit (its attention alone is ~1.4 GB), then compare.
    free, total = torch.cuda.mem_get_info()
    torch.cuda.empty_cache()
    used = torch.cuda.memory_allocated()
    torch.cuda.set_per_process_memory_fraction(min(1.0, (used + 256 * 2**20) / total))
    split_stats: dict = {}
    try:
        small = attribute_sessions(
            model,
            enc,
            AttributionOptions(methods=("grad_x_input",)),
            batch_size=len(enc),
            device="cuda",
            stats_out=split_stats,
        )
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    report["oom_splits"] = split_stats.get("oom_splits")
    report["oom_path_max_abs_diff"] = float(np.max(np.abs(small["gradient_attribution"] - cpu["gradient_attribution"])))
    print(json.dumps(report, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    ok = worst <= TOLERANCE and max(sums.values()) <= 1e-6 and report["oom_path_max_abs_diff"] <= TOLERANCE
    print(f"largest CUDA-CPU difference {worst:.2e} (tolerance {TOLERANCE:g}): {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
