"""BlitzMask's decoder: raw outputs -> detections, in NumPy only (the contract's ``decoder``).

CenterNet-style and NMS-free, as the paper's "simple and fast post-processing":

1. peaks: a heatmap cell is an instance when it is the maximum of its 3x3 neighbourhood
   (a 3x3 max-pool, edges padded with -inf) in its class channel;
2. score = sigmoid(heatmap) at the peak; keep scores above ``score_threshold``, then the
   ``max_detections`` best (top-K);
3. box: the peak cell's centre minus/plus the predicted left, top, right and bottom
   distances (cells of the stride-4 grid; negative predictions count as 0), scaled to the
   image;
4. mask: ``sigmoid(sum_k coefficients_k(peak) * spanning_set_k)`` on the grid, resized
   bilinearly to the image (through the network input size, as every family's masks are)
   only inside the box (pixels whose centre lies in it; outside is background), then
   thresholded at ``mask_threshold``.

The crop is computed, not masked: only the image rows and columns inside the box, and only
the grid cells they draw on, are combined and resized, so a mask costs in proportion to its
box (not to the image, nor to the whole grid).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.models.contract import Detection
from edgeseg.models.decoding import one_image, resize_matrix, sigmoid

OUTPUT_STRIDE = 4


@lru_cache(maxsize=16)
def _resize_through(out_size: int, via_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[out, in]`` bilinear weights of grid -> network input -> image, and per output
    pixel the range ``[first, last + 1)`` of grid cells with a non-zero weight (its
    support: the only cells a crop needs). Read-only, cached per size."""
    m = resize_matrix(out_size, via_size) @ resize_matrix(via_size, in_size)
    nonzero = m != 0
    first = nonzero.argmax(1)
    last = in_size - nonzero[:, ::-1].argmax(1)
    for a in (m, first, last):
        a.setflags(write=False)
    return m, first, last


def find_peaks(heatmap: np.ndarray) -> np.ndarray:
    """Boolean ``[C, h, w]``: cells equal to the maximum of their 3x3 neighbourhood."""
    c, h, w = heatmap.shape
    padded = np.full((c, h + 2, w + 2), -np.inf, dtype=heatmap.dtype)
    padded[:, 1:-1, 1:-1] = heatmap
    pooled = padded[:, 1:-1, 1:-1].copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            np.maximum(pooled, padded[:, dy:dy + h, dx:dx + w], out=pooled)
    return heatmap == pooled


def _logit(p: float) -> float:
    if p <= 0:
        return -math.inf
    if p >= 1:
        return math.inf
    return math.log(p / (1 - p))


def decode(outputs: dict[str, np.ndarray], image_hw: tuple[int, int],
           score_threshold: float = 0.05, max_detections: int = 100,
           mask_threshold: float = 0.5,
           input_hw: tuple[int, int] | None = None) -> list[Detection]:
    """Detections for one image from BlitzMask's ``heatmap``, ``size``, ``coefficients`` and
    ``spanning_set``, best first, at most ``max_detections``.

    ``input_hw`` is the network input size; by default 4x the output grid.
    """
    heat = one_image(outputs, "heatmap", 3, "BlitzMask")           # [C, h, w] logits
    size = one_image(outputs, "size", 3, "BlitzMask")              # [4, h, w] cells
    coef = one_image(outputs, "coefficients", 3, "BlitzMask")      # [K, h, w]
    basis = one_image(outputs, "spanning_set", 3, "BlitzMask")     # [K, h, w]
    _, h, w = heat.shape
    if size.shape != (4, h, w) or coef.shape[1:] != (h, w) or basis.shape != coef.shape:
        raise EdgesegError(f"outputs disagree: heatmap {heat.shape}, size {size.shape}, coefficients "
                           f"{coef.shape}, spanning_set {basis.shape}", "feed the outputs of one run of one graph")
    img_h, img_w = int(image_hw[0]), int(image_hw[1])
    in_h, in_w = (h * OUTPUT_STRIDE, w * OUTPUT_STRIDE) if input_hw is None else (int(input_hw[0]), int(input_hw[1]))
    heat = np.asarray(heat, dtype=np.float32)

    # 1-2. peaks above the threshold (compared as logits: sigmoid is monotonic), top-K.
    candidates = find_peaks(heat) & (heat > _logit(score_threshold))
    cls, rows, cols = np.nonzero(candidates)
    if cls.size == 0 or max_detections <= 0:
        return []
    logits = heat[cls, rows, cols]
    order = np.argsort(-logits, kind="stable")[:max_detections]
    cls, rows, cols = cls[order], rows[order], cols[order]
    scores = sigmoid(logits[order])

    # 3. boxes in image pixels.
    l, t, r, b = np.maximum(size[:, rows, cols].astype(np.float32), 0.0)
    cx, cy = (cols + 0.5) * OUTPUT_STRIDE, (rows + 0.5) * OUTPUT_STRIDE
    sx, sy = img_w / in_w, img_h / in_h
    x0, x1 = (cx - l * OUTPUT_STRIDE) * sx, (cx + r * OUTPUT_STRIDE) * sx
    y0, y1 = (cy - t * OUTPUT_STRIDE) * sy, (cy + b * OUTPUT_STRIDE) * sy
    # Pixel u is inside when its centre u + 0.5 lies in [x0, x1].
    u0 = np.clip(np.ceil(x0 - 0.5), 0, img_w).astype(np.int64)
    u1 = np.clip(np.floor(x1 - 0.5) + 1, 0, img_w).astype(np.int64)
    v0 = np.clip(np.ceil(y0 - 0.5), 0, img_h).astype(np.int64)
    v1 = np.clip(np.floor(y1 - 0.5) + 1, 0, img_h).astype(np.int64)

    # 4. masks, each computed only where its box needs it: the grid cells that carry weight
    #    for the box's pixels, combined (K products), squashed, resized onto the box.
    lam = coef[:, rows, cols].T.astype(np.float32)                     # [N, K]
    basis = np.asarray(basis, dtype=np.float32)
    ry, ry_first, ry_last = _resize_through(img_h, in_h, h)
    rx, rx_first, rx_last = _resize_through(img_w, in_w, w)
    detections = []
    for n in range(cls.size):
        if u1[n] <= u0[n] or v1[n] <= v0[n]:
            continue  # a box with no pixel centre in it: no mask to give
        gy0, gy1 = int(ry_first[v0[n]]), int(ry_last[v1[n] - 1])       # supports grow with the pixel
        gx0, gx1 = int(rx_first[u0[n]]), int(rx_last[u1[n] - 1])
        window = basis[:, gy0:gy1, gx0:gx1]
        probs = sigmoid(np.tensordot(lam[n], window, axes=1))
        crop = ry[v0[n]:v1[n], gy0:gy1] @ probs @ rx[u0[n]:u1[n], gx0:gx1].T
        mask = np.zeros((img_h, img_w), dtype=bool)
        mask[v0[n]:v1[n], u0[n]:u1[n]] = crop > mask_threshold
        detections.append(Detection(int(cls[n]), float(scores[n]), mask))
    return detections
