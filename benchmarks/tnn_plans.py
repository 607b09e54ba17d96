"""Every per-component precision plan of an export through TNN: written, or refused with its fix.

    python benchmarks/tnn_plans.py out/ye --calib out/ye/yolact_edge_mobilenetv2_synth.kl.calib.json
    python benchmarks/tnn_plans.py out/ye --calib TABLE --device x86 --plans 'yolact_edge;int8'

For FP32 and every fp16/int8 combination of the frame graph's components (or --plans),
``edgeseg.export.tnn.writer.export_tnn`` converts the FP32 frame graph with the
calibration table into a scratch folder and the table lists, per plan: layers, int8
layers, the preflight's warnings, or the refusal and its fix (what ``edgeseg export --to
tnn`` would print). No TNN runtime runs here: conversion and the device checks only
(``tests/tnn_reference.py`` checks the arithmetic of the written files in the tests).
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
    ap.add_argument("artifact", type=Path, help="export folder (its primary frame graph is converted)")
    ap.add_argument("--calib", type=Path, required=True, help="calibration table of that frame graph")
    ap.add_argument("--plans", default="default", help="'default' (FP32 + every fp16/int8 combination) or ';'-list")
    ap.add_argument("--device", choices=("arm", "x86"), default="arm")
    ap.add_argument("-o", "--output", type=Path, default=None)
    args = ap.parse_args(argv)

    from edgeseg.errors import EdgesegError
    from edgeseg.export.manifest import Manifest
    from edgeseg.export.tnn.writer import export_tnn
    from edgeseg.quantize.cache import CalibrationTable
    from edgeseg.quantize.sweep import parse_plans
    from edgeseg.runtimes.base import resolve_artifact

    frame = resolve_artifact(args.artifact)
    manifest = Manifest.load(frame)
    table = CalibrationTable.load(args.calib)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeseg-tnn-plans-") as tmp:
        for i, plan in enumerate(parse_plans(args.plans, manifest)):
            try:
                r = export_tnn(frame, Path(tmp) / str(i), plan=plan,
                               table=table if plan.needs_calibration else None, device=args.device)
                rows.append({"plan": plan.spec(), "name": plan.name, "ok": True, "layers": r.layers,
                             "int8_layers": len(r.quantized_layers), "warnings": list(r.warnings)})
            except EdgesegError as e:
                rows.append({"plan": plan.spec(), "name": plan.name, "ok": False, "problem": e.problem, "fix": e.fix})
    comps = manifest.component_names()
    print(f"{manifest.model}: TNN ({args.device}) for {len(rows)} plans of {frame.name}")
    print("| " + " | ".join(comps) + " | TNN | layers | int8 layers | notes |")
    print("|" + ":---:|" * len(comps) + "---|---:|---:|---|")
    for r in rows:
        cells = [p.split("=")[1].upper() for p in r["plan"].split(",")]
        if r["ok"]:
            notes = "; ".join(sorted(set(w.split(":")[0] for w in r["warnings"]))) or "-"
            print(f"| {' | '.join(cells)} | written | {r['layers']} | {r['int8_layers']} | {notes} |")
        else:
            print(f"| {' | '.join(cells)} | refused | - | - | {r['problem']} (fix: {r['fix']}) |")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
