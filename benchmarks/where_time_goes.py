"""Where a frame's time goes on one core: the model per component, then the host decode.

    python benchmarks/where_time_goes.py                        # blitzmask_mobilenetv2_synth (zoo) at 320
    python benchmarks/where_time_goes.py --model blitzmask_mobilenetv2 --size 320      # random weights
    python benchmarks/where_time_goes.py --size 256 --also out/bm/blitzmask_mobilenetv2_synth.int8.tflite
    python benchmarks/where_time_goes.py --artifact out/bm/blitzmask_mobilenetv2_synth.int8-int8-int8.onnx

1. **Per component**: ONNX Runtime's kernel profile (one thread, pinned to one core) of the
   FP32 graph (or ``--artifact``), rolled up by the components every node is tagged with
   (:mod:`edgeseg.benchmark.component_profile`): p50 per component and its share.
2. **Model time**: the same graph, and any ``--also`` artifacts (a ``.tflite``...), through
   the benchmark harness (``edgeseg bench``: pinned core, one thread, warm-up discarded).
3. **Decode**: the family's NumPy decoder (the one eval and every runtime use) on the real
   outputs of ``--frames`` val images, timed per frame at the image's own size and at
   ``--frame-size`` (a camera frame: masks are resized to it, so it is the costlier case),
   with the score threshold of eval (0.05, up to 100 detections) and of an app (0.3).

The model's family comes from its manifest: any zoo model works; BlitzMask is the default
because its paper claims "simple and fast post-processing" (no NMS): this shows the cost.

Model and decode are also timed in CPU time of this process (``time.process_time``; ONNX
Runtime and NumPy's BLAS on one thread each), which other work on a shared machine does not
inflate the way it inflates wall time: the decode-vs-model ratio is taken on CPU time.
Wall figures depend on the machine and on what else runs on it: the header prints core and CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# One core: NumPy's BLAS must not start a thread pool (it would also spin on a shared machine).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _stats(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), "n": int(a.size)}


def time_decode(decode, outputs: list[dict[str, np.ndarray]], sizes: list[tuple[int, int]], repeats: int,
                **options) -> tuple[dict[str, float], dict[str, float], float]:
    """Per-frame decode time, wall and CPU (each the best of ``repeats`` per frame: the
    least disturbed by other work), and the mean number of detections."""
    wall, cpu, counts = [], [], []
    for out, hw in zip(outputs, sizes):
        best_wall = best_cpu = float("inf")
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            dets = decode(out, hw, **options)
            best_cpu = min(best_cpu, (time.process_time() - c0) * 1000.0)
            best_wall = min(best_wall, (time.perf_counter() - t0) * 1000.0)
        wall.append(best_wall)
        cpu.append(best_cpu)
        counts.append(len(dets))
    return _stats(wall), _stats(cpu), float(np.mean(counts))


def model_cpu_ms(runtime, feed: dict[str, np.ndarray], runs: int, warmup: int) -> dict[str, float]:
    """CPU time per run of the model in this process (one ONNX Runtime thread)."""
    for _ in range(warmup):
        runtime.run(feed)
    samples = []
    for _ in range(runs):
        c0 = time.process_time()
        runtime.run(feed)
        samples.append((time.process_time() - c0) * 1000.0)
    return _stats(samples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="blitzmask_mobilenetv2_synth")
    ap.add_argument("--weights", default="zoo", help="checkpoint, 'zoo', or 'none' for random weights")
    ap.add_argument("--size", type=int, default=320, help="network input side")
    ap.add_argument("--artifact", type=Path, default=None, help="profile this exported .onnx instead of exporting")
    ap.add_argument("--also", type=Path, nargs="*", default=[], help="more artifacts to time end to end")
    ap.add_argument("--dataset", type=Path, default=None, help="COCO json (default: synthesise the val split)")
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=50, help="val images whose outputs are decoded")
    ap.add_argument("--frame-size", default="720x1280", help="HxW of a camera frame to decode to ('none': skip)")
    ap.add_argument("--decode-repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)

    from edgeseg.benchmark.component_profile import profile_components
    from edgeseg.benchmark.harness import BenchSettings, run_benchmark
    from edgeseg.benchmark.targets.local import LocalTarget, ProcessPinning, default_core
    from edgeseg.data.coco import CocoDataset
    from edgeseg.data.preprocess import preprocess
    from edgeseg.export.manifest import Manifest, input_spec_of
    from edgeseg.models.contract import decoder_for_manifest
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="edgeseg-time-"))
    core = args.core if args.core is not None else default_core()

    onnx_path = args.artifact
    if onnx_path is None:
        from edgeseg.cli.export import build_model
        from edgeseg.export.onnx import export_onnx

        weights = None if args.weights == "none" else args.weights
        model, winfo = build_model(args.model, str(args.size), None, weights)
        log(f"exporting {args.model} at {args.size} ...")
        onnx_path = export_onnx(model, work / "export", graphs=("frame",), weights=winfo).onnx_path
        del model
    manifest = Manifest.load(onnx_path)
    spec = input_spec_of(manifest)
    decode = decoder_for_manifest(manifest)

    if args.dataset is None:
        from edgeseg.data.synthetic import SynthConfig, generate

        log(f"synthesising {args.frames} val images ...")
        generate(work / "synth", SynthConfig(train=0, val=args.frames, videos=0, val_videos=0))
        args.dataset = work / "synth" / "coco" / "annotations" / "val.json"
        args.images = work / "synth" / "coco" / "val"
    dataset = CocoDataset(args.dataset, args.images or args.dataset.parent.parent / "val")
    images = dataset.images[: args.frames]

    # 1. per component
    first = preprocess(dataset.load_image(images[0]), spec)
    log(f"profiling {Path(onnx_path).name} on core {core} ...")
    profile = profile_components(onnx_path, feeds={spec.name: first}, runs=args.runs, warmup=args.warmup, core=core)

    # 2. model time end to end
    settings = BenchSettings(runs=args.runs, warmup=args.warmup)
    model_rows = []
    cpu_name = "?"
    for path in [Path(onnx_path), *args.also]:
        log(f"benchmarking {path.name} ...")
        report = run_benchmark(LocalTarget(path, core=core), settings)
        cpu_name = report.device_before.cpu_model
        model_rows.append({"file": path.name, "min_ms": report.latency.min_ms, "p50_ms": report.latency.p50_ms,
                           "p90_ms": report.latency.p90_ms})

    # 3. decode on real outputs (computed once; only the decoder is timed, pinned as the model was)
    log(f"running the model on {len(images)} val images ...")
    rt = OnnxRuntimeRuntime(onnx_path, threads=1)
    outputs, sizes = [], []
    for im in images:
        outputs.append(rt.run({spec.name: preprocess(dataset.load_image(im), spec)}))
        sizes.append((im.height, im.width))
    with ProcessPinning(core):
        model_cpu = model_cpu_ms(rt, {spec.name: first}, args.runs, args.warmup)
    decode_rows = []
    frame_sizes = [("image", sizes)]
    if args.frame_size.lower() != "none":
        fh, fw = (int(v) for v in args.frame_size.lower().split("x"))
        frame_sizes.append((f"{fh}x{fw} frame", [(fh, fw)] * len(sizes)))
    input_hw = (spec.height, spec.width)
    with ProcessPinning(core):
        for label, hw in frame_sizes:
            for thr in (0.05, 0.3):
                log(f"decoding at {label} size, score > {thr} ...")
                wall, cpu, dets = time_decode(decode, outputs, hw, args.decode_repeats, score_threshold=thr,
                                              max_detections=100, input_hw=input_hw)
                decode_rows.append({"size": label if label != "image" else f"{sizes[0][0]}x{sizes[0][1]} image",
                                    "score_threshold": thr, "detections_per_frame": dets, "wall": wall, "cpu": cpu})

    print(f"\n{manifest.model} {spec.height}x{spec.width}, {Path(onnx_path).name}, one core (core {core}, {cpu_name}); "
          f"{args.runs} runs after {args.warmup} warm-up\n")
    print("Per component (ONNX Runtime kernel profile, summed per run):\n")
    print(profile.table())
    print("\nModel, end to end (edgeseg bench harness, wall time):\n")
    print("| artifact | min ms | p50 ms | p90 ms |\n|---|---:|---:|---:|")
    for r in model_rows:  # min: the least disturbed run, what a shared machine inflates least
        print(f"| {r['file']} | {r['min_ms']:.2f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} |")
    print(f"\n{Path(onnx_path).name} in CPU time of this process: p50 {model_cpu['p50_ms']:.2f} ms, "
          f"p90 {model_cpu['p90_ms']:.2f} ms")
    print(f"\nHost decode per frame (NumPy, one thread, {len(images)} val frames, best of {args.decode_repeats} "
          "per frame):\n")
    print("| decoded to | score > | detections / frame | CPU p50 ms | CPU p90 ms | wall p50 ms | CPU p50 vs model CPU p50 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in decode_rows:
        print(f"| {r['size']} | {r['score_threshold']} | {r['detections_per_frame']:.1f} | {r['cpu']['p50_ms']:.2f} | "
              f"{r['cpu']['p90_ms']:.2f} | {r['wall']['p50_ms']:.2f} | "
              f"{100 * r['cpu']['p50_ms'] / model_cpu['p50_ms']:.1f}% |")
    if args.output:
        from edgeseg.utils.atomic import write_json

        write_json(args.output, {"model": manifest.model, "artifact": Path(onnx_path).name, "core": core, "cpu": cpu_name,
                                 "input": [spec.height, spec.width], "profile": profile.to_dict(),
                                 "model_time": model_rows, "model_cpu": model_cpu,
                                 "decode": decode_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
