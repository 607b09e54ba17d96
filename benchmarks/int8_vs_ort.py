"""edgeseg's INT8 graphs against ONNX Runtime's own quantizer: latency, size and AP, in one run.

Graphs per size (``benchmarks/int8_graphs.py`` builds them): FP32; ours (``--plans``,
default the all-INT8 plan and the ``mixed`` preset); ONNX Runtime's ``quantize_static``
fed the same calibration images (QDQ, per-channel, MinMax, its default op types):
``ort_s8`` (its default int8 activations) and ``ort_u8`` (uint8, its advice for x86);
optionally ``ort_ours:<plan>`` (quantize_static fed our table, non-INT8 nodes excluded)
and ``before:<plan>`` (the writer of another checkout, e.g. main before this change).

Latency: every graph opened once on one pinned core (one thread, fused int8 kernels),
timed in interleaved rounds (``edgeseg.quantize.sweep_latency``, as the sweep does), so a
busy moment slows every graph alike. AP (256 only: the shipped checkpoint; 640 has
random weights): mask AP on the 200 synthetic val images with simulated Q/DQ.

Targets (issue 20), checked and printed: at every size our graphs are at least as fast
as ``quantize_static``'s (p50); at 640 they are >= 1.5x faster than FP32; the all-INT8
artifact is <= 0.30x the FP32 file; at 256 our plans are within 1 AP of FP32.

    python benchmarks/int8_vs_ort.py                                  # 256 + 640, AP at 256
    python benchmarks/int8_vs_ort.py --sizes 640 --runs 40 --repeats 8
    python benchmarks/int8_vs_ort.py --before /work/main --with-ort-ours
    python benchmarks/int8_vs_ort.py --tflite --sizes 256             # the same table on TFLite (XNNPACK)
    python benchmarks/int8_vs_ort.py --clock cpu --no-ap              # CPU time per run: a loaded machine

Exits 1 when a target is missed. Writes DIR/int8_vs_ort.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import int8_graphs  # noqa: E402

SPEEDUP_AT_640 = 1.5
SIZE_RATIO = 0.30
AP_DROP = 1.0


def qdq_counts(path: Path) -> tuple[int, int]:
    import onnx

    ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    return ops.count("QuantizeLinear"), ops.count("DequantizeLinear")


def ap_of(path: Path, limit: int | None) -> float:
    from edgeseg.eval.coco import evaluate_artifact

    res = evaluate_artifact(path, int8_graphs.DATA / "annotations" / "val.json", int8_graphs.DATA / "val",
                            limit=limit, numerics="simulated")
    return float(res.metrics["AP"])


def time_files(files: dict[str, Path], runs: int, repeats: int, core: int | None, backend: str | None = None,
               clock: str = "wall"):
    from edgeseg.benchmark.targets.local import LocalTarget
    from edgeseg.quantize.sweep_latency import LatencySettings, measure_interleaved

    settings = LatencySettings(runs=runs, warmup=5, repeats=repeats, rewarm=2, core=core)
    res = measure_interleaved(files, settings, backend=backend,
                              on_round=lambda r, n: print(f"  round {r}/{n}", file=sys.stderr),
                              target_factory=lambda f, core, backend: LocalTarget(f, core=core, backend=backend,
                                                                                  clock=clock))
    return res.stats, res.runtime


def tflite_files(size: int, root: Path, plans: list[str], calib_num: int) -> dict[str, Path]:
    """FP32 / our plans (our ranges) / TFLite's own calibration, through edgeseg's TFLite export."""
    from edgeseg.export.tflite import export_tflite
    from edgeseg.quantize.cache import CalibrationTable

    folder = root / str(size)
    src = int8_graphs.export_model(size, folder)
    table = CalibrationTable.load(folder / f"{src.stem}.kl.calib.json")
    out: dict[str, Path] = {}
    jobs = [("fp32", "fp32", "edgeseg")] + [(p, p, "edgeseg") for p in plans] + [("tflite_own:int8", "int8", "tflite")]
    for label, plan, source in jobs:
        name = f"{src.stem}.{label.replace(':', '_')}.tflite"
        if not (folder / name).exists():
            print(f"[{size}] TFLite {label}", file=sys.stderr)
            export_tflite(src, folder, plan=plan, table=table if plan != "fp32" else None,
                          images=int8_graphs.DATA / "train", calib_source=source, num_images=calib_num,
                          filename=name)
        out[label] = folder / name
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("out/int8_bench"))
    ap.add_argument("--sizes", default="256,640")
    ap.add_argument("--plans", default="int8;mixed", help="';'-separated plans/presets of ours")
    ap.add_argument("--runs", type=int, default=60, help="timed runs per graph (over all rounds)")
    ap.add_argument("--repeats", type=int, default=12, help="interleaved rounds")
    ap.add_argument("--calib-num", type=int, default=32)
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("--no-ap", action="store_true", help="skip the AP column")
    ap.add_argument("--ap-limit", type=int, default=None, help="evaluate only the first N val images")
    ap.add_argument("--with-ort-ours", action="store_true", help="also quantize_static fed our ranges")
    ap.add_argument("--before", type=Path, default=None, help="another edgeseg checkout whose writer to time too")
    ap.add_argument("--tflite", action="store_true", help="the same table for TFLite (XNNPACK), not ONNX Runtime")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the process's CPU time per run (a loaded machine: ratios without the waits)")
    ap.add_argument("--json", type=Path, default=None, help="where to write the report (default DIR/int8_vs_ort*.json)")
    args = ap.parse_args()

    import numpy as np

    from edgeseg.benchmark.cpu_isa import host_isa

    plans = [p for p in args.plans.split(";") if p]
    report: dict = {"host_isa": host_isa().summary(), "sizes": {}}
    ok = True
    for size in [int(s) for s in args.sizes.split(",")]:
        files = int8_graphs.prepare(size, args.dir, plans, calib_num=args.calib_num,
                                    with_ort_ours=args.with_ort_ours, before_checkout=args.before,
                                    log=lambda m: print(m, file=sys.stderr))
        backend = None
        if args.tflite:
            files = tflite_files(size, args.dir, plans, args.calib_num)
            backend = "tflite"
        print(f"[{size}] timing {len(files)} graphs", file=sys.stderr)
        stats, runtime = time_files(files, args.runs, args.repeats, args.core, backend, args.clock)
        fp32 = files["fp32"]
        base_ms, base_mb = stats["fp32"].p50_ms, fp32.stat().st_size / 1e6
        refs = [k for k in files if k.startswith("ort_s8") or k.startswith("ort_u8") or k == "tflite_own:int8"]
        rows = {}
        for label, path in files.items():
            mb = path.stat().st_size / 1e6
            row = {"file": str(path), "p50_ms": stats[label].p50_ms,
                   "p10_ms": float(np.percentile(stats[label].samples_ms, 10)), "mb": mb,
                   "speedup": base_ms / stats[label].p50_ms, "size_ratio": mb / base_mb}
            if path.suffix == ".onnx":
                row["q"], row["dq"] = qdq_counts(path)
            if size == 256 and not args.no_ap:
                print(f"[{size}] AP of {label}", file=sys.stderr)
                row["ap"] = ap_of(path, args.ap_limit)
            rows[label] = row
        report["sizes"][size] = {"rows": rows, "runtime": runtime, "runs": args.runs, "repeats": args.repeats,
                                 "clock": args.clock, "loadavg": os.getloadavg()}
        kind = "TFLite (XNNPACK)" if args.tflite else "ONNX Runtime (fused int8 kernels)"
        what = "CPU time" if args.clock == "cpu" else "wall time"
        print(f"\n{kind} at {size}x{size}, one pinned core (#{runtime.get('affinity')}), {what} p50 of {args.runs} "
              f"runs in {args.repeats} interleaved rounds; load average {os.getloadavg()[0]:.1f} after timing; "
              f"{runtime.get('backend')} {runtime.get('backend_version')}; host {report['host_isa']}\n")
        head = "| graph | p50 ms | p10 ms | vs FP32 | MB | size vs FP32 |" + (" Q / DQ |" if not args.tflite else "")
        head += " AP |" if "ap" in rows["fp32"] else ""
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for label, r in rows.items():
            line = (f"| {label} | {r['p50_ms']:.2f} | {r['p10_ms']:.2f} | {r['speedup']:.2f}x | {r['mb']:.2f} | "
                    f"{r['size_ratio']:.2f}x |")
            if not args.tflite:
                line += f" {r['q']} / {r['dq']} |" if label != "fp32" else " - |"
            if "ap" in r:
                line += f" {r['ap']:.1f} |"
            print(line)
        # The targets.
        print()
        for p in plans:
            r = rows[p]
            checks = []
            # quantize_static's whole-graph defaults, and (--with-ort-ours) quantize_static
            # building the same plan from our ranges: the like-for-like graph for a mixed plan.
            for ref in refs + [k for k in rows if k == f"ort_ours:{p}"]:
                checks.append((f"p50 <= {ref} ({rows[ref]['p50_ms']:.2f} ms)", r["p50_ms"] <= rows[ref]["p50_ms"]))
            if size == 640:
                checks.append((f">= {SPEEDUP_AT_640}x FP32", r["speedup"] >= SPEEDUP_AT_640))
            if p == "int8":  # all-INT8 (a mixed plan keeps fp16 components)
                checks.append((f"<= {SIZE_RATIO}x FP32 size", r["size_ratio"] <= SIZE_RATIO))
            if "ap" in r:
                checks.append((f"within {AP_DROP} AP of FP32", rows["fp32"]["ap"] - r["ap"] <= AP_DROP))
            for what, good in checks:
                ok &= good
                print(f"- {size} {p}: {what}: {'ok' if good else 'MISSED'}")
    out = args.json or args.dir / ("int8_vs_ort.tflite.json" if args.tflite else "int8_vs_ort.json")
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
