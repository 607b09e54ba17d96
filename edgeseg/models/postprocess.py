"""Turn raw graph outputs into detections, in NumPy only (no torch on the host path).

Eval and tracking run artifacts from any runtime (ONNX Runtime, TFLite, TNN, TensorRT)
and must decode them identically, so decoding lives here, keyed by model family:
``postprocess_for(manifest.model)`` returns the function.

MobileInst decodes as SparseInst's official inference (hustvl/SparseInst,
``SparseInst.inference``): score = sqrt(sigmoid(class) * sigmoid(objectness)), best
class per query, score threshold, then the score is multiplied by the *maskness* (mean
mask probability inside the thresholded mask); masks are upsampled bilinearly to the
network input, resized to the image, and thresholded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeseg.errors import EdgesegError

_CHUNK = 16


@dataclass
class Detection:
    label: int          # 0-based class index
    score: float
    mask: np.ndarray    # bool [h, w] at image size

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Tight ``(x0, y0, x1, y1)`` box around the mask (pixel edges), zeros if empty."""
        ys, xs = np.nonzero(self.mask)
        if xs.size == 0:
            return 0.0, 0.0, 0.0, 0.0
        return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


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


def _one_image(outputs: dict[str, np.ndarray], name: str, ndim: int) -> np.ndarray:
    if name not in outputs:
        raise EdgesegError(f"MobileInst post-processing needs output {name!r}; got {', '.join(outputs) or 'nothing'}",
                           "run the full frame graph (not the features graph) and keep its output names")
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


def mobileinst_postprocess(outputs: dict[str, np.ndarray], image_hw: tuple[int, int],
                           score_threshold: float = 0.05, max_detections: int = 100,
                           mask_threshold: float = 0.5,
                           input_hw: tuple[int, int] | None = None) -> list[Detection]:
    """Detections for one image from MobileInst's ``logits``, ``objectness`` and ``masks``.

    ``input_hw`` is the network input size; by default 8x the mask size (masks are at 1/8).
    Detections come sorted by score, at most ``max_detections``.
    """
    logits = _one_image(outputs, "logits", 2)          # [N, C]
    objectness = _one_image(outputs, "objectness", 2)  # [N, 1]
    mask_logits = _one_image(outputs, "masks", 3)      # [N, h, w]
    if not (logits.shape[0] == objectness.shape[0] == mask_logits.shape[0]):
        raise EdgesegError(f"outputs disagree on the number of queries: logits {logits.shape}, "
                           f"objectness {objectness.shape}, masks {mask_logits.shape}",
                           "feed the outputs of one run of one graph")
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    if input_hw is None:
        input_hw = (mask_logits.shape[1] * 8, mask_logits.shape[2] * 8)

    scores = np.sqrt(sigmoid(logits) * sigmoid(objectness.reshape(-1, 1)))
    labels = scores.argmax(axis=1)
    best = scores[np.arange(scores.shape[0]), labels]
    keep = np.nonzero(best > score_threshold)[0]
    if keep.size == 0:
        return []

    probs = sigmoid(mask_logits[keep])
    # Rescore by maskness on the predicted (low-resolution) masks, as the official code does.
    binary = probs > mask_threshold
    maskness = (probs * binary).sum(axis=(1, 2)) / (binary.sum(axis=(1, 2)) + 1e-6)
    final = best[keep] * maskness
    order = np.argsort(-final, kind="stable")[:max_detections]

    detections = []
    # In chunks: 100 float masks at 640x480 would be 120 MB at once.
    for start in range(0, order.size, _CHUNK):
        idx = order[start:start + _CHUNK]
        full = resize_masks(probs[idx], image_hw, via_hw=input_hw) > mask_threshold
        detections += [Detection(int(labels[keep[i]]), float(final[i]), full[j]) for j, i in enumerate(idx)]
    return detections


# Family -> decoder. Model names are "<family>_<variant>", so the longest matching
# prefix picks the family (room for "yolact_edge", "fastinst"... later).
_POSTPROCESS: dict[str, Callable[..., list[Detection]]] = {
    "mobileinst": mobileinst_postprocess,
}


def postprocess_for(model_name: str) -> Callable[..., list[Detection]]:
    """The post-processing function for a zoo model name (as recorded in a manifest)."""
    matches = [fam for fam in _POSTPROCESS if model_name == fam or model_name.startswith(fam + "_")]
    if not matches:
        raise EdgesegError(f"no post-processing known for model {model_name!r}",
                           f"known families: {', '.join(sorted(_POSTPROCESS))}")
    return _POSTPROCESS[max(matches, key=len)]
