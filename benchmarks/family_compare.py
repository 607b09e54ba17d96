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
``--core`` (default: the fastest core), as ``edgeseg bench``. Random weights are fine for
latency: the graphs and shapes are those of the trained models.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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

    from edgeseg.benchmark.harness import BenchSettings, run_benchmark
    from edgeseg.benchmark.targets.local import LocalTarget, default_core

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

        samples: dict[str, list[float]] = {label: [] for label, _ in entries}
        cpu = ""
        settings = BenchSettings(runs=args.runs, warmup=args.warmup)
        for r in range(args.rounds):
            for label, path in entries:
                report = run_benchmark(LocalTarget(path, core=core), settings)
                samples[label] += report.latency.samples_ms
                cpu = report.device_before.cpu_model
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{label} {np.median(s):.1f}" for label, s in samples.items()), file=sys.stderr)

    rows = []
    for label, path in entries:
        s = np.asarray(samples[label])
        rows.append({"label": label, "file": str(path), "p50_ms": float(np.percentile(s, 50)),
                     "p10_ms": float(np.percentile(s, 10)), "runs": int(s.size)})
    print(f"\nONNX Runtime, one thread, core {core} ({cpu}); {args.rounds} interleaved rounds of "
          f"{args.runs} runs after {args.warmup} warm-up\n")
    print("| artifact | p50 ms | p10 ms | runs |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['label']} | {row['p50_ms']:.2f} | {row['p10_ms']:.2f} | {row['runs']} |")
    if args.output:
        from edgeseg.utils.atomic import write_json

        write_json(args.output, {"core": core, "cpu": cpu, "rounds": args.rounds, "runs": args.runs,
                                 "warmup": args.warmup, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
