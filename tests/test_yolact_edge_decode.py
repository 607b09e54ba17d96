"""YolactEdge's NumPy decoder against a straightforward (loop-by-loop) reference.

The reference is written the way YOLACT's code reads (priors by nested loops, per-class
candidate lists, pairwise IoU one pair at a time, masks cropped pixel by pixel) and
resizes with torch's ``F.interpolate``, so it shares nothing with the vectorised decoder
but the specification.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseg.errors import EdgesegError
from edgeseg.models.yolact_edge.decode import decode, fast_nms
from edgeseg.models.yolact_edge.family import ASPECT_RATIOS, PRIOR_SCALES
from edgeseg.models.yolact_edge.priors import decode_boxes, encode_boxes, make_priors, num_priors, p3_size


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_decode(out, image_hw, score_threshold=0.05, max_detections=100, nms=0.5, top_k=200):
    import torch
    import torch.nn.functional as F

    loc, conf, coef, proto = (np.asarray(out[k][0], np.float64) for k in ("loc", "conf", "coef", "proto"))
    k, hp, wp = proto.shape
    priors = []
    h, w = hp // 2, wp // 2
    for scale in PRIOR_SCALES:
        for j in range(h):
            for i in range(w):
                for ar in ASPECT_RATIOS:
                    side = scale * math.sqrt(ar)
                    priors.append(((i + 0.5) / w, (j + 0.5) / h, side, side))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    assert len(priors) == loc.shape[0]
    boxes, scores = [], []
    for p, l, c in zip(priors, loc, conf):
        cx, cy = p[0] + l[0] * 0.1 * p[2], p[1] + l[1] * 0.1 * p[3]
        bw, bh = p[2] * math.exp(l[2] * 0.2), p[3] * math.exp(l[3] * 0.2)
        boxes.append((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
        e = [math.exp(v - max(c)) for v in c]
        scores.append([v / sum(e) for v in e[1:]])
    candidates = [i for i in range(len(boxes)) if max(scores[i]) > score_threshold]
    kept = []
    for cls in range(conf.shape[1] - 1):
        ranked = sorted(candidates, key=lambda i: -scores[i][cls])[:top_k]
        for pos, i in enumerate(ranked):
            suppressed = any(_iou(boxes[ranked[q]], boxes[i]) > nms for q in range(pos))
            if not suppressed and scores[i][cls] > score_threshold:
                kept.append((scores[i][cls], cls, i))
    kept = sorted(kept, key=lambda t: -t[0])[:max_detections]
    result = []
    for score, cls, i in kept:
        mask = np.zeros((hp, wp))
        x0, y0, x1, y1 = boxes[i]
        for y in range(hp):
            for x in range(wp):
                inside = (max(x0 * wp - 1, 0) <= x < min(x1 * wp + 1, wp)) and (max(y0 * hp - 1, 0) <= y < min(y1 * hp + 1, hp))
                if inside:
                    mask[y, x] = 1 / (1 + math.exp(-float(coef[i] @ proto[:, y, x])))
        full = F.interpolate(torch.from_numpy(mask)[None, None], size=image_hw, mode="bilinear",
                             align_corners=False)[0, 0].numpy() > 0.5
        result.append((cls, score, full))
    return result


def _random_outputs(seed, classes=3, k=6, proto_hw=(16, 16)):
    rng = np.random.default_rng(seed)
    p = num_priors((proto_hw[0] // 2, proto_hw[1] // 2))
    return {
        "loc": (rng.standard_normal((1, p, 4)) * 0.7).astype(np.float32),
        "conf": (rng.standard_normal((1, p, classes + 1)) * 2.5).astype(np.float32),
        "coef": np.tanh(rng.standard_normal((1, p, k)) * 2).astype(np.float32),
        "proto": np.maximum(rng.standard_normal((1, k, *proto_hw)), 0).astype(np.float32),
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_decoder_matches_the_reference_on_random_outputs(seed):
    out = _random_outputs(seed)
    image_hw = (37, 45)
    got = decode(out, image_hw, score_threshold=0.3, max_detections=25)
    want = reference_decode(out, image_hw, score_threshold=0.3, max_detections=25)
    assert len(got) == len(want) > 5
    for d, (cls, score, mask) in zip(got, want):
        assert d.label == cls
        assert d.score == pytest.approx(score, rel=1e-5)
        assert d.mask.shape == image_hw and d.mask.dtype == bool
        # Two resize implementations: a pixel exactly at 0.5 may round either way.
        assert np.mean(d.mask != mask) < 2e-3
    assert [d.score for d in got] == sorted((d.score for d in got), reverse=True)


def test_fast_nms_lets_a_suppressed_box_suppress_others():
    # A > B > C; IoU(A, B) and IoU(B, C) above 0.5, IoU(A, C) below: greedy NMS would keep
    # C (B is gone), Fast NMS drops it (B still counts, as YOLACT's matrix form does).
    boxes = np.array([[0.0, 0.0, 0.4, 0.4], [0.1, 0.0, 0.5, 0.4], [0.2, 0.0, 0.6, 0.4]], np.float32)
    assert _iou(boxes[0], boxes[1]) > 0.5 and _iou(boxes[1], boxes[2]) > 0.5 and _iou(boxes[0], boxes[2]) < 0.5
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    index, classes, kept = fast_nms(boxes, scores, 0.5)
    assert index.tolist() == [0] and kept.tolist() == pytest.approx([0.9])
    # Per class: the same boxes in another class are judged on their own (class 1 ranks
    # C first; A does not overlap it enough, B does).
    index, classes, _ = fast_nms(boxes, np.array([[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]], np.float32), 0.5)
    assert sorted(zip(classes.tolist(), index.tolist())) == [(0, 0), (1, 0), (1, 2)]


def test_priors_of_the_paper_setting():
    # 550x550: P3..P7 are 69, 35, 18, 9, 5 -> YOLACT's 19248 priors, prototypes 138x138.
    assert p3_size((550, 550)) == (69, 69)
    priors = make_priors((69, 69))
    assert priors.shape == (19248, 4) == (num_priors((69, 69)), 4)
    # First position of P3: centre of the first cell, squares of 24/550 * sqrt(ratio).
    assert priors[0].tolist() == pytest.approx([0.5 / 69, 0.5 / 69, 24 / 550, 24 / 550])
    assert priors[1, 2] == pytest.approx(24 / 550 * math.sqrt(0.5))
    assert priors[-1, 2] == pytest.approx(384 / 550 * math.sqrt(2.0))
    boxes = np.array([[0.1, 0.2, 0.5, 0.9]], np.float32)
    assert decode_boxes(encode_boxes(boxes, priors[:1]), priors[:1]) == pytest.approx(boxes, abs=1e-6)


def test_decoder_refuses_mixed_outputs_and_handles_no_detection():
    out = _random_outputs(0)
    bad = dict(out, loc=out["loc"][:, :-3])
    with pytest.raises(EdgesegError, match="disagree"):
        decode(bad, (20, 20))
    with pytest.raises(EdgesegError, match="needs output 'proto'"):
        decode({k: v for k, v in out.items() if k != "proto"}, (20, 20))
    quiet = dict(out, conf=np.concatenate([np.full_like(out["conf"][..., :1], 40.0), out["conf"][..., 1:]], -1))
    assert decode(quiet, (20, 20)) == []
