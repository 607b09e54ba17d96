"""EfficientNet-Lite B0-B4 (Tan & Le 2019; the "lite" edge variants of TensorFlow's TPU repo)
as a multi-level backbone.

Lite differs from EfficientNet in what makes it mobile- and quantization-friendly: ReLU6
instead of Swish, no squeeze-and-excitation, and the stem (32 channels) and head (1280)
are not scaled with the width; the first and last stages are not scaled with the depth.

Written here (timm is not a dependency) with the module names of timm's
``efficientnet_lite0..4`` / ``tf_efficientnet_lite0..4``, so their ImageNet checkpoints
load with no renaming: ``conv_stem``, ``bn1``, ``blocks.{stage}.{block}`` holding
``conv_dw``/``bn1``/``conv_pw``/``bn2`` (the first, depthwise-separable stage) or
``conv_pw``/``bn1``/``conv_dw``/``bn2``/``conv_pwl``/``bn3`` (inverted residuals), then
``conv_head``/``bn2``/``classifier``. The classification head is built only with
``num_classes > 0`` (to check parameter counts against the published ones); as a backbone
it returns the last feature map of the stages ending at strides 4, 8, 16 and 32.

``same_padding=True`` pads like TensorFlow's "SAME" (what the ``tf_`` ports were trained
with: asymmetric on stride-2 convolutions), as a static ``ZeroPad2d``; inputs must then be
multiples of 32, which every edgeseg input size is. timm's own ``efficientnet_lite0``
weights use the symmetric padding of the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeseg.models.backbones.topformer import make_divisible

# Stages as (block, repeats, kernel, stride, expansion, channels): timm's arch_def
# ``ds_r1_k3_s1_e1_c16``, ``ir_r2_k3_s2_e6_c24``, ... for efficientnet_lite.
LITE_STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# Stages whose last output is a backbone tap: the ends of strides 4, 8, 16, 32.
TAP_STAGES = (1, 2, 4, 6)


@dataclass(frozen=True)
class LiteScale:
    width: float
    depth: float
    resolution: int  # the ImageNet resolution it was trained at (for reference)


# (channel multiplier, depth multiplier, resolution), from the TF reference / timm.
LITE_SCALES = {
    "efficientnet_lite0": LiteScale(1.0, 1.0, 224),
    "efficientnet_lite1": LiteScale(1.0, 1.1, 240),
    "efficientnet_lite2": LiteScale(1.1, 1.2, 260),
    "efficientnet_lite3": LiteScale(1.2, 1.4, 280),
    "efficientnet_lite4": LiteScale(1.4, 1.8, 300),
}


def stage_repeats(depth: float) -> list[int]:
    """Blocks per stage: ``ceil(repeats * depth)``, first and last stage fixed (lite)."""
    last = len(LITE_STAGES) - 1
    return [r if i in (0, last) else int(math.ceil(r * depth)) for i, (_, r, *_rest) in enumerate(LITE_STAGES)]


def _padding(kernel: int, stride: int, same: bool) -> tuple[nn.Module, int]:
    """(pre-pad module, conv padding): symmetric k//2, or TF "SAME" for even inputs."""
    if not same:
        return nn.Identity(), kernel // 2
    total = kernel - stride  # "SAME" on an even input: (k - s) pixels in all
    before = total // 2
    if total == 2 * before:
        return nn.Identity(), before
    return nn.ZeroPad2d((before, total - before, before, total - before)), 0


def conv2d(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, same: bool = False) -> nn.Module:
    pad, padding = _padding(kernel, stride, same)
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
    if isinstance(pad, nn.Identity):
        return conv
    return _PaddedConv(pad, conv)


class _PaddedConv(nn.Conv2d):
    """A Conv2d with a static asymmetric pad in front; the parameters are its own, so the
    state-dict keys stay ``conv_dw.weight`` as in timm."""

    def __init__(self, pad: nn.ZeroPad2d, conv: nn.Conv2d):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0,
                         groups=conv.groups, bias=False)
        self._pad = tuple(pad.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, self._pad))


class DepthwiseSeparable(nn.Module):
    """timm's ``DepthwiseSeparableConv`` without SE: dw kxk + BN + ReLU6, pw 1x1 + BN."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, eps: float, same: bool):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = conv2d(cin, cin, kernel, stride, groups=cin, same=same)
        self.bn1 = nn.BatchNorm2d(cin, eps=eps)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(nn.functional.relu6(self.bn1(self.conv_dw(x)))))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    """timm's ``InvertedResidual`` without SE: pw expand + BN + ReLU6, dw kxk + BN + ReLU6,
    pw linear + BN, residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: float, eps: float, same: bool):
        super().__init__()
        mid = make_divisible(cin * expand)
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, eps=eps)
        self.conv_dw = conv2d(mid, mid, kernel, stride, groups=mid, same=same)
        self.bn2 = nn.BatchNorm2d(mid, eps=eps)
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu6(self.bn1(self.conv_pw(x)))
        y = nn.functional.relu6(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite returning the stride 4, 8, 16 and 32 feature maps.

    ``width``/``depth``: the multipliers (see :data:`LITE_SCALES`); ``num_classes > 0`` adds
    timm's classification head (``conv_head``, ``bn2``, ``classifier``), unused by
    :meth:`forward` of the backbone but present so a full ImageNet model can be checked.
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 0,
                 bn_eps: float = 1e-5, same_padding: bool = False):
        super().__init__()
        if width <= 0 or depth <= 0:
            raise ValueError(f"width and depth multipliers must be positive, got {width}, {depth}")
        self.conv_stem = conv2d(3, STEM_CHANNELS, 3, 2, same=same_padding)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS, eps=bn_eps)
        cin, stride = STEM_CHANNELS, 2
        stages, out_channels, out_strides = [], [], []
        for i, ((kind, _, kernel, s, expand, channels), repeats) in enumerate(zip(LITE_STAGES, stage_repeats(depth))):
            cout = make_divisible(channels * width)
            blocks = []
            for j in range(repeats):
                st = s if j == 0 else 1
                if kind == "ds":
                    blocks.append(DepthwiseSeparable(cin, cout, kernel, st, bn_eps, same_padding))
                else:
                    blocks.append(InvertedResidual(cin, cout, kernel, st, expand, bn_eps, same_padding))
                cin = cout
            stride *= s
            stages.append(nn.Sequential(*blocks))
            if i in TAP_STAGES:
                out_channels.append(cout)
                out_strides.append(stride)
        self.blocks = nn.Sequential(*stages)
        self.out_channels = tuple(out_channels)
        self.out_strides = tuple(out_strides)
        self.num_classes = int(num_classes)
        if self.num_classes > 0:
            self.conv_head = nn.Conv2d(cin, HEAD_CHANNELS, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(HEAD_CHANNELS, eps=bn_eps)
            self.classifier = nn.Linear(HEAD_CHANNELS, self.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's "goog" initialisation: fan-out normal convs, unit BN, uniform classifier.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.weight.shape[0])
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = nn.functional.relu6(self.bn1(self.conv_stem(x)))
        taps = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in TAP_STAGES:
                taps.append(x)
        return tuple(taps)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (only with ``num_classes > 0``): head conv, pool, classifier."""
        if self.num_classes <= 0:
            raise RuntimeError("built without a classification head (num_classes=0)")
        x = self.forward(x)[-1]
        x = nn.functional.relu6(self.bn2(self.conv_head(x)))
        return self.classifier(x.mean((2, 3)))


def build_efficientnet_lite(name: str, **kwargs) -> EfficientNetLite:
    """``efficientnet_lite0`` .. ``efficientnet_lite4`` (``tf_`` prefix: TF "SAME" padding
    and BN eps 1e-3, as the ported TensorFlow weights need)."""
    tf = name.startswith("tf_")
    base = name[3:] if tf else name
    if base not in LITE_SCALES:
        raise ValueError(f"unknown EfficientNet-Lite {name!r}; known: {', '.join(LITE_SCALES)} (optionally tf_)")
    scale = LITE_SCALES[base]
    if tf:
        kwargs.setdefault("same_padding", True)
        kwargs.setdefault("bn_eps", 1e-3)
    return EfficientNetLite(scale.width, scale.depth, **kwargs)
