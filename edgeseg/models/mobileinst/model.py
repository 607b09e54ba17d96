"""MobileInst (Zhang et al., "MobileInst: Video Instance Segmentation on the Mobile", AAAI 2024).

Three components, each one attribute so ONNX node scopes (``/backbone/...``) name them:

* ``backbone``: a mobile backbone (TopFormer or MobileNetV2) giving X3, X4, X5 (strides
  8, 16, 32) and the global features X6 (stride 64).
* ``mask_decoder``: the *semantic-enhanced mask decoder*. X3-X5 are fused top-down then
  bottom-up (3x3 convs after each fusion); two semantic enhancers inject X6 at the
  coarsest level, before the top-down pass and after the bottom-up pass; the result is
  summed down to 1/8 and projected to the D-dim mask features.
* ``instance_decoder``: the *dual transformer instance decoder*. N learnable queries
  cross-attend to X6 (global decoder), then to the mask features max-pooled by 8 to
  the same 1/64 grid (local decoder); each decoder is cross-attention, self-attention,
  FFN, with sine position embeddings on the memory. Heads give class logits, an
  IoU-aware objectness logit and a D-dim mask kernel per query; masks are
  ``kernels @ mask_features`` as one batched MatMul.

``forward(image)`` returns ``(logits, objectness, kernels, mask_features, masks)``.
``features_model()`` is the "features graph" for video kernel reuse: image ->
mask features only, sharing the backbone and mask decoder.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.data.preprocess import InputSpec, check_input_side
from edgeseg.errors import EdgesegError
from edgeseg.models.backbones import build_backbone
from edgeseg.models.base import ComponentMap
from edgeseg.models.contract import config_from, input_size_of
from edgeseg.models.layers import (ConvNormAct, PortableLayerNorm, TransformerDecoderLayer,
                                   sine_position_embedding, static_hw)

from edgeseg.models.mobileinst.family import (COMPONENTS, INPUT_STRIDE, MASK_STRIDE, OUTPUT_NAMES,
                                               PRECISION_PRESETS, MobileInstConfig)


# --------------------------------------------------------------------------- mask decoder
def _up2(x: torch.Tensor) -> torch.Tensor:
    # A constant scale factor keeps the exported Resize free of shape arithmetic.
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _down2(x: torch.Tensor) -> torch.Tensor:
    # Bilinear downsampling by exactly 2 (align_corners=False) samples at the centre of
    # each 2x2 block, i.e. their mean: AveragePool is the same numbers and runs everywhere.
    return F.avg_pool2d(x, 2, 2)


class SemanticEnhancer(nn.Module):
    """Enhance local features with global semantics: ``out(l * g + g)``, l and g 1x1 conv+BN+ReLU."""

    def __init__(self, dim: int):
        super().__init__()
        self.local_proj = ConvNormAct(dim, dim, 1)
        self.global_proj = ConvNormAct(dim, dim, 1)
        self.out = ConvNormAct(dim, dim, 1)

    def forward(self, x: torch.Tensor, x_global: torch.Tensor) -> torch.Tensor:
        g = self.global_proj(x_global)
        return self.out(self.local_proj(x) * g + g)


class SemanticEnhancedMaskDecoder(nn.Module):
    """(X3, X4, X5, X6) -> mask features ``[B, D, H/8, W/8]``."""

    def __init__(self, in_channels: tuple[int, int, int], global_channels: int, dim: int, mask_dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(ConvNormAct(c, dim, 1) for c in in_channels)
        self.global_proj = ConvNormAct(global_channels, dim, 1)
        self.enhance_in = SemanticEnhancer(dim)
        self.top_down = nn.ModuleList(ConvNormAct(dim, dim, 3) for _ in range(3))
        self.bottom_up = nn.ModuleList(ConvNormAct(dim, dim, 3) for _ in range(3))
        self.enhance_out = SemanticEnhancer(dim)
        self.mask_proj = nn.Conv2d(dim, mask_dim, 1)

    def forward(self, x3, x4, x5, x6) -> torch.Tensor:
        l3, l4, l5 = (conv(x) for conv, x in zip(self.lateral, (x3, x4, x5)))
        g = _up2(self.global_proj(x6))  # stride 64 -> 32, shared by both enhancers
        # top-down: semantics enter at 1/32 and flow to the finer levels
        t5 = self.enhance_in(l5, g)
        t4 = l4 + _up2(t5)
        t3 = l3 + _up2(t4)
        t3, t4, t5 = (conv(t) for conv, t in zip(self.top_down, (t3, t4, t5)))
        # bottom-up: fine detail flows back to the coarse levels
        b4 = t4 + _down2(t3)
        b5 = t5 + _down2(b4)
        b3, b4, b5 = (conv(b) for conv, b in zip(self.bottom_up, (t3, b4, b5)))
        # enhance again, then collect everything at 1/8
        o5 = self.enhance_out(b5, g)
        o3 = b3 + _up2(b4 + _up2(o5))
        return self.mask_proj(o3)


# ----------------------------------------------------------------------- instance decoder
class DualTransformerInstanceDecoder(nn.Module):
    """(X6, mask features) -> logits, objectness, kernels, masks."""

    def __init__(self, global_channels: int, mask_dim: int, hidden_dim: int, num_queries: int,
                 num_classes: int, num_heads: int, ffn_dim: int, memory_hw: tuple[int, int],
                 local_pool: int = INPUT_STRIDE // MASK_STRIDE):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.local_pool = local_pool
        self.query_feat = nn.Parameter(torch.randn(num_queries, hidden_dim))
        self.query_pos = nn.Parameter(torch.randn(num_queries, hidden_dim))
        self.global_proj = nn.Conv2d(global_channels, hidden_dim, 1)
        self.local_proj = nn.Conv2d(mask_dim, hidden_dim, 1)
        self.global_decoder = TransformerDecoderLayer(hidden_dim, num_heads, ffn_dim)
        self.local_decoder = TransformerDecoderLayer(hidden_dim, num_heads, ffn_dim)
        self.norm = PortableLayerNorm(hidden_dim)
        self.cls_head = nn.Linear(hidden_dim, num_classes)
        self.objectness_head = nn.Linear(hidden_dim, 1)
        self.kernel_head = nn.Linear(hidden_dim, mask_dim)
        # Both memories live on the same 1/64 grid, so they share one position embedding,
        # precomputed for the configured input size (an initializer in the ONNX graph).
        self._memory_hw = tuple(memory_hw)
        self.register_buffer("memory_pos", sine_position_embedding(*memory_hw, hidden_dim)[None],
                             persistent=False)
        self._init_heads()

    def _init_heads(self) -> None:
        # As SparseInst: a 0.01 prior on class probability so the focal/BCE loss starts
        # near its minimum for the many background queries; small random kernels.
        prior = 0.01
        nn.init.constant_(self.cls_head.bias, -math.log((1 - prior) / prior))
        nn.init.normal_(self.kernel_head.weight, std=0.01)
        nn.init.zeros_(self.kernel_head.bias)

    def _memory_pos(self, hw: tuple[int, int], ref: torch.Tensor) -> torch.Tensor:
        if hw == self._memory_hw:
            return self.memory_pos
        # Another input size in eager mode (e.g. training crops): compute on the fly.
        return sine_position_embedding(*hw, self.hidden_dim)[None].to(ref)

    @staticmethod
    def _tokens(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, c, h * w).transpose(1, 2)

    def forward(self, x6: torch.Tensor, mask_features: torch.Tensor):
        b, d, h8, w8 = mask_features.shape
        global_memory = self._tokens(self.global_proj(x6))
        pooled = F.max_pool2d(mask_features, self.local_pool, self.local_pool)
        local_memory = self._tokens(self.local_proj(pooled))
        pos = self._memory_pos(static_hw(x6), global_memory)

        n, c = self.query_feat.shape
        query_pos = self.query_pos.unsqueeze(0).expand(b, n, c)
        queries = self.query_feat.unsqueeze(0).expand(b, n, c)
        queries = self.global_decoder(queries, query_pos, global_memory, pos)
        queries = self.local_decoder(queries, query_pos, local_memory, pos)
        queries = self.norm(queries)

        logits = self.cls_head(queries)
        objectness = self.objectness_head(queries)
        kernels = self.kernel_head(queries)
        # [B, N, D] @ [B, D, HW] -> [B, N, HW]: a batched MatMul (no Einsum: TNN/ARM lacks it).
        masks = torch.matmul(kernels, mask_features.reshape(b, d, h8 * w8))
        return logits, objectness, kernels, masks.reshape(b, kernels.shape[1], h8, w8)


# --------------------------------------------------------------------------------- models
class MobileInst(nn.Module):
    """The full frame graph: image -> (logits, objectness, kernels, mask_features, masks)."""

    output_names = OUTPUT_NAMES

    def __init__(self, cfg: MobileInstConfig, name: str = "mobileinst"):
        super().__init__()
        self.cfg = cfg
        height, width = cfg.input_size
        self.backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
        c3, c4, c5, c6 = self.backbone.out_channels
        self.mask_decoder = SemanticEnhancedMaskDecoder((c3, c4, c5), c6, cfg.decoder_dim, cfg.mask_dim)
        self.instance_decoder = DualTransformerInstanceDecoder(
            c6, cfg.mask_dim, cfg.hidden_dim, cfg.num_queries, cfg.num_classes, cfg.num_heads,
            cfg.ffn_dim, memory_hw=(height // INPUT_STRIDE, width // INPUT_STRIDE))
        self.model_name = name
        self.num_classes = cfg.num_classes
        self.num_queries = cfg.num_queries
        self.mask_dim = cfg.mask_dim
        self.mask_stride = MASK_STRIDE
        self.component_map = ComponentMap({c: c for c in COMPONENTS})
        self.input_spec = InputSpec(height=height, width=width, stride=INPUT_STRIDE)
        self.precision_presets = dict(PRECISION_PRESETS)

    def forward(self, image: torch.Tensor):
        x3, x4, x5, x6 = self.backbone(image)
        mask_features = self.mask_decoder(x3, x4, x5, x6)
        logits, objectness, kernels, masks = self.instance_decoder(x6, mask_features)
        return logits, objectness, kernels, mask_features, masks

    def features_model(self) -> "MobileInstFeatures":
        return MobileInstFeatures(self)

    def graph_modules(self) -> dict[str, nn.Module]:
        """Graphs beyond the frame graph: the features graph for video kernel reuse."""
        return {"features": self.features_model()}


def _presets_without(presets: dict[str, str], dropped: set[str]) -> dict[str, str]:
    """Presets restricted to the components a sub-graph still has."""
    out = {}
    for name, spec in presets.items():
        items = [it for it in spec.split(",") if it.split("=", 1)[0].strip() not in dropped]
        if items:
            out[name] = ",".join(items)
    return out


class MobileInstFeatures(nn.Module):
    """The features graph for video kernel reuse: image -> mask features, same weights."""

    output_names = ["mask_features"]

    def __init__(self, full: MobileInst):
        super().__init__()
        # The very same module objects, not copies: one set of weights, two graphs.
        self.backbone = full.backbone
        self.mask_decoder = full.mask_decoder
        self.model_name = full.model_name
        self.model_cfg = getattr(full, "model_cfg", None)
        self.family = getattr(full, "family", None)
        self.graph = "features"
        self.component_map = ComponentMap({c: c for c in COMPONENTS if c != "instance_decoder"})
        self.input_spec = full.input_spec
        self.precision_presets = _presets_without(full.precision_presets, {"instance_decoder"})
        self.train(full.training)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x3, x4, x5, x6 = self.backbone(image)
        return self.mask_decoder(x3, x4, x5, x6)


# ------------------------------------------------------------------------------ builder
def build(name: str, cfg: dict[str, Any]) -> MobileInst:
    """The family's builder (``Family.build``): a variant's config -> the module."""
    config = config_from(MobileInstConfig, name, cfg)
    config.input_size = input_size_of(config.input_size, INPUT_STRIDE,
                                      "MobileInst's global features sit at stride 64")
    if config.hidden_dim % config.num_heads:
        raise EdgesegError(f"hidden_dim {config.hidden_dim} is not divisible by num_heads {config.num_heads}",
                           "pick num_heads dividing hidden_dim")
    return MobileInst(config, name=name)
