"""Scripted runtimes for tracker tests: a scene of objects with known kernels and regions.

Object ``k`` owns the unit kernel ``e_k`` (one-hot in D dims) and the mask-feature channel
``k``, which is +8 inside the object's region of the mask grid and -8 outside (0 while
the object is absent), so
``sigmoid(e_k . features)`` is the object's mask. Each frame lists which objects are
visible, where, and in which query slot they sit, so tests can move, hide and swap them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeseg.data.preprocess import InputSpec
from edgeseg.runtimes.base import Runtime, TensorInfo

GRID = 8  # mask grid (network input 64x64 / 8)
NET = 64
D = 8
N = 6  # queries
C = 3  # classes


@dataclass
class Obj:
    key: int  # which kernel / feature channel
    slot: int  # query index on this frame
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1) on the grid
    label: int = 0
    logit: float = 6.0  # class logit (score ~ sigmoid(6) ~ 0.998)
    kernel_noise: np.ndarray | None = None


@dataclass
class Scene:
    frames: list[list[Obj]]
    calls: list[str] = field(default_factory=list)  # "frame" / "features" per run, in order

    def outputs(self, t: int, graph: str) -> dict[str, np.ndarray]:
        feats = np.zeros((1, D, GRID, GRID), np.float32)  # channels of absent objects stay 0
        logits = np.full((1, N, C), -9.0, np.float32)
        objectness = np.full((1, N, 1), 4.0, np.float32)
        rng = np.random.default_rng(t)
        kernels = rng.standard_normal((1, N, D)).astype(np.float32) * 0.05  # background queries
        for o in self.frames[t]:
            y0, x0, y1, x1 = o.box
            feats[0, o.key] = -8.0
            feats[0, o.key, y0:y1, x0:x1] = 8.0
            logits[0, o.slot, o.label] = o.logit
            k = np.zeros(D, np.float32)
            k[o.key] = 1.0
            if o.kernel_noise is not None:
                k = k + o.kernel_noise
            kernels[0, o.slot] = k
        masks = np.einsum("bnd,bdhw->bnhw", kernels, feats)
        if graph == "features":
            return {"mask_features": feats}
        return {"logits": logits, "objectness": objectness, "kernels": kernels,
                "mask_features": feats, "masks": masks}


class SceneRuntime(Runtime):
    """The frame or features graph of a scripted scene; the frame index is the number of
    runs of either graph so far (what the tracker has consumed)."""

    def __init__(self, scene: Scene, graph: str):
        super().__init__("scene.onnx")
        self.scene, self.graph = scene, graph
        self.backend = "scene"

    def inputs(self):
        return [TensorInfo("image", [1, 3, NET, NET], "float32")]

    def outputs(self):
        feats = TensorInfo("mask_features", [1, D, GRID, GRID], "float32")
        if self.graph == "features":
            return [feats]
        return [TensorInfo("logits", [1, N, C], "float32"), TensorInfo("objectness", [1, N, 1], "float32"),
                TensorInfo("kernels", [1, N, D], "float32"), feats,
                TensorInfo("masks", [1, N, GRID, GRID], "float32")]

    def _run(self, feeds, output_names=None):
        t = len(self.scene.calls)
        self.scene.calls.append(self.graph)
        return self.scene.outputs(t, self.graph)


def spec() -> InputSpec:
    return InputSpec(height=NET, width=NET, stride=64)


def frame(h: int = NET, w: int = NET) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def run_scene(frames: list[list[Obj]], config, frame_hw=(NET, NET)):
    """Track every frame of a scene; returns (per-frame instances, VideoResult, scene)."""
    from edgeseg.track.kernel_reuse import KernelReuseTracker

    scene = Scene(frames)
    tracker = KernelReuseTracker(SceneRuntime(scene, "frame"), SceneRuntime(scene, "features"), spec(), config)
    per_frame = [tracker.step(frame(*frame_hw)) for _ in frames]
    return per_frame, tracker.finish(), scene


def id_by_object(instances, objs: list[Obj], frame_hw=(NET, NET)) -> dict[int, int]:
    """object key -> track id, by which instance's mask covers the centre of the object's box."""
    out = {}
    for o in objs:
        y0, x0, y1, x1 = o.box
        cy = int((y0 + y1) / 2 * frame_hw[0] / GRID)
        cx = int((x0 + x1) / 2 * frame_hw[1] / GRID)
        hits = [i.track_id for i in instances if i.mask.full()[cy, cx]]
        assert len(hits) == 1, f"object {o.key}: {len(hits)} instances cover its centre"
        out[o.key] = hits[0]
    return out
