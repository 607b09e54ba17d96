"""NumPy helpers every family's decoder shares (no torch on the host path).

Bilinear resizes are written as matrices so decoding a batch of masks is two matrix
products, and they match ``F.interpolate(mode="bilinear", align_corners=False)`` exactly.
"""

from __future__ import annotations

import numpy as np

from edgeseg.errors import EdgesegError


def sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for large negative logits.
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float32)))


def resize_matrix(out_size: int, in_size: int) -> np.ndarray:
    """``[out, in]`` matrix of bilinear weights, half-pixel centres (``align_corners=False``).

    Applied on both axes this is exactly ``F.interpolate(mode="bilinear",
    align_corners=False)`` (no antialiasing), for up- and downscaling.
    """
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, None)  # torch clamps negative source coordinates to 0
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m.astype(np.float32)


def resize_masks(masks: np.ndarray, out_hw: tuple[int, int], via_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Bilinear resize ``[N, h, w]`` -> ``[N, H, W]``, optionally through an intermediate size.

    Two resizes are linear maps, so going through ``via_hw`` (the network input) costs the
    same as one: the two matrices are multiplied first.
    """
    n, h, w = masks.shape
    ry = resize_matrix(out_hw[0], h if via_hw is None else via_hw[0])
    rx = resize_matrix(out_hw[1], w if via_hw is None else via_hw[1])
    if via_hw is not None:
        ry = ry @ resize_matrix(via_hw[0], h)
        rx = rx @ resize_matrix(via_hw[1], w)
    return ry @ masks.astype(np.float32) @ rx.T


def one_image(outputs: dict[str, np.ndarray], name: str, ndim: int, model: str = "this model") -> np.ndarray:
    """Output ``name`` of one image, with an optional batch axis of 1 removed; one clear
    error when the output is missing or has the wrong rank."""
    if name not in outputs:
        raise EdgesegError(f"decoding {model} needs output {name!r}; got {', '.join(outputs) or 'nothing'}",
                           "run the full frame graph (not a features-only graph) and keep its output names")
    arr = np.asarray(outputs[name])
    if arr.ndim == ndim + 1:
        if arr.shape[0] != 1:
            raise EdgesegError(f"output {name!r} holds a batch of {arr.shape[0]} images",
                               "post-process one image at a time: pass {k: v[i:i+1]} per image")
        arr = arr[0]
    if arr.ndim != ndim:
        raise EdgesegError(f"output {name!r} has shape {tuple(np.asarray(outputs[name]).shape)}, "
                           f"expected {ndim} dims (plus an optional batch of 1)", "check the artifact's outputs")
    return arr
