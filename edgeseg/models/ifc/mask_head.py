"""IFC's segmentation head: an FPN-style spatial decoder to 1/8, then one dynamic 1x1
conv per query applied to every frame.

Official names (``detr.mask_head.*``): ``lay1..3`` / ``gn1..3`` (3x3 conv + GroupNorm at
1/32, 1/16, 1/8), ``adapter1`` / ``adapter2`` (1x1 lateral convs of the stride-16 and
stride-8 backbone maps), ``out_lay`` (detectron2's depthwise-separable 5x5 conv:
``depthwise`` and ``pointwise``, each with a bias and a ReLU) and ``convert_to_weight``
(a 3-layer MLP turning each query into its C-dim conv weight). The masks of a clip are one
batched MatMul ``[B, N, C] @ [B, C, T*h*w]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.ifc.transformer import MLP


class PortableGroupNorm(nn.Module):
    """GroupNorm written as reshape / mean / sqrt (``nn.GroupNorm``'s ``weight`` / ``bias``).

    At opset 17 torch exports GroupNorm through InstanceNormalization with reshapes that
    some mobile converters mis-handle; reductions over the last axis run everywhere.
    """

    def __init__(self, groups: int, channels: int, eps: float = 1e-5):
        super().__init__()
        if channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels are not divisible into {groups} groups")
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = x.reshape(n, self.groups, (c // self.groups) * h * w)
        centered = g - g.mean(dim=-1, keepdim=True)
        var = (centered * centered).mean(dim=-1, keepdim=True)
        normed = (centered / torch.sqrt(var + self.eps)).reshape(n, c, h, w)
        return normed * self.weight.reshape(1, c, 1, 1) + self.bias.reshape(1, c, 1, 1)


class DepthwiseSeparable(nn.Module):
    """detectron2's ``DepthwiseSeparableConv2d`` without norms: ``depthwise`` (k x k, one
    filter per channel) + ReLU, ``pointwise`` (1x1) + ReLU."""

    def __init__(self, channels: int, out_channels: int, kernel_size: int = 5):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.pointwise = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pointwise(F.relu(self.depthwise(x))))


def _up2(x: torch.Tensor) -> torch.Tensor:
    # The levels are exact factors of 2 apart: a constant scale keeps Resize shape-free.
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class MaskHead(nn.Module):
    def __init__(self, dim: int, fpn_channels: tuple[int, int], groups: int = 32):
        super().__init__()
        self.lay1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn1 = PortableGroupNorm(groups, dim)
        self.lay2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn2 = PortableGroupNorm(groups, dim)
        self.lay3 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn3 = PortableGroupNorm(groups, dim)
        self.out_lay = DepthwiseSeparable(dim, dim, 5)
        self.adapter1 = nn.Conv2d(fpn_channels[0], dim, 1)   # the stride-16 backbone map
        self.adapter2 = nn.Conv2d(fpn_channels[1], dim, 1)   # the stride-8 backbone map
        self.convert_to_weight = MLP(dim, dim, dim, 3)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def features(self, encoded: torch.Tensor, f16: torch.Tensor, f8: torch.Tensor) -> torch.Tensor:
        """Encoded stride-32 tokens as a map ``[B*T, C, h, w]`` + backbone maps -> ``[B*T, C, H/8, W/8]``."""
        x = self.gn1(self.lay1(encoded))
        x = self.gn2(self.lay2(self.adapter1(f16) + _up2(x)))
        x = F.relu(self.gn3(self.lay3(self.adapter2(f8) + _up2(x))))
        return self.out_lay(x)

    def forward(self, encoded: torch.Tensor, f16: torch.Tensor, f8: torch.Tensor, queries: torch.Tensor,
                clips: int, frames: int) -> torch.Tensor:
        """``queries [L, B, N, C]`` -> mask logits ``[L, B, N, T, H/8, W/8]``."""
        x = self.features(encoded, f16, f8)
        bt, c, h, w = x.shape
        per_clip = x.reshape(clips, frames, c, h * w).transpose(1, 2).reshape(1, clips, c, frames * h * w)
        kernels = self.convert_to_weight(queries)                       # [L, B, N, C]
        masks = torch.matmul(kernels, per_clip)                          # [L, B, N, T*h*w]
        n_layers, b, n, _ = kernels.shape
        return masks.reshape(n_layers, b, n, frames, h, w)
