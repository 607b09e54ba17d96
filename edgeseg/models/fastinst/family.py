"""FastInst's place in the model-family contract (torch-free: listing models imports no torch).

FastInst (He et al., "FastInst: A Simple Query-Based Model for Real-Time Instance
Segmentation", CVPR 2023; junjiehe96/FastInst): a backbone, a PPM-FPN pixel decoder giving
features at strides 32, 16 and 8, instance-activation-guided query selection on the
stride-16 map (a per-pixel class head; local maxima first, then the top-k pixels by class
probability; their features become the queries, joined by a few learnable auxiliary
queries), and a dual-path Transformer decoder whose layers update the stride-8 pixel
features from the queries, then the queries from the pixels with masked attention.
Masks are query embeddings x pixel embeddings; classes are a softmax over C + "no object".

Four components, each a top-level attribute of the module (``model.py``): ``backbone``,
``pixel_decoder``, ``query_selector``, ``transformer_decoder``. Inside each, module and
parameter names are the official ones, so an official checkpoint loads after renaming
three prefixes (``weights.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeseg.models.contract import Family, Variant
from edgeseg.models.registry import register_family

COMPONENTS = ("backbone", "pixel_decoder", "query_selector", "transformer_decoder")
OUTPUT_NAMES = ["logits", "masks"]
MASK_STRIDE = 8
# The pixel decoder's coarsest level is stride 32 (ResNet res5). TopFormer and MobileNetV2
# pool to stride 64 inside the backbone; build() asks for multiples of 64 with them.
INPUT_STRIDE = 32
QUERY_SELECTIONS = ("rank", "topk")
NORMS = ("GN", "BN")

# Feature extractors in int8, the query selection and the decoder (softmax attention,
# class and mask heads, the local-maximum comparisons) in fp16.
PRECISION_PRESETS = {
    "mixed": "backbone=int8,pixel_decoder=int8,query_selector=fp16,transformer_decoder=fp16",
    "int8_backbone": "backbone=int8,pixel_decoder=fp16,query_selector=fp16,transformer_decoder=fp16",
}


@dataclass
class FastInstConfig:
    backbone: str = "resnet50"
    num_classes: int = 80
    input_size: tuple[int, int] = (640, 640)
    hidden_dim: int = 256        # pixel decoder width (CONVS_DIM) = Transformer width (HIDDEN_DIM)
    mask_dim: int = 256          # length of mask embeddings (MASK_DIM)
    num_queries: int = 100       # IA-guided queries (NUM_OBJECT_QUERIES)
    num_aux_queries: int = 8     # learnable auxiliary queries (NUM_AUX_QUERIES)
    num_heads: int = 8
    ffn_dim: int = 1024
    dec_layers: int = 3          # D
    norm: str = "GN"             # pixel decoder norm: "GN" (official) or "BN" (folds into the convs)
    # How the top-k pixels are picked in eval / export: "rank" (pairwise comparisons and a
    # one-hot MatMul: ops every target has) or "topk" (TopK + Gather: ONNX Runtime, TensorRT).
    # Training always uses torch.topk; both give the same pixels (tests/test_fastinst_model.py).
    query_select: str = "rank"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


def _variant(name: str, description: str, **overrides: Any) -> Variant:
    return Variant.with_defaults(FastInstConfig(), name, description, **overrides)


FAMILY = register_family(Family(
    name="fastinst",
    title="FastInst (He et al., CVPR 2023)",
    components=COMPONENTS,
    outputs=tuple(OUTPUT_NAMES),
    build="edgeseg.models.fastinst.model:build",
    decoder="edgeseg.models.fastinst.decode:decode",
    input_stride=INPUT_STRIDE,
    objective="edgeseg.models.fastinst.loss:FastInstObjective",
    weights_map="edgeseg.models.fastinst.weights:filter_state_dict",
    presets=dict(PRECISION_PRESETS),
    variants=(
        # The official COCO configurations (configs/coco/instance-segmentation/fastinst_R50_ppm-fpn_x{1,3}_*.yaml).
        _variant("fastinst_r50_d1", "FastInst-D1, ResNet-50, PPM-FPN, 576 (the paper's fastest R50 model)",
                 backbone="resnet50", dec_layers=1, input_size=(576, 576)),
        _variant("fastinst_r50_d3", "FastInst-D3, ResNet-50, PPM-FPN, 640", backbone="resnet50", dec_layers=3),
        _variant("fastinst_r101_d3", "FastInst-D3, ResNet-101, PPM-FPN, 640", backbone="resnet101", dec_layers=3),
        # Mobile backbones (MobileInst's Table 1 runs FastInst with TopFormer at 640).
        _variant("fastinst_topformer", "FastInst-D1, TopFormer-Base backbone, 640",
                 backbone="topformer_base", dec_layers=1),
        _variant("fastinst_topformer_d3", "FastInst-D3, TopFormer-Base backbone, 640",
                 backbone="topformer_base", dec_layers=3),
        _variant("fastinst_mobilenetv2", "FastInst-D1, MobileNetV2 (1.0x) backbone, 640",
                 backbone="mobilenetv2", dec_layers=1),
        _variant("fastinst_test", "FastInst with tiny widths, 6 + 2 queries, D = 3: same architecture, for fast tests",
                 backbone="topformer_test", num_classes=3, input_size=(128, 128), hidden_dim=16, mask_dim=8, num_queries=6,
                 num_aux_queries=2, num_heads=2, ffn_dim=32, dec_layers=3, norm="BN"),
        # The zoo checkpoint trained on `edgeseg data synth` shapes: the same backbone, input size
        # and decoder width as mobileinst_topformer_synth, so the two compare on equal terms.
        _variant("fastinst_topformer_synth",
                 "FastInst-D1, TopFormer-Tiny, 64-wide decoder, 4 shape classes at 256 "
                 "(the shipped synthetic-data checkpoint: --weights zoo)",
                 backbone="topformer_tiny", num_classes=4, input_size=(256, 256), hidden_dim=64, mask_dim=64,
                 num_queries=50, num_aux_queries=8, num_heads=4, ffn_dim=128, dec_layers=1, norm="BN"),
    ),
))
