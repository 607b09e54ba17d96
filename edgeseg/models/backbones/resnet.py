"""ResNet-50/101 (He et al., CVPR 2016) with detectron2's module names.

FastInst (junjiehe96/FastInst) and IFC (sukjunhwang/IFC) build on detectron2, whose
``ResNet`` names its parts ``stem.conv1`` and ``res2``..``res5`` with bottleneck blocks
``conv1``/``conv2``/``conv3``/``shortcut``, each convolution carrying its BatchNorm as a
child called ``norm`` (``res2.0.conv1.norm.running_mean``). Written with exactly those
names, a detectron2 checkpoint's backbone (``backbone.res2.0.conv1.weight`` ...) loads
without a renaming table. detectron2's FrozenBatchNorm2d has no ``num_batches_tracked``;
the loader accepts files without it.

``stride_in_1x1``: detectron2's MSRA-converted weights put the stride on the 1x1 conv1;
torchvision-converted weights (what Mask2Former-style code such as FastInst's R50
configs use) put it on the 3x3 conv2. Default: conv2.

``forward`` returns ``(res2, res3, res4, res5)`` at strides 4, 8, 16, 32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ResNetConfig:
    blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    stem_width: int = 64
    base_width: int = 64          # bottleneck width of res2 (doubles per stage)
    expansion: int = 4
    stride_in_1x1: bool = False


RESNET_CONFIGS = {
    "resnet50": ResNetConfig((3, 4, 6, 3)),
    "resnet101": ResNetConfig((3, 4, 23, 3)),
    # Same structure, tiny widths and one block per stage: for fast tests.
    "resnet_test": ResNetConfig((1, 1, 1, 1), stem_width=8, base_width=4),
}


class ConvNorm(nn.Module):
    """detectron2's ``Conv2d`` with its norm as the child ``norm``: keys ``weight``, ``norm.*``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, kernel, kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.stride, self.padding = stride, (kernel - 1) // 2
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.conv2d(x, self.weight, None, self.stride, self.padding))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, cout: int, stride: int, stride_in_1x1: bool):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.shortcut = ConvNorm(cin, cout, 1, stride) if (cin != cout or stride != 1) else None
        self.conv1 = ConvNorm(cin, width, 1, s1)
        self.conv2 = ConvNorm(width, width, 3, s3)
        self.conv3 = ConvNorm(width, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        y = self.conv3(y)
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class Stem(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = ConvNorm(3, width, 7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), 3, 2, 1)


class ResNet(nn.Module):
    """``stem`` + ``res2``..``res5`` (detectron2 names); outputs strides 4, 8, 16, 32."""

    # Checkpoint knowledge for the generic loader: ImageNet classifier heads to drop.
    checkpoint_head_prefixes = ("fc.", "linear.")
    not_pretrained_prefixes = ()

    @staticmethod
    def describe_checkpoint(keys: set[str]) -> str | None:
        return "ResNet (detectron2 layout)" if any(k.startswith(("stem.conv1.", "res2.")) for k in keys) else None

    def __init__(self, cfg: ResNetConfig = RESNET_CONFIGS["resnet50"]):
        super().__init__()
        self.cfg = cfg
        self.stem = Stem(cfg.stem_width)
        cin, channels = cfg.stem_width, []
        for i, n in enumerate(cfg.blocks):
            width = cfg.base_width * 2 ** i
            cout = width * cfg.expansion
            stage = nn.Sequential(*(Bottleneck(cin if b == 0 else cout, width, cout,
                                               2 if (b == 0 and i > 0) else 1, cfg.stride_in_1x1)
                                    for b in range(n)))
            self.add_module(f"res{i + 2}", stage)
            cin = cout
            channels.append(cout)
        self.out_channels = tuple(channels)
        self.out_strides = (4, 8, 16, 32)

    def forward(self, x: torch.Tensor):
        x = self.stem(x)
        r2 = self.res2(x)
        r3 = self.res3(r2)
        r4 = self.res4(r3)
        r5 = self.res5(r4)
        return r2, r3, r4, r5


def build_resnet(name: str, **overrides) -> ResNet:
    if name not in RESNET_CONFIGS:
        raise ValueError(f"unknown ResNet {name!r}; known: {', '.join(RESNET_CONFIGS)}")
    from dataclasses import replace

    return ResNet(replace(RESNET_CONFIGS[name], **overrides))
