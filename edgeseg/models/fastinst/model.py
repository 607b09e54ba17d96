"""FastInst (He et al., CVPR 2023): the module, on the model-family contract.

Four components, each one attribute so ONNX node scopes (``/backbone/...``) name them:

* ``backbone``: ResNet-50/101 (detectron2 names; res3..res5 used), TopFormer or MobileNetV2
  (X3..X5 used: strides 8, 16, 32).
* ``pixel_decoder``: PPM-FPN (:mod:`.pixel_decoder`) -> E5, E4, E3.
* ``query_selector``: instance-activation-guided query selection on E4 (:mod:`.query_selector`).
* ``transformer_decoder``: the dual-path decoder on E3 (:mod:`.transformer_decoder`).

``forward(image)`` returns ``(logits, masks)``: class logits ``[B, N, C+1]`` (softmax; the
last class is "no object") and mask logits ``[B, N, H/8, W/8]`` of the N IA-guided queries.
In training mode it returns the decoder's :class:`~.transformer_decoder.DecoderState` for
the objective (``loss.py``), which also runs the GT mask-guided pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeseg.data.preprocess import InputSpec
from edgeseg.errors import EdgesegError
from edgeseg.models.backbones import build_backbone
from edgeseg.models.base import ComponentMap
from edgeseg.models.contract import config_from, input_size_of
from edgeseg.models.layers import static_hw
from edgeseg.models.fastinst.family import (COMPONENTS, INPUT_STRIDE, MASK_STRIDE, NORMS, OUTPUT_NAMES,
                                            PRECISION_PRESETS, QUERY_SELECTIONS, FastInstConfig)
from edgeseg.models.fastinst.pixel_decoder import PPMFPN
from edgeseg.models.fastinst.query_selector import QuerySelector
from edgeseg.models.fastinst.transformer_decoder import FastInstDecoder


def _strides_8_to_32(backbone: nn.Module) -> tuple[list[int], int]:
    """Which of the backbone's outputs are at strides 8, 16, 32 (and the input stride it needs)."""
    strides = list(backbone.out_strides)
    try:
        picks = [strides.index(s) for s in (8, 16, 32)]
    except ValueError:
        raise EdgesegError(f"FastInst needs backbone features at strides 8, 16 and 32, got {strides}",
                           "use a ResNet, TopFormer or MobileNetV2 backbone") from None
    return picks, max(strides)


class _NoGlobalBlock(nn.Module):
    """Stands in for MobileNetV2's stride-64 block, which FastInst does not read: the block
    would cost parameters that no loss reaches (its output is passed through unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FastInst(nn.Module):
    """The frame graph: image -> (logits, masks)."""

    output_names = OUTPUT_NAMES

    def __init__(self, cfg: FastInstConfig, name: str = "fastinst"):
        super().__init__()
        self.cfg = cfg
        height, width = cfg.input_size
        self.backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
        if hasattr(self.backbone, "global_block"):
            self.backbone.global_block = _NoGlobalBlock()
            self.backbone.out_strides = tuple(self.backbone.out_strides[:3]) + (32,)
        self._picks, stride = _strides_8_to_32(self.backbone)
        channels = tuple(self.backbone.out_channels[i] for i in self._picks)
        self.pixel_decoder = PPMFPN(channels, cfg.hidden_dim, cfg.norm)
        self.query_selector = QuerySelector(cfg.hidden_dim, cfg.num_queries, cfg.num_classes, cfg.query_select)
        self.transformer_decoder = FastInstDecoder(cfg.hidden_dim, cfg.mask_dim, cfg.num_classes, cfg.num_queries,
                                                   cfg.num_aux_queries, cfg.num_heads, cfg.ffn_dim, cfg.dec_layers)
        self.model_name = name
        self.num_classes = cfg.num_classes
        self.num_queries = cfg.num_queries
        self.hidden_dim = cfg.hidden_dim
        self.mask_stride = MASK_STRIDE
        self.component_map = ComponentMap({c: c for c in COMPONENTS})
        self.input_spec = InputSpec(height=height, width=width, stride=max(stride, INPUT_STRIDE))
        self.precision_presets = dict(PRECISION_PRESETS)

    def features(self, image: torch.Tensor):
        """Backbone + pixel decoder: (E5, E4, E3)."""
        feats = self.backbone(image)
        return self.pixel_decoder(*(feats[i] for i in self._picks))

    def forward(self, image: torch.Tensor):
        _e5, e4, e3 = self.features(image)
        # The selector reads the decoder's position grid resized to E4 (a constant once exported).
        proposal_pos = self.transformer_decoder.positions(static_hw(e4))
        queries, query_pos, proposal_logits, selected = self.query_selector(e4, proposal_pos)
        return self.transformer_decoder(e3, queries, query_pos, proposal_logits, selected)


def build(name: str, cfg: dict[str, Any]) -> FastInst:
    """The family's builder (``Family.build``): a variant's config -> the module."""
    config = config_from(FastInstConfig, name, cfg)
    if config.query_select not in QUERY_SELECTIONS:
        raise EdgesegError(f"unknown query_select {config.query_select!r}",
                           f"use one of: {', '.join(QUERY_SELECTIONS)}")
    if config.norm not in NORMS:
        raise EdgesegError(f"unknown pixel decoder norm {config.norm!r}", f"use one of: {', '.join(NORMS)}")
    if config.hidden_dim % config.num_heads:
        raise EdgesegError(f"hidden_dim {config.hidden_dim} is not divisible by num_heads {config.num_heads}",
                           "pick num_heads dividing hidden_dim")
    if config.hidden_dim % 4:
        raise EdgesegError(f"hidden_dim {config.hidden_dim} is not a multiple of 4 (the pyramid pooling "
                           "module's stage width is hidden_dim / 4)", "use e.g. 64, 128 or 256")
    if config.dec_layers < 1 or config.num_queries < 1 or config.num_aux_queries < 0:
        raise EdgesegError(f"dec_layers {config.dec_layers}, num_queries {config.num_queries}, num_aux_queries "
                           f"{config.num_aux_queries}: need at least 1 layer and 1 query", "e.g. dec_layers=1")
    try:
        model = FastInst(config, name=name)
    except ValueError as e:
        raise EdgesegError(f"cannot build {name}: {e}", "check the backbone name (`edgeseg models`)") from e
    config.input_size = input_size_of(config.input_size, model.input_spec.stride,
                                      "the backbone's coarsest features" if model.input_spec.stride > INPUT_STRIDE
                                      else "")
    h16, w16 = config.input_size[0] // 16, config.input_size[1] // 16
    if h16 * w16 < config.num_queries:
        raise EdgesegError(f"{config.num_queries} queries need at least that many pixels at stride 16; a "
                           f"{config.input_size[0]}x{config.input_size[1]} input has {h16 * w16}",
                           "use a larger input_size or fewer num_queries")
    return model
