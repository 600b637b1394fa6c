"""Attribution throughput, side by side in one run, on the embedded default's model and test sessions.

    python -m bench.bench_attribute [--device cpu|cuda] [--scale 4,16] [--loop-sessions 300]

Needs the embedded default's outputs (``make run``; run here first if they are missing). Measures:
  batched     in-process grad_x_input over all test sessions (length-bucketed batches) - events/s
  loop        the original analysis's way: one forward + backward per session - events/s, on the first N sessions
  flops       achieved FLOP/s on real (unpadded) events (FLOPs counted per session length with torch's
              FlopCounterMode) vs a large fp32 matmul on the same device, the better of one before and
              one after the rest: the machine's ceiling
  padding     real events / computed positions in the batched run
  last layer  the batched run again with every position of the last layer computed, not only the CLS
              query the head reads: what the CLS-only last layer saves, in FLOPs and in time
  encode      in-process, the sessions' arrays encoded to token ids too (what the UDF does before the
              model, per batch): the in-process rate the Spark stage does the same work as
  spark       the attribution stage end to end (read sessions -> UDF -> write the event table), warm,
              without the removal effects (the in-process rate scores each session once, so like with
              like), at 1x and each ``--scale``x the sessions, vs the in-process rate; the Python workers'
              peak memory; the same stage with ``attribution.writer=spark`` (Spark's explode and writer);
              the stage with the model taken out (a UDF returning zero scores), the host side's cost, with
              each writer, alternating; and at 1x the stage with the removal effects as configured, as a
              ratio

Goals: batched >= 150x loop; flops >= 50% of the matmul; padding >= 90%; spark >= 80% of the
in-process rate; the host side with the worker-side writer >= 3x faster than with Spark's; ``scale``x the sessions <= 1.1 x scale the time; worker memory flat. The Spark stage has
a fixed cost (jobs, file listing and commit) that larger inputs amortize, hence more than one scale.
With ``--device cuda`` only the in-process part runs (the GPU machine has no Spark cluster); there
``--copies 20 --batch-sizes 1024,4096,16384`` gives the device enough work, and the math alone is
timed too (every batch already on the device), to show what the host's side costs.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from attribution.attribute import AttributionOptions, attribute_batch, attribute_sessions
from attribution.features import EncodedSessions, encode_sessions, length_buckets
from attribution.model import load_artifact, to_tensors
from bench.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# The cheapest method only (the strictest ratio for the stages around it); the report's default method
# must be among the methods, and the embedded default's is integrated gradients.
GRAD_X_INPUT_ONLY = ["attribution.methods=[grad_x_input]", "report.default_method=grad_x_input"]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_ceiling(device, n: int = 2048, repeats: int = 5) -> float:
    """fp32 (no TF32, torch's default), as the attribution runs."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    t = best_of(lambda: a @ b, repeats)
    return 2 * n**3 / t


def flops_per_length(model, encoded, device, all_positions: bool | None = None) -> dict[int, float]:
    """Forward + backward FLOPs of grad_x_input for one session of each length present, as the model
    computes it (the last layer for the CLS query alone) or, with ``all_positions``, every position."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    lengths = encoded.lengths
    for n in sorted(set(int(x) for x in lengths)):
        i = int(np.nonzero(lengths == n)[0][0])
        tokens, cont, mask = to_tensors(encoded.batch([i]), model.spec.fields, device)
        with FlopCounterMode(display=False) as counter:
            x = model.represent(tokens, cont).detach().requires_grad_(True)
            logit, _ = model.forward_from_representation(x, mask, all_positions=all_positions)
            logit.sum().backward()
        out[n] = float(counter.get_total_flops())
    return out


@contextmanager
def every_position(model):
    """The model as it ran before the CLS-only last layer: every position of every layer computed."""
    model.forward_from_representation = functools.partial(
        type(model).forward_from_representation, model, all_positions=True
    )
    try:
        yield model
    finally:
        del model.forward_from_representation


def seed_loop(model, encoded, n_sessions: int, device, as_written: bool = False) -> None:
    """One session, one forward, one backward at a time. ``as_written``: as the original analysis's script does it,
    with the model in train mode (dropout on) and weight gradients computed; otherwise eval mode with
    frozen weights, the kinder baseline."""
    if as_written:
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
    try:
        for i in range(n_sessions):
            tokens, cont, mask = to_tensors(encoded.batch([i]), model.spec.fields, device)
            x = model.represent(tokens, cont).detach().requires_grad_(True)
            logit, _ = model.forward_from_representation(x, mask)
            logit.sum().backward()
            _ = (x.grad * x).sum(-1).abs()
            model.zero_grad(set_to_none=True)
    finally:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)


def replicate(enc: EncodedSessions, k: int) -> EncodedSessions:
    """``enc``'s sessions ``k`` times over (more work for a fast device; the same length mix)."""
    if k == 1:
        return enc
    lengths = np.tile(enc.lengths, k)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return EncodedSessions(
        offsets=offsets,
        tokens={f: np.tile(v, k) for f, v in enc.tokens.items()},
        continuous=np.tile(enc.continuous, (k, 1)),
        unknown={f: k * v for f, v in enc.unknown.items()},
    )


def device_resident(model, enc, opts, batch: int, positions: int, dev, repeats: int) -> float:
    """events/s of the math alone: every padded batch already on the device, no copies back."""
    staged = [
        to_tensors(enc.batch(rows), model.spec.fields, dev)
        for rows in length_buckets(enc.lengths, batch, max_positions=positions)
    ]

    def go():
        for tokens, cont, mask in staged:
            attribute_batch(model, tokens, cont, mask, opts)

    go()
    return int(enc.offsets[-1]) / best_of(go, repeats)


def in_process(
    model_dir: str,
    sessions_path: str,
    device: str,
    loop_sessions: int,
    repeats: int,
    copies: int = 1,
    batch_sizes: tuple[int, ...] = (),
) -> dict:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dev = torch.device(device)
    ceiling_n = 8192 if dev.type == "cuda" else 2048
    ceiling_before = matmul_ceiling(dev, n=ceiling_n)  # and again at the end: the better of the two
    loaded = load_artifact(model_dir)
    model = loaded.model.to(dev)
    table = ds.dataset(sessions_path, format="parquet").to_table(filter=pc.field("split") == "test")
    base = encode_sessions(table, loaded.vocab, loaded.spec.continuous)
    # what the UDF does before the model, per Arrow batch: the sessions' arrays to token ids
    t_encode = best_of(lambda: encode_sessions(table, loaded.vocab, loaded.spec.continuous), repeats) * copies
    enc = replicate(base, copies)
    events = int(enc.offsets[-1])
    opts = AttributionOptions(methods=("grad_x_input",))
    sweep = {}
    for batch in batch_sizes or ((1024,) if dev.type == "cuda" else (256,)):
        positions = batch * 32
        attribute_sessions(model, enc, opts, batch_size=batch, device=dev, max_positions=positions)  # warm
        stats: dict = {}
        t = best_of(
            lambda b=batch, st=stats, mp=positions: attribute_sessions(
                model, enc, opts, batch_size=b, device=dev, stats_out=st, max_positions=mp
            ),
            repeats,
        )
        sweep[batch] = {"seconds": t, "events_per_s": events / t, "stats": stats}
        print(f"  batch {batch}: {events / t:,.0f} events/s", flush=True)
    batch = min(sweep, key=lambda b: sweep[b]["seconds"])
    t_batched, stats = sweep[batch]["seconds"], sweep[batch]["stats"]
    positions = batch * 32

    # Side by side, alternating (the machine's noise comes in bursts): what computing the last layer for
    # the CLS query alone saves.
    def one_pass():
        attribute_sessions(model, enc, opts, batch_size=batch, device=dev, max_positions=positions)

    t_cls, t_full = [], []
    for _ in range(repeats):
        t_cls.append(best_of(one_pass, 1))
        with every_position(model):
            t_full.append(best_of(one_pass, 1))
    t_cls, t_full = min(t_cls), min(t_full)
    t_batched = min(t_batched, t_cls)  # the same computation as the sweep's best: the best pass of all
    resident = device_resident(model, enc, opts, batch, positions, dev, repeats) if dev.type == "cuda" else None
    n_loop = min(loop_sessions, len(base))
    loop_events = int(enc.offsets[n_loop])
    seed_loop(model, enc, min(20, n_loop), dev)  # warm
    t_loop = best_of(lambda: seed_loop(model, enc, n_loop, dev), 1)
    t_written = best_of(lambda: seed_loop(model, enc, n_loop, dev, as_written=True), 1)
    per_len = flops_per_length(model, base, dev)
    real_flops = float(sum(per_len[int(n)] for n in enc.lengths))
    per_len_full = flops_per_length(model, base, dev, all_positions=True)
    full_flops = float(sum(per_len_full[int(n)] for n in enc.lengths))
    ceiling = max(ceiling_before, matmul_ceiling(dev, n=ceiling_n))
    batched_rate = events / t_batched
    loop_rate = loop_events / t_loop
    return {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "torch_threads": torch.get_num_threads(),
        "sessions": len(enc),
        "events": events,
        "copies": copies,
        "batch_size": batch,
        "batch_sweep_events_per_s": {b: r["events_per_s"] for b, r in sweep.items()},
        "device_resident_events_per_s": resident,
        "batched_events_per_s": batched_rate,
        "encode_seconds": t_encode,
        "encode_and_batched_events_per_s": events / (t_batched + t_encode),
        "cls_only_events_per_s": events / t_cls,
        "every_position_events_per_s": events / t_full,
        "cls_only_speedup": t_full / t_cls,
        "every_position_flops_per_event": full_flops / events,
        "loop_events_per_s": loop_rate,
        "loop_sessions": n_loop,
        "batched_over_loop": batched_rate / loop_rate,
        "seed_as_written_events_per_s": loop_events / t_written,
        "batched_over_seed_as_written": batched_rate / (loop_events / t_written),
        "real_flops_per_event": real_flops / events,
        "achieved_flops_per_s": real_flops / t_batched,
        "matmul_flops_per_s": ceiling,
        "flops_fraction_of_matmul": (real_flops / t_batched) / ceiling,
        "padding_efficiency": events / stats["computed_positions"],
    }


def scaled_sessions(spark, base, scale: int) -> Path:
    """The embedded default's test sessions ``scale`` times over (new session ids), in 8 parquet files:
    as many tasks as at 1x, each with ``scale`` x the sessions."""
    from pyspark.sql import functions as F

    data = RESULTS / "data" / f"sessions_x{scale}_8parts"
    if not data.exists():
        sessions = spark.read.parquet(base.output(base.sessions.sessions_path)).where("split = 'test'")
        copies = spark.range(scale).withColumnRenamed("id", "copy")
        (
            sessions.crossJoin(copies)
            .withColumn("session_id", F.concat_ws("#", "session_id", "copy"))
            .drop("copy")
            .repartition(8)
            .write.mode("overwrite")
            .parquet(str(data))
        )
    return data


def zero_scores(methods: list[str], vocab_fields: tuple[str, ...]):
    """A stand-in for the attribution UDF with the same output, all scores 0: no model, no encoding."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from udfs.attribution_udf import output_fields
    from udfs.worker import with_fields

    fields = output_fields(methods, vocab_fields)

    def udf(batches):
        for batch in batches:
            lengths = pc.list_value_length(batch.column(batch.schema.get_field_index("event_types")))
            offsets = np.zeros(batch.num_rows + 1, dtype=np.int32)
            np.cumsum(lengths.to_numpy(zero_copy_only=False), out=offsets[1:])
            columns = []
            for f in fields:
                if pa.types.is_list(f.type):
                    columns.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.zeros(offsets[-1]))))
                else:
                    columns.append(pa.array(np.zeros(batch.num_rows, dtype=f.type.to_pandas_dtype())))
            yield pa.RecordBatch.from_arrays([*batch.columns, *columns], schema=with_fields(batch.schema, fields))

    return udf


def spark_floor(spark, conf, writer: str) -> None:
    """The attribution stage with the model taken out: read the sessions, the UDF's Arrow round trip
    with zero scores, the event table written as the stage writes it (``writer``: attribution.writer).
    What the stage costs whatever the model."""
    from attribution.events import event_table
    from attribution.model import read_artifact
    from attribution.stages.attribute import sessions_to_score
    from udfs.attribution_udf import scoring_input
    from udfs.event_files import event_files, write_event_table

    _, _, vocab = read_artifact(conf.output(conf.train.model_path))
    methods = list(conf.attribution.methods)
    selected, schema = scoring_input(sessions_to_score(spark, conf), methods, vocab.fields)
    udf = zero_scores(methods, vocab.fields)
    out = str(RESULTS / f"attribution_floor_{writer}")
    if writer == "arrow":
        files = event_files(spark, schema, out, "bench", "none", vocab_fields=vocab.fields)
        write_event_table(selected, udf, files, out)
    else:
        events = event_table(selected.mapInArrow(udf, schema), "bench", "none")
        events.write.mode("overwrite").partitionBy("session_date").parquet(out)


def spark_stage(scales: tuple[int, ...], repeats: int) -> dict:
    """The attribution stage through Spark, warm, at 1x and each of ``scales`` x the test sessions."""

    # Spark is imported here, not at the top: the GPU machine runs the in-process part without it
    from attribution.config_loader import load_config
    from attribution.spark import build_spark
    from attribution.stages import attribute as attribute_stage

    base = load_config(ROOT / "conf" / "local.yaml", GRAD_X_INPUT_ONLY)
    spark = build_spark(base.spark)

    def timed(conf) -> tuple[float, dict]:
        """The stage's best time of ``repeats`` (after a warm run: Python workers started, torch
        imported, model cached), and that run's summary."""
        attribute_stage.run(spark, conf)
        best = None
        for _ in range(repeats):
            t0 = time.perf_counter()
            summary = attribute_stage.run(spark, conf).summary
            dt = time.perf_counter() - t0
            if best is None or dt < best[0]:
                best = (dt, summary)
        assert best is not None
        return best

    runs = {}
    for label, path in (
        ("1x", str((ROOT / base.output(base.sessions.sessions_path)).resolve())),
        *((f"{scale}x", str(scaled_sessions(spark, base, scale))) for scale in scales),
    ):
        sets = [
            *GRAD_X_INPUT_ONLY,
            f"sessions.sessions_path={path}",
            f"attribution.output_path={RESULTS / 'attribution_out'}",
            f"attribution.summary_path={RESULTS / 'attribution_summary.json'}",
            f"train.model_path={(ROOT / base.output(base.train.model_path)).resolve()}",
            # the stage end to end: read -> UDF -> write the event table (parquet); the
            # Delta publication is a second sink, measured in bench_report
            "attribution.delta_path=null",
        ]
        # Like with like: the in-process rate scores the sessions once, so the share is of the stage
        # without the removal effects' masked passes; their cost is a ratio of its own, at 1x below.
        conf = load_config(ROOT / "conf" / "local.yaml", [*sets, "attribution.removal_sessions=0"])
        dt, summary = timed(conf)
        # the same stage with Spark's explode and writer (attribution.writer=spark): the path before the
        # worker-side writer, measured beside it
        dt_spark, _ = timed(
            load_config(
                ROOT / "conf" / "local.yaml", [*sets, "attribution.removal_sessions=0", "attribution.writer=spark"]
            )
        )
        floors = {}
        for writer in ("spark", "arrow"):
            spark_floor(spark, conf, writer)  # warm
        for _ in range(repeats):  # alternating: the machine's noise comes in bursts
            for writer in ("spark", "arrow"):
                t = best_of(lambda c=conf, w=writer: spark_floor(spark, c, w), 1)
                floors[writer] = min(floors.get(writer, t), t)
        runs[label] = {
            "sessions": summary["sessions"],
            "events": summary["events"],
            "seconds": dt,
            "events_per_s": summary["events"] / dt,
            "spark_writer_seconds": dt_spark,
            "without_model_seconds": floors["arrow"],
            "without_model_spark_writer_seconds": floors["spark"],
            "padding_efficiency": summary["padding_efficiency"],
            "python_worker_peak_rss_mb": summary["python_worker_peak_rss_mb"],
        }
        if label == "1x":  # the stage as configured: the removal effects on conf/local.yaml's sample
            with_removal = load_config(ROOT / "conf" / "local.yaml", sets)
            removal_dt, removal_summary = timed(with_removal)
            runs[label]["with_removal_seconds"] = removal_dt
            runs[label]["removal_sessions"] = removal_summary.get("removal_sessions")
    spark.stop()
    return runs


def seed_sized_model(trained_dir: str) -> str:
    """An untrained model with the original analysis's sizes and the trained model's vocabularies."""
    from attribution.config import ModelConf
    from attribution.model import ModelSpec, SessionTransformer, read_artifact, save_artifact, weights_bytes

    _, config, vocab = read_artifact(trained_dir)
    spec = ModelSpec.of(ModelConf(), vocab, config["model"]["max_length"])
    torch.manual_seed(0)
    out = str(RESULTS / "seed_sized_model")
    save_artifact(out, weights_bytes(SessionTransformer(spec)), spec, vocab)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--scale", default="4,16", help="comma-separated multiples of the test sessions for the Spark stage")
    p.add_argument("--loop-sessions", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--copies", type=int, default=1, help="attribute the test sessions this many times over")
    p.add_argument("--batch-sizes", default="", help="comma-separated sessions per batch to try; the best is kept")
    p.add_argument("--model", default=str(ROOT / "outputs" / "model"))
    p.add_argument("--sessions", default=str(ROOT / "outputs" / "sessions"))
    p.add_argument(
        "--seed-model",
        action="store_true",
        help="in-process only, with an untrained model of the original analysis's size (192 wide, 3 layers, ff 512): "
        "throughput does not depend on the weights",
    )
    args = p.parse_args()
    if not Path(args.model).exists():
        from jobs import pipeline

        print("no model yet: running generate, sessionize, train on the embedded default first")
        pipeline.main(["--conf", str(ROOT / "conf" / "local.yaml"), "--stages", "generate,sessionize,train"])
    if args.seed_model:
        args.model = seed_sized_model(args.model)
    result = {
        "machine": machine(),
        "in_process": in_process(
            args.model,
            args.sessions,
            args.device,
            args.loop_sessions,
            args.repeats,
            args.copies,
            tuple(int(b) for b in args.batch_sizes.split(",") if b),
        ),
    }
    ip = result["in_process"]
    print(f"machine: {result['machine']}; device {ip['device']}, {ip['torch_threads']} torch threads")
    print(
        f"in-process grad_x_input: {ip['batched_events_per_s']:,.0f} events/s batched vs "
        f"{ip['loop_events_per_s']:,.0f} events/s one session at a time = {ip['batched_over_loop']:.1f}x (goal >= 150x); "
        f"vs the original analysis's loop as written (train mode, weight gradients) {ip['seed_as_written_events_per_s']:,.0f} "
        f"events/s = {ip['batched_over_seed_as_written']:.1f}x"
    )
    print(
        f"the last layer for the CLS query alone: {ip['real_flops_per_event'] / 1e3:,.0f}k FLOP per event instead of "
        f"{ip['every_position_flops_per_event'] / 1e3:,.0f}k; alternating runs: {ip['cls_only_events_per_s']:,.0f} events/s "
        f"vs {ip['every_position_events_per_s']:,.0f} events/s with every position computed = {ip['cls_only_speedup']:.2f}x"
    )
    if ip["device_resident_events_per_s"]:
        print(
            f"the math alone (batches already on the device, nothing copied back): "
            f"{ip['device_resident_events_per_s']:,.0f} events/s; batch sweep {ip['batch_sweep_events_per_s']}"
        )
    print(
        f"FLOP rate on real events {ip['achieved_flops_per_s'] / 1e9:,.1f} GFLOP/s vs matmul "
        f"{ip['matmul_flops_per_s'] / 1e9:,.1f} GFLOP/s = {100 * ip['flops_fraction_of_matmul']:.0f}% (goal >= 50%); "
        f"padding efficiency {100 * ip['padding_efficiency']:.1f}% (goal >= 90%)"
    )
    if args.device == "cpu" and not args.seed_model:
        scales = tuple(int(k) for k in args.scale.split(",") if k)
        runs = spark_stage(scales, args.repeats)
        result["spark"] = runs
        one = runs["1x"]
        print(
            f"in-process, the sessions' encoding to token ids (the UDF's work before the model) included: "
            f"{ip['encode_and_batched_events_per_s']:,.0f} events/s (encoding {ip['encode_seconds']:.2f}s at 1x)"
        )
        for label, r in runs.items():
            print(
                f"spark stage {label}, removal off: {r['sessions']:,} sessions, {r['events']:,} events in "
                f"{r['seconds']:.1f}s = {r['events_per_s']:,.0f} events/s = "
                f"{100 * r['events_per_s'] / ip['batched_events_per_s']:.0f}% of in-process (goal >= 80%), "
                f"{100 * r['events_per_s'] / ip['encode_and_batched_events_per_s']:.0f}% of in-process with the "
                f"encoding; worker peak {r['python_worker_peak_rss_mb']:,.0f} MiB; "
                f"padding {100 * r['padding_efficiency']:.1f}%"
            )
            print(
                f"  with attribution.writer=spark (Spark's explode and parquet writer): {r['spark_writer_seconds']:.1f}s "
                f"= {r['spark_writer_seconds'] / r['seconds']:.2f}x the stage's time"
            )
            print(
                f"  the model taken out (zero scores), the host side: {r['without_model_seconds']:.2f}s = "
                f"{r['events'] / r['without_model_seconds']:,.0f} events/s; with Spark's writer "
                f"{r['without_model_spark_writer_seconds']:.2f}s = "
                f"{r['without_model_spark_writer_seconds'] / r['without_model_seconds']:.2f}x (goal >= 3x); "
                f"the in-process model alone would take {r['events'] / ip['batched_events_per_s']:.1f}s"
            )
            if "with_removal_seconds" in r:
                print(
                    f"  with the removal effects ({r['removal_sessions']:,} sessions' masked passes): "
                    f"{r['with_removal_seconds']:.1f}s = {r['with_removal_seconds'] / r['seconds']:.2f}x the stage "
                    "without them"
                )
        for scale in scales:
            big = runs[f"{scale}x"]
            print(
                f"{scale}x the sessions: {big['seconds'] / one['seconds']:.2f}x the time "
                f"(goal <= {1.1 * scale:.1f}x); worker peak memory {one['python_worker_peak_rss_mb']:,.0f} -> "
                f"{big['python_worker_peak_rss_mb']:,.0f} MiB"
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"attribute_{args.device}{'_seed_model' if args.seed_model else ''}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
