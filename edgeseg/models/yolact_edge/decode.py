"""YolactEdge's decoder: raw outputs -> detections, in NumPy only (the contract's ``decoder``).

As YOLACT's ``Detect`` + ``postprocess`` (dbolya/yolact, haotian-liu/yolact_edge):

1. priors for the output's P3 size (``priors.py``), SSD box decoding (variances 0.1/0.2);
2. softmax over background + classes; priors whose best class scores above the threshold;
3. **Fast NMS per class**: the top-k (200) candidates of each class sorted by score, their
   pairwise IoU matrix, its strict upper triangle (a box is compared only with boxes that
   score higher), the column maximum; a box survives if that maximum is <= 0.5. Unlike
   greedy NMS a suppressed box still suppresses others: one matrix op, no loop;
4. the best ``max_detections`` over all classes, by score;
5. masks = sigmoid(prototypes x coefficients) at prototype resolution, zeroed outside the
   predicted box (padded by one prototype pixel, the official ``crop``), resized
   bilinearly to the image, thresholded at 0.5.

Step 3's second score threshold (YOLACT leaves it out for speed and says real use should
apply it) is applied: a detection scores above ``score_threshold`` or is not returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.models.contract import Detection
from edgeseg.models.decoding import one_image, resize_masks, sigmoid
from edgeseg.models.yolact_edge.priors import box_iou, decode_boxes, make_priors, num_priors

NMS_IOU = 0.5
NMS_TOP_K = 200
_CHUNK = 16


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def fast_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU, top_k: int = NMS_TOP_K,
             score_threshold: float | None = None):
    """YOLACT's Fast NMS per class. ``boxes`` ``[N, 4]`` (point form), ``scores`` ``[C, N]``.

    Returns ``(index, class, score)`` arrays of the kept detections (any order).
    """
    c, n = scores.shape
    k = min(top_k, n)
    # Per class, the k best candidates (stable sort: ties keep prior order, as torch's sort does).
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]                  # [C, k]
    top_scores = np.take_along_axis(scores, order, axis=1)                       # [C, k]
    iou = box_iou(boxes[order], boxes[order])                                    # [C, k, k]
    iou = np.triu(iou, k=1)
    keep = iou.max(axis=1) <= iou_threshold if k else np.zeros((c, 0), bool)    # column max
    if score_threshold is not None:
        keep &= top_scores > score_threshold
    classes = np.broadcast_to(np.arange(c)[:, None], order.shape)
    return order[keep], classes[keep], top_scores[keep]


def crop_masks(masks: np.ndarray, boxes: np.ndarray, padding: int = 1) -> np.ndarray:
    """Zero ``masks`` ``[N, h, w]`` outside their relative boxes ``[N, 4]`` (+ ``padding`` pixels)."""
    n, h, w = masks.shape
    x0 = np.clip(np.minimum(boxes[:, 0], boxes[:, 2]) * w - padding, 0, None)
    x1 = np.clip(np.maximum(boxes[:, 0], boxes[:, 2]) * w + padding, None, w)
    y0 = np.clip(np.minimum(boxes[:, 1], boxes[:, 3]) * h - padding, 0, None)
    y1 = np.clip(np.maximum(boxes[:, 1], boxes[:, 3]) * h + padding, None, h)
    cols = np.arange(w, dtype=np.float32)
    rows = np.arange(h, dtype=np.float32)
    in_x = (cols[None] >= x0[:, None]) & (cols[None] < x1[:, None])            # [N, w]
    in_y = (rows[None] >= y0[:, None]) & (rows[None] < y1[:, None])            # [N, h]
    return masks * (in_y[:, :, None] & in_x[:, None, :])


@dataclass
class Candidates:
    """What survives NMS on one image, best first: relative boxes, labels, scores, and the
    mask coefficients with the prototypes they combine (masks are made on demand)."""

    boxes: np.ndarray    # [N, 4] (x0, y0, x1, y1) relative to the input
    labels: np.ndarray   # [N] 0-based class
    scores: np.ndarray   # [N]
    coef: np.ndarray     # [N, K]
    proto: np.ndarray    # [K, hp, wp]

    def __len__(self) -> int:
        return int(self.labels.size)

    def probabilities(self, index=slice(None)) -> np.ndarray:
        """``[n, hp, wp]`` mask probabilities, zeroed outside each (padded) box."""
        k, hp, wp = self.proto.shape
        probs = sigmoid(self.coef[index].astype(np.float32) @ self.proto.reshape(k, hp * wp).astype(np.float32))
        return crop_masks(probs.reshape(-1, hp, wp), self.boxes[index])


def detect(outputs: dict[str, np.ndarray], score_threshold: float = 0.05, max_detections: int = 100,
           nms_threshold: float = NMS_IOU, top_k: int = NMS_TOP_K) -> Candidates:
    """Steps 1-4 of the module docstring on one image's ``loc``, ``conf``, ``coef``, ``proto``."""
    loc = one_image(outputs, "loc", 2, "YolactEdge")          # [P, 4]
    conf = one_image(outputs, "conf", 2, "YolactEdge")        # [P, C+1]
    coef = one_image(outputs, "coef", 2, "YolactEdge")        # [P, K]
    proto = one_image(outputs, "proto", 3, "YolactEdge")      # [K, hp, wp]
    if not (loc.shape[0] == conf.shape[0] == coef.shape[0]) or coef.shape[1] != proto.shape[0]:
        raise EdgesegError(f"outputs disagree: loc {loc.shape}, conf {conf.shape}, coef {coef.shape}, "
                           f"proto {proto.shape}", "feed the outputs of one run of one graph")
    if conf.shape[1] < 2:
        raise EdgesegError(f"conf has {conf.shape[1]} column(s); YolactEdge predicts background + classes",
                           "feed the 'conf' output of a YolactEdge graph")
    k, hp, wp = proto.shape
    if hp % 2 or wp % 2:
        raise EdgesegError(f"prototypes of {hp}x{wp} are not twice a P3 size", "feed a YolactEdge graph's 'proto'")
    p3 = (hp // 2, wp // 2)
    expected = num_priors(p3)
    if loc.shape[0] != expected:
        raise EdgesegError(f"{loc.shape[0]} predictions, but a {hp}x{wp} prototype grid means {expected} priors",
                           "outputs of another model or input size were mixed")
    empty = Candidates(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                       np.zeros((0, k), np.float32), proto)
    scores = softmax(conf)[:, 1:]                       # [P, C], background dropped
    candidates = np.nonzero(scores.max(axis=1) > score_threshold)[0]
    if candidates.size == 0:
        return empty
    boxes = decode_boxes(loc[candidates], make_priors(p3)[candidates])
    index, labels, final = fast_nms(boxes, scores[candidates].T, nms_threshold, top_k, score_threshold)
    if index.size == 0:
        return empty
    order = np.argsort(-final, kind="stable")[:max_detections]
    index, labels, final = index[order], labels[order], final[order]
    return Candidates(boxes[index], labels.astype(np.int64), final.astype(np.float32),
                      coef[candidates[index]], proto)


def decode(outputs: dict[str, np.ndarray], image_hw: tuple[int, int],
           score_threshold: float = 0.05, max_detections: int = 100,
           mask_threshold: float = 0.5, input_hw: tuple[int, int] | None = None,
           nms_threshold: float = NMS_IOU, top_k: int = NMS_TOP_K) -> list[Detection]:
    """Detections for one image from YolactEdge's ``loc``, ``conf``, ``coef`` and ``proto``.

    Prototypes cover the whole input, so masks go straight from prototype resolution to
    the image (``input_hw`` is accepted for the contract and not needed). Detections come
    sorted by score, at most ``max_detections``.
    """
    found = detect(outputs, score_threshold, max_detections, nms_threshold, top_k)
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    detections = []
    # In chunks: 100 float masks at 640x480 would be 120 MB at once.
    for start in range(0, len(found), _CHUNK):
        sel = slice(start, start + _CHUNK)
        full = resize_masks(found.probabilities(sel), image_hw) > mask_threshold
        detections += [Detection(int(found.labels[start + j]), float(found.scores[start + j]), full[j])
                       for j in range(full.shape[0])]
    return detections
