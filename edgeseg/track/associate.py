"""One-to-one association of mask kernels between consecutive keyframes.

MobileInst needs no tracking network: a query's mask kernel is an embedding of the object
it segments, so the same object gives similar kernels on nearby keyframes. Kernels of the
tracks alive so far are matched to the kernels detected on the new keyframe by maximum
total cosine similarity (Hungarian assignment), and a pair counts only when its own
similarity reaches ``threshold``; everything else is unmatched.

A pure function of its inputs, so tests drive it with hand-made kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Association:
    """Indices into the two kernel arrays given to :func:`associate`."""

    matches: list[tuple[int, int]] = field(default_factory=list)  # (track index, detection index)
    unmatched_tracks: list[int] = field(default_factory=list)
    unmatched_detections: list[int] = field(default_factory=list)
    similarity: np.ndarray | None = None  # [tracks, detections] cosine, for inspection


def cosine_similarity(a: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``[M, D] x [K, D] -> [M, K]`` cosine similarity (0 for an all-zero kernel)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), eps)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), eps)
    return an @ bn.T


def preload() -> None:
    """Import the assignment solver now, so its one-off import is not charged to a frame."""
    from scipy.optimize import linear_sum_assignment  # noqa: F401


def associate(track_kernels: np.ndarray, detection_kernels: np.ndarray, threshold: float = 0.5) -> Association:
    """Match tracks to detections one-to-one by cosine similarity of their kernels.

    ``track_kernels`` is ``[M, D]`` (the last kernel of every track that may still be
    matched), ``detection_kernels`` ``[K, D]``. Pairs chosen by the assignment but below
    ``threshold`` are dropped: a weak best match is more likely a different object than
    the same one, and giving it a new id costs less than a wrong id switch.
    """
    track_kernels = np.atleast_2d(np.asarray(track_kernels, dtype=np.float32))
    detection_kernels = np.atleast_2d(np.asarray(detection_kernels, dtype=np.float32))
    m, k = len(track_kernels), len(detection_kernels)
    if m == 0 or k == 0:
        return Association([], list(range(m)), list(range(k)), np.zeros((m, k), np.float32))
    if track_kernels.ndim != 2 or track_kernels.shape[1] != detection_kernels.shape[1]:
        raise ValueError(f"kernel lengths differ: tracks {track_kernels.shape[1]}, "
                         f"detections {detection_kernels.shape[1]}")
    sim = cosine_similarity(track_kernels, detection_kernels)
    # Imported here: scipy.optimize costs ~0.1 s to import and only the tracker needs it.
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(sim, maximize=True)
    matches = [(int(r), int(c)) for r, c in zip(rows, cols) if sim[r, c] >= threshold]
    matched_t = {r for r, _ in matches}
    matched_d = {c for _, c in matches}
    return Association(matches,
                       [i for i in range(m) if i not in matched_t],
                       [j for j in range(k) if j not in matched_d],
                       sim)
