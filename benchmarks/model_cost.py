"""Parameters and FLOPs of every zoo variant, per component, at one input size.

    python benchmarks/model_cost.py                 # 640x640, all registered models
    python benchmarks/model_cost.py --size 512 --models mobileinst_topformer

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matmul and
convolution work as 2 FLOPs per multiply-add (elementwise ops, norms, pooling and
resizes are not counted). Papers in this area (MobileInst, TopFormer, SparseInst) quote
multiply-adds as "FLOPs", so the table prints both: GMACs = GFLOPs / 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAPER = {
    # MobileInst (AAAI 2024): TopFormer backbone, COCO, 640 input.
    "mobileinst_topformer": ("MobileInst-TopFormer @640, paper", 24.37),
}
# TopFormer's README (ADE20K table, 512x512, mmcv's counter = multiply-adds): params (M)
# and GFLOPs of the whole segmentation model, i.e. our backbone plus a small head
# (about 0.1 M params and 0.4 GMACs for Base, 0.02 M / 0.1 GMACs for Tiny).
TOPFORMER_README = {
    "mobileinst_topformer": ("TopFormer-B seg model @512 (backbone + head)", 5.1, 1.8),
    "mobileinst_topformer_tiny": ("TopFormer-T seg model @512 (backbone + head)", 1.4, 0.6),
}


def count(model, size: tuple[int, int]) -> dict[str, float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, *size)
    # Frozen weights instead of torch.no_grad(): the counter's module tracker trips over
    # views of parameters taken under no_grad (the expanded queries).
    model.requires_grad_(False)
    with FlopCounterMode(display=False) as counter:
        model(x)
    per_module = counter.get_flop_counts()
    out = {"total": float(counter.get_total_flops())}
    root = type(model).__name__
    for comp in model.component_map.names():
        # The counter keys modules by "<root class>.<dotted path>".
        path = f"{root}.{model.component_map.module_path(comp)}"
        out[comp] = float(sum(per_module.get(path, {}).values()))
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    from edgeseg.models import create_model, list_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=640, help="square input size (multiple of 64)")
    ap.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    size = (args.size, args.size)
    names = args.models or list_models()
    print(f"input {size[0]}x{size[1]}; FLOPs = 2 x multiply-adds (torch FlopCounterMode); GMACs = GFLOPs / 2\n")
    header = f"{'model':<28}{'params M':>10}{'GFLOPs':>10}{'GMACs':>9}   per component GMACs (params M)"
    print(header)
    print("-" * (len(header) + 40))
    for name in names:
        model = create_model(name, input_size=size).eval()
        params = {c: sum(p.numel() for p in getattr(model, c).parameters()) / 1e6
                  for c in model.component_map.names()}
        flops = count(model, size)
        parts = ", ".join(f"{c} {flops[c] / 2e9:.2f} ({params[c]:.2f})" for c in model.component_map.names())
        total_params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<28}{total_params:>10.2f}{flops['total'] / 1e9:>10.2f}{flops['total'] / 2e9:>9.2f}   {parts}")
        if name in TOPFORMER_README and size == (512, 512):
            label, ref_params, ref_gmacs = TOPFORMER_README[name]
            print(f"{'':<28}backbone {params['backbone']:.2f} M / {flops['backbone'] / 2e9:.2f} GMACs; "
                  f"{label}: {ref_params} M / {ref_gmacs} G")
        if name in PAPER and size == (640, 640):
            label, paper = PAPER[name]
            print(f"{'':<28}{label}: {paper} G -> ours is {flops['total'] / 2e9 / paper:.2f}x as MACs, "
                  f"{flops['total'] / 1e9 / paper:.2f}x as FLOPs")


if __name__ == "__main__":
    main()
