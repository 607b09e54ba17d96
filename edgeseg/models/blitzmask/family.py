"""BlitzMask's place in the model-family contract (torch-free: listing models imports no torch).

BlitzMask (Bulygin et al., Samsung, "BlitzMask: Real-Time Instance Segmentation Approach
for Mobile Devices", 2023): CenterNet + FPN built from mobile-friendly layers only (batch
norm, standard and depthwise-separable convolutions, bilinear upsampling; no deformable or
transposed convolutions). A lite head at 1/4 of the input predicts a class **heatmap**
(peaks at the instances' mask centres of mass), a **size** map (distances from a cell to
the four sides of its instance's box), **coefficients** (K per cell) and a **spanning set**
(K maps); an instance's mask is the spanning set combined with the coefficients read at
its peak, cropped to its box.

The module is in ``model.py``, the NumPy decoder in ``decode.py`` (max-pool peaks, top-K,
no NMS), the training objective in ``loss.py``, the map from timm's EfficientNet-Lite
checkpoints in ``weights.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeseg.models.contract import Family, Variant
from edgeseg.models.registry import register_family

COMPONENTS = ("backbone", "fpn", "head")
OUTPUT_NAMES = ["heatmap", "size", "coefficients", "spanning_set"]
# Every output is at 1/4 of the input (CenterNet's output stride).
OUTPUT_STRIDE = 4
# The backbones' coarsest level is stride 32: inputs must be multiples of it.
INPUT_STRIDE = 32

BACKBONES = ("mobilenetv2",) + tuple(f"{tf}efficientnet_lite{i}" for tf in ("", "tf_") for i in range(5))

# Feature extractors in INT8, the head (whose heatmap scores and mask coefficients are the
# precision-sensitive part) in FP16: the split the other families use too.
PRECISION_PRESETS = {
    "mixed": "backbone=int8,fpn=int8,head=fp16",
    "int8_backbone": "backbone=int8,fpn=fp16,head=fp16",
}


@dataclass
class BlitzMaskConfig:
    backbone: str = "mobilenetv2"     # mobilenetv2 | efficientnet_lite0..4 | tf_efficientnet_lite0..4
    num_classes: int = 80
    input_size: tuple[int, int] = (320, 320)
    fpn_dim: int = 96                 # FPN width (every level, and the stride-4 output)
    head_dim: int = 96                # width of each head branch
    head_depth: int = 2               # separable convs per head branch before its 1x1 output
    num_bases: int = 16               # K: coefficients per instance = maps in the spanning set
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


def _variant(name: str, description: str, **overrides: Any) -> Variant:
    return Variant.with_defaults(BlitzMaskConfig(), name, description, **overrides)


_LITE = tuple(
    _variant(f"blitzmask_efficientnet_lite{i}",
             f"BlitzMask, EfficientNet-Lite{i} backbone at 320 (timm key names: ImageNet weights load)"
             + (" (the paper's most accurate model)" if i == 4 else ""),
             backbone=f"efficientnet_lite{i}", fpn_dim=96 + 16 * i, head_dim=96 + 16 * i)
    for i in range(5))

FAMILY = register_family(Family(
    name="blitzmask",
    title="BlitzMask (Bulygin et al., Samsung, 2023)",
    components=COMPONENTS,
    outputs=tuple(OUTPUT_NAMES),
    build="edgeseg.models.blitzmask.model:build",
    decoder="edgeseg.models.blitzmask.decode:decode",
    input_stride=INPUT_STRIDE,
    objective="edgeseg.models.blitzmask.loss:BlitzMaskObjective",
    weights_map="edgeseg.models.blitzmask.weights:filter_state_dict",
    presets=dict(PRECISION_PRESETS),
    variants=(
        _variant("blitzmask_mobilenetv2", "BlitzMask, MobileNetV2 (1.0x) backbone at 320 (the paper's fastest model)"),
        *_LITE,
        _variant("blitzmask_test", "BlitzMask with tiny widths at 64x64: same architecture, for fast tests",
                 backbone_kwargs={"width_mult": 0.25}, input_size=(64, 64), fpn_dim=24, head_dim=16,
                 head_depth=1, num_bases=4),
        # The committed zoo checkpoint (edgeseg/zoo/blitzmask_mobilenetv2_synth.safetensors): a
        # half-width MobileNetV2 and a 64-wide FPN/head, 4 shape classes at 256 (the synthetic
        # val split's size), so it trains on one CPU core in about two hours.
        _variant("blitzmask_mobilenetv2_synth",
                 "BlitzMask, MobileNetV2 (0.5x), 64-wide FPN and head, 4 shape classes at 256 "
                 "(the shipped synthetic-data checkpoint: --weights zoo)",
                 backbone_kwargs={"width_mult": 0.5}, num_classes=4, input_size=(256, 256), fpn_dim=64,
                 head_dim=64, head_depth=2, num_bases=16),
    ),
))
