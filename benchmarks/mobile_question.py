"""The mobile question with figures: a clip-level model (IFC, near-online) against kernel
reuse (MobileInst) on the same synthetic val videos and one pinned core.

    python benchmarks/mobile_question.py --dataset data/vis/ytvis/annotations/val.json \\
        --ifc out/ifc_t5 --mobileinst out/mi_synth --ifc-plans "mixed;int8_backbone" \\
        --mobileinst-plans "mixed;int8_backbone" -o reports/mobile_question

For each method and plan (a graph of the artifact folder whose recorded precisions are
that plan's: ``fp32`` is the export, the others are written by ``edgeseg quantize``), every val
video is tracked by the family's video strategy (``edgeseg track --dataset``'s sweep:
IFC at S = 1..T, MobileInst at T = 1, 3, 6), scored by VIS AP, and timed per frame on one
pinned core with one-thread runtimes (model + host; the wall clock and this thread's CPU
time, which stays meaningful when other processes share the machine). Latency runs int8
with ONNX Runtime's fused kernels; the VIS AP of int8 plans is measured again with
simulated Q/DQ (host-independent), as every accuracy figure of the project is. Peak memory of the
graph(s) a method holds (IFC: the clip graph; kernel reuse: frame + features graphs) is
given twice: the static estimate (weights + activation peak by tensor lifetime,
:func:`edgeseg.benchmark.memory.graph_memory`) and the peak resident memory the graphs
add to a fresh ONNX Runtime process (:func:`~edgeseg.benchmark.memory.measured_peak_rss`).

The "best mixed plan" of a method is, among the non-fp32 plans asked for, the one with the
lowest CPU ms/frame at the method's default interval whose VIS AP there is within
``--max-ap-drop`` of fp32 (else the one with the highest AP). Writes ``<out>.json`` and
``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def graph_for_plan(folder: Path, plan: str) -> tuple[str, list[str]]:
    """(frame/clip graph file, every graph file the tracker holds) of ``plan`` (a preset name
    or a spec) in an artifact folder, found by the precisions its manifest records."""
    from edgeseg.errors import EdgesegError
    from edgeseg.export.manifest import Manifest
    from edgeseg.quantize.plan import PrecisionPlan

    m = Manifest.load(folder)
    want = PrecisionPlan.parse(plan, m.component_names(), m.presets).precisions
    frames = [f for f, a in m.artifacts.items() if a.get("kind") == "onnx" and a.get("graph", "frame") == "frame"
              and (a.get("precision") or {}).get("precisions") == want]
    if not frames:
        raise EdgesegError(f"{folder} has no frame graph with plan {plan!r}",
                           f"make it with `edgeseg quantize {folder}/<model>.onnx --plan {plan} --calib ...`")
    frame = sorted(frames, key=lambda f: not m.artifacts[f].get("primary"))[0]
    held = [frame]
    from edgeseg.track.kernel_reuse import pick_video_graphs

    if any(a.get("graph") == "features" for a in m.artifacts.values()):  # kernel reuse holds both graphs
        _, features = pick_video_graphs(m, frame)
        if features:
            held.append(features)
    return frame, held


def sweep_one(dataset, folder: Path, plan: str, intervals: list[int], core: int | None,
              options: dict[str, Any]) -> dict[str, Any]:
    from edgeseg.benchmark.memory import graph_memory, measured_peak_rss
    from edgeseg.track.sweep import reuse_sweep

    from edgeseg.export.manifest import Manifest

    frame, held = graph_for_plan(folder, plan)
    # Latency with ONNX Runtime's fused int8 kernels (as deployed); the VIS AP of an int8
    # graph with simulated Q/DQ (host-independent: fused u8s8 kernels saturate without VNNI).
    report = reuse_sweep(dataset, folder / frame, intervals, threads=1, core=core, options=options,
                         numerics="fused")
    rows = [dict(r.__dict__) for r in report.rows]
    precisions = (Manifest.load(folder).artifacts[frame].get("precision") or {}).get("precisions") or {}
    accuracy_numerics = "fused (float graph: the same)"
    if "int8" in precisions.values():
        acc = reuse_sweep(dataset, folder / frame, intervals, threads=1, core=core, options=options,
                          numerics="simulated")
        for row, a in zip(rows, acc.rows):
            row.update(ap=a.ap, ap50=a.ap50, ap75=a.ap75, ap_fused=row["ap"])
        accuracy_numerics = "simulated"
    static = [graph_memory(folder / f) for f in held]
    measured = measured_peak_rss([folder / f for f in held])
    return {"plan": plan, "graphs": held, "settings": report.settings, "accuracy_numerics": accuracy_numerics,
            "rows": rows,
            "memory": {"weights_mb": sum(s.weights_bytes for s in static) / 2 ** 20,
                       "activation_peak_mb": max(s.activation_peak_bytes for s in static) / 2 ** 20,
                       "static_total_mb": sum(s.weights_bytes for s in static) / 2 ** 20
                       + max(s.activation_peak_bytes for s in static) / 2 ** 20,
                       **measured}}


def best_mixed(results: list[dict[str, Any]], default_interval: int, max_drop: float) -> dict[str, Any] | None:
    fp32 = next(r for r in results if r["plan"] == "fp32")

    def at(r):
        return next(x for x in r["rows"] if x["reuse"] == default_interval)

    base = at(fp32)["ap"] or 0.0
    others = [r for r in results if r["plan"] != "fp32"]
    if not others:
        return None
    ok = [r for r in others if (at(r)["ap"] or 0.0) >= base - max_drop]
    if ok:
        return min(ok, key=lambda r: at(r)["model_cpu_ms"] + at(r)["host_cpu_ms"])
    return max(others, key=lambda r: at(r)["ap"] or 0.0)


def markdown(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# The mobile question: IFC (clip-level, near-online) vs MobileInst (kernel reuse)", "",
             f"{meta['videos']} synthetic val videos ({meta['frames']} frames, {meta['dataset']}); one pinned core "
             f"(core {meta['core']}), one-thread ONNX Runtime {meta['onnxruntime']}; {meta['machine']}.", "",
             *[f"- {name}: {m.get('artifact', '?')}, weights {(m.get('weights') or {}).get('path')} (sha256 "
               f"{str((m.get('weights') or {}).get('sha256'))[:12]})"
               + (f"; measured earlier, reused from {m['reused_from']}" if m.get("reused_from") else "")
               for name, m in meta.get("methods", {}).items()], "",
             "| method | plan | interval | VIS AP | AP50 | ms/frame (model + host, wall) | CPU ms/frame | "
             "clip/keyframe ms | memory: static MB (weights + activation peak) | memory: measured MB (peak RSS added) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['method']} | {r['plan']} | {r['interval']} | {_f(r['ap'])} | {_f(r['ap50'])} | "
                     f"{r['total_ms']:.1f} | {r['cpu_ms']:.1f} | {r['keyframe_ms']:.1f} | "
                     f"{r['static_mb']:.1f} ({r['weights_mb']:.1f} + {r['activation_mb']:.1f}) | {r['rss_mb']:.1f} |")
    lines += ["", "Interval: IFC's S (a clip of T=5 frames every S frames; consecutive clips share 5 - S frames, "
              "matched by soft mask IoU), MobileInst's key interval T (keyframe kernels reused for T - 1 frames).",
              "CPU ms/frame is the tracking thread's CPU time (inference runs on it with one thread), robust to "
              "other processes on the machine; the wall figure is what an idle core would show only when the "
              "machine is idle.",
              "VIS AP of plans with int8 components: simulated Q/DQ (the same on every host); their latency: "
              "ONNX Runtime's fused int8 kernels. FP16 components run through casts on this CPU runtime (no fp16 "
              "kernels), so they cost time here that a phone GPU/NPU would save.",
              "Static memory counts fp32 DequantizeLinear outputs of int8 graphs at full size; the measured figure "
              "is what ONNX Runtime really held (fused kernels)."]
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, type=Path, help="YouTube-VIS val annotations")
    ap.add_argument("--videos", type=Path, default=None, help="frame folder (default: JPEGImages beside)")
    ap.add_argument("--ifc", required=True, type=Path, help="IFC artifact folder (exported at T=5)")
    ap.add_argument("--mobileinst", required=True, type=Path, help="MobileInst artifact folder")
    ap.add_argument("--ifc-plans", default="fp32;mixed",
                    help="';'-separated plans (preset names or specs) quantized in the IFC folder")
    ap.add_argument("--mobileinst-plans", default="fp32;mixed",
                    help="';'-separated plans quantized in the MobileInst folder")
    ap.add_argument("--strides", default="1,2,3,4,5")
    ap.add_argument("--intervals", default="1,3,6")
    ap.add_argument("--max-ap-drop", type=float, default=1.0)
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("--methods", default="ifc,mobileinst",
                    help="which methods to measure now (ifc, mobileinst); the others come from --reuse")
    ap.add_argument("--reuse", type=Path, action="append", default=[],
                    help="an earlier <out>.json (repeatable: the first that has a method wins): methods not measured "
                         "now are taken from it (e.g. MobileInst's, whose weights did not change, when only the IFC "
                         "checkpoint is new); a method neither measured nor found is left out of the table")
    ap.add_argument("-o", "--output", type=Path, default=Path("reports/mobile_question"))
    args = ap.parse_args(argv)
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in ("ifc", "mobileinst")]
    if unknown:
        ap.error(f"--methods: unknown {', '.join(unknown)} (choose from ifc, mobileinst)")

    import platform

    import onnxruntime

    from edgeseg.data.ytvis import YtvisDataset
    from edgeseg.utils import atomic

    frames_dir = args.videos or args.dataset.parent.parent / "JPEGImages"
    dataset = YtvisDataset(args.dataset, frames_dir)
    def plans_of(text: str) -> list[str]:
        plans = [p.strip() for p in text.split(";") if p.strip()]
        return plans if "fp32" in plans else ["fp32", *plans]

    methods = {"ifc": ("IFC (T=5)", args.ifc, [int(s) for s in args.strides.split(",")], 1,
                       plans_of(args.ifc_plans)),
               "mobileinst": ("MobileInst kernel reuse", args.mobileinst, [int(t) for t in args.intervals.split(",")],
                              1, plans_of(args.mobileinst_plans))}
    previous: dict[str, tuple[Path, dict[str, Any]]] = {}  # method name -> (report, its results)
    core = None
    for path in args.reuse:
        report = json.loads(path.read_text(encoding="utf-8"))
        core = core if core is not None else report.get("meta", {}).get("core")
        for name, method in report["methods"].items():
            previous.setdefault(name, (path, method))
    out: dict[str, Any] = {"methods": {}}
    for key, (name, folder, intervals, default, plans) in methods.items():
        if key not in wanted:
            if name in previous:
                path, method = previous[name]
                out["methods"][name] = {**method, "reused_from": method.get("reused_from") or str(path)}
            else:
                print(f"{name}: not measured (--methods) nor in a --reuse report: left out", file=sys.stderr)
            continue
        results = []
        for plan in plans:
            print(f"{name}: {plan} at {intervals}", file=sys.stderr)
            results.append(sweep_one(dataset, folder, plan, intervals, args.core, {}))
            core = results[-1]["settings"]["core"]
        best = best_mixed(results, default, args.max_ap_drop)
        from edgeseg.export.manifest import Manifest

        weights = Manifest.load(folder).weights or {}
        out["methods"][name] = {"results": results, "best_mixed": best["plan"] if best else None,
                                "artifact": str(folder), "weights": {k: weights.get(k) for k in ("path", "sha256")}}
    table = []
    for name, method in out["methods"].items():
        for r in method["results"]:
            if r["plan"] != "fp32" and r["plan"] != method["best_mixed"]:
                continue
            label = r["plan"] if r["plan"] == "fp32" else f"{r['plan']} (best mixed)"
            for row in r["rows"]:
                table.append({"method": name, "plan": label, "interval": f"{'S' if 'IFC' in name else 'T'}={row['reuse']}",
                              "ap": row["ap"], "ap50": row["ap50"], "total_ms": row["total_ms"],
                              "cpu_ms": row["model_cpu_ms"] + row["host_cpu_ms"],
                              "keyframe_ms": row["keyframe_model_ms"], "static_mb": r["memory"]["static_total_mb"],
                              "weights_mb": r["memory"]["weights_mb"], "activation_mb": r["memory"]["activation_peak_mb"],
                              "rss_mb": r["memory"]["peak_rss_mb"]})
    meta = {"dataset": str(args.dataset), "videos": len(dataset.videos),
            "frames": sum(v.length for v in dataset.videos), "core": core, "onnxruntime": onnxruntime.__version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}, shared with other work".strip()}
    meta["methods"] = {n: {k: m.get(k) for k in ("artifact", "weights", "reused_from")}
                       for n, m in out["methods"].items()}
    out["table"], out["meta"] = table, meta
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(args.output.with_suffix(".json"), out)
    md = markdown(table, meta)
    atomic.write_text(args.output.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
