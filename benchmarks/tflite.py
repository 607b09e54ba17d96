"""A zoo model on one core: ONNX Runtime FP32 vs TFLite FP32 / FP16 / INT8 / mixed, p50 and mask AP.

    python benchmarks/tflite.py                                   # MobileInst-TopFormer at 640, latency
    python benchmarks/tflite.py --model mobileinst_topformer_synth --weights zoo --size 640 --ap
    python benchmarks/tflite.py --size 320 --runs 10 --plans fp32,int8 -o tflite.json
    python benchmarks/tflite.py --model blitzmask_mobilenetv2_synth --weights zoo --size 320 --ap \
        --data data/shapes8k --val 200 --plans fp32,fp16,int8,mixed,int8_backbone --calib-method percentile

Every artifact goes through the `edgeseg bench` harness (all threads pinned to one core,
one compute thread, warm-up discarded): ONNX Runtime on the FP32 ONNX, LiteRT (XNNPACK,
one thread) on each `.tflite`. INT8 ranges come from edgeseg's KL calibration table
(`--calib-source tflite` for TFLite's own), computed on the synthetic *train* split;
mask AP is measured on the synthetic *val* split with `evaluate_artifact`. AP needs
trained weights (`--weights`); with random weights the AP column says so instead of
printing a meaningless number. Figures depend on the machine and on whatever else runs
on it: quote them with the printed core and CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobileinst_topformer")
    ap.add_argument("--weights", default=None, help="checkpoint path, or 'zoo' for the shipped one")
    ap.add_argument("--num-classes", type=int, default=None)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--plans", default="fp32,int8,mixed", help="comma-separated plans / presets")
    ap.add_argument("--calib-source", choices=("edgeseg", "tflite"), default="edgeseg")
    ap.add_argument("--calib-num", type=int, default=32, help="calibration images (synthetic train split)")
    ap.add_argument("--calib-method", choices=("kl", "minmax", "percentile"), default="kl",
                    help="how edgeseg's table is computed (KL: TensorRT's entropy rule)")
    ap.add_argument("--data", type=Path, default=None,
                    help="an `edgeseg data synth` folder to use instead of synthesising one (e.g. data/shapes8k)")
    ap.add_argument("--val", type=int, default=50, help="synthetic val images for AP")
    ap.add_argument("--ap", action="store_true", help="measure mask AP (needs --weights)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--core", type=int, default=None, help="default: the fastest core")
    ap.add_argument("--work", type=Path, default=None, help="keep artifacts here (default: a temp folder)")
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.ap and not args.weights:
        ap.error("--ap needs --weights (AP of random weights means nothing)")

    from edgeseg.benchmark.harness import BenchSettings, run_benchmark
    from edgeseg.benchmark.targets.local import LocalTarget, default_core
    from edgeseg.cli.export import build_model
    from edgeseg.data.images import select_images
    from edgeseg.data.synthetic import SynthConfig, generate
    from edgeseg.export.manifest import input_spec_of
    from edgeseg.export.onnx import export_onnx
    from edgeseg.export.tflite import export_tflite
    from edgeseg.quantize.calibrate import calibrate

    core = args.core if args.core is not None else default_core()
    settings = BenchSettings(runs=args.runs, warmup=args.warmup)
    work = args.work or Path(tempfile.mkdtemp(prefix="edgeseg-tflite-bench-"))
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    model, winfo = build_model(args.model, str(args.size), args.num_classes, args.weights)
    log(f"exporting {args.model} at {args.size} ...")
    result = export_onnx(model, work / f"{args.model}_{args.size}", graphs=("frame",), weights=winfo)
    del model
    spec = input_spec_of(result.manifest)

    synth = args.data or work / "synth"
    if not (synth / "coco").is_dir():
        ncls = result.manifest.model_cfg.get("num_classes")
        log("synthesising data ...")
        generate(synth, SynthConfig(train=max(args.calib_num, 8), val=args.val, videos=0, val_videos=0))
        if args.ap and ncls not in (None, 4):
            log(f"warning: the model has {ncls} classes, the synthetic data 4: eval will refuse")
    calib_dir, val_dir = synth / "coco" / "train", synth / "coco" / "val"
    ann = synth / "coco" / "annotations" / "val.json"

    plans = [p.strip() for p in args.plans.split(",") if p.strip()]
    table = None
    if any(p != "fp32" and p != "fp16" for p in plans):
        log(f"calibrating ({args.calib_method}) on {args.calib_num} train images ...")
        t = time.perf_counter()
        table = calibrate(result.onnx_path, select_images(calib_dir, spec, num=args.calib_num),
                          method=args.calib_method)
        log(f"  {len(table)} tensors in {time.perf_counter() - t:.1f} s")

    artifacts = [("onnxruntime", "fp32", result.onnx_path, None)]
    for plan in plans:
        log(f"TFLite {plan} ...")
        t = time.perf_counter()
        res = export_tflite(result.onnx_path, plan=plan, table=table, images=calib_dir,
                            calib_source=args.calib_source, num_images=args.calib_num)
        log(f"  {res.path.name} in {time.perf_counter() - t:.0f} s, min cosine vs ONNX "
            f"{min(p['cosine'] for p in res.parity):.5f}")
        artifacts.append(("tflite", plan, res.path, res))

    rows = []
    cpu = "?"
    for backend, plan, path, res in artifacts:
        log(f"benchmarking {path.name} on core {core} ...")
        report = run_benchmark(LocalTarget(path, core=core), settings)
        cpu = report.device_before.cpu_model
        row = {"backend": backend, "plan": plan, "file": path.name, "mb": path.stat().st_size / 1e6,
               "p50_ms": report.latency.p50_ms, "p90_ms": report.latency.p90_ms, "cv": report.latency.cv,
               "min_cosine_vs_onnx": None if res is None else min(p["cosine"] for p in res.parity),
               "components": None if res is None else res.entry["components"], "ap": None}
        if args.ap:
            from edgeseg.eval.coco import evaluate_artifact

            log(f"evaluating {path.name} on {args.val} val images ...")
            row["ap"] = evaluate_artifact(path, ann, val_dir, limit=args.val if args.data else None).metrics
        rows.append(row)

    print(f"\n{args.model} {args.size}x{args.size} on one core (core {core}, {cpu}), "
          f"{args.runs} runs after {args.warmup} warm-up; INT8 ranges: {args.calib_source}"
          f"{' (' + args.calib_method + ')' if args.calib_source == 'edgeseg' else ''}\n")
    print("| runtime | plan | p50 (ms) | p90 (ms) | size (MB) | min cosine vs ONNX FP32 | mask AP | AP50 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cos = "-" if r["min_cosine_vs_onnx"] is None else f"{r['min_cosine_vs_onnx']:.4f}"
        if r["ap"] is None:
            ap_txt = ap50 = "pending (needs --weights)" if not args.ap else "-"
        else:
            ap_txt, ap50 = f"{r['ap']['AP']:.1f}", f"{r['ap']['AP50']:.1f}"
        print(f"| {r['backend']} | {r['plan']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['mb']:.2f} | {cos} | "
              f"{ap_txt} | {ap50} |")
    if args.output:
        from edgeseg.utils.atomic import write_json

        write_json(args.output, {"model": args.model, "size": args.size, "core": core, "cpu": cpu,
                                 "runs": args.runs, "warmup": args.warmup, "calib_source": args.calib_source,
                                 "calib_method": args.calib_method,
                                 "weights": args.weights, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
