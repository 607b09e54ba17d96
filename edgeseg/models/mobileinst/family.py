"""MobileInst's place in the model-family contract (torch-free: listing models imports no torch).

MobileInst (Zhang et al., "MobileInst: Video Instance Segmentation on the Mobile", AAAI
2024): a mobile backbone, the semantic-enhanced mask decoder and the dual transformer
instance decoder; masks = kernels . mask features; video by kernel reuse. The module is in
``model.py``, the NumPy decoder in ``decode.py``, the training objective in ``loss.py``;
the video strategy is ``edgeseg.track.kernel_reuse``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeseg.models.contract import Family, Variant
from edgeseg.models.registry import register_family

COMPONENTS = ("backbone", "mask_decoder", "instance_decoder")
OUTPUT_NAMES = ["logits", "objectness", "kernels", "mask_features", "masks"]
MASK_STRIDE = 8
# X6 sits at stride 64 and every level is an exact power-of-two of the next, so input
# sizes must be multiples of 64 for the static pooling / upsampling to line up.
INPUT_STRIDE = 64

# YolactEdge's lesson, confirmed for query-based heads: INT8 feature extractors, FP16
# heads (the class/kernel heads and attention softmax are the precision-sensitive part).
PRECISION_PRESETS = {
    "mixed": "backbone=int8,mask_decoder=int8,instance_decoder=fp16",
    "int8_backbone": "backbone=int8,mask_decoder=fp16,instance_decoder=fp16",
}


@dataclass
class MobileInstConfig:
    backbone: str = "topformer_base"
    num_classes: int = 80
    input_size: tuple[int, int] = (640, 640)
    decoder_dim: int = 256   # width of the semantic-enhanced mask decoder
    mask_dim: int = 128      # D: channels of the mask features = length of a kernel
    hidden_dim: int = 256    # width of the instance decoder
    num_queries: int = 100   # N
    num_heads: int = 8
    ffn_dim: int = 512
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


def _variant(name: str, description: str, **overrides: Any) -> Variant:
    return Variant.with_defaults(MobileInstConfig(), name, description, **overrides)


FAMILY = register_family(Family(
    name="mobileinst",
    title="MobileInst (Zhang et al., AAAI 2024)",
    components=COMPONENTS,
    outputs=tuple(OUTPUT_NAMES),
    build="edgeseg.models.mobileinst.model:build",
    decoder="edgeseg.models.mobileinst.decode:decode",
    input_stride=INPUT_STRIDE,
    graphs=("frame", "features"),
    objective="edgeseg.models.mobileinst.loss:MobileInstObjective",
    video="edgeseg.track.kernel_reuse:KernelReuse",
    presets=dict(PRECISION_PRESETS),
    variants=(
        _variant("mobileinst_topformer", "MobileInst, TopFormer-Base backbone (the paper's COCO model)",
                 backbone="topformer_base"),
        _variant("mobileinst_mobilenetv2", "MobileInst, MobileNetV2 (1.0x) backbone", backbone="mobilenetv2"),
        _variant("mobileinst_topformer_tiny",
                 "MobileInst, TopFormer-Tiny backbone and a half-width decoder (CPU-trainable)",
                 backbone="topformer_tiny", decoder_dim=128, mask_dim=64, hidden_dim=128, num_heads=4,
                 ffn_dim=256),
        _variant("mobileinst_test", "MobileInst with tiny widths and 8 queries: same architecture, for fast tests",
                 backbone="topformer_test", decoder_dim=16, mask_dim=8, hidden_dim=16, num_queries=8,
                 num_heads=2, ffn_dim=32),
        # The committed zoo checkpoint (edgeseg/zoo/mobileinst_topformer_synth.safetensors) is this
        # variant trained on `edgeseg data synth` shapes: TopFormer-Tiny with a quarter-width decoder
        # (the backbone is most of the 1.8 M parameters) and 50 queries (at most 5 objects per
        # image), so it trains on a 2-core CPU in under an hour and ships in a few MB as float16.
        _variant("mobileinst_topformer_synth",
                 "MobileInst, TopFormer-Tiny, quarter-width decoder, 4 shape classes at 256 "
                 "(the shipped synthetic-data checkpoint: --weights zoo)",
                 backbone="topformer_tiny", num_classes=4, input_size=(256, 256), decoder_dim=64, mask_dim=32,
                 hidden_dim=64, num_queries=50, num_heads=4, ffn_dim=128),
    ),
))
