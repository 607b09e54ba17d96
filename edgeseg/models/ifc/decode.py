"""IFC's image decoder: one frame of a clip's outputs -> detections, in NumPy only (the
contract's ``decoder``).

IFC predicts per *clip*: ``logits [1, N, K+1]`` (softmax over K classes and "no object")
and ``masks [1, N, T, h, w]``. As an image decoder (``edgeseg eval`` on an image dataset,
where every image is fed as a still clip, and the contract tests) it decodes one frame,
``frame`` (default 0), as IFC's image inference does: per query the best class
probability with "no object" excluded is its score and class, masks are upsampled
bilinearly to the network input, resized to the image and thresholded. Videos go through
the video strategy (:mod:`edgeseg.track.clip_matching`), which matches the instances of
overlapping clips.
"""

from __future__ import annotations

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.models.contract import Detection
from edgeseg.models.decoding import one_image, resize_masks, sigmoid

_CHUNK = 16


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the K+1 logits of every query, the last ("no object") column dropped."""
    z = np.asarray(logits, np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True))[..., :-1]


def decode(outputs: dict[str, np.ndarray], image_hw: tuple[int, int],
           score_threshold: float = 0.05, max_detections: int = 100,
           mask_threshold: float = 0.5, input_hw: tuple[int, int] | None = None,
           frame: int = 0) -> list[Detection]:
    """Detections on frame ``frame`` of one clip from IFC's ``logits`` and ``masks``.

    ``input_hw`` is the network input size; by default 8x the mask size (masks are at 1/8).
    Detections come sorted by score, at most ``max_detections``.
    """
    logits = one_image(outputs, "logits", 2, "IFC")   # [N, K+1]
    masks = one_image(outputs, "masks", 4, "IFC")     # [N, T, h, w]
    if logits.shape[0] != masks.shape[0]:
        raise EdgesegError(f"outputs disagree on the number of queries: logits {logits.shape}, masks {masks.shape}",
                           "feed the outputs of one run of one graph")
    if logits.shape[1] < 2:
        raise EdgesegError(f"IFC logits need K classes + 'no object', got {logits.shape[1]} columns",
                           "feed the logits of an IFC clip graph")
    if not 0 <= frame < masks.shape[1]:
        raise EdgesegError(f"frame {frame} is outside the clip of {masks.shape[1]} frames",
                           f"pick a frame in 0..{masks.shape[1] - 1}")
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    if input_hw is None:
        input_hw = (masks.shape[2] * 8, masks.shape[3] * 8)

    probs_cls = class_probabilities(logits)
    labels = probs_cls.argmax(axis=1)
    scores = probs_cls[np.arange(len(labels)), labels]
    keep = np.flatnonzero(scores > score_threshold)
    if keep.size == 0:
        return []
    order = keep[np.argsort(-scores[keep], kind="stable")][:max_detections]
    probs = sigmoid(masks[order, frame])
    detections = []
    for start in range(0, order.size, _CHUNK):  # 100 float masks at 640x480 would be 120 MB at once
        part = slice(start, start + _CHUNK)
        full = resize_masks(probs[part], image_hw, via_hw=input_hw) > mask_threshold
        detections += [Detection(int(labels[i]), float(scores[i]), full[j]) for j, i in enumerate(order[part])]
    return detections
