"""YolactEdge's place in the model-family contract (torch-free: listing models imports no torch).

YolactEdge (Liu et al., "YolactEdge: Real-time Instance Segmentation on the Edge", ICRA
2021) is YOLACT (Bolya et al., ICCV 2019) split into four separately converted parts,
plus a small flow network for video:

* ``backbone``: MobileNetV2 or ResNet-50/101 giving C3, C4, C5 (strides 8, 16, 32);
* ``fpn``: lateral 1x1 convs, top-down sum, 3x3 "pred" convs, P6/P7 by stride-2 convs
  (P3-P7, 256 channels in the paper);
* ``protonet``: 3x3 convs on P3, x2 upsampling, 32 prototypes at 1/4 of the input
  (138x138 at 550);
* ``prediction_head``: one head shared by all levels: class logits, box offsets and
  mask coefficients (tanh) for 3 anchors per position;
* ``flow_net`` (video graphs only): FeatFlowNet, which predicts the flow (and a feature
  scale and bias) from the keyframe's and the current frame's C3 laterals, reduced to
  a quarter of the channels; the keyframe's P4/P5 are warped by it on the host.

The module is in ``model.py``, the NumPy decoder (priors, box decoding, Fast NMS, masks)
in ``decode.py``, the training objective in ``loss.py``, official checkpoint key names
in ``weights.py``, the video strategy in ``video.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeseg.models.contract import Family, Variant
from edgeseg.models.registry import register_family

COMPONENTS = ("backbone", "fpn", "protonet", "prediction_head", "flow_net")
IMAGE_COMPONENTS = COMPONENTS[:4]
OUTPUT_NAMES = ["loc", "conf", "coef", "proto"]

# The video graphs (see model.py): "key" is the frame graph plus the features a later
# frame warps; "flow" runs C1-C3 and FeatFlowNet on a non-keyframe; "warped" finishes
# that frame from the warped P4/P5. The warp itself runs on the host between them.
GRAPHS = ("frame", "key", "flow", "warped")
KEY_EXTRA_OUTPUTS = ["lat3", "p4", "p5"]
FLOW_OUTPUTS = ["lat3", "flow4", "scale4", "bias4", "flow5", "scale5", "bias5"]

# Sizes only need to be even (the ProtoNet upsamples P3 by exactly 2); every other level
# follows by stride-2 convolution arithmetic, as in the paper's 550x550 (P3 69x69).
INPUT_STRIDE = 2

# YOLACT's anchors: one scale per level (24, 48, 96, 192, 384 pixels at max_size 550),
# 3 aspect ratios. The official configs keep ``use_square_anchors`` ("backward
# compatibility with a bug"): every anchor is a square of side scale*sqrt(ratio), and
# official weights were trained so; we keep it, so they decode correctly. Scales are
# stored relative to the input side, which is what the official ``use_pixel_scales``
# computes (scale / max_size).
PRIOR_SCALES = (24 / 550, 48 / 550, 96 / 550, 192 / 550, 384 / 550)
ASPECT_RATIOS = (1.0, 0.5, 2.0)
BOX_VARIANCES = (0.1, 0.2)

# Table I of the paper: INT8 backbone + FPN, FP16 ProtoNet + prediction head (29.7 mAP,
# the fastest mix that keeps accuracy); FeatFlowNet in INT8 as the official video config.
PRECISION_PRESETS = {
    "yolact_edge": "backbone=int8,fpn=int8,protonet=fp16,prediction_head=fp16,flow_net=int8",
}


@dataclass
class YolactEdgeConfig:
    backbone: str = "mobilenetv2"          # mobilenetv2 | resnet50 | resnet101 | resnet
    num_classes: int = 80                  # foreground classes (the head adds background)
    input_size: tuple[int, int] = (550, 550)
    width_mult: float = 1.0                # MobileNetV2 width multiplier
    resnet_blocks: tuple[int, ...] = (3, 4, 6, 3)  # backbone="resnet": bottlenecks per stage
    resnet_width: int = 64                 # backbone="resnet": width of the first stage
    fpn_channels: int = 256
    proto_channels: int = 256
    num_prototypes: int = 32
    head_channels: int = 256               # the head's shared 3x3 "upfeature" conv
    flow_channels: int = 64                # FeatFlowNet: the C3 lateral reduced to this (1/4 of 256)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


def _variant(name: str, description: str, **overrides: Any) -> Variant:
    return Variant.with_defaults(YolactEdgeConfig(), name, description, **overrides)


FAMILY = register_family(Family(
    name="yolact_edge",
    title="YolactEdge (Liu et al., ICRA 2021)",
    components=COMPONENTS,
    outputs=tuple(OUTPUT_NAMES),
    build="edgeseg.models.yolact_edge.model:build",
    decoder="edgeseg.models.yolact_edge.decode:decode",
    input_stride=INPUT_STRIDE,
    graphs=GRAPHS,
    objective="edgeseg.models.yolact_edge.loss:YolactObjective",
    video="edgeseg.models.yolact_edge.video:FeatureWarp",
    weights_map="edgeseg.models.yolact_edge.weights:filter_state_dict",
    graph_calibration="edgeseg.models.yolact_edge.video_quant:graph_settings",
    presets=dict(PRECISION_PRESETS),
    variants=(
        _variant("yolact_edge_mobilenetv2", "YolactEdge, MobileNetV2 backbone at 550 (the paper's edge model)",
                 backbone="mobilenetv2"),
        _variant("yolact_edge_resnet50", "YolactEdge, ResNet-50 backbone at 550", backbone="resnet50"),
        _variant("yolact_edge_resnet101", "YolactEdge, ResNet-101 backbone at 550 (YOLACT's base model)",
                 backbone="resnet101"),
        _variant("yolact_edge_test", "YolactEdge with tiny widths at 64x64: same architecture, for fast tests",
                 backbone="mobilenetv2", input_size=(64, 64), width_mult=0.25, fpn_channels=16,
                 proto_channels=16, num_prototypes=8, head_channels=16, flow_channels=8),
        # The committed zoo checkpoint (edgeseg/zoo/yolact_edge_mobilenetv2_synth.safetensors):
        # MobileNetV2 at half width with 64-channel FPN, ProtoNet and head, trained from scratch
        # on `edgeseg data synth` shapes at 256 (4 classes) in about two hours of one CPU core.
        _variant("yolact_edge_mobilenetv2_synth",
                 "YolactEdge, MobileNetV2 0.5x, 64-channel FPN/ProtoNet/head, 4 shape classes at 256 "
                 "(the shipped synthetic-data checkpoint: --weights zoo)",
                 backbone="mobilenetv2", num_classes=4, input_size=(256, 256), width_mult=0.5, fpn_channels=64,
                 proto_channels=64, num_prototypes=32, head_channels=64, flow_channels=16),
    ),
))
