"""Official yolact_edge / YOLACT checkpoints -> this package's layout (the family's ``weights_map``).

Our module names are YOLACT's, so most keys load as they are (``backbone.layers.*``,
``proto_net.*``, ``prediction_layers.0.*``, YOLACT's ``fpn.*``). What differs in a
haotian-liu/yolact_edge ``.pth`` (read with ``torch.load(weights_only=True)``: these files
hold an ``OrderedDict`` of tensors only, so the safe loader reads them):

* renamed: yolact_edge splits the FPN in two for video, ``fpn_phase_1.lat_layers`` and
  ``fpn_phase_2.{pred_layers,downsample_layers}`` -> ``fpn.*``; FeatFlowNet's input
  reduction ``flow_net_pre_convs.*`` -> ``flow_net.pre_convs.*`` (one component, one module);
* dropped, training-only: ``semantic_seg_conv.*`` (the auxiliary semantic segmentation
  head: in edgeseg it lives in the training objective) and ``class_existence_fc.*``;
* dropped, never run at inference: MobileNetV2's ``backbone.layers.7``/``.8`` (the
  320-channel row and the 1x1 conv to 1280; C5 is layer 6), FeatFlowNet's finest level
  ``flow_net.pred1``/``upfeat2``/``upflow2`` (the official eval skips it: only P4/P5 are
  warped), and ``spa.*`` (the feature refinement of the ``yolact_edge_vid`` config; this
  package implements the non-keyframe path of ``yolact_edge_vid_minimal``, without it).

Image checkpoints (``yolact_edge_mobilenetv2_54_800000.pth``...) have no FeatFlowNet at
all: the model's own flow net (initialised to the identity transform) is kept, as the
official loader keeps "parameters required by the model [that] do not exist in the
checkpoint". A file with some but not all flow-net keys still fails to load strictly.

A file already in our layout passes through unchanged.
"""

from __future__ import annotations

from typing import Any

RENAMES = (
    ("fpn_phase_1.", "fpn."),
    ("fpn_phase_2.", "fpn."),
    ("flow_net_pre_convs.", "flow_net.pre_convs."),
)
TRAINING_ONLY = ("semantic_seg_conv.", "class_existence_fc.")
UNUSED_AT_INFERENCE = ("flow_net.pred1.", "flow_net.upfeat2.", "flow_net.upflow2.", "spa.")


def _unused_backbone_layers(state: dict[str, Any], model) -> tuple[str, ...]:
    """``backbone.layers.N.`` prefixes of stages the file has and our backbone does not build."""
    built = len(getattr(getattr(model, "backbone", None), "layers", ()))
    if not built:
        return ()
    extra = set()
    for key in state:
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "backbone" and parts[1] == "layers" and parts[2].isdigit():
            if int(parts[2]) >= built:
                extra.add(f"backbone.layers.{parts[2]}.")
    return tuple(sorted(extra))


def dropped_keys(state: dict[str, Any], model) -> list[str]:
    """Keys of an official checkpoint that :func:`filter_state_dict` leaves out (for reports)."""
    drop = TRAINING_ONLY + UNUSED_AT_INFERENCE + _unused_backbone_layers(state, model)
    return sorted(k for k in state if k.startswith(drop))


def filter_state_dict(state: dict[str, Any], model) -> dict[str, Any]:
    drop = TRAINING_ONLY + UNUSED_AT_INFERENCE + _unused_backbone_layers(state, model)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(drop):
            continue
        for old, new in RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    if not any(k.startswith("flow_net.") for k in out) and any(k.startswith("prediction_layers.") for k in out):
        own = model.state_dict()
        out.update({k: v for k, v in own.items() if k.startswith("flow_net.")})
    return out
