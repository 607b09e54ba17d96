"""Does the KL calibration depend on the order of the images? TensorRT's histogram vs ours.

Calibrates one ONNX model on the same N images twice, in order and reversed, with each
histogram rule (``pow2``: edgeseg's default, bins on a power-of-two grid; ``trt``:
TensorRT's, sized by the first image and doubled on overflow), and prints per rule:

* how many tensors changed threshold between the two orders (and by how much);
* how the final bin width compares with an order-free fixed grid (the histogram over all
  data at the width its overall max needs: the ``pow2`` width), i.e. how much resolution
  ``trt`` growth lost.

With ``--dataset/--images`` and trained weights it also measures the mask AP of the
int8 and mixed plans built from each rule's table (simulated Q/DQ numerics, as every
accuracy figure here), so the effect on the task metric is visible.

    python benchmarks/calibration_order.py --size 320 --num 20
    python benchmarks/calibration_order.py --model mobileinst_topformer_synth --weights zoo \\
        --num 100 --dataset data/shapes/coco/annotations/val.json --images-val data/shapes/coco/val

Figures are printed (``--json`` writes them); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def histograms(model_path: Path, feeds: list[dict], grid: str):
    from edgeseg.quantize.calibrate import HistogramCalibrator

    cal = HistogramCalibrator(model_path, histogram=grid, threads=1)
    cal.collect(feeds, progress=lambda it, label, total: it, total=len(feeds))
    return cal


def compare(a, b) -> dict:
    ra, rb = a.compute("kl"), b.compute("kl")
    rel = np.array([abs(ra[k].amax - rb[k].amax) / max(ra[k].amax, 1e-12) for k in ra if ra[k].amax > 0])
    widths = np.array([a.histograms[k].bin_width / max(b.histograms[k].bin_width, 1e-30) for k in ra
                       if a.histograms[k].bin_width > 0])
    return {"tensors": len(ra), "threshold_changed": int((rel > 0).sum()),
            "threshold_rel_change_median": float(np.median(rel)) if rel.size else 0.0,
            "threshold_rel_change_max": float(rel.max()) if rel.size else 0.0,
            "bin_width_ratio_orders_max": float(max(widths.max(), (1 / widths).max())) if widths.size else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobileinst_topformer")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--num", type=int, default=20)
    ap.add_argument("--images", default=None, help="calibration images (default: synthetic shapes made here)")
    ap.add_argument("--dataset", default=None, help="COCO val json: also measure int8/mixed AP per rule")
    ap.add_argument("--images-val", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from edgeseg.cli.export import build_model
    from edgeseg.data.images import select_images, spec_for_model
    from edgeseg.export.onnx import export_onnx

    import torch

    torch.manual_seed(0)  # the same random weights every run
    work = Path(tempfile.mkdtemp(prefix="calib-order-"))
    model, winfo = build_model(args.model, str(args.size) if args.size else None, None, args.weights)
    result = export_onnx(model, work / "export", graphs=("frame",), weights=winfo)
    onnx_path = result.onnx_path
    images = args.images
    if images is None:
        from edgeseg.data.synthetic import SynthConfig, generate

        generate(work / "shapes", SynthConfig(train=args.num, val=0, videos=0, val_videos=0, seed=0))
        images = work / "shapes" / "coco" / "train"
    spec, _ = spec_for_model(onnx_path)
    feeds = list(select_images(images, spec, num=args.num, seed=0).feeds())
    out: dict = {"model": args.model, "size": [spec.height, spec.width], "images": len(feeds), "rules": {}}
    cals = {}
    for grid in ("pow2", "trt"):
        fwd, rev = histograms(onnx_path, feeds, grid), histograms(onnx_path, feeds[::-1], grid)
        cals[grid] = fwd
        out["rules"][grid] = compare(fwd, rev)
    # Resolution lost by TensorRT's growth: its final bin width against the width a fixed
    # 2048-bin histogram over [0, overall max] would have (what one pass over all data gives).
    lost = np.array([h.bin_width * (h.num_bins - 1) / h.absmax for h in cals["trt"].histograms.values()
                     if h.absmax > 0])
    out["trt_bin_width_vs_fixed_grid"] = {"tensors": int(lost.size), "2x or wider": int((lost > 1.5).sum()),
                                          "4x or wider": int((lost > 3.0).sum()),
                                          "median": float(np.median(lost)) if lost.size else None}
    pow2_bins = np.array([h.absmax / h.bin_width for h in cals["pow2"].histograms.values() if h.absmax > 0])
    out["pow2_bins_below_max_min"] = float(pow2_bins.min()) if pow2_bins.size else None
    print(json.dumps(out, indent=2))

    if args.dataset:
        from edgeseg.eval.coco import evaluate_artifact
        from edgeseg.quantize.cache import CalibrationTable
        from edgeseg.quantize.pipeline import run_quantize
        from edgeseg.utils.hashing import sha256_file

        presets = dict(getattr(model, "precision_presets", {}))
        plans = {"int8": "int8", **({"mixed": "mixed"} if "mixed" in presets else {})}
        out["ap"] = {}
        for grid, cal in cals.items():
            table = CalibrationTable(method="kl", ranges=cal.compute("kl"), num_images=len(feeds),
                                     model_sha256=sha256_file(onnx_path), images_sha256="-",
                                     settings={"histogram": grid})
            for label, plan in plans.items():
                q = run_quantize(onnx_path, plan, table, out=work / "export" / f"{grid}.{label}.onnx",
                                 with_fidelity=False, with_features=False)
                res = evaluate_artifact(q.path, args.dataset, args.images_val)
                out["ap"][f"{grid}/{label}"] = res.metrics["AP"]
                print(f"{grid:5s} {label:6s} AP {res.metrics['AP']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
