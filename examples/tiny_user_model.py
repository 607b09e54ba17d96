"""A small user model, not in the zoo: backbone -> neck -> head, to show `edgeseg` on your own code.

    edgeseg export examples/tiny_user_model.py:build_model --input-size 128 \
        --components backbone=backbone,neck=neck,head=head -o out/tiny_user

Any ``nn.Module`` works the same way: ``build_model()`` returns it (imported, never
unpickled); ``--components`` names the sub-modules that precision plans talk about.
This one is a compact prototype-mask segmenter (YOLACT-like outputs: class logits per
location, mask coefficients and prototypes), written with export-friendly layers only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Backbone(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = conv_bn(3, width, 2)                               # 1/2
        self.stage1 = nn.Sequential(conv_bn(width, width * 2, 2),      # 1/4
                                    conv_bn(width * 2, width * 2, groups=width * 2))
        self.stage2 = nn.Sequential(conv_bn(width * 2, width * 4, 2),  # 1/8
                                    conv_bn(width * 4, width * 4, groups=width * 4))

    def forward(self, x):
        c2 = self.stage1(self.stem(x))
        return c2, self.stage2(c2)


class Neck(nn.Module):
    """A two-level FPN: the 1/8 map upsampled onto the 1/4 one."""

    def __init__(self, width: int = 16, dim: int = 32):
        super().__init__()
        self.lat2 = nn.Conv2d(width * 2, dim, 1)
        self.lat3 = nn.Conv2d(width * 4, dim, 1)
        self.smooth = conv_bn(dim, dim)

    def forward(self, c2, c3):
        p3 = self.lat3(c3)
        p2 = self.lat2(c2) + F.interpolate(p3, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.smooth(p2), p3


class Head(nn.Module):
    def __init__(self, dim: int = 32, num_classes: int = 4, num_prototypes: int = 8):
        super().__init__()
        self.protos = nn.Sequential(conv_bn(dim, dim), nn.Conv2d(dim, num_prototypes, 1))
        self.cls = nn.Conv2d(dim, num_classes, 3, 1, 1)
        self.coef = nn.Conv2d(dim, num_prototypes, 3, 1, 1)

    def forward(self, p2, p3):
        protos = F.relu(self.protos(p2))
        logits = self.cls(p3).flatten(2).transpose(1, 2)            # [B, HW/64, C]
        coefs = torch.tanh(self.coef(p3)).flatten(2).transpose(1, 2)  # [B, HW/64, K]
        return logits, coefs, protos


class TinyUserModel(nn.Module):
    output_names = ["logits", "coefficients", "prototypes"]

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.backbone = Backbone()
        self.neck = Neck()
        self.head = Head(num_classes=num_classes)

    def forward(self, image):
        c2, c3 = self.backbone(image)
        p2, p3 = self.neck(c2, c3)
        return self.head(p2, p3)


def build_model() -> TinyUserModel:
    torch.manual_seed(0)  # reproducible random weights for the example
    return TinyUserModel()
