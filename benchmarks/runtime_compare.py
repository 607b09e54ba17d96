"""PyTorch eager vs ONNX Runtime on ONE pinned core: p50 latency of a zoo model and the ratio.

    python benchmarks/runtime_compare.py                       # MobileInst-TopFormer at 320 and 640
    python benchmarks/runtime_compare.py --sizes 320 --runs 10 --warmup 3 --core 1 -o compare.json

Both runtimes go through the same harness as `edgeseg bench` (every thread of the process
pinned to one core, one intra-op and one inter-op thread, perf_counter_ns around run(),
warm-up discarded), on the same weights: the model is exported to ONNX and its state dict
saved beside it as .safetensors, which the torch runtime loads. Figures depend on the
machine and on whatever else runs on it: quote them with the printed core and CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobileinst_topformer")
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--core", type=int, default=None, help="default: the fastest core (highest max frequency)")
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import torch

    # Before any torch work: the inter-op pool size can only be set once per process.
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)

    from edgeseg.benchmark.harness import BenchSettings, run_benchmark
    from edgeseg.benchmark.targets.local import LocalTarget, default_core
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import save_weights

    core = args.core if args.core is not None else default_core()
    settings = BenchSettings(runs=args.runs, warmup=args.warmup)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeseg-compare-") as tmp:
        for size in args.sizes:
            torch.manual_seed(0)
            model = create_model(args.model, input_size=(size, size)).eval()
            print(f"[{size}] exporting {args.model} ...", file=sys.stderr)
            result = export_onnx(model, Path(tmp) / f"{args.model}_{size}", graphs=("frame",))
            weights = save_weights(model, result.folder / "weights.safetensors")
            del model
            figures = {}
            for name, path in (("torch", weights), ("onnxruntime", result.onnx_path)):
                report = run_benchmark(LocalTarget(path, core=core), settings)
                lat = report.latency
                figures[name] = {"p50_ms": lat.p50_ms, "p90_ms": lat.p90_ms, "mean_ms": lat.mean_ms, "cv": lat.cv,
                                 "n": lat.n, "threads": [report.runtime.get("threads_intra_op"),
                                                         report.runtime.get("threads_inter_op")],
                                 "affinity": report.runtime.get("affinity")}
                print(f"[{size}] {name:12s} p50 {lat.p50_ms:9.2f} ms  p90 {lat.p90_ms:9.2f}  CV {lat.cv:.3f}  "
                      f"threads {figures[name]['threads']} affinity {figures[name]['affinity']}", file=sys.stderr)
            rows.append({"size": size, **figures,
                         "ratio_torch_over_ort": figures["torch"]["p50_ms"] / figures["onnxruntime"]["p50_ms"]})
            cpu = report.device_before.cpu_model

    print(f"\n{args.model} on one core (core {core}, {cpu}), {args.runs} runs after {args.warmup} warm-up\n")
    print("| input | PyTorch eager p50 (ms) | ONNX Runtime p50 (ms) | eager / ORT |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}x{r['size']} | {r['torch']['p50_ms']:.1f} | {r['onnxruntime']['p50_ms']:.1f} | "
              f"{r['ratio_torch_over_ort']:.2f}x |")
    if args.output:
        from edgeseg.utils.atomic import write_json

        write_json(args.output, {"model": args.model, "core": core, "cpu": cpu, "runs": args.runs,
                                 "warmup": args.warmup, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
