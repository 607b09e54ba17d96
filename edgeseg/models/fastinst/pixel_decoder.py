"""FastInst's pixel decoder: PPM-FPN (``PyramidPoolingModuleFPN`` in the official code).

An FPN over the backbone's strides 8, 16 and 32 (ResNet's res3..res5), with a pyramid
pooling module (PSPNet: average pools to 1x1, 2x2, 3x3 and 6x6, a 1x1 conv each,
upsampled back and concatenated) on the coarsest level for a global receptive field.
Each level: a 1x1 lateral conv + norm (``adapter_N``), the upsampled coarser level added,
a 3x3 conv + norm + ReLU (``layer_N``). It returns the three levels coarse to fine
``(E5, E4, E3)``: E4 (stride 16) feeds the query selection, E3 (stride 8) is the decoder's
pixel features.

Names follow the official module (detectron2 ``Conv2d`` with its norm as the child
``norm``: ``adapter_1.weight``, ``adapter_1.norm.weight``, ``ppm.stages.0.1.weight``...).

Export: adaptive average pooling to 3x3 / 6x6 from maps that are not multiples of 3 or 6
(a 256 input gives 8x8) has no portable ONNX form, and neither has resizing back by 8/3;
both are linear maps of the static sizes, so they are written as products with constant
matrices (exactly AdaptiveAvgPool2d and bilinear ``align_corners=False``), which every
target runs as MatMul.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.decoding import resize_matrix
from edgeseg.models.layers import static_hw

PPM_SIZES = (1, 2, 3, 6)


def adaptive_pool_matrix(out_size: int, in_size: int) -> np.ndarray:
    """``[out, in]`` averaging weights of ``AdaptiveAvgPool`` along one axis (PyTorch's bins:
    ``floor(i * in / out)`` to ``ceil((i + 1) * in / out)``)."""
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        m[i, start:end] = 1.0 / (end - start)
    return m.astype(np.float32)


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "GN":
        # detectron2's get_norm("GN") is GroupNorm(32, C); narrow test widths take fewer groups.
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "BN":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}")


class D2Conv(nn.Conv2d):
    """detectron2's ``Conv2d``: a conv with an optional ``norm`` child and activation."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str | None = None, relu: bool = False):
        super().__init__(cin, cout, kernel, padding=kernel // 2, bias=norm is None)
        self.norm = norm_layer(norm, cout) if norm else None
        self.relu = relu
        # c2_xavier_fill, as the official pixel decoder initialises its convs.
        nn.init.kaiming_uniform_(self.weight, a=1)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class _LinearMaps(nn.Module):
    """Constant pooling / resizing matrices per feature size (built on first use)."""

    def __init__(self):
        super().__init__()
        self._cache: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def get(self, hw: tuple[int, int], size: int, ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = (hw, size, ref.dtype, ref.device)
        if key not in self._cache:
            h, w = hw
            mats = (adaptive_pool_matrix(size, h).T, adaptive_pool_matrix(size, w).T,  # [h, s], [w, s]
                    resize_matrix(h, size).T, resize_matrix(w, size).T)                # [s, h], [s, w]
            self._cache[key] = tuple(torch.from_numpy(np.ascontiguousarray(m)).to(ref) for m in mats)
        return self._cache[key]


def _apply_rows_cols(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``R^T @ x @ C`` on the last two axes, with the constants always on the right of a
    MatMul (``[B, C, H, W] @ [W, w']``, transpose, ``@ [H, h']``, transpose back)."""
    y = torch.matmul(x, cols)                       # [B, C, H, w']
    y = torch.matmul(y.transpose(-1, -2), rows)     # [B, C, w', h']
    return y.transpose(-1, -2)                      # [B, C, h', w']


class PyramidPoolingModule(nn.Module):
    """PSPNet's PPM: ``stages.i`` = (pool to s x s, 1x1 conv with bias); ReLU, resize back,
    concatenate with the input, ``bottleneck`` 1x1 conv with bias + ReLU."""

    def __init__(self, channels: int, stage_channels: int, sizes: tuple[int, ...] = PPM_SIZES):
        super().__init__()
        self.sizes = tuple(sizes)
        # Sequential(pool, conv) so the conv's keys are ``stages.i.1.*`` as in the official module.
        self.stages = nn.ModuleList(nn.Sequential(nn.Identity(), nn.Conv2d(channels, stage_channels, 1))
                                    for _ in sizes)
        self.bottleneck = nn.Conv2d(channels + len(sizes) * stage_channels, channels, 1)
        self.maps = _LinearMaps()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = static_hw(x)
        priors = []
        for size, stage in zip(self.sizes, self.stages):
            pool_h, pool_w, up_h, up_w = self.maps.get(hw, size, x)
            pooled = _apply_rows_cols(x, pool_h, pool_w)
            y = F.relu(stage[1](pooled))
            priors.append(_apply_rows_cols(y, up_h, up_w))
        return F.relu(self.bottleneck(torch.cat(priors + [x], dim=1)))


def _up_to(y: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if static_hw(y) == (hw[0] // 2, hw[1] // 2) and hw[0] % 2 == 0 and hw[1] % 2 == 0:
        # An exact 2x: a constant-scale Resize (the same numbers as resizing to the size).
        return F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
    return F.interpolate(y, size=hw, mode="bilinear", align_corners=False)


class PPMFPN(nn.Module):
    """Backbone features at strides (8, 16, 32) -> ``(E5, E4, E3)``, each ``hidden_dim`` wide."""

    def __init__(self, in_channels: tuple[int, int, int], hidden_dim: int, norm: str = "GN"):
        super().__init__()
        for i, c in enumerate(in_channels, start=1):
            self.add_module(f"adapter_{i}", D2Conv(c, hidden_dim, 1, norm=norm))
            self.add_module(f"layer_{i}", D2Conv(hidden_dim, hidden_dim, 3, norm=norm, relu=True))
        self.ppm = PyramidPoolingModule(hidden_dim, hidden_dim // 4)
        self.num_levels = len(in_channels)

    def forward(self, x3: torch.Tensor, x4: torch.Tensor, x5: torch.Tensor):
        feats = (x3, x4, x5)
        outs = []
        y = None
        for i in range(self.num_levels, 0, -1):  # coarse to fine, as the official top-down loop
            lateral = getattr(self, f"adapter_{i}")(feats[i - 1])
            y = self.ppm(lateral) if y is None else lateral + _up_to(y, static_hw(lateral))
            y = getattr(self, f"layer_{i}")(y)
            outs.append(y)
        return tuple(outs)
