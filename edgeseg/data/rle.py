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


# ------------------------------------------------------------------------ validation
# pycocotools trusts its input: a wrong segmentation ends in a bare "input type is not
# supported", a TypeError, or (counts that do not cover the image) a decode that never
# returns. Readers check every segmentation with these pure-Python rules first.

def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _compressed_counts(text: str) -> list[int] | None:
    """Run lengths of COCO's compressed RLE string (None when it is not one).

    Each count is a variable-length group of 6-bit characters (value + 48): 5 data bits,
    bit 5 "more follows", bit 4 of the last group the sign; from the third count on a
    count is stored as the difference to the count two places before.
    """
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                return None  # the string ends inside a count
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                return None
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift  # negative: sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def segmentation_problem(segm: Any, height: int, width: int) -> str | None:
    """Why ``segm`` is not a valid COCO segmentation of an HxW image (None when it is)."""
    if isinstance(segm, list):
        for i, poly in enumerate(segm):
            if not isinstance(poly, list) or not all(_number(v) for v in poly):
                return f"polygon {i} is not a list of numbers"
            if len(poly) < 6 or len(poly) % 2:
                return f"polygon {i} has {len(poly)} coordinates (need x,y pairs, at least 3 points)"
        return None
    if not isinstance(segm, dict):
        return f"segmentation is a {type(segm).__name__} ({str(segm)[:40]!r}), not polygons or RLE"
    if "counts" not in segm or "size" not in segm:
        return "RLE needs 'size' and 'counts'"
    size = segm["size"]
    if not isinstance(size, list) or [int(v) if _number(v) else None for v in size] != [height, width]:
        return f"RLE size {size!r} is not the image's [{height}, {width}]"
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            return "RLE counts are not all integers"
    elif isinstance(counts, (str, bytes)):
        text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
        counts = _compressed_counts(text)
        if counts is None:
            return "RLE counts string is not COCO's compressed encoding"
    else:
        return f"RLE counts is a {type(counts).__name__}, not a list or a string"
    if any(c < 0 for c in counts):
        return "RLE has a negative run length"
    if sum(counts) != height * width:
        return f"RLE runs cover {sum(counts)} pixels, the image has {height * width}"
    return None


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
