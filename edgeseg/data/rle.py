"""COCO run-length encoding of binary masks.

COCO stores a mask as runs over the *column-major* flattened pixels, alternating
background / foreground and always starting with a background run (possibly 0).
Two spellings exist: "uncompressed" (``counts`` is a list of ints) and "compressed"
(``counts`` is a string). Ground truth written by the synthetic generator uses the
uncompressed form, produced here with numpy alone so ``edgeseg data synth`` does not
need pycocotools; prediction files use the compact compressed form (pycocotools).
Every reader accepts both, plus polygons.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError


def mask_api():
    """``pycocotools.mask``, or one clear error saying how to install it."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:
        raise EdgesegError(f"pycocotools is not installed ({e}); it decodes masks and computes AP",
                           "pip install 'edgeseg[eval]' (or: pip install pycocotools)") from e
    return mask_utils


def encode_uncompressed(mask: np.ndarray) -> dict[str, Any]:
    """HxW bool mask -> ``{"size": [h, w], "counts": [ints]}`` (JSON-ready, numpy only)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {mask.shape}")
    h, w = mask.shape
    flat = mask.reshape(-1, order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": [0]}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)  # COCO runs always start with background
    return {"size": [int(h), int(w)], "counts": [int(r) for r in runs]}


def encode(mask: np.ndarray) -> dict[str, Any]:
    """HxW bool mask -> compressed RLE with ``counts`` as a str (JSON-ready)."""
    mask_utils = mask_api()

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = rle["counts"]
    return {"size": [int(s) for s in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def to_compressed(segm: Any, height: int, width: int) -> dict[str, Any]:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) -> compressed RLE
    as pycocotools wants it (``counts`` bytes)."""
    mask_utils = mask_api()

    if isinstance(segm, list):  # polygons: list of [x1, y1, x2, y2, ...]
        if not segm:
            return mask_utils.encode(np.asfortranarray(np.zeros((height, width), np.uint8)))
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
        raise EdgesegError(f"unreadable segmentation {str(segm)[:80]!r}",
                           "use COCO polygons or RLE ({'size': [h, w], 'counts': ...})")
    if list(segm["size"]) != [height, width]:
        raise EdgesegError(f"segmentation size {list(segm['size'])} does not match the image ({height}x{width})",
                           "encode masks at the size recorded for the image")
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    counts = segm["counts"]
    return {"size": list(segm["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode(segm: Any, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation -> HxW bool mask."""
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        return decode_uncompressed(segm, height, width)
    mask_utils = mask_api()

    return mask_utils.decode(to_compressed(segm, height, width)).astype(bool)


def decode_uncompressed(segm: dict[str, Any], height: int, width: int) -> np.ndarray:
    counts = np.asarray(segm["counts"], dtype=np.int64)
    if list(segm.get("size", [height, width])) != [height, width]:
        raise EdgesegError(f"segmentation size {segm.get('size')} does not match the image ({height}x{width})",
                           "encode masks at the size recorded for the image")
    if counts.sum() != height * width or (counts < 0).any():
        raise EdgesegError(f"RLE counts sum to {int(counts.sum())}, expected {height * width} pixels",
                           "the annotation is corrupt; regenerate it")
    values = np.arange(len(counts)) % 2 == 1  # runs alternate background, foreground
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")


def bbox_of(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` of the mask's pixels (zeros for an empty mask)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(ys) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]
