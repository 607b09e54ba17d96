"""Latency of several models on ONE pinned core, interleaved round by round (equal terms).

    # the paper's setting: random weights at 640, FP32 and the families' "mixed" presets
    python benchmarks/family_compare.py --export fastinst_topformer@640 --export mobileinst_topformer@640 \
        --plan mixed --calib data/shapes8k/coco/train --rounds 8 --runs 5 -o reports/compare640.json
    # already built artifacts (e.g. from `edgeseg sweep`'s work folder), LABEL=PATH
    python benchmarks/family_compare.py --onnx "FastInst FP32=reports/fi/work/fp32.onnx" \
        --onnx "MobileInst FP32=reports/mi/work/fp32.onnx" --rounds 10 --runs 10

Every round times every artifact (``--runs`` timed runs after ``--warmup``), so a load
change on a shared machine hits all of them alike; p50 and p10 are over all rounds'
samples. ONNX Runtime, one intra-op and one inter-op thread, the process pinned to
``--core`` (default: the fastest core), as ``edgeseg bench``. Each run is timed twice:
wall time, and the process's CPU time (its threads all confined to the core), which a
shared machine's other processes do not inflate by preempting the run. Random weights are fine for
latency: the graphs and shapes are those of the trained models.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _export(spec: str, work: Path, plans: list[str], calib: str | None) -> list[tuple[str, Path]]:
    import torch

    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model
    from edgeseg.quantize.pipeline import run_calibration, run_quantize

    name, _, size = spec.partition("@")
    cfg = {"input_size": (int(size), int(size))} if size else {}
    torch.manual_seed(0)
    model = create_model(name, **cfg).eval()
    tag = f"{name}@{size}" if size else name
    print(f"exporting {tag} ...", file=sys.stderr)
    result = export_onnx(model, work / tag.replace("@", "_"), graphs=("frame",))
    out = [(f"{tag} fp32", result.onnx_path)]
    table = None
    for plan in plans:
        if table is None and calib:
            table = run_calibration(result.onnx_path, calib, num=32).table_path
        q = run_quantize(result.onnx_path, plan, table, with_fidelity=False, with_features=False)
        out.append((f"{tag} {plan}", q.path))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", action="append", default=[], metavar="LABEL=PATH", help="an artifact to time")
    ap.add_argument("--export", action="append", default=[], metavar="MODEL[@SIZE]",
                    help="export a zoo model (random weights) and time it")
    ap.add_argument("--plan", action="append", default=[], help="also quantize each --export with this plan")
    ap.add_argument("--calib", default=None, help="calibration images for --plan (32 are used)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--runs", type=int, default=10, help="timed runs per artifact per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs per artifact per round")
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import numpy as np

    from edgeseg.benchmark.targets.local import ProcessPinning, default_core
    from edgeseg.benchmark.device_info import local_state
    from edgeseg.runtimes.base import load_runtime

    core = args.core if args.core is not None else default_core()
    with tempfile.TemporaryDirectory(prefix="edgeseg-family-compare-") as tmp:
        work = args.work_dir or Path(tmp)
        entries: list[tuple[str, Path]] = []
        for pair in args.onnx:
            label, sep, path = pair.partition("=")
            if not sep:
                ap.error(f"--onnx {pair!r} is not LABEL=PATH")
            entries.append((label, Path(path)))
        for spec in args.export:
            entries += _export(spec, work, args.plan, args.calib)
        if not entries:
            ap.error("nothing to time: pass --onnx or --export")

        wall: dict[str, list[float]] = {label: [] for label, _ in entries}
        cpu_ms: dict[str, list[float]] = {label: [] for label, _ in entries}
        with ProcessPinning(core) as pin:
            # Opened after pinning: every thread a runtime starts inherits the core. One
            # intra-op thread, ONNX Runtime's fused int8 kernels (what deployment runs).
            runtimes = [(label, load_runtime(path, threads=1, numerics="fused")) for label, path in entries]
            feeds = {label: rt.random_feeds(0) for label, rt in runtimes}
            try:
                for r in range(args.rounds):
                    for label, rt in runtimes:
                        for _ in range(args.warmup):
                            rt.run(feeds[label])
                        for _ in range(args.runs):
                            # Wall time is what a user waits; the process's CPU time (all its
                            # threads, confined to one core) is what the model costs, and does
                            # not grow while other processes hold the core.
                            c0, t0 = time.process_time_ns(), time.perf_counter_ns()
                            rt.run(feeds[label])
                            wall[label].append((time.perf_counter_ns() - t0) / 1e6)
                            cpu_ms[label].append((time.process_time_ns() - c0) / 1e6)
                    print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                        f"{label} {np.median(wall[label]):.1f}/{np.median(cpu_ms[label]):.1f}"
                        for label, _ in runtimes), file=sys.stderr)
                unpinned = pin.unpinned_threads()
            finally:
                for _, rt in runtimes:
                    rt.close()
        cpu = local_state(core).cpu_model

    rows = []
    for label, path in entries:
        w, c = np.asarray(wall[label]), np.asarray(cpu_ms[label])
        rows.append({"label": label, "file": str(path), "p50_ms": float(np.percentile(w, 50)),
                     "p10_ms": float(np.percentile(w, 10)), "cpu_p50_ms": float(np.percentile(c, 50)),
                     "cpu_p10_ms": float(np.percentile(c, 10)), "runs": int(w.size)})
    load = os.getloadavg()
    print(f"\nONNX Runtime, one thread, core {core} ({cpu}); {args.rounds} interleaved rounds of "
          f"{args.runs} runs after {args.warmup} warm-up; load average {load[0]:.1f} "
          f"({unpinned} threads not on the core)\n")
    print("| artifact | wall p50 ms | wall p10 ms | CPU p50 ms | CPU p10 ms | runs |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['label']} | {row['p50_ms']:.2f} | {row['p10_ms']:.2f} | {row['cpu_p50_ms']:.2f} "
              f"| {row['cpu_p10_ms']:.2f} | {row['runs']} |")
    if args.output:
        from edgeseg.utils.atomic import write_json

        write_json(args.output, {"core": core, "cpu": cpu, "rounds": args.rounds, "runs": args.runs,
                                 "warmup": args.warmup, "loadavg": list(load), "unpinned_threads": unpinned,
                                 "timers": {"wall": "perf_counter_ns", "cpu": "process_time_ns (process pinned to the core)"},
                                 "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
