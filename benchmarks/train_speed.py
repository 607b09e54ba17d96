"""Training step cost: seconds per iteration (forward + matching + losses + backward + AdamW).

For one model, input size and batch: NCHW vs NHWC (the trainer uses NHWC) and 1 vs N
intra-op threads. Both CPU time (what the step costs, whatever else runs) and wall time
(what you wait) are printed: on a machine shared with other work, wall time with 2
threads can be many times the 1-thread figure, because every op waits for its slowest
thread -- which is why the committed checkpoint was trained with --threads 1.

    python benchmarks/train_speed.py                                   # mobileinst_topformer_synth, 256, batch 8
    python benchmarks/train_speed.py --model mobileinst_topformer_tiny --size 320 --batch 4

Figures are printed (and written as JSON with ``--json``); nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def step_cost(model_name: str, size: int, batch: int, threads: int, channels_last: bool, steps: int,
              classes: int) -> dict:
    import torch

    from edgeseg.models import create_model
    from edgeseg.models.mobileinst.loss import mobileinst_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=classes, input_size=(size, size)).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=fmt)
    targets = [{"labels": torch.arange(3) % classes,
                "masks": (torch.rand(3, size, size, generator=g) > 0.7).float()} for _ in range(batch)]
    cpu, wall = [], []
    for i in range(steps + 1):  # the first step (allocations, oneDNN primitive creation) is dropped
        c0, w0 = time.process_time(), time.perf_counter()
        logits, objectness, _, _, masks = model(images)
        loss = mobileinst_loss(logits, objectness, masks, targets).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    return {"threads": threads, "layout": "NHWC" if channels_last else "NCHW",
            "cpu_s": round(statistics.median(cpu), 3), "wall_s": round(statistics.median(wall), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mobileinst_topformer_synth")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--max-threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    rows = []
    for threads in sorted({1, args.max_threads}):
        for cl in (False, True):
            rows.append(step_cost(args.model, args.size, args.batch, threads, cl, args.steps, args.classes))
    print(f"{args.model} {args.size}x{args.size}, batch {args.batch}: median of {args.steps} steps")
    print(f"{'threads':>7} {'layout':>6} {'cpu s/it':>9} {'wall s/it':>9}")
    for r in rows:
        print(f"{r['threads']:>7} {r['layout']:>6} {r['cpu_s']:>9.3f} {r['wall_s']:>9.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": args.model, "size": args.size, "batch": args.batch, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
