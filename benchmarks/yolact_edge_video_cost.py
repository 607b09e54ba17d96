"""YolactEdge's partial feature transform on one core: keyframe vs non-keyframe cost, and the host warp.

    python benchmarks/yolact_edge_video_cost.py                              # the paper's models at 550
    python benchmarks/yolact_edge_video_cost.py --models yolact_edge_mobilenetv2_synth --weights zoo

For each model the four graphs are exported (random weights unless --weights: time does
not depend on values) and timed with ONNX Runtime, one thread, every thread of the process
pinned to one core, in interleaved rounds (each round runs every graph once, so a busy
machine slows all of them alike): the ``key`` graph (a keyframe), the ``flow`` graph
(C1-C3 + FeatFlowNet) and the ``warped`` graph (FPN phase 2, ProtoNet, head), and the
NumPy host warp of P4/P5 (``edgeseg.models.yolact_edge.warp``). A non-keyframe costs
flow + warp + warped. Reported: p50 per piece, the non-keyframe / keyframe ratio, and the
warp's share of the non-keyframe model time. Decoding and association (the same on every
frame) are not included.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_MODELS = ("yolact_edge_mobilenetv2", "yolact_edge_resnet50", "yolact_edge_resnet101")


def measure(folder: Path, name: str, rounds: int, warmup: int) -> dict[str, float]:
    import numpy as np

    from edgeseg.models.yolact_edge.warp import warp_features
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    rt = {g: OnnxRuntimeRuntime(folder / f"{name}.{g}.onnx", threads=1) for g in ("key", "flow", "warped")}
    image = rt["key"].random_feeds(0)["image"]
    key = rt["key"].run({"image": image})
    flow = rt["flow"].run({"image": image, "key_lat3": key["lat3"]})
    # A flow of a few pixels, so the warp samples (an identity flow would be no cheaper, but realistic values
    # keep the gathers honest).
    rng = np.random.default_rng(0)
    for k in ("flow4", "flow5"):
        flow[k] = (rng.standard_normal(flow[k].shape) * 0.5).astype(np.float32)

    def warp():
        return (warp_features(key["p4"], flow["flow4"], flow["scale4"], flow["bias4"]),
                warp_features(key["p5"], flow["flow5"], flow["scale5"], flow["bias5"]))

    w4, w5 = warp()
    pieces = {
        "key": lambda: rt["key"].run({"image": image}),
        "flow": lambda: rt["flow"].run({"image": image, "key_lat3": key["lat3"]}),
        "warp": warp,
        "warped": lambda: rt["warped"].run({"lat3": flow["lat3"], "w4": w4, "w5": w5}),
    }
    for fn in pieces.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in pieces}
    for _ in range(rounds):
        for k, fn in pieces.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append((time.perf_counter() - t0) * 1e3)
    p50 = {k: float(np.median(v)) for k, v in samples.items()}
    p50["non_keyframe"] = p50["flow"] + p50["warp"] + p50["warped"]
    p50["ratio"] = p50["non_keyframe"] / p50["key"]
    p50["warp_share_of_model"] = p50["warp"] / (p50["flow"] + p50["warped"])
    return p50


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--weights", default=None)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("-o", "--output", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    from edgeseg.benchmark.targets.local import ProcessPinning, default_core
    from edgeseg.cli.export import build_model
    from edgeseg.export.onnx import export_onnx

    rows = {}
    with tempfile.TemporaryDirectory(prefix="edgeseg-video-cost-") as tmp:
        for name in args.models:
            model, winfo = build_model(name, None, None, args.weights)
            export_onnx(model, Path(tmp) / name, weights=winfo, graphs=("key", "flow", "warped"))
        pin = ProcessPinning(default_core() if args.core is None else args.core)
        with pin, threadpool_limits(limits=1, user_api="blas"):
            for name in args.models:
                rows[name] = measure(Path(tmp) / name, name, args.rounds, args.warmup)
    print(f"p50 ms on core {pin.core}, 1 thread, {args.rounds} interleaved rounds (ONNX Runtime; warp in NumPy)")
    print("| model | keyframe (key) | flow | host warp | warped | non-keyframe | non-key / key | warp / (flow+warped) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['key']:.2f} | {r['flow']:.2f} | {r['warp']:.3f} | {r['warped']:.2f} | "
              f"{r['non_keyframe']:.2f} | {r['ratio']:.2f} | {100 * r['warp_share_of_model']:.1f}% |")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
