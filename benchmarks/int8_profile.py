"""Where INT8 graphs spend their time in ONNX Runtime: per-node profiling, one pinned core.

For FP32, edgeseg's all-INT8 and mixed plans and ONNX Runtime's own ``quantize_static``
output (QDQ, per-channel, MinMax, its default op types; ``ort_s8``: its default int8
activations, ``ort_u8``: the uint8 activations it advises for x86), at 256 (the shipped
checkpoint) and 640 (random weights), this runs ONNX Runtime's profiler
(``SessionOptions.enable_profiling``, one thread, every thread pinned to one core, fused
int8 kernels) and sums the node times after ONNX Runtime's own fusions by kind of work
(:mod:`edgeseg.benchmark.ort_profile`): Q/DQ, integer kernels, float Conv/MatMul/Gemm,
float islands (everything else in float), Casts.

    python benchmarks/int8_profile.py                          # 256 and 640, out/int8_bench
    python benchmarks/int8_profile.py --sizes 256 --runs 50
    python benchmarks/int8_profile.py --before /work/main      # + the graphs main's writer makes
    python benchmarks/int8_profile.py --top 8                  # + the 8 costliest ops per graph

Times are ms per run summed from the profiler (they include its overhead and are larger
than the interleaved latency of ``benchmarks/int8_vs_ort.py``: compare shares, not totals,
across scripts). Prints one Markdown table; writes DIR/int8_profile.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import int8_graphs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("out/int8_bench"))
    ap.add_argument("--sizes", default="256,640")
    ap.add_argument("--plans", default="int8;mixed", help="';'-separated plans/presets of ours")
    ap.add_argument("--runs", type=int, default=20, help="profiled runs per graph (after 5 warm-up runs)")
    ap.add_argument("--calib-num", type=int, default=32)
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("--before", type=Path, default=None, help="another edgeseg checkout whose writer to profile too")
    ap.add_argument("--top", type=int, default=0, help="also print the N costliest ops of each graph")
    args = ap.parse_args()

    import numpy as np

    from edgeseg.benchmark.ort_profile import CATEGORIES, CATEGORY_TITLES, profile_model
    from edgeseg.data.images import select_images, spec_for_model

    plans = [p for p in args.plans.split(";") if p]
    results: dict = {}
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        files = int8_graphs.prepare(size, args.dir, plans, calib_num=args.calib_num, before_checkout=args.before,
                                    log=lambda m: print(m, file=sys.stderr))
        spec, _ = spec_for_model(files["fp32"])
        feed = next(iter(select_images(int8_graphs.DATA / "val", spec, num=1, seed=3).feeds()))
        for label, path in files.items():
            print(f"[{size}] profiling {label}", file=sys.stderr)
            prof = profile_model(path, feed, runs=args.runs, warmup=5, core=args.core)
            results[f"{size}/{label}"] = {"file": str(path), **prof.to_dict()}
            rows.append((size, label, prof))
    titles = [CATEGORY_TITLES[c] for c in CATEGORIES]
    print(f"\nONNX Runtime per-node profile, ms per run (share), {args.runs} runs, one pinned core, fused int8 kernels\n")
    print("| size | graph | total | " + " | ".join(titles) + " | nodes run |")
    print("|---:|---|---:|" + "---:|" * len(titles) + "---:|")
    for size, label, p in rows:
        cells = [f"{p.by_category[c]:.2f} ({100 * p.share(c):.0f}%)" if p.by_category[c] else "-" for c in CATEGORIES]
        print(f"| {size} | {label} | {p.total_ms:.2f} | " + " | ".join(cells) + f" | {sum(p.node_count.values())} |")
    if args.top:
        print()
        for size, label, p in rows:
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(p.by_op.items())[: args.top])
            print(f"- {size} {label}: {top}")
    out = args.dir / "int8_profile.json"
    out.write_text(json.dumps({"runs": args.runs, "results": results}, indent=1))
    print(f"\nwrote {out}")
    del np
    return 0


if __name__ == "__main__":
    sys.exit(main())
