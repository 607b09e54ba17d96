"""YOLACT's prior (anchor) boxes and box coding, in NumPy (the decoder's and the loss's).

Priors are not a graph output: they follow from the size of P3 alone (P4..P7 are
stride-2 convolutions of it, ``ceil(n / 2)`` each), and the anchor rule is fixed by the
family (``family.PRIOR_SCALES`` / ``ASPECT_RATIOS``). So every runtime's raw outputs
decode without any side information, and the graph carries no constant output (which
some converters refuse).

Boxes are ``(cx, cy, w, h)`` relative to the input (0..1); the order is the one the
prediction head's outputs have: level by level, row-major positions, anchors last.
"""

from __future__ import annotations

import math

import numpy as np

from edgeseg.models.yolact_edge.family import ASPECT_RATIOS, BOX_VARIANCES, PRIOR_SCALES

NUM_LEVELS = len(PRIOR_SCALES)


def level_sizes(p3_hw: tuple[int, int], levels: int = NUM_LEVELS) -> list[tuple[int, int]]:
    """``(h, w)`` of P3..P7 from P3's size (each next level is a 3x3 stride-2 conv: ceil(n/2))."""
    h, w = int(p3_hw[0]), int(p3_hw[1])
    sizes = []
    for _ in range(levels):
        sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def p3_size(input_hw: tuple[int, int]) -> tuple[int, int]:
    """P3 (stride 8) of an input: three stride-2 steps, each ``ceil(n / 2)`` (550 -> 69)."""
    h, w = int(input_hw[0]), int(input_hw[1])
    for _ in range(3):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


def num_priors(p3_hw: tuple[int, int], anchors: int = len(ASPECT_RATIOS)) -> int:
    return anchors * sum(h * w for h, w in level_sizes(p3_hw))


def make_priors(p3_hw: tuple[int, int], anchor_scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """``[P, 4]`` float32 priors ``(cx, cy, w, h)`` for an input whose P3 is ``p3_hw``.

    ``anchor_scale`` = (configured input / actual input) per axis keeps anchors at their
    configured *pixel* size when training on crops; at inference it is (1, 1).
    """
    out = []
    for (h, w), scale in zip(level_sizes(p3_hw), PRIOR_SCALES):
        ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)               # [h*w, 2]
        # Square anchors of side scale * sqrt(ratio) (the official use_square_anchors).
        sides = np.array([scale * math.sqrt(r) for r in ASPECT_RATIOS])     # [A]
        wh = np.stack([sides * anchor_scale[1], sides * anchor_scale[0]], axis=1)  # [A, 2]
        level = np.concatenate([np.repeat(centres, len(sides), axis=0), np.tile(wh, (h * w, 1))], axis=1)
        out.append(level)
    return np.concatenate(out).astype(np.float32)


def decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Box offsets ``[P, 4]`` -> ``(x0, y0, x1, y1)`` relative boxes (SSD coding, variances 0.1/0.2)."""
    v0, v1 = BOX_VARIANCES
    loc = loc.astype(np.float32)
    centre = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    # Clip before exp: an untrained or badly quantized head can emit huge offsets.
    size = priors[:, 2:] * np.exp(np.clip(loc[:, 2:] * v1, -20.0, 20.0))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def encode_boxes(boxes: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """The inverse of :func:`decode_boxes` (``(x0, y0, x1, y1)`` -> offsets)."""
    v0, v1 = BOX_VARIANCES
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([(centre - priors[:, :2]) / (v0 * priors[:, 2:]),
                           np.log(size / priors[:, 2:]) / v1], axis=1).astype(np.float32)


def point_form(priors: np.ndarray) -> np.ndarray:
    return np.concatenate([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``[..., N, 4] x [..., M, 4] -> [..., N, M]`` of point-form boxes."""
    lt = np.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = np.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return inter / np.maximum(union, 1e-12)
