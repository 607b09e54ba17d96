"""MobileInst's decoder: raw outputs -> detections, in NumPy only (the contract's ``decoder``).

Eval, sweep and tracking run artifacts from any runtime (ONNX Runtime, TFLite, TNN,
TensorRT) and decode them identically through this function. MobileInst decodes as
SparseInst's official inference (hustvl/SparseInst, ``SparseInst.inference``): score = sqrt(sigmoid(class) * sigmoid(objectness)), best
class per query, score threshold, then the score is multiplied by the *maskness* (mean
mask probability inside the thresholded mask); masks are upsampled bilinearly to the
network input, resized to the image, and thresholded.
"""

from __future__ import annotations

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.models.contract import Detection
from edgeseg.models.decoding import one_image, resize_masks, sigmoid

_CHUNK = 16


def decode(outputs: dict[str, np.ndarray], image_hw: tuple[int, int],
           score_threshold: float = 0.05, max_detections: int = 100,
           mask_threshold: float = 0.5,
           input_hw: tuple[int, int] | None = None) -> list[Detection]:
    """Detections for one image from MobileInst's ``logits``, ``objectness`` and ``masks``.

    ``input_hw`` is the network input size; by default 8x the mask size (masks are at 1/8).
    Detections come sorted by score, at most ``max_detections``.
    """
    logits = one_image(outputs, "logits", 2, "MobileInst")        # [N, C]
    objectness = one_image(outputs, "objectness", 2, "MobileInst")  # [N, 1]
    mask_logits = one_image(outputs, "masks", 3, "MobileInst")    # [N, h, w]
    if not (logits.shape[0] == objectness.shape[0] == mask_logits.shape[0]):
        raise EdgesegError(f"outputs disagree on the number of queries: logits {logits.shape}, "
                           f"objectness {objectness.shape}, masks {mask_logits.shape}",
                           "feed the outputs of one run of one graph")
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    if input_hw is None:
        input_hw = (mask_logits.shape[1] * 8, mask_logits.shape[2] * 8)

    scores = np.sqrt(sigmoid(logits) * sigmoid(objectness.reshape(-1, 1)))
    labels = scores.argmax(axis=1)
    best = scores[np.arange(scores.shape[0]), labels]
    keep = np.nonzero(best > score_threshold)[0]
    if keep.size == 0:
        return []

    probs = sigmoid(mask_logits[keep])
    # Rescore by maskness on the predicted (low-resolution) masks, as the official code does.
    binary = probs > mask_threshold
    maskness = (probs * binary).sum(axis=(1, 2)) / (binary.sum(axis=(1, 2)) + 1e-6)
    final = best[keep] * maskness
    order = np.argsort(-final, kind="stable")[:max_detections]

    detections = []
    # In chunks: 100 float masks at 640x480 would be 120 MB at once.
    for start in range(0, order.size, _CHUNK):
        idx = order[start:start + _CHUNK]
        full = resize_masks(probs[idx], image_hw, via_hw=input_hw) > mask_threshold
        detections += [Detection(int(labels[keep[i]]), float(final[i]), full[j]) for j, i in enumerate(idx)]
    return detections


# The name it had before the family packages (tests and older scripts use it).
mobileinst_postprocess = decode
