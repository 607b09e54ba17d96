"""File size of the fp32 / fp16 / int8 / mixed ONNX artifacts of one model, and the ratio to fp32.

Users expect a quantized model to be smaller than the float one. Sizes barely depend on
the weights' values and not on the calibration ranges, so the model is exported with random
weights (or ``--weights``) and the int8 plans use a stand-in table (a distinct amax per tensor):
what is measured is what the quantizer stores (int8 weights, fp16 weights, int32 biases,
scales) and that it stores nothing else (no unused initializers).

Targets (issue 12): int8 <= 0.30x and fp16 <= 0.52x of fp32.

    python benchmarks/artifact_sizes.py                       # mobileinst_topformer at 640
    python benchmarks/artifact_sizes.py --input-size 320 --dir out/sizes320
    python benchmarks/artifact_sizes.py --graph features      # the features graph (video)
    python benchmarks/artifact_sizes.py --model mobileinst_topformer_synth --input-size 256 --weights zoo

Prints one table; exits 1 when a target is missed or a file keeps unused initializers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TARGETS = {"int8": 0.30, "fp16": 0.52}


def unused_initializers(model) -> list[str]:
    """Initializers that no node (nor subgraph, nor graph output) reads."""
    used: set[str] = {o.name for o in model.graph.output}

    def walk(graph) -> None:
        for n in graph.node:
            used.update(x for x in n.input if x)
            for a in n.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(g)

    walk(model.graph)
    return [t.name for t in model.graph.initializer if t.name not in used]


def stand_in_table(model):
    """A different amax for every float tensor: enough to build the int8 graph (sizes only).
    Distinct values, as a real table has: identical scales would be stored once and make
    the file look smaller than a calibrated one."""
    from edgeseg.quantize.cache import CalibrationTable, TensorRange

    names = {i.name for i in model.graph.input}
    names |= {o for n in model.graph.node for o in n.output if o}
    return CalibrationTable("minmax", {n: TensorRange(1.0 + k / 1024) for k, n in enumerate(sorted(names))},
                            num_images=0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobileinst_topformer")
    ap.add_argument("--input-size", type=int, default=640)
    ap.add_argument("--dir", default=None, help="export folder (default out/sizes_<model>_<size>; reused if present)")
    ap.add_argument("--graph", choices=["frame", "features"], default="frame")
    ap.add_argument("--weights", default=None,
                    help="'zoo' or a checkpoint: trained weights (random ones have equal zero biases, which the "
                         "writer stores once, so they read a little smaller)")
    args = ap.parse_args()

    import onnx

    from edgeseg.export.manifest import Manifest
    from edgeseg.quantize.qdq import quantize_model

    folder = Path(args.dir or f"out/sizes_{args.model}_{args.input_size}")
    fp32_name = f"{args.model}.onnx" if args.graph == "frame" else f"{args.model}.features.onnx"
    if not (folder / fp32_name).exists():
        from edgeseg.cli.export import build_model
        from edgeseg.export.onnx import export_onnx

        print(f"exporting {args.model} at {args.input_size} ({args.weights or 'random'} weights) to {folder} ...",
              file=sys.stderr)
        model, _ = build_model(args.model, str(args.input_size), None, args.weights)
        export_onnx(model.eval(), folder)
    manifest = Manifest.load(folder)
    src_path = folder / fp32_name
    src = onnx.load(os.fspath(src_path))
    comps = [c for c in manifest.component_names() if any(
        m.key == "edgeseg.component" and m.value == c for n in src.graph.node for m in n.metadata_props)]
    table = stand_in_table(src)
    presets = {"fp16": "*=fp16", "int8": "int8", "mixed": (manifest.presets or {}).get("mixed")}
    rows = [("fp32", src_path, src)]
    for label, spec in presets.items():
        if not spec:
            continue
        plan = manifest.plan(spec)
        plan = type(plan)({c: plan.precisions[c] for c in comps}, name=plan.name)
        q, _ = quantize_model(src, plan, table if plan.needs_calibration else None)
        out = folder / f"{src_path.stem}.sizes-{label}.onnx"
        onnx.save(q, os.fspath(out))
        rows.append((label, out, q))

    base = src_path.stat().st_size
    ok = True
    print(f"\n{args.model} {args.graph} graph at {args.input_size}x{args.input_size} ({folder})\n")
    print(f"| artifact | plan | MB | ratio to fp32 | target | unused initializers |")
    print("|---|---|---:|---:|---:|---:|")
    for label, path, model in rows:
        size = path.stat().st_size
        ratio = size / base
        target = TARGETS.get(label)
        unused = len(unused_initializers(model))
        verdict = "" if target is None else (f"<= {target:.2f} " + ("ok" if ratio <= target else "MISSED"))
        ok &= (target is None or ratio <= target) and (label == "fp32" or unused == 0)
        spec = "fp32" if label == "fp32" else (presets[label] or "")
        print(f"| {path.name} | {spec} | {size / 1e6:.2f} | {ratio:.3f}x | {verdict} | {unused} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
