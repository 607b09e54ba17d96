"""Calibration benchmark: our streaming KL vs ONNX Runtime's Entropy calibrator, then what it buys.

On MobileInst-TopFormer (default 640x640) and N images (default 100):

1. our KL calibration (``edgeseg.quantize.calibrate``) and ONNX Runtime's
   ``create_calibrator(..., CalibrationMethod.Entropy, extra_options={'num_bins': 2048,
   'num_quantized_bins': 128})`` (real KL; with its defaults it returns min-max ranges),
   each in its own subprocess so wall time and peak RSS do not mix, both with the same
   ONNX Runtime thread count, on the same preprocessed images;
2. the median and max relative difference of the two sets of ranges;
3. one-core p50 latency of FP32, all-INT8 and the model's mixed plan (the harness of
   ``edgeseg bench``: pinned core, one thread), and fidelity of both against FP32 on
   held-out images.

ONNX Runtime's calibrator keeps every exposed activation of every image until
``collect_data`` returns. Called once on all images (its documented use) it needs about
N x (activation bytes per image); the script prints that figure and, unless
``--ort-one-shot`` is given, feeds ONNX Runtime ``--ort-images-per-call`` images per
``collect_data`` call (its histograms merge between calls), which is the only way it
fits on a small machine. Pass ``--ort-one-shot`` on a machine with enough memory; the
child then runs under an address-space limit (``--ort-mem-limit-gb``) so a shared
machine is not pushed into swap.

    python benchmarks/calibration.py                      # the full run (slow: ORT's KL is pure Python)
    python benchmarks/calibration.py --size 320 --num 20  # a quicker look

Figures are printed (and written as JSON with ``--json``); nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ============================================================================ workers
def _image_set(model_path: str, folder: str, num: int, seed: int):
    from edgeseg.data.images import select_images, spec_for_model

    spec, _ = spec_for_model(model_path)
    return select_images(folder, spec, num=num, seed=seed)


def worker_ours(args) -> dict:
    from edgeseg.quantize.calibrate import calibrate

    images = _image_set(args.model, args.images, args.num, args.seed)
    t0 = time.perf_counter()
    table = calibrate(args.model, images, method="kl", threads=args.threads)
    seconds = time.perf_counter() - t0
    table.save(args.out)
    return {"seconds": seconds, "tensors": len(table), "images": table.num_images}


def worker_ort(args) -> dict:
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    if args.mem_limit_gb:
        limit = int(args.mem_limit_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    images = _image_set(args.model, args.images, args.num, args.seed)
    feeds = list(images.feeds())  # preprocessing is not what we time: same tensors for both

    class Reader(CalibrationDataReader):
        def __init__(self, items):
            self.items = iter(items)

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cal = create_calibrator(args.model, augmented_model_path=os.path.join(tmp, "augmented.onnx"),
                                calibrate_method=CalibrationMethod.Entropy,
                                extra_options={"num_bins": 2048, "num_quantized_bins": 128})
        # Same thread count as ours; keep ORT's own choice of graph optimisation (none).
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        cal.infer_session = ort.InferenceSession(cal.augmented_model_path, sess_options=so,
                                                 providers=["CPUExecutionProvider"])
        step = len(feeds) if args.one_shot else max(1, args.per_call)
        try:
            for i in range(0, len(feeds), step):
                cal.collect_data(Reader(feeds[i:i + step]))
            t_collect = time.perf_counter() - t0
            data = cal.compute_data()
        except MemoryError:
            return {"failed": f"out of memory (address-space limit {args.mem_limit_gb} GB)",
                    "seconds": time.perf_counter() - t0}
        seconds = time.perf_counter() - t0
    ranges = {}
    for name, td in data.data.items():
        lo, hi = td.range_value
        ranges[name] = float(max(abs(float(lo)), abs(float(hi))))
    Path(args.out).write_text(json.dumps(ranges))
    del np
    return {"seconds": seconds, "collect_seconds": t_collect, "tensors": len(ranges),
            "images": len(feeds), "images_per_collect_call": step}


def worker_main(argv) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=["ours", "ort"])
    p.add_argument("--model")
    p.add_argument("--images")
    p.add_argument("--num", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--out")
    p.add_argument("--one-shot", action="store_true")
    p.add_argument("--per-call", type=int, default=10)
    p.add_argument("--mem-limit-gb", type=float, default=0)
    p.add_argument("--result")
    args = p.parse_args(argv)
    os.environ["EDGESEG_PROGRESS"] = "0"
    res = worker_ours(args) if args.worker == "ours" else worker_ort(args)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.result).write_text(json.dumps(res))


def run_worker(kind: str, common: list[str], extra: list[str], workdir: Path) -> dict:
    result = workdir / f"{kind}.result.json"
    cmd = [sys.executable, __file__, "--worker", kind, *common, "--result", str(result), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"failed": f"exit {proc.returncode}: {' | '.join(tail)}", "wall_seconds": wall}
    res = json.loads(result.read_text())
    res["wall_seconds"] = wall  # includes interpreter start and imports
    return res


# ============================================================================ main
def ensure_model(name: str, size: int, workdir: Path) -> Path:
    folder = workdir / f"{name}_{size}"
    onnx_path = folder / f"{name}.onnx"
    if onnx_path.exists():
        return onnx_path
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    model = create_model(name, input_size=(size, size)).eval()
    return export_onnx(model, folder, graphs=("frame",)).onnx_path


def ensure_images(folder: str | None, count: int, size: int, workdir: Path) -> Path:
    if folder:
        return Path(folder)
    out = workdir / f"synth_{size}"
    if not (out / "coco" / "val").is_dir():
        from edgeseg.data.synthetic import SynthConfig, generate

        generate(out, SynthConfig(train=0, val=count, videos=0, val_videos=0, height=size, width=size, seed=0),
                 overwrite=True)
    return out / "coco" / "val"


def activation_bytes(model_path: Path) -> int:
    import onnx

    from edgeseg.quantize.calibrate import select_tensors

    return sum(t.nbytes or 0 for t in select_tensors(onnx.load(model_path)))


def latency_p50(path: Path, runs: int, warmup: int) -> float:
    from edgeseg.benchmark.targets.local import LocalTarget

    target = LocalTarget(path, threads=1)
    target.open()
    try:
        return target.measure(runs=runs, warmup=warmup).stats.p50_ms
    finally:
        target.close()


def main() -> None:
    if "--worker" in sys.argv:
        worker_main(sys.argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobileinst_topformer")
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--num", type=int, default=100, help="calibration images")
    p.add_argument("--held-out", type=int, default=20, help="fidelity images (never the calibration ones)")
    p.add_argument("--images", help="image folder (default: `edgeseg data synth` images made here)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for both calibrators")
    p.add_argument("--ort-one-shot", action="store_true", help="one collect_data call on all images")
    p.add_argument("--ort-images-per-call", type=int, default=10)
    p.add_argument("--ort-mem-limit-gb", type=float, default=16)
    p.add_argument("--skip-ort", action="store_true")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workdir", default=str(ROOT / "out" / "bench_calibration"))
    p.add_argument("--json", help="also write every figure here")
    args = p.parse_args()
    os.environ.setdefault("EDGESEG_PROGRESS", "0")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    figures: dict = {"model": args.model, "size": args.size, "num_images": args.num, "threads": args.threads}

    model_path = ensure_model(args.model, args.size, workdir)
    images = ensure_images(args.images, args.num + args.held_out, args.size, workdir)
    per_image = activation_bytes(model_path)
    figures["activation_mb_per_image"] = per_image / 2 ** 20
    print(f"model {model_path} ({args.size}x{args.size}); images {images}")
    print(f"float activations per image: {per_image / 2**20:.0f} MB -> holding {args.num} images "
          f"(ONNX Runtime, one collect_data call) needs ~{args.num * per_image / 2**30:.1f} GB")

    common = ["--model", str(model_path), "--images", str(images), "--num", str(args.num),
              "--threads", str(args.threads)]
    ours = run_worker("ours", common, ["--out", str(workdir / "ours.table.json")], workdir)
    figures["ours"] = ours
    print(f"ours  KL : {ours.get('seconds', float('nan')):8.1f} s calibrate, {ours.get('wall_seconds', 0):7.1f} s wall,"
          f" peak RSS {ours.get('peak_rss_mb', float('nan')):7.0f} MB  {ours.get('failed', '')}")
    if not args.skip_ort:
        extra = ["--out", str(workdir / "ort.ranges.json"), "--per-call", str(args.ort_images_per_call)]
        if args.ort_one_shot:
            extra += ["--one-shot", "--mem-limit-gb", str(args.ort_mem_limit_gb)]
        ort_res = run_worker("ort", common, extra, workdir)
        figures["ort"] = ort_res
        mode = "one collect_data call" if args.ort_one_shot else \
            f"{ort_res.get('images_per_collect_call', args.ort_images_per_call)} images per collect_data call"
        print(f"ORT  KL  : {ort_res.get('seconds', float('nan')):8.1f} s calibrate, {ort_res.get('wall_seconds', 0):7.1f} s wall,"
              f" peak RSS {ort_res.get('peak_rss_mb', float('nan')):7.0f} MB  ({mode}) {ort_res.get('failed', '')}")
        if "failed" not in ours and "failed" not in ort_res:
            import numpy as np

            from edgeseg.quantize.cache import CalibrationTable

            mine = CalibrationTable.load(workdir / "ours.table.json")
            theirs = json.loads((workdir / "ort.ranges.json").read_text())
            common_names = [n for n in mine.ranges if n in theirs]
            rel = np.array([abs(mine.ranges[n].amax - theirs[n]) / max(mine.ranges[n].amax, theirs[n], 1e-12)
                            for n in common_names])
            speed = ort_res["seconds"] / ours["seconds"]
            mem = ours["peak_rss_mb"] / ort_res["peak_rss_mb"]
            figures["comparison"] = {"tensors_compared": len(common_names), "rel_diff_median": float(np.median(rel)),
                                     "rel_diff_max": float(rel.max()), "speedup": speed, "memory_ratio": mem}
            print(f"ranges   : {len(common_names)} tensors, relative difference median {np.median(rel):.3f}, "
                  f"max {rel.max():.3f}")
            print(f"ours vs ORT: {speed:.1f}x faster (target >= 5x), {mem:.2f} of its peak RSS (target <= 0.25)")

    # ---- what the table buys: latency and fidelity of the plans
    from edgeseg.data.images import select_images, spec_for_model
    from edgeseg.export.manifest import Manifest
    from edgeseg.quantize.cache import CalibrationTable
    from edgeseg.quantize.fidelity import fidelity_report
    from edgeseg.quantize.qdq import quantize_file

    table = CalibrationTable.load(workdir / "ours.table.json")
    manifest = Manifest.load(model_path)
    plans = {"fp32": None, "int8": manifest.plan("int8")}
    if "mixed" in manifest.presets:
        plans["mixed"] = manifest.plan("mixed")
    spec, _ = spec_for_model(model_path)
    calib_names = set(_image_set(str(model_path), str(images), args.num, 0).names)
    held = select_images(images, spec, num=args.held_out, seed=1, exclude=calib_names)
    figures["plans"] = {}
    print(f"\none-core p50 ({args.runs} runs, {args.warmup} warm-up; ONNX Runtime CPU, pinned core) "
          f"and fidelity vs FP32 on {len(held)} held-out images")
    for label, plan in plans.items():
        path = model_path
        if plan is not None:
            path = workdir / f"{model_path.stem}.{label}.onnx"
            quantize_file(model_path, plan, table, path)
        p50 = latency_p50(path, args.runs, args.warmup)
        row = {"spec": plan.spec() if plan else "*=fp32", "p50_ms": p50}
        line = f"  {label:6s} {row['spec']:58s} p50 {p50:8.1f} ms"
        if plan is not None:
            rep = fidelity_report(model_path, path, held, plan=dict(plan.precisions))
            row["fidelity"] = rep.to_dict()
            worst = min(rep.outputs, key=lambda o: o.cosine)
            line += (f"  min output cosine {worst.cosine:.4f} ({worst.name}), "
                     f"SQNR " + ", ".join(f"{o.name} {o.sqnr_db:.1f}" for o in rep.outputs) + " dB")
        figures["plans"][label] = row
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
