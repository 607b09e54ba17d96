"""YolactEdge's calibration-size ablation (the paper's Table VIa): mask AP against the number
of KL calibration images.

    python benchmarks/yolact_edge_calibration.py --weights zoo --calib data/shapes8k/coco/train \\
        --dataset data/shapes8k/coco/annotations/val.json --images data/shapes8k/coco/val
    python benchmarks/yolact_edge_calibration.py ... --sizes 0,5,50,100 --plans yolact_edge,int8 --backend tflite

For every size N the FP32 frame graph is calibrated once (KL, N images drawn with seed 0
from --calib) and every plan is built from that table and evaluated on the val split
(ONNX Runtime QDQ, or the .tflite in LiteRT with --backend tflite).

N = 0 has no real image. It is run two ways, both printed: (a) INT8 with ranges from
``--noise`` images of uniform random pixels (no data: what an INT8 build "without
calibration data" can still do), and (b) the int8 components in FP16 instead (what a
toolchain does when it has no calibration at all). The paper's 0-image row (24.4 mAP,
below its 5-image 29.6) is an INT8 model, so (a) is the comparable reading; (b) is the
accuracy the FP16 fallback keeps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def noise_images(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"noise_{i:03d}.png")
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="yolact_edge_mobilenetv2_synth")
    ap.add_argument("--weights", default="zoo")
    ap.add_argument("--calib", type=Path, required=True, help="folder of calibration images (the train split)")
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--sizes", default="0,5,50,100")
    ap.add_argument("--plans", default="yolact_edge,int8", help="comma-separated plans or presets")
    ap.add_argument("--noise", type=int, default=100, help="noise images for the data-free N=0 row")
    ap.add_argument("--backend", choices=("onnxruntime", "tflite"), default="onnxruntime")
    ap.add_argument("--limit", type=int, default=None, help="evaluate the first N val images only")
    ap.add_argument("--method", choices=("kl", "minmax", "percentile"), default="kl",
                    help="calibration method (the paper: KL, as TensorRT's entropy calibrator)")
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the table as JSON")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from edgeseg.cli.export import build_model
    from edgeseg.eval.coco import evaluate_artifact
    from edgeseg.export.manifest import Manifest
    from edgeseg.export.onnx import export_onnx
    from edgeseg.quantize.pipeline import run_calibration, run_quantize

    sizes = [int(s) for s in args.sizes.split(",")]
    plan_names = [p.strip() for p in args.plans.split(",") if p.strip()]
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="edgeseg-calib-size-") as tmp:
        tmp = Path(tmp)
        model, winfo = build_model(args.model, None, None, args.weights)
        export = export_onnx(model, tmp / "art", weights=winfo, graphs=("frame",))
        frame = export.onnx_path
        manifest = Manifest.load(frame)
        spec = model.input_spec

        def evaluate(path: Path) -> float:  # the runtime follows the suffix (.onnx / .tflite)
            return evaluate_artifact(path, args.dataset, args.images, limit=args.limit).metrics["AP"]

        built: list[Path] = []

        def build(plan: str, table_path: Path | None, tag: str, calib_dir: Path | None) -> Path:
            # Inside the export folder, so every artifact is recorded in its manifest.
            name = f"{frame.stem}.{tag}_{len(built)}"
            if args.backend == "tflite":
                from edgeseg.export.tflite import export_tflite

                path = export_tflite(frame, frame.parent, plan=plan, table=table_path, images=calib_dir,
                                     filename=f"{name}.tflite").path
            elif plan == "fp32":
                path = frame
            else:
                path = run_quantize(frame, plan, table_path, out=frame.parent / f"{name}.onnx",
                                    with_fidelity=False).path
            built.append(path)
            return path

        rows["FP32 (reference)"] = {"fp32": evaluate(build("fp32", None, "ref", None))}
        for n in sizes:
            if n == 0:
                noise = noise_images(tmp / "noise", args.noise, (spec.height, spec.width))
                cal = run_calibration(frame, noise, num=None, method=args.method, out=tmp / "calib_0.json")
                rows["0 (INT8, ranges from noise images)"] = {
                    p: evaluate(build(p, cal.table_path, "n0", noise)) for p in plan_names}
                fallback = {}
                for p in plan_names:
                    precisions = manifest.plan(p).precisions
                    spec_fp16 = ",".join(f"{c}={'fp16' if v == 'int8' else v}" for c, v in precisions.items())
                    fallback[p] = evaluate(build(spec_fp16, None, f"n0fp16_{p}", None))
                rows["0 (int8 components in FP16)"] = fallback
                continue
            cal = run_calibration(frame, args.calib, num=n, seed=0, method=args.method, out=tmp / f"calib_{n}.json")
            rows[str(n)] = {p: evaluate(build(p, cal.table_path, f"n{n}", args.calib)) for p in plan_names}
            print(f"N={n}: " + ", ".join(f"{p} {ap:.1f}" for p, ap in rows[str(n)].items()), flush=True)

    print(f"\n{args.model}: mask AP by number of {args.method} calibration images ({args.backend}, "
          f"{args.limit or 'all'} val images)")
    print("| calibration images | " + " | ".join(plan_names) + " |")
    print("|---|" + "---:|" * len(plan_names))
    print(f"| FP32 reference | {rows['FP32 (reference)']['fp32']:.1f} (every column) |" + " |" * (len(plan_names) - 1))
    for key, vals in rows.items():
        if key == "FP32 (reference)":
            continue
        print(f"| {key} | " + " | ".join(f"{vals[p]:.1f}" for p in plan_names) + " |")
    if args.output:
        args.output.write_text(json.dumps({"model": args.model, "backend": args.backend, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
