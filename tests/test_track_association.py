"""The association step alone: hand-made kernels, one-to-one, cosine threshold."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeseg.track.associate import associate, cosine_similarity


def _unit(*idx, d=6):
    k = np.zeros((len(idx), d), np.float32)
    for row, i in enumerate(idx):
        k[row, i] = 1.0
    return k


def test_identical_kernels_match_in_order():
    a = _unit(0, 1, 2)
    res = associate(a, a * 3.0, threshold=0.5)  # scale does not matter to a cosine
    assert sorted(res.matches) == [(0, 0), (1, 1), (2, 2)]
    assert res.unmatched_tracks == [] and res.unmatched_detections == []


def test_swapped_pair_is_reassociated():
    tracks = _unit(0, 1, 2)
    dets = _unit(1, 0, 2) + 0.1 * np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    res = associate(tracks, dets, threshold=0.5)
    assert sorted(res.matches) == [(0, 1), (1, 0), (2, 2)]


def test_assignment_maximises_total_similarity():
    """One-to-one optimum (checked by brute force), not a greedy best-first pairing."""
    rng = np.random.default_rng(3)
    greedy_was_worse = 0
    for _ in range(40):
        tracks = rng.standard_normal((4, 5)).astype(np.float32)
        dets = rng.standard_normal((4, 5)).astype(np.float32)
        sim = cosine_similarity(tracks, dets)
        res = associate(tracks, dets, threshold=-1.0)
        best = max(sum(sim[i, p[i]] for i in range(4)) for p in itertools.permutations(range(4)))
        assert sum(sim[t, d] for t, d in res.matches) == pytest.approx(best, abs=1e-5)
        greedy, used = 0.0, set()
        for t in range(4):
            d = max((d for d in range(4) if d not in used), key=lambda d: sim[t, d])
            used.add(d)
            greedy += sim[t, d]
        greedy_was_worse += greedy < best - 1e-6
    assert greedy_was_worse > 0  # the cases above do tell the two apart


def test_new_object_is_unmatched_detection():
    tracks = _unit(0, 1)
    dets = _unit(1, 0, 4)
    res = associate(tracks, dets, threshold=0.5)
    assert sorted(res.matches) == [(0, 1), (1, 0)]
    assert res.unmatched_detections == [2]


def test_below_threshold_pairs_are_dropped():
    tracks = _unit(0)
    dets = np.array([[0.6, 0.8, 0, 0, 0, 0]], np.float32)  # cosine 0.6
    assert associate(tracks, dets, threshold=0.7).matches == []
    assert associate(tracks, dets, threshold=0.5).matches == [(0, 0)]
    res = associate(tracks, dets, threshold=0.7)
    assert res.unmatched_tracks == [0] and res.unmatched_detections == [0]


def test_more_tracks_than_detections_and_empty_sides():
    res = associate(_unit(0, 1, 2), _unit(2), threshold=0.5)
    assert res.matches == [(2, 0)] and res.unmatched_tracks == [0, 1]
    empty = associate(np.zeros((0, 6), np.float32), _unit(1, 2), threshold=0.5)
    assert empty.matches == [] and empty.unmatched_detections == [0, 1]
    none = associate(_unit(1), np.zeros((0, 6), np.float32), threshold=0.5)
    assert none.unmatched_tracks == [0]


def test_zero_kernel_never_matches():
    res = associate(np.zeros((1, 6), np.float32), _unit(0), threshold=0.1)
    assert res.matches == []


def test_kernel_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        associate(_unit(0, d=4), _unit(0, d=6))
