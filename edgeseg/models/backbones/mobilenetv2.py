"""MobileNetV2 (Sandler et al., CVPR 2018) as a four-level backbone for MobileInst.

Written here (there is no CPU torchvision in the project) with torchvision's module
layout: ``features.{i}`` blocks, ``features.{i}.conv.{j}`` inside inverted residuals,
Conv2d/BN pairs as ``.0``/``.1``. torchvision's ImageNet checkpoints therefore load
directly; the classifier and the final 1x1 conv to 1280 channels (``features.18``) are
not built, because a dense-prediction backbone does not use them.

Outputs ``(X3, X4, X5, X6)``: ``features.6`` (stride 8), ``features.13`` (stride 16),
``features.17`` (stride 32) and ``global_block`` (stride 64), a stride-2 inverted
residual on X5 that plays the role of TopFormer's global tokens. Other taps can be asked
for (``out_indices``; BlitzMask's FPN starts at ``features.3``, stride 4), and
``global_channels=None`` builds no stride-64 block (nothing untrained is left unused).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeseg.models.backbones.topformer import make_divisible

# (expand_ratio t, channels c, repeats n, first stride s), as in the paper's Table 2.
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# Blocks after which X3, X4, X5 are taken (strides 8, 16, 32).
TAP_INDICES = (6, 13, 17)
# The last block of each stride: 1 (2), 3 (4), 6 (8), 13 (16), 17 (32).
STRIDE_END_INDICES = {2: 1, 4: 3, 8: 6, 16: 13, 32: 17}


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) + BN + ReLU6, children ``0``/``1``/``2`` as torchvision names them."""

    def __init__(self, inp: int, oup: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: float):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_residual = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),  # linear bottleneck: no activation
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with a width multiplier, returning ``(X3, X4, X5, X6)`` by default: the
    outputs of blocks ``out_indices``, then the stride-64 ``global_block`` unless
    ``global_channels`` is None."""

    # torchvision's ImageNet files: the classifier and the final 1x1 conv (features.18) are
    # not built here; the stride-64 block is ours, so no ImageNet file has it.
    checkpoint_head_prefixes = ("classifier.", "features.18.")
    not_pretrained_prefixes = ("global_block.",)

    @staticmethod
    def describe_checkpoint(keys: set[str]) -> str | None:
        return "MobileNetV2 (torchvision layout)" if any(k.startswith("features.") for k in keys) else None

    def __init__(self, width_mult: float = 1.0, global_channels: int | None = 256, global_expand: float = 2.0,
                 out_indices: tuple[int, ...] = TAP_INDICES):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        inp = make_divisible(32 * width_mult, 8)
        blocks: list[nn.Module] = [ConvBNReLU6(3, inp, stride=2)]
        tap_channels, tap_strides, stride = {}, {}, 2
        for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
            out = make_divisible(c * width_mult, 8)
            for i in range(n):
                blocks.append(InvertedResidual(inp, out, s if i == 0 else 1, t))
                stride *= s if i == 0 else 1
                inp = out
                tap_channels[len(blocks) - 1] = out
                tap_strides[len(blocks) - 1] = stride
        self.features = nn.Sequential(*blocks)
        bad = [i for i in out_indices if i not in tap_channels]
        if bad or list(out_indices) != sorted(set(out_indices)):
            raise ValueError(f"out_indices {out_indices} must be increasing block indices in 1..{len(blocks) - 1}")
        self.out_indices = tuple(out_indices)
        #: channels and strides of the outputs (X3, X4, X5, X6 by default)
        self.out_channels = tuple(tap_channels[i] for i in self.out_indices)
        self.out_strides = tuple(tap_strides[i] for i in self.out_indices)
        if global_channels is not None:
            x6 = make_divisible(global_channels * width_mult, 8)
            self.global_block = InvertedResidual(inp, x6, stride=2, expand_ratio=global_expand)
            self.out_channels += (x6,)
            self.out_strides += (tap_strides[len(blocks) - 1] * 2,)
        else:
            self.global_block = None
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation: kaiming (fan_out) convs, unit BN.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x) -> tuple[torch.Tensor, ...]:
        taps = []
        last = self.out_indices[-1] if self.global_block is None else len(self.features) - 1
        for i, block in enumerate(self.features):
            if i > last:
                break  # blocks after the last tap would be computed for nothing
            x = block(x)
            if i in self.out_indices:
                taps.append(x)
        if self.global_block is not None:
            taps.append(self.global_block(x))
        return tuple(taps)
