"""TopFormer: Token Pyramid Vision Transformer (Zhang et al., CVPR 2022; hustvl/TopFormer).

Structure, as in the paper and the official code:

* **Token Pyramid Module** (``tpm``): a MobileNetV2-style stack of inverted residual
  blocks; the outputs of a few blocks (strides 4, 8, 16, 32) are the token pyramid.
* **Pyramid pooling** (``ppa``): every pyramid level is average-pooled to 1/64 of the
  input and the levels are concatenated along channels.
* **Scale-aware semantics extractor** (``trans``): transformer blocks on those pooled
  tokens; attention and MLP are 1x1 convs + BN, the MLP has a depthwise 3x3 conv.
* **Semantics Injection Module** (``SIM``): per decoded scale, the local tokens pass a
  1x1 conv+BN and are multiplied by a hard-sigmoid gate of the global semantics, then
  the global embedding is added (both upsampled to the local size).

Module and parameter names follow the official implementation (``tpm.layer3.conv.0.c``,
``trans.transformer_blocks.0.attn.to_q.bn``, ``SIM.1.local_embedding.conv``...) so the
official ImageNet and ADE20K checkpoints load without renaming.

For MobileInst the backbone returns ``(X3, X4, X5, X6)``: the injected features at
strides 8, 16 and 32, and the global semantic tokens at stride 64.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without losing more than 10% (MobileNet rule)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


@dataclass(frozen=True)
class TopFormerConfig:
    """One TopFormer size. ``blocks`` rows are ``(kernel, expand_ratio, channels, stride)``."""

    blocks: tuple[tuple[int, int, int, int], ...]
    channels: tuple[int, ...]          # channels of the token pyramid levels
    out_channels: tuple[int, ...]      # SIM output channels per decoded level
    embed_out_indices: tuple[int, ...]  # which blocks feed the pyramid (0-based)
    decode_out_indices: tuple[int, ...] = (1, 2, 3)
    num_heads: int = 8
    key_dim: int = 16
    depths: int = 4
    attn_ratio: float = 2.0
    mlp_ratio: float = 2.0
    c2t_stride: int = 2
    stem_channels: int = 16
    drop_path_rate: float = 0.0


# The three sizes of the official repo (local_configs/topformer/topformer_{tiny,small,base}.py).
TOPFORMER_CONFIGS: dict[str, TopFormerConfig] = {
    "tiny": TopFormerConfig(
        blocks=((3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1), (5, 3, 32, 2), (5, 3, 32, 1),
                (3, 3, 64, 2), (3, 3, 64, 1), (5, 6, 96, 2), (5, 6, 96, 1)),
        channels=(16, 32, 64, 96), out_channels=(0, 128, 128, 128),
        embed_out_indices=(2, 4, 6, 8), num_heads=4),
    "small": TopFormerConfig(
        blocks=((3, 1, 16, 1), (3, 4, 24, 2), (3, 3, 24, 1), (5, 3, 48, 2), (5, 3, 48, 1),
                (3, 3, 96, 2), (3, 3, 96, 1), (5, 6, 128, 2), (5, 6, 128, 1), (3, 6, 128, 1)),
        channels=(24, 48, 96, 128), out_channels=(0, 192, 192, 192),
        embed_out_indices=(2, 4, 6, 9), num_heads=6),
    "base": TopFormerConfig(
        blocks=((3, 1, 16, 1), (3, 4, 32, 2), (3, 3, 32, 1), (5, 3, 64, 2), (5, 3, 64, 1),
                (3, 3, 128, 2), (3, 3, 128, 1), (5, 6, 160, 2), (5, 6, 160, 1), (3, 6, 160, 1)),
        channels=(32, 64, 128, 160), out_channels=(0, 256, 256, 256),
        embed_out_indices=(2, 4, 6, 9), num_heads=8),
    # Not an official size: a few-thousand-parameter TopFormer with the same structure,
    # so unit tests everywhere run the real architecture in milliseconds.
    "test": TopFormerConfig(
        blocks=((3, 1, 8, 1), (3, 2, 8, 2), (3, 2, 16, 2), (3, 2, 16, 2), (3, 2, 24, 2)),
        channels=(8, 16, 16, 24), out_channels=(0, 16, 16, 16),
        embed_out_indices=(1, 2, 3, 4), num_heads=2, key_dim=4, depths=1, stem_channels=8),
}


class Conv2d_BN(nn.Sequential):  # noqa: N801 - official name, kept for checkpoint keys
    """Conv (no bias) + BN, children named ``c`` and ``bn`` like the official code."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, bn_weight_init: float = 1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                       groups=groups, bias=False))
        bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0)
        self.add_module("bn", bn)


class ConvModule(nn.Module):
    """Conv (no bias) + BN with children ``conv`` and ``bn``: the key layout of mmcv's
    ``ConvModule`` that the official Semantics Injection Module uses."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return self.bn(self.conv(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, kxk depthwise, 1x1 linear projection (+ residual)."""

    def __init__(self, inp: int, oup: int, kernel_size: int, stride: int, expand_ratio: float,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_residual = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [Conv2d_BN(inp, hidden), activation()]
        layers += [Conv2d_BN(hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden),
                   activation(),
                   Conv2d_BN(hidden, oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class TokenPyramidModule(nn.Module):
    def __init__(self, cfg: TopFormerConfig, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.out_indices = tuple(cfg.embed_out_indices)
        self.stem = nn.Sequential(Conv2d_BN(3, cfg.stem_channels, 3, 2, 1), activation())
        inp = cfg.stem_channels
        self.layer_names: list[str] = []
        for i, (k, t, c, s) in enumerate(cfg.blocks):
            out = make_divisible(c, 8)
            name = f"layer{i + 1}"
            self.add_module(name, InvertedResidual(inp, out, k, s, t, activation))
            self.layer_names.append(name)
            inp = out

    def forward(self, x) -> list[torch.Tensor]:
        outs = []
        x = self.stem(x)
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


class Attention(nn.Module):
    """Multi-head attention over a token map, q/k/v as 1x1 conv + BN.

    As in the official code the logits are NOT scaled by 1/sqrt(key_dim) (the BN after
    ``to_q``/``to_k`` takes that role); keeping it that way is what makes the official
    weights produce the official features.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float,
                 activation: type[nn.Module]):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.to_q = Conv2d_BN(dim, key_dim * num_heads)
        self.to_k = Conv2d_BN(dim, key_dim * num_heads)
        self.to_v = Conv2d_BN(dim, self.dh)
        self.proj = nn.Sequential(activation(), Conv2d_BN(self.dh, dim, bn_weight_init=0.0))

    def forward(self, x):
        b, _, h, w = x.shape
        n = h * w
        q = self.to_q(x).reshape(b, self.num_heads, self.key_dim, n).transpose(2, 3)
        k = self.to_k(x).reshape(b, self.num_heads, self.key_dim, n)
        v = self.to_v(x).reshape(b, self.num_heads, self.d, n).transpose(2, 3)
        attn = torch.matmul(q, k).softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(2, 3).reshape(b, self.dh, h, w)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: type[nn.Module]):
        super().__init__()
        self.fc1 = Conv2d_BN(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=True)
        self.act = activation()
        self.fc2 = Conv2d_BN(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class DropPath(nn.Module):
    """Stochastic depth on the residual branch (training only; identity at inference)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    def __init__(self, dim: int, cfg: TopFormerConfig, drop_path: float, activation: type[nn.Module]):
        super().__init__()
        self.attn = Attention(dim, cfg.key_dim, cfg.num_heads, cfg.attn_ratio, activation)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), activation)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, cfg: TopFormerConfig, activation: type[nn.Module]):
        super().__init__()
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depths).tolist()
        self.transformer_blocks = nn.ModuleList(Block(dim, cfg, r, activation) for r in rates)

    def forward(self, x):
        for block in self.transformer_blocks:
            x = block(x)
        return x


class PyramidPoolAgg(nn.Module):
    """Average-pool every pyramid level to the size of the last level / ``stride`` and concat.

    The official code uses adaptive pooling; for inputs that are multiples of 64 the
    windows are exact, so a plain ``AveragePool`` with kernel = stride gives the same
    numbers and exports to an op every mobile runtime has.
    """

    def __init__(self, stride: int, level_strides: tuple[int, ...]):
        super().__init__()
        self.stride = stride
        coarsest = level_strides[-1] * stride
        self.kernels = [coarsest // s for s in level_strides]

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        pooled = [x if k == 1 else F.avg_pool2d(x, k, k) for x, k in zip(inputs, self.kernels)]
        return torch.cat(pooled, dim=1)


class HSigmoid(nn.Module):
    """relu6(x + 3) / 6, the official gate (HardSigmoid-style, int8-friendly)."""

    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0


class InjectionMultiSum(nn.Module):
    """Semantics Injection Module: ``local(x_l) * hsigmoid(act(x_g))↑ + embed(x_g)↑``."""

    def __init__(self, inp: int, oup: int, upscale: int):
        super().__init__()
        self.upscale = upscale
        self.local_embedding = ConvModule(inp, oup)
        self.global_embedding = ConvModule(inp, oup)
        self.global_act = ConvModule(inp, oup)
        self.act = HSigmoid()

    def _up(self, x):
        if self.upscale == 1:
            return x
        # A constant scale (not a size read from a tensor) keeps the exported Resize static.
        return F.interpolate(x, scale_factor=float(self.upscale), mode="bilinear", align_corners=False)

    def forward(self, x_local, x_global):
        gate = self._up(self.act(self.global_act(x_global)))
        return self.local_embedding(x_local) * gate + self._up(self.global_embedding(x_global))


class TopFormer(nn.Module):
    """TopFormer backbone returning ``(X3, X4, X5, X6)`` at strides 8, 16, 32 and 64."""

    # What the generic checkpoint loader needs to know about official TopFormer files:
    # ImageNet classifiers carry a ``head``; the Semantics Injection Module (``SIM``) is
    # trained only with a segmentation head, so ImageNet files lack it.
    checkpoint_head_prefixes = ("head.",)
    not_pretrained_prefixes = ("SIM.",)

    @staticmethod
    def describe_checkpoint(keys: set[str]) -> str | None:
        if any(k.startswith("tpm.") for k in keys):
            return "official TopFormer ImageNet checkpoint" if any(k.startswith("head.") for k in keys) \
                else "TopFormer backbone"
        if any(k.startswith("backbone.tpm.") for k in keys):
            return "official TopFormer segmentation checkpoint (mmseg)"
        return None

    @staticmethod
    def guess_checkpoint(state: dict) -> str | None:
        """Which TopFormer size a backbone file holds (for a mismatch's fix)."""
        sig = {k: tuple(v.shape) for k, v in state.items() if k.startswith(("tpm.", "trans."))}
        if not sig:
            return None
        for size, cfg in TOPFORMER_CONFIGS.items():
            ref = {k: tuple(v.shape) for k, v in TopFormer(cfg).state_dict().items() if k in sig}
            if ref == sig:
                return "TopFormer-" + {"tiny": "Tiny", "small": "Small", "base": "Base"}.get(size, size)
        return None

    def __init__(self, cfg: TopFormerConfig | str = "base", drop_path_rate: float | None = None):
        super().__init__()
        if isinstance(cfg, str):
            cfg = TOPFORMER_CONFIGS[cfg]
        if drop_path_rate is not None:  # the official configs train with 0.1
            cfg = dataclasses.replace(cfg, drop_path_rate=drop_path_rate)
        self.cfg = cfg
        self.tpm = TokenPyramidModule(cfg, activation=nn.ReLU)
        level_strides = self._level_strides(cfg)
        if list(level_strides) != [4, 8, 16, 32]:
            raise ValueError(f"TopFormer pyramid strides must be 4, 8, 16, 32, got {level_strides}")
        self.ppa = PyramidPoolAgg(cfg.c2t_stride, level_strides)
        self.embed_dim = sum(cfg.channels)
        self.trans = BasicLayer(self.embed_dim, cfg, activation=nn.ReLU6)
        self.SIM = nn.ModuleList()  # noqa: N815 - official attribute name (checkpoint keys)
        coarsest = level_strides[-1] * cfg.c2t_stride
        for i, ch in enumerate(cfg.channels):
            if i in cfg.decode_out_indices:
                self.SIM.append(InjectionMultiSum(ch, cfg.out_channels[i], coarsest // level_strides[i]))
            else:
                self.SIM.append(nn.Identity())
        decoded = [cfg.out_channels[i] for i in cfg.decode_out_indices]
        #: channels and strides of (X3, X4, X5, X6)
        self.out_channels = tuple(decoded) + (self.embed_dim,)
        self.out_strides = tuple(level_strides[i] for i in cfg.decode_out_indices) + (coarsest,)
        self._init_weights()

    @staticmethod
    def _level_strides(cfg: TopFormerConfig) -> tuple[int, ...]:
        stride, strides = 2, []  # the stem has stride 2
        for i, (_, _, _, s) in enumerate(cfg.blocks):
            stride *= s
            if i in cfg.embed_out_indices:
                strides.append(stride)
        return tuple(strides)

    def _init_weights(self) -> None:
        # He-normal for convs, as the official ``init_weights`` does before loading a checkpoint.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        pyramid = self.tpm(x)
        tokens = self.trans(self.ppa(pyramid))
        semantics = tokens.split(list(self.cfg.channels), dim=1)
        injected = [self.SIM[i](pyramid[i], semantics[i]) for i in self.cfg.decode_out_indices]
        return injected[0], injected[1], injected[2], tokens
