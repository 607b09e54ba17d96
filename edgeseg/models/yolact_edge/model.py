"""YolactEdge / YOLACT as one ``nn.Module`` with its components as attributes.

Attribute names are the official repository's (haotian-liu/yolact_edge ``yolact.py``), so
ONNX node scopes name the components and official state-dict keys line up:

==================  =====================  ==============================================
component           attribute              official keys
==================  =====================  ==============================================
``backbone``        ``backbone``           ``backbone.layers.N...`` (``backbones.py``)
``fpn``             ``fpn``                ``fpn.lat_layers.i`` / ``pred_layers.i`` /
                                           ``downsample_layers.i`` (YOLACT); yolact_edge's
                                           ``fpn_phase_1/2`` are renamed by ``weights.py``
``protonet``        ``proto_net``          ``proto_net.{0,2,4,8,10}`` (Sequential indices)
``prediction_head`` ``prediction_layers``  ``prediction_layers.0.{upfeature.0, bbox_layer,
                                           conf_layer, mask_layer}`` (one shared module)
``flow_net``        ``flow_net``           ``flow_net.conv1..3, pred2/3, upfeat3, upflow3``
                                           and ``flow_net.pre_convs`` (official
                                           ``flow_net_pre_convs``)
==================  =====================  ==============================================

``forward(image)`` returns ``(loc, conf, coef, proto)``: box offsets ``[B, P, 4]``, class
logits ``[B, P, C+1]`` (0 = background), mask coefficients ``[B, P, K]`` (tanh) for all P
priors of P3..P7, and the prototypes ``[B, K, 2*h3, 2*w3]`` (ReLU). Priors, box decoding,
NMS and mask assembly run on the host (``decode.py``).

Every op exports to a portable graph: Conv, ReLU/ReLU6, Add, Mul/Max (LeakyReLU spelled
out: TNN has no LeakyRelu), Resize (bilinear, half-pixel), Transpose/Reshape/Concat, Tanh. No Softmax in the graph (it runs in the
decoder), no grid sampling (the video warp runs on the host, as in the paper).

The video graphs (``graph_modules()``) share these very modules:

* ``key``: the frame graph plus ``lat3`` (C3's FPN lateral) and ``p4``/``p5`` (the
  top-down features before the 3x3 convs), kept for the next frames;
* ``flow``: C1-C3 of a non-keyframe, its lateral, and FeatFlowNet on (current, keyframe)
  laterals: the flow fields at P4/P5 resolution with a feature scale and bias each;
* ``warped``: given the current ``lat3`` and the warped ``w4``/``w5``, P3 = lat3 +
  up(W4), the 3x3 convs, P6/P7 from W5, ProtoNet and head (the partial feature transform).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.data.preprocess import InputSpec
from edgeseg.errors import EdgesegError
from edgeseg.models.base import ComponentMap
from edgeseg.models.contract import TensorSpec, config_from, input_size_of
from edgeseg.models.layers import static_hw
from edgeseg.models.yolact_edge.backbones import build_yolact_backbone
from edgeseg.models.yolact_edge.family import (ASPECT_RATIOS, COMPONENTS, FLOW_OUTPUTS, IMAGE_COMPONENTS,
                                               INPUT_STRIDE, KEY_EXTRA_OUTPUTS, OUTPUT_NAMES, PRECISION_PRESETS,
                                               YolactEdgeConfig)
from edgeseg.models.yolact_edge.priors import level_sizes, p3_size

MODULE_OF = {"backbone": "backbone", "fpn": "fpn", "protonet": "proto_net",
             "prediction_head": "prediction_layers", "flow_net": "flow_net"}


def upsample_to(x: torch.Tensor, ref_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear (half-pixel) resize to ``ref_hw``: a constant x2 when that is exact (a
    plain scale for every converter), explicit sizes otherwise (550: 35 -> 69)."""
    h, w = static_hw(x)
    if ref_hw == (2 * h, 2 * w):
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=ref_hw, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------- FPN
class FPN(nn.Module):
    """C3..C5 -> P3..P7. ``lat_layers`` are stored coarsest first (official order)."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int, num_downsample: int = 2):
        super().__init__()
        self.lat_layers = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in reversed(in_channels))
        self.pred_layers = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        self.downsample_layers = nn.ModuleList(nn.Conv2d(channels, channels, 3, 2, 1)
                                               for _ in range(num_downsample))

    def lateral3(self, c3: torch.Tensor) -> torch.Tensor:
        return self.lat_layers[-1](c3)

    def top_down(self, c3, c4, c5):
        """Phase 1: ``(lat3, P3', P4', P5')``, the summed laterals before the 3x3 convs."""
        p5 = self.lat_layers[0](c5)
        p4 = upsample_to(p5, static_hw(c4)) + self.lat_layers[1](c4)
        lat3 = self.lat_layers[2](c3)
        p3 = upsample_to(p4, static_hw(lat3)) + lat3
        return lat3, p3, p4, p5

    def refine(self, p3, p4, p5):
        """Phase 2: 3x3 conv + ReLU per level, then P6 = down(P5), P7 = down(P6)."""
        outs = [F.relu(conv(p)) for conv, p in zip(self.pred_layers, (p5, p4, p3))][::-1]
        for down in self.downsample_layers:
            outs.append(down(outs[-1]))
        return outs

    def from_warped(self, lat3, w4, w5):
        """A non-keyframe's pyramid: P3' = lat3 + up(W4), then phase 2 on (P3', W4, W5)."""
        return self.refine(upsample_to(w4, static_hw(lat3)) + lat3, w4, w5)

    def forward(self, *features: torch.Tensor, mode: str = "full"):
        """``mode``: ``full`` (C3, C4, C5) -> P3..P7; ``key`` (C3, C4, C5) -> (P3..P7,
        (lat3, P4', P5')); ``top_down`` (C3, C4, C5) -> (lat3, P3', P4', P5'); ``refine`` (P3', P4', P5') -> P3..P7; ``lateral3`` (C3) -> lat3;
        ``warped`` (lat3, W4, W5) -> P3..P7.
        One entry point, so every mode's ops carry the ``/fpn/`` scope in an export."""
        if mode == "full":
            _, p3, p4, p5 = self.top_down(*features)
            return self.refine(p3, p4, p5)
        if mode == "key":  # the keyframe graph: the pyramid and what later frames warp
            lat3, p3, p4, p5 = self.top_down(*features)
            return self.refine(p3, p4, p5), (lat3, p4, p5)
        if mode == "top_down":
            return self.top_down(*features)
        if mode == "lateral3":
            return self.lateral3(*features)
        if mode == "warped":
            return self.from_warped(*features)
        if mode == "refine":
            return self.refine(*features)
        raise ValueError(f"unknown FPN mode {mode!r}")


# ----------------------------------------------------------------------------- ProtoNet
class ProtoNet(nn.Sequential):
    """P3 -> K prototypes at twice P3's resolution. Children keep the official Sequential
    indices (convs at 0, 2, 4, 8, 10; the x2 upsampling at 6), so keys match."""

    def __init__(self, in_channels: int, channels: int, num_prototypes: int):
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            nn.Identity(),  # the official ReLU here acts on non-negative values: a no-op
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_prototypes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))  # the prototype activation


# ---------------------------------------------------------------------- prediction head
class PredictionModule(nn.Module):
    """One level's predictions: a shared 3x3 conv, then box / class / coefficient convs."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, num_prototypes: int,
                 num_anchors: int = len(ASPECT_RATIOS)):
        super().__init__()
        self.num_classes = num_classes + 1  # background first, as YOLACT's softmax
        self.num_prototypes = num_prototypes
        self.upfeature = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.bbox_layer = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.conf_layer = nn.Conv2d(channels, num_anchors * self.num_classes, 3, padding=1)
        self.mask_layer = nn.Conv2d(channels, num_anchors * num_prototypes, 3, padding=1)

    @staticmethod
    def _flat(x: torch.Tensor, per_prior: int) -> torch.Tensor:
        # [B, A*n, h, w] -> [B, h*w*A, n]: positions row-major, anchors innermost (the priors' order)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, per_prior)

    def forward(self, x: torch.Tensor):
        x = self.upfeature(x)
        loc = self._flat(self.bbox_layer(x), 4)
        conf = self._flat(self.conf_layer(x), self.num_classes)
        coef = torch.tanh(self._flat(self.mask_layer(x), self.num_prototypes))
        return loc, conf, coef


class PredictionHead(nn.ModuleList):
    """``prediction_layers``: one :class:`PredictionModule` shared by P3..P7 (the official
    ``share_prediction_module``: later levels hold no weights of their own)."""

    def forward(self, levels):
        outs = [self[0](p) for p in levels]
        return tuple(torch.cat([o[i] for o in outs], dim=1) for i in range(3))


# --------------------------------------------------------------------------- FeatFlowNet
class PortableLeakyReLU(nn.Module):
    """LeakyReLU(slope) as ``max(x, slope * x)`` (the same numbers for 0 < slope < 1):
    ONNX ``Mul`` + ``Max``, which TNN maps (it has no LeakyRelu layer), as do TFLite
    and TensorRT. No parameters, so state dicts are the official ones."""

    def __init__(self, slope: float = 0.1):
        super().__init__()
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, x * self.slope)


def conv_lrelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), PortableLeakyReLU(0.1))


class FlowPredLayer(nn.Module):
    """Flow (2 channels, in units of 1/8 of the normalised [-1, 1] grid, as the official
    ``deform_op``), and a per-channel feature scale and bias for the warped features."""

    def __init__(self, in_channels: int, feature_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2, 3, padding=1, bias=False)
        self.scale = nn.Conv2d(in_channels, feature_channels, 1)
        self.bias = nn.Conv2d(in_channels, feature_channels, 1)
        # Start at the identity transform (zero flow, scale 1, bias 0): an untrained flow
        # net then propagates the keyframe's features unchanged, a meaningful baseline.
        # (The official initialises these convs randomly; it trains them from scratch.)
        for m in (self.conv, self.scale, self.bias):
            nn.init.zeros_(m.weight)
        nn.init.ones_(self.scale.bias)
        nn.init.zeros_(self.bias.bias)

    def forward(self, x):
        return self.conv(x), self.scale(x), self.bias(x)


class PreConvs(nn.Module):
    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.convs = nn.Sequential(conv_lrelu(in_channels, channels))

    def forward(self, x):
        return self.convs(x)


class FeatFlowNet(nn.Module):
    """YolactEdge's FlowNetMini: (current, keyframe) C3 laterals -> flow, scale and bias at
    P4 (stride 16) and P5 (stride 32). Inputs are first reduced to ``channels`` (1/4)."""

    def __init__(self, feature_channels: int, channels: int):
        super().__init__()
        c = channels
        self.pre_convs = PreConvs(feature_channels, c)
        self.conv1 = nn.Sequential(conv_lrelu(2 * c, c), conv_lrelu(c, c))
        self.conv2 = nn.Sequential(conv_lrelu(c, 2 * c, 2), conv_lrelu(2 * c, 2 * c))
        self.conv3 = nn.Sequential(conv_lrelu(2 * c, 4 * c, 2), conv_lrelu(4 * c, 4 * c))
        self.pred3 = FlowPredLayer(4 * c, feature_channels)
        self.upfeat3 = nn.Conv2d(4 * c, 2 * c, 3, padding=1, bias=False)
        self.upflow3 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.pred2 = FlowPredLayer(4 * c + 2, feature_channels)
        for seq in (self.conv1, self.conv2, self.conv3):
            for m in seq.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, 0.1, mode="fan_in")
                    nn.init.zeros_(m.bias)

    def forward(self, current: torch.Tensor, key: torch.Tensor):
        x = torch.cat([self.pre_convs(current), self.pre_convs(key)], dim=1)
        out2 = self.conv2(self.conv1(x))
        out3 = self.conv3(out2)
        flow5, scale5, bias5 = self.pred3(out3)
        size2 = static_hw(out2)
        up_feat = self.upfeat3(upsample_to(out3, size2))
        up_flow = self.upflow3(upsample_to(flow5, size2))
        flow4, scale4, bias4 = self.pred2(torch.cat([out2, up_feat, up_flow], dim=1))
        return flow4, scale4, bias4, flow5, scale5, bias5


def warp_features(features: torch.Tensor, flow: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor):
    """The official ``deform_op`` + scale/bias, in torch (training; the NumPy twin in
    ``warp.py`` runs on the host at inference): sample ``features`` bilinearly at each
    position's normalised (align_corners) coordinate plus ``flow / 8``, zeros outside."""
    n, _, h, w = flow.shape
    ys = torch.linspace(-1.0, 1.0, h, dtype=flow.dtype) if h > 1 else torch.zeros(1, dtype=flow.dtype)
    xs = torch.linspace(-1.0, 1.0, w, dtype=flow.dtype) if w > 1 else torch.zeros(1, dtype=flow.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None] + flow.permute(0, 2, 3, 1) / 8.0
    warped = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped * scale + bias


# --------------------------------------------------------------------------------- model
class YolactEdge(nn.Module):
    """The frame graph: image -> (loc, conf, coef, proto)."""

    output_names = OUTPUT_NAMES

    def __init__(self, cfg: YolactEdgeConfig, name: str = "yolact_edge"):
        super().__init__()
        self.cfg = cfg
        height, width = cfg.input_size
        self.backbone = build_yolact_backbone(cfg.backbone, width_mult=cfg.width_mult,
                                              resnet_blocks=cfg.resnet_blocks, resnet_width=cfg.resnet_width,
                                              **cfg.backbone_kwargs)
        self.fpn = FPN(self.backbone.out_channels, cfg.fpn_channels)
        self.proto_net = ProtoNet(cfg.fpn_channels, cfg.proto_channels, cfg.num_prototypes)
        self.prediction_layers = PredictionHead([PredictionModule(cfg.fpn_channels, cfg.head_channels,
                                                                  cfg.num_classes, cfg.num_prototypes)])
        self.flow_net = FeatFlowNet(cfg.fpn_channels, cfg.flow_channels)
        self.model_name = name
        self.num_classes = cfg.num_classes
        self.num_prototypes = cfg.num_prototypes
        self.component_map = ComponentMap({c: MODULE_OF[c] for c in IMAGE_COMPONENTS})
        self.input_spec = InputSpec(height=height, width=width, stride=INPUT_STRIDE)
        self.precision_presets = presets_for(IMAGE_COMPONENTS)
        self._init_head()

    def _init_head(self) -> None:
        # YOLACT initialises the non-backbone convs with xavier and zero biases.
        for module in (self.fpn, self.proto_net, self.prediction_layers):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    # -- pieces, shared by the graphs and the objective
    def pyramid(self, image: torch.Tensor):
        return self.fpn(*self.backbone(image))

    def predict(self, levels):
        loc, conf, coef = self.prediction_layers(levels)
        return loc, conf, coef, self.proto_net(levels[0])

    def forward(self, image: torch.Tensor):
        return self.predict(self.pyramid(image))

    def forward_train(self, image: torch.Tensor):
        """``(loc, conf, coef, proto, P3)``: P3 feeds the training-only semantic head."""
        levels = self.pyramid(image)
        return (*self.predict(levels), levels[0])

    # -- shapes of the video graphs' tensors at the configured input
    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        f = self.cfg.fpn_channels
        (h3, w3), (h4, w4), (h5, w5) = level_sizes(p3_size(self.cfg.input_size))[:3]
        return {"lat3": (1, f, h3, w3), "p4": (1, f, h4, w4), "p5": (1, f, h5, w5)}

    def graph_modules(self) -> dict[str, nn.Module]:
        """The video graphs (partial feature transform): keyframe, flow, warped."""
        return {"key": KeyframeGraph(self), "flow": FlowGraph(self), "warped": WarpedGraph(self)}


def presets_for(components) -> dict[str, str]:
    """Family presets restricted to the components a graph has."""
    out = {}
    for name, spec in PRECISION_PRESETS.items():
        items = [it for it in spec.split(",") if it.split("=", 1)[0] in components]
        if items:
            out[name] = ",".join(items)
    return out


class _VideoGraph(nn.Module):
    """A graph over the very same modules as the frame model (one set of weights)."""

    graph = ""
    components: tuple[str, ...] = ()
    output_names: list[str] = []
    image_input = True

    def __init__(self, full: YolactEdge):
        super().__init__()
        for comp in self.components:
            setattr(self, MODULE_OF[comp], getattr(full, MODULE_OF[comp]))
        self.model_name = full.model_name
        self.model_cfg = getattr(full, "model_cfg", None)
        self.family = getattr(full, "family", None)
        self.component_map = ComponentMap({c: MODULE_OF[c] for c in self.components})
        self.input_spec = full.input_spec
        self.precision_presets = presets_for(self.components)
        self.shapes = full.feature_shapes()
        self.train(full.training)


class KeyframeGraph(_VideoGraph):
    """image -> frame outputs + ``lat3``, ``p4``, ``p5`` (kept for the frames after it)."""

    graph = "key"
    components = IMAGE_COMPONENTS
    output_names = OUTPUT_NAMES + KEY_EXTRA_OUTPUTS

    def forward(self, image: torch.Tensor):
        levels, (lat3, p4, p5) = self.fpn(*self.backbone(image), mode="key")
        loc, conf, coef = self.prediction_layers(levels)
        return loc, conf, coef, self.proto_net(levels[0]), lat3, p4, p5


class FlowGraph(_VideoGraph):
    """(image, keyframe ``lat3``) -> this frame's ``lat3`` and FeatFlowNet's flow, scale
    and bias at P4 and P5: C1-C3 only, the cheap part of a non-keyframe."""

    graph = "flow"
    components = ("backbone", "fpn", "flow_net")
    output_names = FLOW_OUTPUTS

    @property
    def extra_inputs(self) -> list[TensorSpec]:
        return [TensorSpec("key_lat3", self.shapes["lat3"])]

    def forward(self, image: torch.Tensor, key_lat3: torch.Tensor):
        lat3 = self.fpn(self.backbone(image, partial=True), mode="lateral3")
        return (lat3, *self.flow_net(lat3, key_lat3))


class WarpedGraph(_VideoGraph):
    """(``lat3``, warped ``w4``, ``w5``) -> frame outputs: P3 = lat3 + up(W4), P6/P7 from W5."""

    graph = "warped"
    components = ("fpn", "protonet", "prediction_head")
    output_names = OUTPUT_NAMES
    image_input = False

    @property
    def extra_inputs(self) -> list[TensorSpec]:
        return [TensorSpec("lat3", self.shapes["lat3"]), TensorSpec("w4", self.shapes["p4"]),
                TensorSpec("w5", self.shapes["p5"])]

    def forward(self, lat3: torch.Tensor, w4: torch.Tensor, w5: torch.Tensor):
        levels = self.fpn(lat3, w4, w5, mode="warped")
        loc, conf, coef = self.prediction_layers(levels)
        return loc, conf, coef, self.proto_net(levels[0])


# ------------------------------------------------------------------------------ builder
def build(name: str, cfg: dict[str, Any]) -> YolactEdge:
    """The family's builder (``Family.build``): a variant's config -> the module."""
    config = config_from(YolactEdgeConfig, name, cfg)
    config.input_size = input_size_of(config.input_size, INPUT_STRIDE,
                                      "the ProtoNet upsamples P3 by exactly 2")
    for key in ("fpn_channels", "proto_channels", "num_prototypes", "head_channels", "flow_channels"):
        if int(getattr(config, key)) < 1:
            raise EdgesegError(f"{key} must be at least 1, got {getattr(config, key)}", f"e.g. {key}=64")
    try:
        return YolactEdge(config, name=name)
    except ValueError as e:
        raise EdgesegError(f"cannot build {name}: {e}", "check the backbone options of the variant") from e
