"""Official IFC checkpoints (sukjunhwang/IFC, detectron2) -> this package's layout.

The official model is ``Ifc`` holding ``detr`` (an ``IFC`` module): the detectron2 ResNet
inside ``detr.backbone.0.backbone`` (a ``Joiner`` of the masked backbone and the
parameter-free sine position embedding), the transformer in ``detr.transformer`` (its
``memory_bus`` / ``memory_pos``, ``encoder.enc_layers`` / ``encoder.bus_layers`` and
``clip_decoder``), and ``input_proj``, ``query_embed``, ``class_embed`` and ``mask_head``
beside it. Below those prefixes our modules use the official names, so the map is
prefixes only; every other key (an edgeseg checkpoint) passes through unchanged.
"""

from __future__ import annotations

from typing import Any

# Longest official prefix first: ``detr.transformer.encoder.`` before ``detr.transformer.``.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("detr.backbone.0.backbone.", "backbone."),
    ("detr.input_proj.", "encoder.input_proj."),
    ("detr.transformer.encoder.", "encoder."),
    ("detr.transformer.memory_bus", "encoder.memory_bus"),
    ("detr.transformer.memory_pos", "encoder.memory_pos"),
    ("detr.transformer.clip_decoder.", "decoder."),
    ("detr.query_embed.", "decoder.query_embed."),
    ("detr.class_embed.", "decoder.class_embed."),
    ("detr.mask_head.", "mask_head."),
)

# Buffers of the official model that carry no weights here: detectron2's frozen BatchNorm
# has no ``num_batches_tracked``, and the criterion's class weights are a training detail.
DROPPED = ("criterion.",)


def official_key(key: str) -> str | None:
    """Our name for an official key (None when it is not an official IFC key)."""
    for theirs, ours in PREFIXES:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return None


def filter_state_dict(state: dict[str, Any], model=None) -> dict[str, Any]:
    """The family's ``weights_map``: official keys renamed, criterion buffers dropped."""
    if not any(k.startswith("detr.") for k in state):
        return dict(state)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(DROPPED):
            continue
        ours = official_key(key)
        out[ours if ours is not None else key] = value
    return out
