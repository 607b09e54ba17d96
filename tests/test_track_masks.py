"""Host mask assembly: identical to the image decoder's resize, crops are exact, RLE is COCO's."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data.rle import decode, encode_uncompressed
from edgeseg.models.decoding import resize_masks, sigmoid
from edgeseg.track.masks import BoxMask, MaskAssembler


def _blobs(grid, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:grid[0], 0:grid[1]]
    cy, cx = rng.uniform(0, grid[0]), rng.uniform(0, grid[1])
    r2 = rng.uniform(1.0, 0.1 * grid[0] * grid[1])
    logits = 6.0 - 12.0 * ((yy - cy) ** 2 + (xx - cx) ** 2) / r2 + rng.normal(0, 0.5, grid)
    return logits.astype(np.float32)


@pytest.mark.parametrize("grid,net,frame", [
    ((8, 8), (64, 64), (64, 64)),        # frame = network size
    ((8, 8), (64, 64), (48, 80)),        # shrink one axis, stretch the other
    ((16, 8), (128, 64), (300, 170)),    # non-square, odd sizes
    ((16, 16), (128, 128), (40, 40)),    # frame smaller than the network
    ((8, 8), (64, 64), (720, 1280)),     # HD frame
])
def test_assembly_equals_image_decoder_resize(grid, net, frame):
    d = 4
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((d, *grid)).astype(np.float32)
    kernels = rng.standard_normal((5, d)).astype(np.float32)
    asm = MaskAssembler(grid, net, frame)
    got = asm(kernels, feats[None])
    probs = sigmoid(np.einsum("kd,dhw->khw", kernels, feats))
    want = resize_masks(probs, frame, via_hw=net) > 0.5
    assert any(w.any() for w in want) and any(not w.all() for w in want)  # a real test, not all empty/full
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.full(), w)


@pytest.mark.parametrize("seed", range(6))
def test_crop_is_exact_for_blobs(seed):
    grid, net, frame = (16, 16), (128, 128), (200, 360)
    probs = sigmoid(_blobs(grid, seed))
    asm = MaskAssembler(grid, net, frame)
    got = asm.resize(probs)
    want = resize_masks(probs[None], frame, via_hw=net)[0] > 0.5
    np.testing.assert_array_equal(got.full(), want)
    if want.any():
        # the crop is tight: its border rows/cols hold foreground
        assert got.crop[0].any() and got.crop[-1].any() and got.crop[:, 0].any() and got.crop[:, -1].any()


def test_nothing_above_threshold_gives_an_empty_mask():
    asm = MaskAssembler((8, 8), (64, 64), (100, 100))
    m = asm.resize(np.full((8, 8), 0.49, np.float32))
    assert m.area == 0 and not m.full().any()
    assert m.rle() == {"size": [100, 100], "counts": [10000]}


def test_wrong_feature_grid_is_rejected():
    asm = MaskAssembler((8, 8), (64, 64), (64, 64))
    with pytest.raises(ValueError, match="expected 8x8"):
        asm(np.ones((1, 4), np.float32), np.ones((4, 16, 16), np.float32))


def test_rle_from_crop_matches_coco_encoding():
    rng = np.random.default_rng(1)
    cases = [np.ones((5, 4), bool), np.zeros((5, 4), bool)]
    for _ in range(300):
        h, w = rng.integers(1, 9, 2)
        cases.append(rng.random((h, w)) < rng.random())
    full_columns = np.zeros((6, 5), bool)
    full_columns[:, 1:3] = True  # a run crossing a column boundary must stay one run
    cases.append(full_columns)
    for m in cases:
        box = BoxMask.from_full(m)
        assert box.rle() == encode_uncompressed(m)
        np.testing.assert_array_equal(decode(box.rle(), *m.shape), m)
        assert box.area == int(m.sum())
