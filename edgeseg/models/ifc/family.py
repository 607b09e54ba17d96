"""IFC's place in the model-family contract (torch-free: listing models imports no torch).

IFC (Hwang et al., NeurIPS 2021) segments a *clip* of T frames at once: a CNN backbone per
frame; an encoder whose blocks let each frame's tokens talk to M memory tokens of their
own (Encode-Receive) and then let the memory tokens of one index talk across the T frames
(Gather-Communicate); a decoder of N_q learned queries over the whole clip; a class head
(softmax over the classes and "no object") and a dynamic 1x1 conv per query applied to
every frame's features from an FPN-style spatial decoder at 1/8 of the input.

The frame graph takes the clip as ``[T, 3, H, W]`` (the input spec's ``frames`` = T, a
config and export flag, default 5) and returns ``logits [1, N_q, K+1]`` and
``masks [1, N_q, T, H/8, W/8]``. Longer videos run near-online (``edgeseg.track.clip_matching``):
clips of T frames every S frames, instances of consecutive clips matched by soft IoU on
the frames they share. The module is in ``model.py``, the NumPy decoder in ``decode.py``,
the training objective in ``loss.py``, the official-checkpoint key map in ``weights.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeseg.models.contract import Family, Variant
from edgeseg.models.registry import register_family

COMPONENTS = ("backbone", "encoder", "decoder", "mask_head")
OUTPUT_NAMES = ["logits", "masks"]
MASK_STRIDE = 8
# ResNet needs multiples of 32; the mobile backbones (TopFormer, MobileNetV2) compute a
# stride-64 level and need 64: the model's input spec carries its backbone's figure.
INPUT_STRIDE = 32
DEFAULT_CLIP_LENGTH = 5

# The convolutional parts quantize well; attention softmax and the query heads are the
# precision-sensitive part (as for MobileInst's instance decoder).
PRECISION_PRESETS = {
    "mixed": "backbone=int8,encoder=fp16,decoder=fp16,mask_head=int8",
    "int8_backbone": "backbone=int8,encoder=fp16,decoder=fp16,mask_head=fp16",
}


@dataclass
class IFCConfig:
    backbone: str = "resnet50"
    num_classes: int = 40               # YouTube-VIS 2019
    input_size: tuple[int, int] = (384, 640)
    clip_length: int = DEFAULT_CLIP_LENGTH  # T: frames per clip (the exported graph's first axis)
    hidden_dim: int = 256               # d_model of the transformer and the mask head
    num_heads: int = 8
    ffn_dim: int = 2048
    enc_layers: int = 3                 # N_E encoder blocks (Encode-Receive + Gather-Communicate)
    dec_layers: int = 3
    num_memory: int = 8                 # M memory tokens per frame ("memory bus")
    num_queries: int = 100              # N_q
    mask_groups: int = 32               # GroupNorm groups in the mask head
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


def _variant(name: str, description: str, **overrides: Any) -> Variant:
    return Variant.with_defaults(IFCConfig(), name, description, **overrides)


FAMILY = register_family(Family(
    name="ifc",
    title="IFC (Hwang et al., NeurIPS 2021)",
    components=COMPONENTS,
    outputs=tuple(OUTPUT_NAMES),
    build="edgeseg.models.ifc.model:build",
    decoder="edgeseg.models.ifc.decode:decode",
    input_stride=INPUT_STRIDE,
    objective="edgeseg.models.ifc.loss:IFCObjective",
    train_data="ytvis",
    clip_input=True,
    video="edgeseg.track.clip_matching:ClipMatching",
    weights_map="edgeseg.models.ifc.weights:filter_state_dict",
    presets=dict(PRECISION_PRESETS),
    variants=(
        _variant("ifc_r50", "IFC, ResNet-50 (detectron2 keys: loads the official YouTube-VIS 2019 "
                 "checkpoints), 100 queries, T=5", backbone="resnet50"),
        _variant("ifc_topformer", "IFC, TopFormer-Base backbone, full-width transformer (the mobile question)",
                 backbone="topformer_base"),
        _variant("ifc_mobilenetv2", "IFC, MobileNetV2 (1.0x) backbone", backbone="mobilenetv2"),
        _variant("ifc_test", "IFC with tiny widths and 6 queries: same architecture, for fast tests",
                 backbone="topformer_test", num_classes=3, input_size=(128, 128), clip_length=3,
                 hidden_dim=16, num_heads=2, ffn_dim=32, enc_layers=2, dec_layers=2, num_memory=2,
                 num_queries=6, mask_groups=4),
        # Trained here on `edgeseg data synth` videos (4 shape classes, at most 4 objects per
        # video): TopFormer-Tiny, a quarter-width transformer, 16 queries.
        _variant("ifc_topformer_synth",
                 "IFC, TopFormer-Tiny, quarter-width transformer, 16 queries, 4 shape classes at 256, T=5 "
                 "(the shipped synthetic-video checkpoint: --weights zoo)",
                 backbone="topformer_tiny", num_classes=4, input_size=(256, 256), hidden_dim=64, num_heads=4,
                 ffn_dim=256, enc_layers=2, dec_layers=3, num_memory=4, num_queries=16, mask_groups=16),
    ),
))
