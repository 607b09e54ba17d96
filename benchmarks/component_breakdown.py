"""Per-component cost of YolactEdge (the paper's Table II) from a profiled run on one pinned core.

    python benchmarks/component_breakdown.py                          # the paper's models at 550
    python benchmarks/component_breakdown.py --models yolact_edge_mobilenetv2_synth --runs 50
    python benchmarks/component_breakdown.py --artifact out/sweep/work/.../model.yolact_edge.onnx

Each model is exported to ONNX (random weights: the time of a graph does not depend on its
values) and profiled with ONNX Runtime (one thread, one pinned core); every kernel's time
is summed into the component its node is tagged with
(:func:`edgeseg.benchmark.component_profile.breakdown_components`). ``--artifact`` profiles
an existing tagged graph instead (a quantized plan, say). The machine this runs on is
shared: quote shares (stable) rather than milliseconds (noisy), with the printed core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_MODELS = ("yolact_edge_mobilenetv2", "yolact_edge_resnet50", "yolact_edge_resnet101")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), help="zoo models to export (none: only --artifact)")
    ap.add_argument("--artifact", type=Path, nargs="*", default=[], help="tagged ONNX files to profile as they are")
    ap.add_argument("--weights", default=None, help="weights for --models (e.g. zoo); default random")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from edgeseg.benchmark.component_profile import breakdown_components as profile_components
    from edgeseg.cli.export import build_model
    from edgeseg.export.onnx import export_onnx

    results = []
    with tempfile.TemporaryDirectory(prefix="edgeseg-breakdown-") as tmp:
        files = list(args.artifact)
        for name in args.models:
            model, winfo = build_model(name, None, None, args.weights)
            res = export_onnx(model, Path(tmp) / name, weights=winfo, graphs=("frame",))
            files.append(res.onnx_path)
        for f in files:
            prof = profile_components(f, runs=args.runs, warmup=args.warmup, core=args.core)
            results.append(prof)
            print(f"\n{prof.model} ({prof.file}): p50 {prof.wall_ms_p50:.1f} ms per run on core {prof.core}, "
                  f"kernels {prof.kernel_ms:.1f} ms ({args.runs} profiled runs, 1 thread)")
            print(prof.markdown())
            for comp, ops in prof.op_ms.items():
                top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(ops.items())[:4])
                print(f"  {comp}: {top}")
            if prof.unmatched_nodes:
                print(f"  untagged after ORT's optimisation: {len(prof.unmatched_nodes)} nodes, "
                      f"e.g. {prof.unmatched_nodes[:3]}")
    if args.output:
        args.output.write_text(json.dumps([p.to_dict() for p in results], indent=1))
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
