"""YolactEdge's backbones with the official repository's module layout (``backbone.layers.N``).

haotian-liu/yolact_edge keeps every backbone stage in one ``nn.ModuleList`` called
``layers``, so its checkpoints name ``backbone.layers.0.0.conv1.weight`` (ResNet) or
``backbone.layers.3.0.conv.0.0.weight`` (MobileNetV2). Written with that layout here,
an official checkpoint's backbone loads without a renaming table.

* ResNet (``conv1``, ``bn1``, ``layers.0..3`` of bottlenecks ``conv1..3``/``bn1..3``/
  ``downsample.{0,1}``, stride on the 3x3 conv): C3, C4, C5 are ``layers.1..3``.
* MobileNetV2 (torchvision's blocks: ``layers.0`` the stem ConvBNReLU, ``layers.1..7``
  one ``Sequential`` of inverted residuals per (t, c, n, s) row): C3, C4, C5 are
  ``layers.3`` (32 ch, stride 8), ``layers.4`` (64 ch, stride 16) and ``layers.6``
  (160 ch, stride 32), the official ``selected_layers = [3, 4, 6]``. The official model
  also builds ``layers.7`` (320 ch) and the 1x1 conv to 1280 (``layers.8``), which
  YolactEdge never runs; they are not built here and the weights map drops them.

``forward(x)`` returns ``(C3, C4, C5)``; ``forward(x, partial=True)`` only runs the stages
up to C3 and returns it (the partial backbone of a non-keyframe, as the official
``partial=True``).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeseg.models.backbones.mobilenetv2 import INVERTED_RESIDUAL_SETTINGS, ConvBNReLU6, InvertedResidual
from edgeseg.models.backbones.topformer import make_divisible

RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    """torchvision's bottleneck (stride on the 3x3), with yolact_edge's child names."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        # The official block stores an empty Sequential when there is no projection (no keys).
        self.downsample = downsample if downsample is not None else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


class YolactResNet(nn.Module):
    """ResNet-50/101 (or any block counts / width, for tests) returning (C3, C4, C5)."""

    selected_layers = (1, 2, 3)

    def __init__(self, blocks: tuple[int, ...] = (3, 4, 6, 3), width: int = 64):
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"a ResNet needs 4 stages of at least one block, got {blocks}")
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layers = nn.ModuleList()
        cin = width
        channels = []
        for i, n in enumerate(blocks):
            planes, stride = width * 2 ** i, (1 if i == 0 else 2)
            down = None
            if stride != 1 or cin != planes * 4:
                down = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
            stage = [Bottleneck(cin, planes, stride, down)]
            cin = planes * 4
            stage += [Bottleneck(cin, planes) for _ in range(n - 1)]
            self.layers.append(nn.Sequential(*stage))
            channels.append(cin)
        self.out_channels = tuple(channels[i] for i in self.selected_layers)
        _init(self)
        # Each residual branch starts at zero (torchvision's zero_init_residual, Goyal et al.):
        # an untrained ResNet-101 is then close to the identity per block instead of growing
        # its activations to the thousands through 33 residual sums.
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward_c3(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layers[1](self.layers[0](x))

    def forward(self, x: torch.Tensor, partial: bool = False):
        c3 = self.forward_c3(x)
        if partial:
            return c3
        c4 = self.layers[2](c3)
        return c3, c4, self.layers[3](c4)


class YolactMobileNetV2(nn.Module):
    """MobileNetV2 (width multiplier) returning (C3, C4, C5) = layers 3, 4, 6."""

    selected_layers = (3, 4, 6)

    def __init__(self, width_mult: float = 1.0):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        cin = make_divisible(32 * width_mult, 8)
        self.layers = nn.ModuleList([ConvBNReLU6(3, cin, stride=2)])
        channels = [cin]
        # Rows up to C5 (160 channels): the 320-channel row and the 1280 conv are unused.
        for t, c, n, s in INVERTED_RESIDUAL_SETTINGS[:6]:
            cout = make_divisible(c * width_mult, 8)
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
            self.layers.append(nn.Sequential(*blocks))
            channels.append(cout)
        self.out_channels = tuple(channels[i] for i in self.selected_layers)
        _init(self)

    def forward_c3(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:4]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor, partial: bool = False):
        c3 = self.forward_c3(x)
        if partial:
            return c3
        c4 = self.layers[4](c3)
        c5 = self.layers[6](self.layers[5](c4))
        return c3, c4, c5


def _init(module: nn.Module) -> None:
    # He initialisation on the fan-in (the variance of the forward signal is kept) and unit
    # BatchNorm. torchvision's fan-out variant is equivalent once BatchNorm trains, but an
    # untrained model exported as is (BatchNorm at its identity statistics) then shrinks
    # MobileNetV2's activations to ~1e-6 at C5 at 550x550, where the export's parity check
    # measures noise; fan-in keeps every level at O(1).
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_yolact_backbone(name: str, width_mult: float = 1.0, resnet_blocks=(3, 4, 6, 3), resnet_width: int = 64,
                          **kwargs) -> nn.Module:
    if kwargs:
        raise ValueError(f"unknown backbone options: {', '.join(kwargs)}")
    if name == "mobilenetv2":
        return YolactMobileNetV2(width_mult)
    if name in RESNET_BLOCKS:
        return YolactResNet(RESNET_BLOCKS[name], 64)
    if name == "resnet":
        return YolactResNet(tuple(resnet_blocks), resnet_width)
    raise ValueError(f"unknown YolactEdge backbone {name!r}; known: mobilenetv2, resnet50, resnet101, resnet")
