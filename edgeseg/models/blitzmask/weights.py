"""Official backbone checkpoints -> BlitzMask's keys (the family's ``weights_map``).

* timm's ``efficientnet_lite0..4`` / ``tf_efficientnet_lite0..4`` ImageNet classifiers
  (``conv_stem.*``, ``bn1.*``, ``blocks.*``, ``conv_head.*``, ``bn2.*``, ``classifier.*``):
  our EfficientNet-Lite uses timm's names, so only the classification head (``conv_head``,
  the top-level ``bn2``, ``classifier``) is dropped; the rest loads into ``backbone``.
* torchvision's MobileNetV2 (``features.*``, ``classifier.*``) needs nothing here: the
  generic loader drops its head (``features.18``, ``classifier``).

Files already in our layout (edgeseg checkpoints) pass through unchanged. Torch-free.
"""

from __future__ import annotations

from typing import Any

_TIMM_EFFICIENTNET_HEAD = ("conv_head.", "bn2.", "classifier.")


def is_timm_efficientnet(state: dict[str, Any]) -> bool:
    return "conv_stem.weight" in state and any(k.startswith("blocks.") for k in state)


def filter_state_dict(state: dict[str, Any], model: Any = None) -> dict[str, Any]:
    if not is_timm_efficientnet(state):
        return state
    return {k: v for k, v in state.items() if not k.startswith(_TIMM_EFFICIENTNET_HEAD)}
