"""TNN files of export folders through the numpy TNN interpreter, against ONNX Runtime.

    python benchmarks/tnn_files_vs_onnxruntime.py out/bm_tnn_fp32 out/bm_tnn_fp16 out/bm_tnn_int8 \
        --dataset data/shapes8k/coco/annotations/val.json --images data/shapes8k/coco/val

No TNN runtime installs here (``benchmarks/tnn_vs_onnxruntime.py`` needs a TNNTest build);
this runs the files ``edgeseg export --to tnn`` wrote through ``tests/tnn_reference.py``, the
interpreter the TNN tests use, which loads resources the way each TNN device does. The
reference is what ONNX Runtime computes for the same plan: the FP32 ONNX for fp32/fp16
files, the folder's quantized ONNX (simulated Q/DQ) for int8. It checks the conversion (layer
parameters, resources, int8 scales), not TNN's kernels. Prints the cosine per output on
``--frames`` val images (the lowest over them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+", help="export folders holding a .tnnproto")
    ap.add_argument("--dataset", type=Path, required=True, help="COCO json of the images to feed")
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=1)
    args = ap.parse_args(argv)

    from edgeseg.data.coco import CocoDataset
    from edgeseg.data.preprocess import preprocess
    from edgeseg.errors import EdgesegError
    from edgeseg.export.manifest import Manifest, input_spec_of
    from edgeseg.export.tnn import read_tnn
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
    from tests import tnn_reference as ref

    dataset = CocoDataset(args.dataset, args.images or args.dataset.parent.parent / "val")
    images = dataset.images[: args.frames]
    rows = []
    for folder in args.folders:
        protos = sorted(folder.glob("*.tnnproto"))
        if not protos:
            raise EdgesegError(f"{folder} holds no .tnnproto", "export it with `edgeseg export ... --to tnn`")
        manifest = Manifest.load(folder)
        record = manifest.artifacts.get(protos[0].name, {})
        precisions = record.get("precision", {}).get("precisions", {})
        device = record.get("tnn", {}).get("device", "arm")
        quantized = sorted(p for p in folder.glob("*.int8*.onnx")) if "int8" in precisions.values() else []
        reference = quantized[0] if quantized else next(p for p in folder.glob("*.onnx")
                                                         if manifest.artifacts.get(p.name, {}).get("primary"))
        spec = input_spec_of(Manifest.load(reference))
        ort = OnnxRuntimeRuntime(reference, threads=1, numerics="simulated")
        model = read_tnn(protos[0])
        names = record.get("tnn", {}).get("name_map", {}).get("outputs", {})
        lowest: dict[str, float] = {}
        for im in images:
            x = preprocess(dataset.load_image(im), spec)
            want = ort.run({spec.name: x})
            got = ref.run(model, {spec.name: x}, device=device)
            for name, w in want.items():
                lowest[name] = min(lowest.get(name, 1.0), cosine(got[names.get(name, name)], w))
        plan = ",".join(f"{c}={p}" for c, p in precisions.items()) or "?"
        rows.append((folder.name, plan, device, reference.name, lowest))
    outputs = list(rows[0][4])
    print(f"| folder | plan | device | against | " + " | ".join(outputs) + " |")
    print("|---|---|---|---|" + "---:|" * len(outputs))
    for folder, plan, device, against, lowest in rows:
        print(f"| {folder} | {plan} | {device} | {against} | " + " | ".join(f"{lowest[n]:.5f}" for n in outputs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
