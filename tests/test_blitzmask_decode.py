"""BlitzMask's NumPy decoder against a straightforward reference, and against its own targets.

The reference is written the slow, obvious way: loops over every cell for the 3x3 peaks,
a full sort, torch's bilinear ``interpolate`` to the input then to the image for every
mask, and a per-pixel box test. The decoder must give the same detections on random
outputs. A second test encodes ground truth the way the training objective does (peak at
the centre of mass, box distances, one-hot coefficients over a spanning set of the target
masks) and checks the decoder recovers the masks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseg.errors import EdgesegError
from edgeseg.models.blitzmask.decode import decode, find_peaks


def _random_outputs(seed: int, classes=3, k=5, h=12, w=16):
    rng = np.random.default_rng(seed)
    heat = rng.normal(-3.0, 1.5, (classes, h, w)).astype(np.float32)
    heat[rng.integers(classes, size=8), rng.integers(h, size=8), rng.integers(w, size=8)] += 5.0
    heat[0, 3, 4] = heat[0, 3, 5] = 4.0  # a plateau: both cells are peaks (3x3 max-pool ==)
    size = rng.uniform(-0.5, 6.0, (4, h, w)).astype(np.float32)  # some negative: clamped at 0
    coef = rng.normal(0, 1, (k, h, w)).astype(np.float32)
    basis = rng.normal(0, 2, (k, h, w)).astype(np.float32)
    return {"heatmap": heat[None], "size": size[None], "coefficients": coef[None], "spanning_set": basis}


def _reference(outputs, image_hw, score_threshold, max_detections, mask_threshold, input_hw):
    import torch
    import torch.nn.functional as F

    heat, size = outputs["heatmap"][0].astype(np.float64), outputs["size"][0]
    coef, basis = outputs["coefficients"][0], np.asarray(outputs["spanning_set"]).reshape(-1, *heat.shape[1:])
    c, h, w = heat.shape
    found = []
    for ci in range(c):
        for i in range(h):
            for j in range(w):
                neighbours = [heat[ci, y, x] for y in range(i - 1, i + 2) for x in range(j - 1, j + 2)
                              if 0 <= y < h and 0 <= x < w]
                score = 1 / (1 + math.exp(-heat[ci, i, j]))
                if heat[ci, i, j] >= max(neighbours) and score > score_threshold:
                    found.append((score, ci, i, j))
    found.sort(key=lambda f: -f[0])  # stable: ties keep (class, row, col) order
    found = found[:max_detections]
    img_h, img_w = image_hw
    in_h, in_w = input_hw
    out = []
    for score, ci, i, j in found:
        logits = np.tensordot(coef[:, i, j].astype(np.float64), basis.astype(np.float64), axes=1)
        prob = torch.from_numpy(1 / (1 + np.exp(-logits))).float()[None, None]
        prob = F.interpolate(prob, size=(in_h, in_w), mode="bilinear", align_corners=False)
        prob = F.interpolate(prob, size=(img_h, img_w), mode="bilinear", align_corners=False)[0, 0].numpy()
        l, t, r, b = (max(float(v), 0.0) for v in size[:, i, j])
        cx, cy = (j + 0.5) * 4, (i + 0.5) * 4
        x0, x1 = (cx - 4 * l) * img_w / in_w, (cx + 4 * r) * img_w / in_w
        y0, y1 = (cy - 4 * t) * img_h / in_h, (cy + 4 * b) * img_h / in_h
        mask = np.zeros((img_h, img_w), dtype=bool)
        for v in range(img_h):
            for u in range(img_w):
                if x0 <= u + 0.5 <= x1 and y0 <= v + 0.5 <= y1:
                    mask[v, u] = prob[v, u] > mask_threshold
        if any(x0 <= u + 0.5 <= x1 for u in range(img_w)) and any(y0 <= v + 0.5 <= y1 for v in range(img_h)):
            out.append((ci, score, mask, prob))
    return out


@pytest.mark.parametrize("seed,image_hw,threshold,top_k", [(0, (30, 50), 0.3, 100), (1, (61, 47), 0.05, 6),
                                                          (2, (48, 64), 0.0, 20)])
def test_decode_matches_the_reference_on_random_outputs(seed, image_hw, threshold, top_k):
    outputs = _random_outputs(seed)
    input_hw = (48, 64)
    got = decode(outputs, image_hw, score_threshold=threshold, max_detections=top_k, input_hw=input_hw)
    want = _reference(outputs, image_hw, threshold, top_k, 0.5, input_hw)
    assert len(got) == len(want) > 0
    for d, (label, score, mask, prob) in zip(got, want):
        assert d.label == label
        assert d.score == pytest.approx(score, rel=1e-5)
        # Pixels whose probability sits on the threshold may flip by float rounding only.
        differ = d.mask != mask
        assert not differ[np.abs(prob - 0.5) > 1e-5].any()
    scores = [d.score for d in got]
    assert scores == sorted(scores, reverse=True)


def test_peaks_are_a_3x3_max_pool_with_plateaus_kept():
    heat = np.array([[[0, 0, 0, 0], [0, 5, 5, 0], [0, 0, 0, 9]]], dtype=np.float32)
    peaks = find_peaks(heat)
    # 5 at (1, 2) is next to 9 at (2, 3): not a peak; 5 at (1, 1) is (its neighbour is equal).
    assert sorted(zip(*[ax.tolist() for ax in peaks[0].nonzero()])) == [(1, 1), (2, 3)]


def test_threshold_top_k_and_default_input_size():
    outputs = _random_outputs(3)
    everything = decode(outputs, (48, 64), score_threshold=0.0, max_detections=1000)
    # Every peak whose box holds a pixel centre (boxes clamped to zero width hold none).
    assert len(everything) == len(_reference(outputs, (48, 64), 0.0, 1000, 0.5, (48, 64)))
    assert len(everything) <= int(find_peaks(outputs["heatmap"][0]).sum())
    assert decode(outputs, (48, 64), score_threshold=0.999999, max_detections=10) == []
    top3 = decode(outputs, (48, 64), score_threshold=0.0, max_detections=3)
    assert [d.score for d in top3] == [d.score for d in everything[:3]]
    # input_hw defaults to 4x the grid (48x64 here): the same detections.
    same = decode(outputs, (48, 64), score_threshold=0.0, max_detections=3, input_hw=(48, 64))
    assert all((a.mask == b.mask).all() for a, b in zip(top3, same))


def test_decoding_encoded_ground_truth_gives_back_the_masks():
    """Encode three shapes as the objective's targets do; the decoder must return them."""
    import torch

    from edgeseg.models.blitzmask.loss import build_targets

    H = W = 64
    yy, xx = np.mgrid[:H, :W]
    masks = np.stack([
        (yy >= 8) & (yy < 28) & (xx >= 4) & (xx < 36),                      # rectangle
        (yy - 44) ** 2 + (xx - 44) ** 2 <= 12 ** 2,                          # disc
        (xx >= 40) & (xx < 60) & (yy >= 4) & (yy < 24) & (xx - 40 > yy - 4),  # triangle
    ]).astype(np.float32)
    labels = torch.tensor([0, 2, 1])
    t = build_targets(labels, torch.from_numpy(masks), 3, (H // 4, W // 4), 4)
    assert t.heatmap.max() == 1.0 and int((t.heatmap == 1).sum()) == 3
    k = 3
    coef = np.zeros((k, H // 4, W // 4), np.float32)
    size = np.zeros((4, H // 4, W // 4), np.float32)
    for n in range(3):
        i, j = (int(v) for v in t.peaks[n])
        coef[n, i, j] = 1.0
        size[:, i, j] = t.sizes[n].numpy()
    # Spanning set: each mask at full resolution is what we compare to, so give the
    # decoder large logits of the targets on the grid (soft edges stay soft).
    grid = t.masks.numpy()
    basis = np.log(np.clip(grid, 1e-4, 1 - 1e-4) / (1 - np.clip(grid, 1e-4, 1 - 1e-4))) * 1.0
    heat = np.where(t.heatmap.numpy() == 1, 5.0, -5.0).astype(np.float32)
    dets = decode({"heatmap": heat, "size": size, "coefficients": coef, "spanning_set": basis}, (H, W),
                  score_threshold=0.5)
    assert sorted(d.label for d in dets) == [0, 1, 2]
    for d in dets:
        gt = masks[int(labels.tolist().index(d.label))] > 0.5
        iou = (d.mask & gt).sum() / (d.mask | gt).sum()
        assert iou > 0.85, (d.label, iou)  # a 1/4-resolution mask of a 20-pixel triangle: 0.87
        # The box from the size map is the ground-truth box: nothing outside it.
        ys, xs = np.nonzero(gt)
        assert not d.mask[:ys.min()].any() and not d.mask[ys.max() + 1:].any()
        assert not d.mask[:, :xs.min()].any() and not d.mask[:, xs.max() + 1:].any()


def test_bad_outputs_are_one_clear_error():
    outputs = _random_outputs(0)
    with pytest.raises(EdgesegError, match="needs output 'size'"):
        decode({k: v for k, v in outputs.items() if k != "size"}, (10, 10))
    bad = dict(outputs, size=outputs["size"][:, :3])
    with pytest.raises(EdgesegError, match="disagree"):
        decode(bad, (10, 10))
