"""IFC's transformer: the encoder with memory tokens and the clip decoder.

Parameter names follow the official implementation (sukjunhwang/IFC, DETR-derived), so
its checkpoints load through a prefix map only (``weights.py``): attention keeps
``nn.MultiheadAttention``'s packed ``in_proj_weight`` / ``in_proj_bias`` and ``out_proj``,
layers keep ``linear1`` / ``linear2`` / ``norm1..3``, the encoder its ``enc_layers`` and
``bus_layers``, the decoder its ``layers`` and final ``norm``. The computation is written
for a portable static graph instead: batch-first tensors, the packed projection applied as
three MatMuls (their slices of the weight fold into three constants at export), LayerNorm
spelled out (:class:`~edgeseg.models.layers.PortableLayerNorm`), Softmax on the last axis,
no Einsum, no GELU. Post-norm layers only (the official configurations' ``PRE_NORM: False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.layers import PackedAttention, PortableLayerNorm


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """Self-attention + FFN, post-norm (DETR's ``TransformerEncoderLayer``)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn = PackedAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = PortableLayerNorm(dim)
        self.norm2 = PortableLayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        qk = _with_pos(x, pos)
        x = self.norm1(x + self.self_attn(qk, qk, x))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class DecoderLayer(nn.Module):
    """Self-attention among queries, cross-attention to the clip, FFN; post-norm."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn = PackedAttention(dim, num_heads)
        self.multihead_attn = PackedAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = PortableLayerNorm(dim)
        self.norm2 = PortableLayerNorm(dim)
        self.norm3 = PortableLayerNorm(dim)

    def forward(self, tgt, memory, pos, query_pos):
        qk = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(qk, qk, tgt))
        tgt = self.norm2(tgt + self.multihead_attn(tgt + query_pos, memory + pos, memory))
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    """DETR's MLP: ``layers.0 .. layers.{n-1}``, ReLU between them."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class IFCEncoder(nn.Module):
    """The stride-32 features of every frame -> encoded tokens and memory tokens.

    Each of the N_E blocks is

    * **Encode-Receive**: per frame, self-attention over the frame's h*w tokens and its M
      memory tokens together (the memory tokens receive the frame's content);
    * **Gather-Communicate**: per memory index m, self-attention over the T memory tokens
      of that index, one per frame (the frames exchange what their memories gathered).

    ``input_proj`` (the official model keeps it beside the transformer) projects the
    backbone's channels to ``hidden_dim``; ``memory_bus`` and ``memory_pos`` are the M
    learned memory tokens and their position embeddings (the decoder uses ``memory_pos``
    too).
    """

    def __init__(self, in_channels: int, dim: int, num_heads: int, ffn_dim: int, num_layers: int,
                 num_memory: int):
        super().__init__()
        self.enc_layers = nn.ModuleList(EncoderLayer(dim, num_heads, ffn_dim) for _ in range(num_layers))
        self.bus_layers = nn.ModuleList(EncoderLayer(dim, num_heads, ffn_dim) for _ in range(num_layers))
        for p in self.parameters():  # DETR's init of the transformer (not of input_proj)
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.input_proj = nn.Conv2d(in_channels, dim, 1)
        self.memory_bus = nn.Parameter(torch.empty(num_memory, dim))
        self.memory_pos = nn.Parameter(torch.empty(num_memory, dim))
        nn.init.kaiming_normal_(self.memory_bus, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.memory_pos, mode="fan_out", nonlinearity="relu")

    def forward(self, features: torch.Tensor, pos: torch.Tensor, clips: int, frames: int):
        """``features [B*T, C_in, h, w]``, ``pos [h*w, C]`` -> tokens ``[B*T, h*w, C]`` and
        memory ``[B, T, M, C]``."""
        x = self.input_proj(features)
        bt, c, h, w = x.shape
        tokens = x.reshape(bt, c, h * w).transpose(1, 2)
        m = self.memory_bus.shape[0]
        bus = self.memory_bus.unsqueeze(0).expand(bt, m, c)
        full_pos = torch.cat([pos, self.memory_pos], dim=0).unsqueeze(0)
        for enc, gather in zip(self.enc_layers, self.bus_layers):
            both = enc(torch.cat([tokens, bus], dim=1), full_pos)          # Encode-Receive, per frame
            tokens, bus = both[:, : h * w], both[:, h * w:]
            per_index = bus.reshape(clips, frames, m, c).transpose(1, 2).reshape(clips * m, frames, c)
            per_index = gather(per_index)                                  # Gather-Communicate, per index
            bus = per_index.reshape(clips, m, frames, c).transpose(1, 2).reshape(bt, m, c)
        return tokens, bus.reshape(clips, frames, m, c)


class IFCDecoder(nn.Module):
    """N_q learned queries attend to every token and memory token of the clip.

    Holds the query embeddings (``query_embed``, official ``detr.query_embed``) and the
    class head (``class_embed``: 2-layer MLP to K+1 logits, the last one "no object").
    Returns the normalised query features of every layer (deep supervision) or the last.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, num_layers: int, num_queries: int,
                 num_classes: int):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads, ffn_dim) for _ in range(num_layers))
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.norm = PortableLayerNorm(dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.class_embed = MLP(dim, dim, num_classes + 1, 2)

    def forward(self, tokens: torch.Tensor, bus: torch.Tensor, pos: torch.Tensor, memory_pos: torch.Tensor,
                all_layers: bool = False):
        """``tokens [B*T, h*w, C]``, ``bus [B, T, M, C]``, ``pos [h*w, C]``, ``memory_pos [M, C]``
        -> (logits ``[L, B, N, K+1]``, queries ``[L, B, N, C]``), L = every layer or 1."""
        b, t, m, c = bus.shape
        hw = tokens.shape[1]
        memory = torch.cat([tokens.reshape(b, t * hw, c), bus.reshape(b, t * m, c)], dim=1)
        memory_positions = torch.cat([pos.repeat(t, 1), memory_pos.repeat(t, 1)], dim=0).unsqueeze(0)
        n = self.query_embed.weight.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, n, c)
        out = torch.zeros_like(query_pos)
        states = []
        for i, layer in enumerate(self.layers):
            out = layer(out, memory, memory_positions, query_pos)
            if all_layers or i == len(self.layers) - 1:
                states.append(self.norm(out))
        queries = torch.stack(states)
        return self.class_embed(queries), queries
