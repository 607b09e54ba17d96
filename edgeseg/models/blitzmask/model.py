"""BlitzMask: CenterNet + FPN with a lite head, every layer mobile-friendly.

Three components, each one attribute so ONNX node scopes (``/backbone/...``) name them:

* ``backbone``: MobileNetV2 (torchvision key names) or EfficientNet-Lite B0-B4 (timm key
  names), giving C2..C5 at strides 4, 8, 16, 32.
* ``fpn``: 1x1 laterals to one width, then top-down: upsample 2x bilinearly, add the next
  finer lateral, smooth with a depthwise-separable 3x3; the result is the stride-4 map P2.
* ``head``: four branches on P2, each ``head_depth`` separable 3x3 convs and a 1x1 output:
  ``heatmap`` (one logit per class), ``size`` (distances from a cell's centre to the left,
  top, right and bottom sides of its instance's box, in cells of the output grid),
  ``coefficients`` (K) and ``spanning_set`` (K maps).

Only BatchNorm, Conv2d (standard, depthwise, 1x1), ReLU/ReLU6, Add and a constant-scale
bilinear Resize appear in the exported graph: no deformable or transposed convolution, no
MatMul, no Softmax, so every backend (TFLite int8, TNN int8 on ARM, TensorRT) takes it whole.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.data.preprocess import InputSpec
from edgeseg.errors import EdgesegError
from edgeseg.models.base import ComponentMap
from edgeseg.models.contract import config_from, input_size_of
from edgeseg.models.layers import ConvNormAct

from edgeseg.models.blitzmask.family import (BACKBONES, COMPONENTS, INPUT_STRIDE, OUTPUT_NAMES, OUTPUT_STRIDE,
                                              PRECISION_PRESETS, BlitzMaskConfig)

# Initial heatmap probability: CenterNet's bias of -2.19, so the focal loss of the many
# background cells starts small.
HEATMAP_PRIOR = 0.1
# Initial size prediction (cells): positive, so the clamped IoU term has gradient at once.
SIZE_INIT = 4.0


def build_backbone(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """A backbone returning C2..C5 (strides 4, 8, 16, 32)."""
    if name == "mobilenetv2":
        from edgeseg.models.backbones.mobilenetv2 import STRIDE_END_INDICES, MobileNetV2

        taps = tuple(STRIDE_END_INDICES[s] for s in (4, 8, 16, 32))
        return MobileNetV2(**{**kwargs, "global_channels": None, "out_indices": taps})
    if "efficientnet_lite" in name:
        from edgeseg.models.backbones.efficientnet_lite import build_efficientnet_lite

        return build_efficientnet_lite(name, **kwargs)
    raise EdgesegError(f"unknown BlitzMask backbone {name!r}", f"use one of {', '.join(BACKBONES)}")


def _up2(x: torch.Tensor) -> torch.Tensor:
    # A constant scale keeps the exported Resize free of shape arithmetic (TNN, TFLite).
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class SeparableConv(nn.Module):
    """Depthwise 3x3 + BN + ReLU, then pointwise 1x1 + BN + ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_dw(self.conv_dw(x)))
        return F.relu(self.bn_pw(self.conv_pw(x)))


class LiteFPN(nn.Module):
    """(C2, C3, C4, C5) -> P2 ``[B, dim, H/4, W/4]`` by a top-down pass."""

    def __init__(self, in_channels: tuple[int, ...], dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(ConvNormAct(c, dim, 1) for c in in_channels)
        self.smooth = nn.ModuleList(SeparableConv(dim, dim) for _ in in_channels[:-1])

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            x = self.smooth[i](self.lateral[i](features[i]) + _up2(x))
        return x


def _branch(dim: int, width: int, depth: int, out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(SeparableConv(dim if i == 0 else width, width))
    layers.append(nn.Conv2d(width if depth else dim, out, 1))
    return nn.Sequential(*layers)


class LiteHead(nn.Module):
    """P2 -> (heatmap, size, coefficients, spanning_set), all at stride 4."""

    def __init__(self, dim: int, width: int, depth: int, num_classes: int, num_bases: int):
        super().__init__()
        self.heatmap = _branch(dim, width, depth, num_classes)
        self.size = _branch(dim, width, depth, 4)
        self.coefficients = _branch(dim, width, depth, num_bases)
        self.spanning_set = _branch(dim, width, depth, num_bases)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        nn.init.normal_(self.size[-1].weight, std=0.01)
        nn.init.constant_(self.size[-1].bias, SIZE_INIT)

    def forward(self, p2: torch.Tensor):
        return self.heatmap(p2), self.size(p2), self.coefficients(p2), self.spanning_set(p2)


class BlitzMask(nn.Module):
    """The frame graph: image -> (heatmap, size, coefficients, spanning_set)."""

    output_names = OUTPUT_NAMES

    def __init__(self, cfg: BlitzMaskConfig, name: str = "blitzmask"):
        super().__init__()
        self.cfg = cfg
        height, width = cfg.input_size
        self.backbone = build_backbone(cfg.backbone, dict(cfg.backbone_kwargs))
        if tuple(self.backbone.out_strides) != (4, 8, 16, 32):
            raise EdgesegError(f"backbone {cfg.backbone} gives strides {self.backbone.out_strides}",
                               "BlitzMask's FPN needs strides 4, 8, 16, 32")
        self.fpn = LiteFPN(tuple(self.backbone.out_channels), cfg.fpn_dim)
        self.head = LiteHead(cfg.fpn_dim, cfg.head_dim, cfg.head_depth, cfg.num_classes, cfg.num_bases)
        self.model_name = name
        self.num_classes = cfg.num_classes
        self.num_bases = cfg.num_bases
        self.output_stride = OUTPUT_STRIDE
        self.component_map = ComponentMap({c: c for c in COMPONENTS})
        self.input_spec = InputSpec(height=height, width=width, stride=INPUT_STRIDE)
        self.precision_presets = dict(PRECISION_PRESETS)

    def forward(self, image: torch.Tensor):
        return self.head(self.fpn(self.backbone(image)))


def build(name: str, cfg: dict[str, Any]) -> BlitzMask:
    """The family's builder (``Family.build``): a variant's config -> the module."""
    config = config_from(BlitzMaskConfig, name, cfg)
    config.input_size = input_size_of(config.input_size, INPUT_STRIDE,
                                      "BlitzMask's backbones end at stride 32")
    if config.backbone not in BACKBONES:
        import difflib

        close = difflib.get_close_matches(config.backbone, BACKBONES, n=1)
        raise EdgesegError(f"unknown BlitzMask backbone {config.backbone!r}",
                           (f"did you mean {close[0]!r}? " if close else "") + f"backbones: {', '.join(BACKBONES)}")
    for key in ("fpn_dim", "head_dim", "num_bases"):
        if int(getattr(config, key)) < 1:
            raise EdgesegError(f"{key} must be at least 1, got {getattr(config, key)}", f"e.g. {key}=64")
    if int(config.head_depth) < 0:
        raise EdgesegError(f"head_depth must be >= 0, got {config.head_depth}", "e.g. head_depth=2")
    return BlitzMask(config, name=name)
