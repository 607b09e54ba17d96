"""A tiny three-component model shaped like a zoo model, for tests that must not depend on the zoo."""

from __future__ import annotations

import torch
import torch.nn as nn

from edgeseg.data.preprocess import InputSpec
from edgeseg.models.base import ComponentMap


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8), nn.Hardswish(),
                                   nn.Conv2d(8, 16, 1))

    def forward(self, x):
        return self.block(self.stem(x))


class _Neck(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, 1, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return y + nn.functional.interpolate(nn.functional.max_pool2d(y, 2), scale_factor=2.0, mode="nearest")


class _Head(nn.Module):
    def __init__(self, n: int = 4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n, 16) * 0.1)
        self.proj = nn.Linear(16, 16)
        self.cls = nn.Linear(16, 3)

    def forward(self, feats):
        b, c, h, w = feats.shape
        flat = feats.flatten(2)  # B C HW
        attn = torch.softmax(torch.matmul(self.queries.unsqueeze(0).expand(b, -1, -1), flat) / 4.0, dim=-1)
        q = self.proj(torch.matmul(attn, flat.transpose(1, 2)))
        masks = torch.matmul(q, flat).reshape(b, -1, h, w)
        return self.cls(q), masks


class TinySegModel(nn.Module):
    """backbone -> neck -> head; returns (logits, masks, features)."""

    output_names = ["logits", "masks", "features"]

    def __init__(self, size: int = 32):
        super().__init__()
        self.backbone = _Backbone()
        self.neck = _Neck()
        self.head = _Head()
        self.component_map = ComponentMap({"backbone": "backbone", "neck": "neck", "head": "head"})
        self.input_spec = InputSpec(height=size, width=size, stride=4)
        self.model_name = "tiny_seg"
        self.model_cfg = {"size": size}
        self.precision_presets = {"mixed": "backbone=int8,neck=int8,head=fp16"}

    def forward(self, x):
        f = self.neck(self.backbone(x))
        logits, masks = self.head(f)
        return logits, masks, f
