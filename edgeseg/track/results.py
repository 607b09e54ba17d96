"""YouTube-VIS results JSON from tracked videos.

The results format of YouTube-VIS (what its evaluation server and
:func:`edgeseg.eval.vis.evaluate_vis` read) is a list with one item per predicted track:

``{"video_id": int, "category_id": int, "score": float, "segmentations": [RLE or null]}``

with one segmentation per frame of the video, ``null`` where the track shows nothing.
Masks are written as COCO *compressed* RLE (``counts`` a string), encoded here from the
tracker's run lengths in plain Python: the files are identical with or without
pycocotools installed.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from edgeseg.errors import EdgesegError

RESULT_KEYS = ("video_id", "category_id", "score", "segmentations")


def compress_counts(counts: Sequence[int]) -> str:
    """COCO's compact RLE string for run lengths (as ``pycocotools.mask.encode`` writes).

    Each run after the second is stored as the difference to the run two before it
    (alternating background/foreground runs have similar lengths), then as
    little-endian groups of 5 bits in printable characters: bit 0x20 says "more groups
    follow", bit 0x10 of the last group carries the sign, and 48 is added to each.
    """
    out = []
    for i, run in enumerate(counts):
        x = int(run) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative numbers end at -1
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def compressed_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE (``counts`` a list) -> compressed (``counts`` a string)."""
    return {"size": [int(s) for s in rle["size"]], "counts": compress_counts(rle["counts"])}


def label_to_category(categories=None) -> Callable[[int], int]:
    """Class label -> dataset category id: the dataset's mapping when given (a
    :class:`~edgeseg.data.coco.CategoryMap`), else ``label + 1`` (COCO-style 1-based ids)."""
    if categories is None:
        return lambda label: int(label) + 1
    return categories.category_id_of


def video_results(result, video_id: int, category_of: Callable[[int], int] | None = None) -> list[dict[str, Any]]:
    """The results items of one tracked video (a :class:`~edgeseg.track.kernel_reuse.VideoResult`)."""
    category_of = category_of or label_to_category()
    items = []
    for track in result.tracks:
        segs = [None if rle is None else compressed_rle(rle) for rle in result.track_masks(track)]
        if all(s is None for s in segs):
            continue  # a track that never showed a pixel is not a prediction
        # A strategy may report a track under several classes (IFC: every class above a
        # probability): ``hypotheses`` = [(label, score), ...], the best first.
        for label, score in getattr(track, "hypotheses", None) or [(track.label, track.score)]:
            items.append({"video_id": int(video_id), "category_id": int(category_of(label)),
                          "score": round(float(score), 6), "segmentations": segs, "track_id": int(track.id)})
    return items


def check_results(results: Any, lengths: dict[int, int] | None = None) -> None:
    """Raise :class:`EdgesegError` unless ``results`` has the YouTube-VIS results shape.

    ``lengths`` (video id -> frame count) also checks one segmentation per frame.
    """
    fix = "each item: {video_id, category_id, score, segmentations: [RLE or null per frame]}"
    if not isinstance(results, list):
        raise EdgesegError("YouTube-VIS results must be a list of tracks", fix)
    for n, r in enumerate(results):
        if not isinstance(r, dict):
            raise EdgesegError(f"result {n} is not an object", fix)
        missing = [k for k in RESULT_KEYS if k not in r]
        if missing:
            raise EdgesegError(f"result {n} lacks {', '.join(missing)}", fix)
        if not isinstance(r["video_id"], int) or not isinstance(r["category_id"], int):
            raise EdgesegError(f"result {n}: video_id and category_id must be integers", fix)
        if not isinstance(r["score"], (int, float)) or not 0.0 <= float(r["score"]) <= 1.0:
            raise EdgesegError(f"result {n}: score {r['score']!r} is not in [0, 1]", fix)
        segs = r["segmentations"]
        if not isinstance(segs, list):
            raise EdgesegError(f"result {n}: segmentations must be a list", fix)
        if lengths is not None and r["video_id"] in lengths and len(segs) != lengths[r["video_id"]]:
            raise EdgesegError(f"result {n}: {len(segs)} segmentations for a {lengths[r['video_id']]}-frame video",
                               fix)
        sizes = set()
        for s in segs:
            if s is None:
                continue
            if not isinstance(s, dict) or not isinstance(s.get("counts"), (str, list)) or \
                    not (isinstance(s.get("size"), list) and len(s["size"]) == 2):
                raise EdgesegError(f"result {n}: segmentation {str(s)[:60]!r} is not COCO RLE", fix)
            sizes.add(tuple(s["size"]))
        if len(sizes) > 1:
            raise EdgesegError(f"result {n}: frames have different mask sizes {sorted(sizes)}", fix)
