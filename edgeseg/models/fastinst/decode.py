"""FastInst's decoder: raw outputs -> detections, in NumPy only (the contract's ``decoder``).

As the official ``FastInst.instance_inference`` (Mask2Former's): class probabilities are a
softmax over C + "no object", the no-object column dropped; the best ``max_detections``
(query, class) pairs over all queries and classes are kept (a query may appear with two
classes); each mask is the sigmoid of its logits upsampled to the network input, then to
the image, thresholded at ``mask_threshold``; the score is the class probability times the
mean mask probability inside the thresholded mask ("maskness"). No NMS: one-to-one
matching in training makes duplicates rare.
"""

from __future__ import annotations

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.models.contract import Detection
from edgeseg.models.decoding import one_image, resize_masks, sigmoid

_CHUNK = 16


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def decode(outputs: dict[str, np.ndarray], image_hw: tuple[int, int],
           score_threshold: float = 0.05, max_detections: int = 100,
           mask_threshold: float = 0.5,
           input_hw: tuple[int, int] | None = None) -> list[Detection]:
    """Detections for one image from FastInst's ``logits`` ``[N, C+1]`` and ``masks`` ``[N, h, w]``.

    ``input_hw`` is the network input size; by default 8x the mask size (masks are at 1/8).
    Detections come sorted by score, at most ``max_detections``.
    """
    logits = one_image(outputs, "logits", 2, "FastInst")        # [N, C+1]
    mask_logits = one_image(outputs, "masks", 3, "FastInst")    # [N, h, w]
    if logits.shape[0] != mask_logits.shape[0]:
        raise EdgesegError(f"outputs disagree on the number of queries: logits {logits.shape}, "
                           f"masks {mask_logits.shape}", "feed the outputs of one run of one graph")
    if logits.shape[1] < 2:
        raise EdgesegError(f"logits have {logits.shape[1]} column(s); FastInst has C classes + 'no object'",
                           "decode FastInst outputs with the fastinst decoder only")
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    if input_hw is None:
        input_hw = (mask_logits.shape[1] * 8, mask_logits.shape[2] * 8)

    probs = softmax(logits)[:, :-1]                                   # [N, C]
    num_classes = probs.shape[1]
    flat = probs.reshape(-1)
    k = min(int(max_detections), flat.size)
    if k <= 0:
        return []
    # Top-k (query, class) pairs, best first; ties keep the lower index (stable).
    top = np.argsort(-flat, kind="stable")[:k]
    top = top[flat[top] > score_threshold]
    if top.size == 0:
        return []
    queries, labels = top // num_classes, top % num_classes

    mask_probs = sigmoid(mask_logits[queries])
    # Maskness on the predicted (low-resolution) masks, as MobileInst's decoder; the official
    # code measures it at the input resolution, which differs only at mask borders.
    binary = mask_probs > mask_threshold
    maskness = (mask_probs * binary).sum(axis=(1, 2)) / (binary.sum(axis=(1, 2)) + 1e-6)
    final = flat[top] * maskness
    order = np.argsort(-final, kind="stable")

    detections = []
    # In chunks: 100 float masks at 640x480 would be 120 MB at once.
    for start in range(0, order.size, _CHUNK):
        idx = order[start:start + _CHUNK]
        full = resize_masks(mask_probs[idx], image_hw, via_hw=input_hw) > mask_threshold
        detections += [Detection(int(labels[i]), float(final[i]), full[j]) for j, i in enumerate(idx)]
    return detections
