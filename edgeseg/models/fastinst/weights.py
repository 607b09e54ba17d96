"""Official FastInst checkpoints (junjiehe96/FastInst, detectron2) -> our key layout.

The official model nests the heads as ``sem_seg_head.pixel_decoder.*`` and
``sem_seg_head.predictor.*`` (the query proposal inside the predictor as
``query_proposal.*``); ours has the four components at the top. Inside them every name is
the official one, so the map only renames three prefixes. It also drops the criterion's
``empty_weight`` buffer (stored under ``criterion.`` and, because the official code hangs
the criterion on the predictor, ``sem_seg_head.predictor.criterion.``), and fills
``num_batches_tracked`` for the backbone's norms: detectron2's FrozenBatchNorm2d has none.
A file already in our layout passes through unchanged.
"""

from __future__ import annotations

from typing import Any

# Longest prefixes first.
PREFIXES = (
    ("sem_seg_head.predictor.query_proposal.", "query_selector."),
    ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
    ("sem_seg_head.predictor.", "transformer_decoder."),
)
DROPPED = ("criterion.", "pixel_mean", "pixel_std")


def _dropped(key: str) -> bool:
    return key.startswith(DROPPED) or ".criterion." in key


def filter_state_dict(state: dict[str, Any], model) -> dict[str, Any]:
    """The contract's ``weights_map``: official key names -> ours."""
    if not any(k.startswith(("sem_seg_head.", "criterion.")) for k in state):
        return state
    out = {}
    for key, value in state.items():
        if _dropped(key):
            continue
        for old, new in PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    own = model.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in out and key.startswith("backbone."):
            if key.replace("num_batches_tracked", "running_mean") in out:
                out[key] = value.clone()
    return out
