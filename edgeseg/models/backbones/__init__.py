"""Mobile backbones written for the zoo (no torchvision dependency).

Every backbone returns ``(X3, X4, X5, X6)`` (strides 8, 16, 32, 64) and exposes
``out_channels`` / ``out_strides`` for those four maps, which is all a decoder needs.
"""

from __future__ import annotations

from edgeseg.models.backbones.efficientnet_lite import EfficientNetLite, build_efficientnet_lite
from edgeseg.models.backbones.mobilenetv2 import MobileNetV2
from edgeseg.models.backbones.resnet import RESNET_CONFIGS, ResNet, build_resnet
from edgeseg.models.backbones.topformer import TOPFORMER_CONFIGS, TopFormer, TopFormerConfig

__all__ = ["EfficientNetLite", "MobileNetV2", "ResNet", "RESNET_CONFIGS", "TopFormer", "TopFormerConfig", "TOPFORMER_CONFIGS",
           "build_backbone"]


def build_backbone(name: str, **kwargs):
    """``topformer_base`` / ``topformer_small`` / ``topformer_tiny`` / ``topformer_test`` / ``mobilenetv2``
    (these four return strides 8..64) / ``resnet50`` / ``resnet101`` / ``resnet_test`` (strides 4..32,
    detectron2 key names) / ``efficientnet_lite0..4`` and ``tf_efficientnet_lite0..4`` (strides 4..32,
    timm key names)."""
    if name.startswith("topformer_"):
        size = name.split("_", 1)[1]
        if size not in TOPFORMER_CONFIGS:
            raise ValueError(f"unknown TopFormer size {size!r}; known: {', '.join(TOPFORMER_CONFIGS)}")
        return TopFormer(TOPFORMER_CONFIGS[size], **kwargs)
    if name == "mobilenetv2":
        return MobileNetV2(**kwargs)
    if name in RESNET_CONFIGS:
        return build_resnet(name, **kwargs)
    if "efficientnet_lite" in name:
        return build_efficientnet_lite(name, **kwargs)
    raise ValueError(f"unknown backbone {name!r}")
