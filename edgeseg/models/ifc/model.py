"""IFC (Hwang et al., "Video Instance Segmentation using Inter-Frame Communication
Transformers", NeurIPS 2021) as one ``nn.Module`` with four components:

* ``backbone``: ResNet-50/101 (detectron2 key names) or a mobile backbone (TopFormer,
  MobileNetV2), run on every frame; its stride-8, -16 and -32 maps are used.
* ``encoder``: input projection of the stride-32 map, then N_E blocks of Encode-Receive
  (per frame, its tokens + M memory tokens) and Gather-Communicate (per memory index,
  across the T frames) (:class:`~edgeseg.models.ifc.transformer.IFCEncoder`).
* ``decoder``: N_q learned queries over the whole clip (every frame's tokens and memory
  tokens) and the class head (K classes + "no object").
* ``mask_head``: the FPN-style spatial decoder to 1/8 and one dynamic 1x1 conv per query,
  applied to every frame.

``forward(clip)`` takes ``[T, 3, H, W]`` (one clip: the exported graph) or
``[B, T, 3, H, W]`` (a batch of clips: training) and returns ``logits [B, N_q, K+1]``
and ``masks [B, N_q, T, H/8, W/8]``; :meth:`IFC.forward_all_layers` returns every decoder
layer's predictions (deep supervision).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from edgeseg.data.preprocess import InputSpec
from edgeseg.errors import EdgesegError
from edgeseg.models.backbones import build_backbone
from edgeseg.models.base import ComponentMap
from edgeseg.models.contract import config_from, input_size_of
from edgeseg.models.layers import sine_position_embedding, static_hw

from edgeseg.models.ifc.family import (COMPONENTS, INPUT_STRIDE, MASK_STRIDE, OUTPUT_NAMES, PRECISION_PRESETS,
                                       IFCConfig)
from edgeseg.models.ifc.mask_head import MaskHead
from edgeseg.models.ifc.transformer import IFCDecoder, IFCEncoder

MAX_CLIP_LENGTH = 64


def _static_int(value) -> int:
    # Clip and batch sizes become constants of the static exported graph, as intended.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(value)


def _level_indices(strides: tuple[int, ...]) -> tuple[int, int, int]:
    """Indices of the stride-8, -16 and -32 maps among a backbone's outputs."""
    try:
        return strides.index(8), strides.index(16), strides.index(32)
    except ValueError:
        raise EdgesegError(f"IFC needs backbone maps at strides 8, 16 and 32; this backbone gives {strides}",
                           "use resnet50/101, topformer_* or mobilenetv2") from None


class IFC(nn.Module):
    """The clip graph: ``[T, 3, H, W]`` -> (logits, masks)."""

    output_names = OUTPUT_NAMES

    def __init__(self, cfg: IFCConfig, name: str = "ifc"):
        super().__init__()
        self.cfg = cfg
        height, width = cfg.input_size
        self.backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
        strides = tuple(self.backbone.out_strides)
        self._levels = _level_indices(strides)
        channels = self.backbone.out_channels
        c8, c16, c32 = (channels[i] for i in self._levels)
        self.encoder = IFCEncoder(c32, cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim, cfg.enc_layers, cfg.num_memory)
        self.decoder = IFCDecoder(cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim, cfg.dec_layers, cfg.num_queries,
                                  cfg.num_classes)
        self.mask_head = MaskHead(cfg.hidden_dim, (c16, c8), cfg.mask_groups)
        # DETR's sine embedding of the stride-32 grid, precomputed for the configured size
        # (one constant in the exported graph, shared by encoder and decoder).
        self._pos_hw = (height // 32, width // 32)
        self.register_buffer("frame_pos", sine_position_embedding(*self._pos_hw, cfg.hidden_dim), persistent=False)
        self.model_name = name
        self.num_classes = cfg.num_classes
        self.num_queries = cfg.num_queries
        self.clip_length = cfg.clip_length
        self.mask_stride = MASK_STRIDE
        self.component_map = ComponentMap({c: c for c in COMPONENTS})
        self.input_spec = InputSpec(height=height, width=width, stride=max(INPUT_STRIDE, max(strides)),
                                    frames=cfg.clip_length)
        self.precision_presets = dict(PRECISION_PRESETS)

    def _positions(self, hw: tuple[int, int], ref: torch.Tensor) -> torch.Tensor:
        if hw == self._pos_hw:
            return self.frame_pos
        return sine_position_embedding(*hw, self.cfg.hidden_dim).to(ref)

    def _run(self, clip: torch.Tensor, all_layers: bool):
        if clip.ndim == 4:
            clips, frames = 1, _static_int(clip.shape[0])
            images = clip
        elif clip.ndim == 5:
            clips, frames = _static_int(clip.shape[0]), _static_int(clip.shape[1])
            images = clip.reshape(clips * frames, *clip.shape[2:])
        else:
            raise EdgesegError(f"IFC takes a clip [T, 3, H, W] or clips [B, T, 3, H, W], got {tuple(clip.shape)}",
                               "stack the frames of a clip on the first axis")
        feats = self.backbone(images)
        f8, f16, f32 = (feats[i] for i in self._levels)
        pos = self._positions(static_hw(f32), f32)
        tokens, bus = self.encoder(f32, pos, clips, frames)
        logits, queries = self.decoder(tokens, bus, pos, self.encoder.memory_pos, all_layers=all_layers)
        bt, hw, c = tokens.shape
        h, w = static_hw(f32)
        encoded = tokens.transpose(1, 2).reshape(bt, c, h, w)
        masks = self.mask_head(encoded, f16, f8, queries, clips, frames)
        return logits, masks

    def forward(self, clip: torch.Tensor):
        logits, masks = self._run(clip, all_layers=False)
        return logits[-1], masks[-1]

    def forward_all_layers(self, clip: torch.Tensor):
        """Every decoder layer's ``(logits [L, B, N, K+1], masks [L, B, N, T, h, w])`` (training)."""
        return self._run(clip, all_layers=True)


# ------------------------------------------------------------------------------ builder
def build(name: str, cfg: dict[str, Any]) -> IFC:
    """The family's builder (``Family.build``): a variant's config -> the module."""
    config = config_from(IFCConfig, name, cfg)
    stride = 64 if not config.backbone.startswith("resnet") else INPUT_STRIDE
    config.input_size = input_size_of(config.input_size, stride,
                                      "IFC's encoder works on the stride-32 map" if stride == 32 else
                                      f"{config.backbone} computes a stride-64 level")
    t = config.clip_length
    if not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= MAX_CLIP_LENGTH:
        raise EdgesegError(f"clip length {t!r} is not a whole number of frames in 1..{MAX_CLIP_LENGTH}",
                           "use e.g. --clip-length 5 (IFC's near-online setting)")
    if config.hidden_dim % config.num_heads:
        raise EdgesegError(f"hidden_dim {config.hidden_dim} is not divisible by num_heads {config.num_heads}",
                           "pick num_heads dividing hidden_dim")
    if config.hidden_dim % 4:
        raise EdgesegError(f"hidden_dim {config.hidden_dim} is not a multiple of 4 (sine position embedding)",
                           "use e.g. 64 or 256")
    if config.hidden_dim % config.mask_groups:
        raise EdgesegError(f"hidden_dim {config.hidden_dim} is not divisible into {config.mask_groups} GroupNorm "
                           "groups", "pick mask_groups dividing hidden_dim")
    for key in ("num_queries", "num_memory", "enc_layers", "dec_layers"):
        if int(getattr(config, key)) < 1:
            raise EdgesegError(f"{key} must be at least 1, got {getattr(config, key)}", f"e.g. {key}=4")
    return IFC(config, name=name)
