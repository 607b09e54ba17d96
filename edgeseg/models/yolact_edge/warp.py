"""The partial feature transform's warp, on the host in NumPy (as the paper keeps it out of TensorRT).

A non-keyframe's P4/P5 are the keyframe's, moved by FeatFlowNet's flow and corrected by
its per-channel scale and bias: ``W = sample(P_key, grid + flow / 8) * scale + bias``.
``sample`` is ``F.grid_sample(..., mode="bilinear", padding_mode="zeros",
align_corners=True)`` on the normalised grid, exactly the official ``deform_op``: with
``align_corners`` the normalised coordinate -1..1 spans pixel centres 0..W-1, so a flow
value ``f`` moves a sample by ``f / 8 * (W - 1) / 2`` pixels. Each of the four bilinear
corners outside the map contributes zero.

The sampling positions depend only on the flow, so they are computed once per level
and applied to all channels as four gathers of ``[C, H*W]``.
"""

from __future__ import annotations

import numpy as np

from edgeseg.errors import EdgesegError

FLOW_UNIT = 8.0  # the official deform_op adds offset / 8 to the normalised grid


def _batchless(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise EdgesegError(f"{name} holds a batch of {a.shape[0]}", "warp one frame at a time")
        a = a[0]
    if a.ndim != 3:
        raise EdgesegError(f"{name} has shape {np.shape(x)}, expected [1, C, H, W]", "feed the flow graph's outputs")
    return a


def sample_bilinear(features: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``grid_sample(features, identity grid + flow / 8)`` for ``[C, H, W]`` / ``[2, H, W]``."""
    c, h, w = features.shape
    if flow.shape != (2, h, w):
        raise EdgesegError(f"flow {flow.shape} does not match features {features.shape}",
                           "warp P4 with flow4 and P5 with flow5 (same size)")
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    px = xs + flow[0] / FLOW_UNIT * ((w - 1) / 2.0)
    py = ys + flow[1] / FLOW_UNIT * ((h - 1) / 2.0)
    x0 = np.floor(px)
    y0 = np.floor(py)
    fx = px - x0
    fy = py - y0
    x0 = x0.astype(np.int64)
    y0 = y0.astype(np.int64)
    flat = features.reshape(c, h * w)
    out = np.zeros((c, h * w), np.float32)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            weight = (wy * wx * valid).reshape(-1).astype(np.float32)
            index = (np.clip(yy, 0, h - 1) * w + np.clip(xx, 0, w - 1)).reshape(-1)
            out += flat[:, index] * weight
    return out.reshape(c, h, w)


def warp_features(features: np.ndarray, flow: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """One level: keyframe features ``[1, C, H, W]`` -> the current frame's, ``[1, C, H, W]``."""
    f = _batchless(features, "features")
    warped = sample_bilinear(f, _batchless(flow, "flow"))
    return (warped * _batchless(scale, "scale") + _batchless(bias, "bias"))[None]
