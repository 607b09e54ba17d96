"""FastInst's dual-path Transformer decoder (``FastInstDecoder`` in the official code).

Queries: the ``num_queries`` instance-activation-guided queries from the query selector
plus ``num_aux_queries`` learnable auxiliary ones (``empty_query_features``), with
positions gathered from (resp. learned beside) a learnable ``meta_pos_embed`` grid that is
resized to each feature map. Pixels: the stride-8 features E3 as tokens.

Each of the D layers is *pixel-then-query*: the pixel features cross-attend to the
queries (``transformer_mask_cross_attention_layers`` + ``transformer_mask_ffn_layers``),
then the queries cross-attend to the updated pixels with masked attention, self-attend
and pass an FFN (``transformer_query_*``). Before each layer, prediction heads
(``decoder_query_norm_layers``, ``class_embed_layers``, ``mask_embed_layers``,
``mask_features_layers``; D + 1 of each) turn the current queries and pixels into class
logits (C + 1, softmax) and mask logits (``mask embedding . pixel embedding``); a query
attends only to the pixels its current mask covers (logit >= 0), all of them if it covers
none, and auxiliary queries attend everywhere. All layers are post-norm, ReLU FFNs.

Parameter names are the official ones; attention keeps ``nn.MultiheadAttention``'s
packed ``in_proj_weight`` / ``in_proj_bias`` / ``out_proj``, sliced per projection in
``forward`` (the export folds the slices into three constants).

Export: masked attention is an additive bias ``-1e4 * mask`` before the Softmax (no
boolean mask, no Where: TNN has no ARM kernel for it), the mask built with
``relu(sign(-logit))``; ``1e4`` is far beyond any attention logit, so the masked
probabilities are exactly 0 in fp32 and fp16, as with the official ``-inf``.

Training: :meth:`FastInstDecoder.forward` also returns everything the objective needs
(:class:`DecoderState`), and :meth:`guided_pass` re-runs the layers with ground-truth
masks as attention masks (GT mask-guided learning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.layers import PackedAttention, PortableLayerNorm, static_hw

MASKED_LOGIT = -1e4   # added to the attention logits of pixels outside a query's mask


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.multihead_attn = PackedAttention(dim, num_heads)
        self.norm = PortableLayerNorm(dim)

    def forward(self, tgt, memory, pos=None, query_pos=None, bias=None):
        q = tgt if query_pos is None else tgt + query_pos
        k = memory if pos is None else memory + pos
        return self.norm(tgt + self.multihead_attn(q, k, memory, bias))


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.self_attn = PackedAttention(dim, num_heads)
        self.norm = PortableLayerNorm(dim)

    def forward(self, tgt, query_pos=None):
        qk = tgt if query_pos is None else tgt + query_pos
        return self.norm(tgt + self.self_attn(qk, qk, tgt))


class FFNLayer(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = PortableLayerNorm(dim)
        for p in (self.linear1.weight, self.linear2.weight):
            nn.init.xavier_uniform_(p)

    def forward(self, x):
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MLP(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, num_layers: int):
        super().__init__()
        dims = [cin] + [hidden] * (num_layers - 1) + [cout]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def attention_bias(masked: torch.Tensor, num_aux: int) -> torch.Tensor:
    """``[B, N, HW]`` 0/1 "outside the mask" -> additive bias ``[B, 1, N + aux, HW]``.

    A query masked everywhere attends everywhere (the official ``invalid_query`` rule);
    auxiliary queries are never masked.
    """
    everywhere = 1.0 - (1.0 - masked).amax(-1, keepdim=True)   # 1 if the query covers no pixel
    masked = masked * (1.0 - everywhere)
    if num_aux:
        b, _, hw = masked.shape
        masked = torch.cat([masked, masked.new_zeros(b, num_aux, hw)], dim=1)
    return masked[:, None] * MASKED_LOGIT


@dataclass
class Prediction:
    logits: torch.Tensor | None   # [B, N, C+1]
    masks: torch.Tensor           # [B, N, HW] mask logits at stride 8


@dataclass
class DecoderState:
    """What one training forward leaves for the objective."""

    predictions: list[Prediction]            # heads before layer 1, after each layer (D + 1)
    queries: list[torch.Tensor]              # query features after each layer (D)
    pixels: list[torch.Tensor]               # pixel features after each layer (D)
    query_pos: torch.Tensor
    pixel_pos: torch.Tensor
    proposal_logits: torch.Tensor            # [B, C+1, h16, w16]
    selected: torch.Tensor | None            # [B, K] picked pixel indices on the stride-16 grid
    proposal_hw: tuple[int, int]
    pixel_hw: tuple[int, int]
    pixel_features: torch.Tensor             # E3 tokens [B, HW, C] as they enter the first layer
    guided: list[Prediction] = field(default_factory=list)


class FastInstDecoder(nn.Module):
    """(E3, the selected queries) -> class logits ``[B, N, C+1]``, mask logits ``[B, N, h8, w8]``."""

    def __init__(self, hidden_dim: int, mask_dim: int, num_classes: int, num_queries: int, num_aux_queries: int,
                 num_heads: int, ffn_dim: int, dec_layers: int):
        super().__init__()
        if dec_layers < 1:
            raise ValueError(f"the decoder needs at least one layer, got {dec_layers}")
        self.num_heads, self.num_layers = num_heads, dec_layers
        self.num_queries, self.num_aux_queries = num_queries, num_aux_queries
        self.hidden_dim = hidden_dim
        size = int(round(math.sqrt(num_queries)))
        self.meta_pos_embed = nn.Parameter(torch.empty(1, hidden_dim, size, size))
        nn.init.uniform_(self.meta_pos_embed)   # the official code leaves it uninitialised (torch.empty)
        if num_aux_queries > 0:
            self.empty_query_features = nn.Embedding(num_aux_queries, hidden_dim)
            self.empty_query_pos_embed = nn.Embedding(num_aux_queries, hidden_dim)
        self.transformer_query_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, num_heads) for _ in range(dec_layers))
        self.transformer_query_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, num_heads) for _ in range(dec_layers))
        self.transformer_query_ffn_layers = nn.ModuleList(FFNLayer(hidden_dim, ffn_dim) for _ in range(dec_layers))
        self.transformer_mask_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, num_heads) for _ in range(dec_layers))
        self.transformer_mask_ffn_layers = nn.ModuleList(FFNLayer(hidden_dim, ffn_dim) for _ in range(dec_layers))
        self.decoder_query_norm_layers = nn.ModuleList(PortableLayerNorm(hidden_dim) for _ in range(dec_layers + 1))
        self.class_embed_layers = nn.ModuleList(MLP(hidden_dim, hidden_dim, num_classes + 1, 3)
                                                for _ in range(dec_layers + 1))
        self.mask_embed_layers = nn.ModuleList(MLP(hidden_dim, hidden_dim, mask_dim, 3)
                                               for _ in range(dec_layers + 1))
        self.mask_features_layers = nn.ModuleList(nn.Linear(hidden_dim, mask_dim) for _ in range(dec_layers + 1))

    # ------------------------------------------------------------------ pieces
    def positions(self, hw: tuple[int, int]) -> torch.Tensor:
        """``meta_pos_embed`` resized to ``hw`` as tokens ``[h*w, C]`` (a constant after export)."""
        pos = F.interpolate(self.meta_pos_embed, size=hw, mode="bilinear", align_corners=False)
        return pos.reshape(self.hidden_dim, hw[0] * hw[1]).transpose(0, 1)

    def heads(self, j: int, queries: torch.Tensor, pixels: torch.Tensor, with_class: bool = True) -> Prediction:
        dq = self.decoder_query_norm_layers[j](queries[:, :self.num_queries])
        logits = self.class_embed_layers[j](dq) if with_class else None
        embed = self.mask_embed_layers[j](dq)                      # [B, N, D]
        pixel_embed = self.mask_features_layers[j](pixels)         # [B, HW, D]
        # A batched MatMul (no Einsum: TNN/ARM and onnx2tf lack it).
        return Prediction(logits, torch.matmul(embed, pixel_embed.transpose(1, 2)))

    def mask_bias(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """Predicted mask logits ``[B, N, HW]`` -> the next layer's attention bias."""
        return attention_bias(F.relu(torch.sign(-mask_logits.detach())), self.num_aux_queries)

    def layer(self, i: int, queries, pixels, query_pos, pixel_pos, bias):
        """One pixel-then-query layer."""
        pixels = self.transformer_mask_cross_attention_layers[i](pixels, queries, pos=query_pos,
                                                                  query_pos=pixel_pos)
        pixels = self.transformer_mask_ffn_layers[i](pixels)
        queries = self.transformer_query_cross_attention_layers[i](queries, pixels, pos=pixel_pos,
                                                                    query_pos=query_pos, bias=bias)
        queries = self.transformer_query_self_attention_layers[i](queries, query_pos=query_pos)
        queries = self.transformer_query_ffn_layers[i](queries)
        return queries, pixels

    # ------------------------------------------------------------------ forward
    def forward(self, e3: torch.Tensor, queries: torch.Tensor, query_pos: torch.Tensor,
                proposal_logits: torch.Tensor | None = None, selected: torch.Tensor | None = None):
        """``e3`` ``[B, C, h8, w8]`` pixel features and the selected ``queries`` / ``query_pos``
        ``[B, K, C]`` -> (logits, masks); in training a :class:`DecoderState` (``proposal_logits``
        and ``selected`` are kept in it for the objective)."""
        b = e3.shape[0]
        pixel_hw = static_hw(e3)
        pixel_pos = self.positions(pixel_hw)
        if self.num_aux_queries:
            aux = self.empty_query_features.weight[None].expand(b, -1, -1)
            aux_pos = self.empty_query_pos_embed.weight[None].expand(b, -1, -1)
            queries = torch.cat([queries, aux], dim=1)
            query_pos = torch.cat([query_pos.expand(b, -1, -1), aux_pos], dim=1)
        pixels = pixel_features = e3.reshape(b, self.hidden_dim, pixel_hw[0] * pixel_hw[1]).transpose(1, 2)

        training = self.training
        pred = self.heads(0, queries, pixels, with_class=training)
        predictions, query_memory, pixel_memory = [pred], [], []
        for i in range(self.num_layers):
            queries, pixels = self.layer(i, queries, pixels, query_pos, pixel_pos, self.mask_bias(pred.masks))
            pred = self.heads(i + 1, queries, pixels, with_class=training or i + 1 == self.num_layers)
            predictions.append(pred)
            query_memory.append(queries)
            pixel_memory.append(pixels)
        if training:
            return DecoderState(predictions, query_memory, pixel_memory, query_pos, pixel_pos, proposal_logits,
                                selected, static_hw(proposal_logits), pixel_hw, pixel_features)
        return pred.logits, pred.masks.reshape(b, self.num_queries, *pixel_hw)

    def guided_pass(self, state: DecoderState, gt_masked: torch.Tensor) -> list[Prediction]:
        """GT mask-guided learning: layer i re-run on the main path's output of layer i, with
        attention masks from the ground truth matched to each query (``gt_masked`` ``[B, N, HW]``,
        1 outside the matched object; rows of unmatched queries 0), as the official decoder does."""
        bias = attention_bias(gt_masked, self.num_aux_queries)
        out = []
        for i in range(self.num_layers):
            queries, pixels = self.layer(i, state.queries[i], state.pixels[i], state.query_pos, state.pixel_pos,
                                         bias)
            out.append(self.heads(i + 1, queries, pixels))
        return out
