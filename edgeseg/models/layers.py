"""Small building blocks shared by the zoo's decoders.

Every block here is written to export to a *portable* ONNX graph (opset 17, static
shapes): no Einsum (TNN on ARM lacks it), no Erf/GELU (a TFLite Flex op), Softmax only
on the last axis, and LayerNorm spelled out in elementwise ops (TensorRT 8.5 on
JetPack 5 and older TNN converters have no ``LayerNormalization``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def static_hw(x: torch.Tensor) -> tuple[int, int]:
    """Spatial size of an NCHW tensor as Python ints, also while tracing for ONNX export.

    Exported graphs are static-shape by design, so baking the traced size in as a
    constant is exactly what we want; the tracer's warning about it is silenced here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(x.shape[-2]), int(x.shape[-1])


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + optional ReLU: the decoders' basic conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class PortableLayerNorm(nn.Module):
    """LayerNorm over the last axis, written as mean/sub/mul/sqrt/div.

    Numerically the same as ``nn.LayerNorm`` (same ``weight``/``bias`` names, so state
    dicts are interchangeable) but it exports to ops every backend has, instead of
    opset-17 ``LayerNormalization`` which TensorRT < 8.6 cannot parse.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centered = x - x.mean(dim=-1, keepdim=True)
        var = (centered * centered).mean(dim=-1, keepdim=True)
        return centered / torch.sqrt(var + self.eps) * self.weight + self.bias


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with separate q/k/v projections, batch-first.

    Written out (Linear, Reshape, Transpose, MatMul, Softmax(-1)) rather than with
    ``nn.MultiheadAttention``, whose exported graph depends on the torch version and
    whose packed ``in_proj_weight`` quantizes worse per tensor.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        b, n, c = query.shape
        q = self._split(self.q_proj(query)) * self.scale
        k = self._split(self.k_proj(key))
        v = self._split(self.v_proj(value))
        attn = torch.matmul(q, k.transpose(-2, -1)).softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, c)
        return self.out_proj(out)


class CrossAttentionLayer(nn.Module):
    """Queries attend to a feature map (post-norm, as in DETR / Mask2Former)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm = PortableLayerNorm(dim)

    def forward(self, queries, query_pos, memory, memory_pos):
        out = self.attn(queries + query_pos, memory + memory_pos, memory)
        return self.norm(queries + out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm = PortableLayerNorm(dim)

    def forward(self, queries, query_pos):
        qk = queries + query_pos
        return self.norm(queries + self.attn(qk, qk, queries))


class FFNLayer(nn.Module):
    """Two-layer MLP with ReLU (not GELU: Erf is a Flex op in TFLite)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.norm = PortableLayerNorm(dim)

    def forward(self, x):
        return self.norm(x + self.fc2(F.relu(self.fc1(x))))


def sine_position_embedding(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised 2-D sine embedding, flattened to ``[height*width, dim]`` (row-major).

    Computed in NumPy from the static feature size, so an exported graph carries it as
    one constant instead of a chain of Range/Sin/Cos ops.
    """
    if dim % 4:
        raise ValueError(f"sine position embedding needs a width divisible by 4, got {dim}")
    half = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    # Cumulative-sum positions 1..H normalised to (0, 2*pi], exactly as DETR's normalize=True.
    y = (np.arange(1, height + 1, dtype=np.float64) / (height + eps)) * scale
    x = (np.arange(1, width + 1, dtype=np.float64) / (width + eps)) * scale
    dim_t = temperature ** (2 * (np.arange(half) // 2) / half)
    py = y[:, None] / dim_t  # [H, half]
    px = x[:, None] / dim_t  # [W, half]
    # Interleave sin on even and cos on odd feature indices.
    py = np.stack([np.sin(py[:, 0::2]), np.cos(py[:, 1::2])], axis=2).reshape(height, half)
    px = np.stack([np.sin(px[:, 0::2]), np.cos(px[:, 1::2])], axis=2).reshape(width, half)
    pos = np.concatenate([np.repeat(py[:, None, :], width, axis=1),
                          np.repeat(px[None, :, :], height, axis=0)], axis=2)
    return torch.from_numpy(pos.reshape(height * width, dim).astype(np.float32))


class TransformerDecoderLayer(nn.Module):
    """Cross-attention to a feature map, then self-attention among queries, then FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.cross_attn = CrossAttentionLayer(dim, num_heads)
        self.self_attn = SelfAttentionLayer(dim, num_heads)
        self.ffn = FFNLayer(dim, ffn_dim)

    def forward(self, queries, query_pos, memory, memory_pos):
        queries = self.cross_attn(queries, query_pos, memory, memory_pos)
        queries = self.self_attn(queries, query_pos)
        return self.ffn(queries)


class PackedAttention(nn.Module):
    """Batch-first multi-head attention with ``nn.MultiheadAttention``'s parameter names
    (``in_proj_weight`` / ``in_proj_bias`` / ``out_proj``: the official FastInst and IFC
    checkpoints' layout), written out in MatMul / Softmax(-1), with an optional additive
    bias ``[B, 1, Nq, Nk]`` (masked attention)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor, part: int) -> torch.Tensor:
        d = self.dim
        y = F.linear(x, self.in_proj_weight[part * d:(part + 1) * d], self.in_proj_bias[part * d:(part + 1) * d])
        b, n, _ = y.shape
        return y.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)   # [B, h, n, hd]

    def forward(self, query, key, value, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = query.shape
        q = self._heads(query, 0) * (self.head_dim ** -0.5)
        k, v = self._heads(key, 1), self._heads(value, 2)
        logits = torch.matmul(q, k.transpose(-2, -1))
        if bias is not None:
            logits = logits + bias
        out = torch.matmul(logits.softmax(-1), v).transpose(1, 2).reshape(b, n, self.dim)
        return self.out_proj(out)
