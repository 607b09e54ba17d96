"""Train FeatFlowNet on video frame pairs with everything else frozen (the paper's second stage).

A pair is a keyframe and a later frame of the same video (1 to ``max_offset`` frames
apart, as the official ``frame_offset`` sampling). The frozen image model computes the
keyframe's top-down P4'/P5' and both frames' C3 laterals; FeatFlowNet predicts flow,
scale and bias from the laterals, and the keyframe's P4'/P5' are warped with them
(:func:`edgeseg.models.yolact_edge.model.warp_features`, the torch twin of the host warp).
The loss is the official feature-matching loss (``feature_matching_loss='cosine'``,
``fm_loss_loc='L+P'``): 1 - cosine similarity per position between the warped features
and the later frame's own P4'/P5' computed by the full backbone, both before ("L") and
after ("P") the FPN's 3x3 conv + ReLU of that level. No annotation is needed.

Runs on the model in eval mode (BatchNorm statistics fixed); only ``flow_net`` is
optimised (AdamW, warm-up + cosine). Resumable, like ``edgeseg train``: the checkpoint
(``OUT.safetensors``, the whole model with its manifest) and ``OUT.state.safetensors``.
Pairs and flips are functions of (seed, iteration), so a resumed run sees the same data.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.errors import EdgesegError


@dataclass
class FlowTrainConfig:
    model: str
    weights: str                      # the trained image checkpoint (or "zoo")
    annotations: str                  # YouTube-VIS JSON (only the videos' frame lists are read)
    frames_dir: str
    output: str                       # OUT.safetensors
    iters: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    max_offset: int = 4               # keyframe 1..max_offset frames before the current one
    seed: int = 0
    threads: int | None = 1
    save_every: int = 100
    log_every: int = 20
    save_dtype: str = "float32"       # "float16" for zoo files
    resume: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        if self.iters < 1 or self.batch_size < 1 or self.max_offset < 1:
            raise EdgesegError("iters, batch size and max offset must be at least 1",
                               "e.g. --iters 1000 --batch-size 8 --max-offset 4")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise EdgesegError(f"the learning rate must be positive, got {self.lr}", "e.g. 1e-3")
        if Path(self.output).suffix != ".safetensors":
            raise EdgesegError(f"the output must be a .safetensors file, got {self.output}",
                               "e.g. -o runs/flow.safetensors")


def sample_pairs(lengths: list[int], batch: int, max_offset: int, seed: int, iteration: int):
    """``batch`` (video index, key frame, current frame, flip) tuples for one iteration."""
    rng = np.random.default_rng([seed, iteration])
    usable = [i for i, n in enumerate(lengths) if n >= 2]
    if not usable:
        raise EdgesegError("no video has two frames", "train the flow net on videos (edgeseg data synth --videos N)")
    out = []
    for _ in range(batch):
        v = usable[int(rng.integers(len(usable)))]
        cur = int(rng.integers(1, lengths[v]))
        off = int(rng.integers(1, min(max_offset, cur) + 1))
        out.append((v, cur - off, cur, bool(rng.random() < 0.5)))
    return out


def cosine_loss(a, b):
    """Mean over positions of 1 - cosine similarity across channels (the official 'cosine')."""
    import torch.nn.functional as F

    return (1.0 - F.cosine_similarity(a, b, dim=1)).mean()


def feature_matching_loss(model, key_images, cur_images):
    """(loss, parts) of one batch of (keyframe, current frame) pairs; only the flow net gets gradients."""
    import torch
    import torch.nn.functional as F

    from edgeseg.models.yolact_edge.model import warp_features

    with torch.no_grad():
        lat3_k, _, p4_k, p5_k = model.fpn(*model.backbone(key_images), mode="top_down")
        lat3, _, p4_t, p5_t = model.fpn(*model.backbone(cur_images), mode="top_down")
    flow4, s4, b4, flow5, s5, b5 = model.flow_net(lat3, lat3_k)
    w4 = warp_features(p4_k, flow4, s4, b4)
    w5 = warp_features(p5_k, flow5, s5, b5)
    pred = model.fpn.pred_layers  # pred_layers[0] refines P5, [1] P4 (official order)
    loss_l = (cosine_loss(w4, p4_t) + cosine_loss(w5, p5_t)) / 2
    with torch.no_grad():
        t4, t5 = F.relu(pred[1](p4_t)), F.relu(pred[0](p5_t))
    loss_p = (cosine_loss(F.relu(pred[1](w4)), t4) + cosine_loss(F.relu(pred[0](w5)), t5)) / 2
    # What the untrained (identity) flow gives, for the log: the keyframe's features as they are.
    with torch.no_grad():
        still = (cosine_loss(p4_k, p4_t) + cosine_loss(p5_k, p5_t)) / 2
    total = loss_l + loss_p
    return total, {"L": float(loss_l.detach()), "P": float(loss_p.detach()), "L_unwarped": float(still)}


def train_flow(cfg: FlowTrainConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    import torch

    from edgeseg.data.preprocess import preprocess
    from edgeseg.data.ytvis import YtvisDataset
    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import load_weights
    from edgeseg.models.pretrained import checkpoint_model_cfg, resolve_weights
    from edgeseg.train.schedule import lr_at
    from edgeseg.train.state import load_state, save_checkpoint, save_state, state_path

    log = log or print
    cfg.validate()
    dataset = YtvisDataset(cfg.annotations, cfg.frames_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    weights = resolve_weights(cfg.weights, cfg.model)
    model = create_model(cfg.model, **checkpoint_model_cfg(weights, cfg.model))
    if getattr(model, "family", None) != "yolact_edge":
        raise EdgesegError(f"{cfg.model} is not a YolactEdge model", "train the flow net of a yolact_edge_* model")
    report = load_weights(model, weights, strict=True)
    log(report.summary())
    from edgeseg.export.manifest import manifest_for_artifact

    # The image training that made these weights stays in this checkpoint's record.
    earlier = [h for h in (manifest_for_artifact(weights).history or []) if h.get("step") == "train"]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    flow_params = list(model.flow_net.parameters())
    for p in flow_params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(flow_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    modules = {"flow_net": model.flow_net}
    state_file = state_path(cfg.output)
    start, seconds_before = 0, 0.0
    if cfg.resume:
        info = load_state(state_file, modules, optimizer)
        start, seconds_before = int(info["iteration"]), float(info.get("seconds", 0.0))
        log(f"resumed {state_file.name} at iteration {start}/{cfg.iters}")
    spec = model.input_spec
    lengths = [v.length for v in dataset.videos]
    history: list[dict[str, float]] = []

    def frames(batch) -> tuple[Any, Any]:
        keys, curs = [], []
        for v, k, c, flip in batch:
            video = dataset.videos[v]
            for t, out in ((k, keys), (c, curs)):
                x = preprocess(dataset.load_frame(video, t), spec)[0]
                out.append(x[:, :, ::-1].copy() if flip else x)
        return torch.from_numpy(np.stack(keys)), torch.from_numpy(np.stack(curs))

    def record(done: int, seconds: float) -> dict[str, Any]:
        return {"stage": "flow_net", "dataset": str(cfg.annotations), "videos": len(lengths), "iterations": done,
                "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed, "init": str(cfg.weights),
                "seconds": round(seconds, 1), "loss_last": history[-1] if history else None, "config": cfg.to_dict(),
                "image_training": earlier[-1] if earlier else None,
                # The image components are the loaded ones, unchanged: their AP is the image checkpoint's.
                "val": (earlier[-1].get("val") if earlier else None)}

    def checkpoint(done: int, seconds: float) -> None:
        save_checkpoint(model, cfg.output, record(done, seconds), dtype=cfg.save_dtype)
        save_state(state_file, modules, optimizer, {"model": cfg.model, "iteration": done, "seconds": seconds})

    t_train = 0.0
    smoothed: dict[str, float] = {}
    for it in range(start, cfg.iters):
        t0 = time.perf_counter()
        for g in optimizer.param_groups:
            g["lr"] = lr_at(it, cfg.iters, cfg.lr, cfg.warmup_iters, 0.01)
        key, cur = frames(sample_pairs(lengths, cfg.batch_size, cfg.max_offset, cfg.seed, it))
        loss, parts = feature_matching_loss(model, key, cur)
        if not math.isfinite(float(loss.detach())):
            raise EdgesegError(f"the flow loss became {float(loss.detach())} at iteration {it + 1}", "lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow_params, 1.0)
        optimizer.step()
        t_train += time.perf_counter() - t0
        smoothed = {k: v if k not in smoothed else 0.9 * smoothed[k] + 0.1 * v for k, v in parts.items()}
        done = it + 1
        if done % cfg.log_every == 0 or done == cfg.iters:
            history.append({"iteration": done, **{k: round(v, 4) for k, v in smoothed.items()}})
            log(f"iter {done}/{cfg.iters}  " + "  ".join(f"{k} {v:.4f}" for k, v in smoothed.items())
                + f"  {t_train:.0f}s")
        if cfg.save_every and done % cfg.save_every == 0 and done < cfg.iters:
            checkpoint(done, seconds_before + t_train)
    checkpoint(cfg.iters, seconds_before + t_train)
    return {"output": cfg.output, "iterations": cfg.iters, "history": history, "seconds": round(t_train, 1)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m edgeseg.models.yolact_edge.flow_train",
                                description="Train YolactEdge's FeatFlowNet on video pairs, the rest frozen.")
    p.add_argument("model")
    p.add_argument("--weights", required=True, help="trained image checkpoint (.safetensors) or 'zoo'")
    p.add_argument("--dataset", required=True, help="YouTube-VIS annotations (train split)")
    p.add_argument("--videos", required=True, help="frame folder (JPEGImages)")
    p.add_argument("-o", "--output", required=True)
    for name, typ, default in (("iters", int, 1000), ("batch-size", int, 8), ("lr", float, 1e-3),
                               ("max-offset", int, 4), ("seed", int, 0), ("threads", int, 1),
                               ("save-every", int, 100), ("log-every", int, 20)):
        p.add_argument(f"--{name}", type=typ, default=default)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--save-fp16", action="store_true", help="store the checkpoint's weights as float16")
    a = p.parse_args(argv)
    cfg = FlowTrainConfig(a.model, a.weights, a.dataset, a.videos, a.output, iters=a.iters, batch_size=a.batch_size,
                          lr=a.lr, max_offset=a.max_offset, seed=a.seed, threads=a.threads,
                          save_every=a.save_every, log_every=a.log_every, resume=a.resume,
                          save_dtype="float16" if a.save_fp16 else "float32")
    try:
        train_flow(cfg)
    except EdgesegError as e:  # one clear message with its fix, as the CLI prints them
        print(f"error: {e.problem}\n  fix: {e.fix}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
