"""One converter per ONNX op type: ONNX node -> TNN layer(s) with params and resources.

A converter reads the node through a :class:`Context` (constants, static shapes, blob
names) and emits :class:`TnnLayer` objects. When a node cannot be expressed in TNN it
raises :class:`ConversionIssue` with the reason and the fix; the writer collects every
issue of the graph before failing, and ``edgeseg check`` lists them.

Semantics follow TNN's layer implementations (read from TNN's source), e.g. Upsample's
nearest mode is ``floor(dst * in / out)`` (ONNX ``asymmetric`` + ``floor``) and its
bilinear mode without ``align_corners`` is PyTorch's half-pixel rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgeseg.export import tags
from edgeseg.export.tnn.format import TnnLayer
from edgeseg.export.tnn.graph import GraphView
from edgeseg.export.tnn.names import NameMap

FLT_MAX = float(np.finfo(np.float32).max)
ACT_NONE, ACT_RELU, ACT_RELU6 = 0, 1, 2  # TNN ActivationType fused into Convolution
STATIC_SHAPES_FIX = "export with static shapes (`edgeseg export` does by default) so every shape is known"


class ConversionIssue(Exception):
    """A node TNN cannot express (or not as written). ``fix`` says what to change."""

    def __init__(self, reason: str, fix: str):
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    view: GraphView
    names: NameMap = field(default_factory=NameMap)
    layers: list[TnnLayer] = field(default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # TNN constant map
    alias: dict[str, str] = field(default_factory=dict)  # ONNX tensor -> TNN blob (Identity...)
    absorbed: set[int] = field(default_factory=set)  # id() of nodes fused into an earlier layer
    range_source: dict[str, str] = field(default_factory=dict)  # TNN blob -> ONNX tensor (calibration)
    nc4hw4_only: bool = False  # prefer layers with NC4HW4 ARM kernels (int8 networks on ARM)
    # Names of NCHW-only layers written in shapes whose NC4HW4 and NCHW memory agree (see
    # _matmul_layout_agnostic): they run in an int8 network on ARM, the preflight lets them.
    layout_agnostic: set[str] = field(default_factory=set)
    node: Any = None
    component: str = ""

    # ----------------------------------------------------------------- lookups
    def attr(self, name: str, default: Any = None, node: Any = None) -> Any:
        from onnx import helper

        for a in (node or self.node).attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def const(self, name: str) -> np.ndarray | None:
        return self.view.consts.get(name) if name else None

    def need_const(self, index: int, what: str) -> np.ndarray:
        node = self.node
        name = node.input[index] if index < len(node.input) else ""
        value = self.const(name)
        if value is None:
            raise ConversionIssue(f"{what} ({name or 'missing'}) must be a constant for TNN",
                                  "fold it to a constant: " + STATIC_SHAPES_FIX)
        return value

    def optional_input(self, index: int) -> str:
        return self.node.input[index] if index < len(self.node.input) else ""

    def shape(self, tensor: str) -> list[int]:
        s = self.view.static_shape(tensor)
        if s is None:
            raise ConversionIssue(f"the shape of {tensor!r} is not static", STATIC_SHAPES_FIX)
        return s

    # ----------------------------------------------------------------- blobs
    def blob(self, tensor: str) -> str:
        """The TNN blob holding ONNX tensor ``tensor`` (constants go to the constant map)."""
        if tensor in self.alias:
            return self.alias[tensor]
        if tensor in self.view.consts:
            name = self.names.blob(tensor)
            if name not in self.constants:
                arr = np.asarray(self.view.consts[tensor])
                if arr.dtype == np.float64 or arr.dtype == np.float16:
                    arr = arr.astype(np.float32)
                elif arr.dtype == np.int64 or arr.dtype == np.bool_:
                    arr = arr.astype(np.int32)
                self.constants[name] = arr
            return name
        name = self.names.blob(tensor)
        self.range_source.setdefault(name, tensor)
        return name

    def out(self, tensor: str) -> str:
        name = self.names.blob(tensor)
        self.range_source[name] = tensor
        return name

    def new_blob(self, hint: str, range_of: str | None) -> str:
        name = self.names.new_blob(hint)
        if range_of:
            self.range_source[name] = range_of
        return name

    def layer_name(self, suffix: str = "") -> str:
        base = self.node.name or self.node.output[0]
        return self.names.layer(base) if not suffix else self.names.new_layer(f"{base}{suffix}")

    def emit(self, type_: str, inputs: list[str], outputs: list[str], params: dict[str, Any] | None = None,
             resource: dict[str, Any] | None = None, name: str | None = None) -> TnnLayer:
        layer = TnnLayer(type=type_, name=name or self.layer_name(), inputs=inputs, outputs=outputs,
                         params=params or {}, resource=resource, source=self.node.name,
                         component=self.component)
        self.layers.append(layer)
        return layer

    # ----------------------------------------------------------------- fusion helpers
    def only_consumer(self, tensor: str):
        users = self.view.consumers.get(tensor, [])
        if len(users) != 1 or self.view.is_graph_output(tensor):
            return None
        return users[0]

    def absorb(self, node) -> None:
        self.absorbed.add(id(node))


Converter = Callable[[Context, Any], None]
CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def wrap(fn: Converter) -> Converter:
        for op in op_types:
            CONVERTERS[op] = fn
        return fn

    return wrap


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ConversionIssue(f"axis {axis} is out of range for rank {rank}", "fix the model")
    return axis + rank if axis < 0 else axis


def _element(arr: np.ndarray) -> np.ndarray:
    """A broadcast operand as TNN wants it: float32, scalars as shape [1]."""
    a = _f32(arr)
    return a.reshape(1) if a.ndim == 0 else a


# --------------------------------------------------------------------------- conv / pool


def _explicit_pads(ctx: Context, x: str, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """ONNX pads [top, left, bottom, right], resolving auto_pad from the static input shape."""
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            raise ConversionIssue(f"{ctx.node.op_type} with {len(pads)} pads is not 2-D", "use 2-D ops")
        return pads
    if auto == "VALID":
        return [0, 0, 0, 0]
    h, w = ctx.shape(x)[2:4]
    pads = [0, 0, 0, 0]
    for i, size in enumerate((h, w)):
        out = -(-size // strides[i])
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
        small, big = total // 2, total - total // 2
        pads[i], pads[i + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
    return pads


def _pad_layer(ctx: Context, x_blob: str, x_tensor: str, pads: list[int], value: float) -> str:
    """A Pad layer for asymmetric spatial padding; returns its output blob."""
    out = ctx.new_blob(f"{x_blob}_pad", range_of=x_tensor)
    ctx.emit("Pad", [x_blob], [out], {"pad_t": pads[0], "pad_b": pads[2], "pad_l": pads[1], "pad_r": pads[3],
                                      "pad_c_b": 0, "pad_c_e": 0, "type": 0, "value": value},
             name=ctx.layer_name("_pad"))
    return out


def _fold_batchnorm(ctx: Context, bn, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    vals = [ctx.const(n) for n in bn.input[1:5]]
    if any(v is None for v in vals):
        return None
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in vals)
    eps = ctx.attr("epsilon", 1e-5, node=bn)
    scale = gamma / np.sqrt(var + eps)
    w = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    b = (bias.astype(np.float64) - mean) * scale + beta
    return _f32(w), _f32(b)


def _fused_activation(ctx: Context, tensor: str):
    """A Relu or Clip(0, 6) that alone consumes ``tensor``: (activation type, node)."""
    nxt = ctx.only_consumer(tensor)
    if nxt is None:
        return ACT_NONE, None
    if nxt.op_type == "Relu":
        return ACT_RELU, nxt
    if nxt.op_type == "Clip":
        lo, hi = _clip_bounds(ctx, nxt)
        if lo == 0.0 and hi == 6.0:
            return ACT_RELU6, nxt
    return ACT_NONE, None


@converter("Conv")
def convert_conv(ctx: Context, node) -> None:
    x = node.input[0]
    weight = _f32(ctx.need_const(1, "Conv weight"))
    if weight.ndim != 4:
        raise ConversionIssue(f"{weight.ndim - 2}-D convolution", "the TNN writer supports 2-D Conv only")
    out_ch, in_per_group, kh, kw = weight.shape
    bias_name = ctx.optional_input(2)
    bias = _f32(ctx.need_const(2, "Conv bias")) if bias_name else np.zeros(out_ch, np.float32)
    group = int(ctx.attr("group", 1))
    strides = list(ctx.attr("strides", [1, 1]))
    dilations = list(ctx.attr("dilations", [1, 1]))
    pads = _explicit_pads(ctx, x, [kh, kw], strides, dilations)

    # Fold a following BatchNormalization, then fuse a following ReLU/ReLU6: the last
    # absorbed node's output becomes the layer's output blob.
    out_tensor = node.output[0]
    has_bias = bool(bias_name)
    nxt = ctx.only_consumer(out_tensor)
    if nxt is not None and nxt.op_type == "BatchNormalization":
        folded = _fold_batchnorm(ctx, nxt, weight, bias)
        if folded is not None:
            weight, bias = folded
            has_bias = True
            ctx.absorb(nxt)
            out_tensor = nxt.output[0]
    act, act_node = _fused_activation(ctx, out_tensor)
    if act_node is not None:
        ctx.absorb(act_node)
        out_tensor = act_node.output[0]

    x_blob = ctx.blob(x)
    if pads[0] != pads[2] or pads[1] != pads[3]:
        x_blob = _pad_layer(ctx, x_blob, x, pads, 0.0)
        pads = [0, 0, 0, 0]
    params = {"group": group, "input_channel": in_per_group, "output_channel": out_ch,
              "kernel_h": kh, "kernel_w": kw, "stride_h": strides[0], "stride_w": strides[1],
              "pad_h": pads[0], "pad_w": pads[1], "bias": int(has_bias), "pad_type": -1,
              "dilation_h": dilations[0], "dilation_w": dilations[1], "activation_type": act}
    name = ctx.layer_name()
    resource = {"name": name, "has_bias": int(has_bias), "filter": weight}
    if has_bias:
        resource["bias"] = bias
    ctx.emit("Convolution", [x_blob], [ctx.out(out_tensor)], params, resource, name=name)


def _pool(ctx: Context, node, pool_type: int) -> None:
    x = node.input[0]
    if len(node.output) > 1 and node.output[1]:
        raise ConversionIssue("MaxPool with an indices output", "drop return_indices from the pooling")
    kernel = list(ctx.attr("kernel_shape"))
    if len(kernel) != 2:
        raise ConversionIssue(f"{len(kernel)}-D pooling", "the TNN writer supports 2-D pooling only")
    strides = list(ctx.attr("strides", [1, 1]))
    if any(d != 1 for d in ctx.attr("dilations", [1, 1])):
        raise ConversionIssue("dilated pooling", "TNN pooling has no dilation; use a strided pooling")
    pads = _explicit_pads(ctx, x, kernel, strides, [1, 1])
    ceil_mode = int(ctx.attr("ceil_mode", 0))
    pad_layer = pads[0] != pads[2] or pads[1] != pads[3] or (pool_type == 1 and any(pads)
                                                             and ctx.attr("count_include_pad", 0))
    if pad_layer and pool_type == 1 and not ctx.attr("count_include_pad", 0):
        raise ConversionIssue("average pooling with asymmetric padding that excludes the padding",
                              "pad symmetrically or set count_include_pad=1")
    grown = [pads[0] + pads[2], pads[1] + pads[3]] if pad_layer else [0, 0]
    params = {"pool_type": pool_type, "kernel_h": kernel[0], "kernel_w": kernel[1],
              "stride_h": strides[0], "stride_w": strides[1],
              "pad_h": 0 if pad_layer else pads[0], "pad_w": 0 if pad_layer else pads[1],
              "kernel_index_h": -1, "kernel_index_w": -1, "pad_type": -1, "ceil_mode": ceil_mode,
              "is_adaptive_pool": 0, "output_h": 0, "output_w": 0}
    _check_pool_shape(ctx, node, params, grown, pads)
    x_blob = ctx.blob(x)
    if pad_layer:
        # Max pooling pads with -FLT_MAX (never selected); average pooling that counts the
        # padding pads with zeros, after which TNN's valid-area divisor equals the kernel area.
        x_blob = _pad_layer(ctx, x_blob, x, pads, -FLT_MAX if pool_type == 0 else 0.0)
    ctx.emit("Pooling", [x_blob], [ctx.out(node.output[0])], params)


def _onnx_pool_size(size: int, begin: int, end: int, k: int, s: int, ceil_mode: int) -> int:
    """ONNX Runtime's (and PyTorch's) output length: with ceil_mode, a last window that
    would start in the end padding is dropped."""
    span = size + begin + end - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + begin:
        out -= 1
    return out


def _check_pool_shape(ctx: Context, node, p: dict[str, Any], grown: list[int], pads: list[int]) -> None:
    """TNN computes pooling output sizes its own way (no 'last window' rule): refuse a mismatch."""
    s_in = ctx.view.static_shape(node.input[0])
    if not s_in:
        return
    rnd = np.ceil if p["ceil_mode"] else np.floor
    got = [int(rnd((size + extra + 2 * pad - k) / s + 1)) for size, extra, pad, k, s in
           ((s_in[2], grown[0], p["pad_h"], p["kernel_h"], p["stride_h"]),
            (s_in[3], grown[1], p["pad_w"], p["kernel_w"], p["stride_w"]))]
    want = [_onnx_pool_size(s_in[2], pads[0], pads[2], p["kernel_h"], p["stride_h"], p["ceil_mode"]),
            _onnx_pool_size(s_in[3], pads[1], pads[3], p["kernel_w"], p["stride_w"], p["ceil_mode"])]
    if got != want:
        raise ConversionIssue(f"TNN would give a {got[0]}x{got[1]} output where ONNX Runtime gives "
                              f"{want[0]}x{want[1]} (ceil_mode's last-window rule)",
                              "use ceil_mode=0, or pad the input so the windows fit exactly")


@converter("MaxPool")
def convert_maxpool(ctx: Context, node) -> None:
    _pool(ctx, node, 0)


@converter("AveragePool")
def convert_avgpool(ctx: Context, node) -> None:
    _pool(ctx, node, 1)


@converter("GlobalAveragePool", "GlobalMaxPool")
def convert_global_pool(ctx: Context, node) -> None:
    if len(ctx.shape(node.input[0])) != 4:
        raise ConversionIssue("global pooling of a non-4-D tensor", "pool an NCHW tensor")
    params = {"pool_type": 1 if node.op_type == "GlobalAveragePool" else 0, "kernel_h": 0, "kernel_w": 0,
              "stride_h": 1, "stride_w": 1, "pad_h": 0, "pad_w": 0, "kernel_index_h": -1,
              "kernel_index_w": -1, "pad_type": -1, "ceil_mode": 0, "is_adaptive_pool": 0,
              "output_h": 0, "output_w": 0}
    ctx.emit("Pooling", [ctx.blob(node.input[0])], [ctx.out(node.output[0])], params)


@converter("BatchNormalization")
def convert_batchnorm(ctx: Context, node) -> None:
    gamma, beta, mean, var = (np.asarray(ctx.need_const(i, "BatchNormalization statistics"), np.float64)
                              for i in range(1, 5))
    scale = gamma / np.sqrt(var + ctx.attr("epsilon", 1e-5))
    bias = beta - mean * scale
    ctx.emit("BatchNormCxx", [ctx.blob(node.input[0])], [ctx.out(node.output[0])], {},
             {"scale": _f32(scale), "bias": _f32(bias)})


# --------------------------------------------------------------------------- activations


def _clip_bounds(ctx: Context, node) -> tuple[float | None, float | None]:
    if ctx.view.opset >= 11:
        lo = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        hi = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if (len(node.input) > 1 and node.input[1] and lo is None) or (len(node.input) > 2 and node.input[2] and hi is None):
            raise ConversionIssue("Clip bounds must be constants", STATIC_SHAPES_FIX)
        return (None if lo is None else float(lo), None if hi is None else float(hi))
    return ctx.attr("min", None, node=node), ctx.attr("max", None, node=node)


@converter("Clip")
def convert_clip(ctx: Context, node) -> None:
    lo, hi = _clip_bounds(ctx, node)
    ins, outs = [ctx.blob(node.input[0])], [ctx.out(node.output[0])]
    if lo == 0.0 and hi == 6.0:
        ctx.emit("ReLU6", ins, outs)
    elif lo == 0.0 and hi is None:
        ctx.emit("ReLU", ins, outs)
    else:
        ctx.emit("Clip", ins, outs, {"min": -FLT_MAX if lo is None else lo, "max": FLT_MAX if hi is None else hi})


_UNARY = {"Relu": "ReLU", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Exp": "Exp", "Sqrt": "Sqrt", "Abs": "Abs",
          "Neg": "Neg", "Reciprocal": "Reciprocal", "Erf": "Erf", "Log": "Log", "Sign": "Sign"}


@converter(*_UNARY)
def convert_unary(ctx: Context, node) -> None:
    ctx.emit(_UNARY[node.op_type], [ctx.blob(node.input[0])], [ctx.out(node.output[0])])


@converter("Gelu")
def convert_gelu(ctx: Context, node) -> None:
    if node.domain not in ("edgeseg",) and ctx.attr("approximate", "none") != "none":
        raise ConversionIssue("Gelu with tanh approximation", "use exact GELU (nn.GELU())")
    ctx.emit("GELU", [ctx.blob(node.input[0])], [ctx.out(node.output[0])])


@converter("HardSigmoid")
def convert_hardsigmoid(ctx: Context, node) -> None:
    ctx.emit("HardSigmoid", [ctx.blob(node.input[0])], [ctx.out(node.output[0])],
             {"alpha": ctx.attr("alpha", 0.2), "beta": ctx.attr("beta", 0.5)})


@converter("HardSwish")
def convert_hardswish(ctx: Context, node) -> None:
    # TNN HardSwish is x * clip(alpha * x + beta, 0, 1); ONNX fixes alpha=1/6, beta=0.5.
    ctx.emit("HardSwish", [ctx.blob(node.input[0])], [ctx.out(node.output[0])], {"alpha": 1.0 / 6.0, "beta": 0.5})


@converter("Pow")
def convert_pow(ctx: Context, node) -> None:
    exponent = ctx.need_const(1, "Pow exponent")
    if exponent.size != 1:
        raise ConversionIssue("Pow with a non-scalar exponent", "use a scalar exponent")
    ctx.emit("Power", [ctx.blob(node.input[0])], [ctx.out(node.output[0])],
             {"exponent": float(exponent.reshape(())), "scale": 1.0, "shift": 0.0})


# --------------------------------------------------------------------------- elementwise

_BINARY = {"Add": "Add", "Sub": "Sub", "Mul": "Mul", "Div": "Div", "Max": "Maximum", "Min": "Minimum"}


@converter(*_BINARY)
def convert_binary(ctx: Context, node) -> None:
    type_ = _BINARY[node.op_type]
    if len(node.input) != 2:
        raise ConversionIssue(f"{node.op_type} with {len(node.input)} inputs", "use two-input ops")
    a, b = node.input
    ca, cb = ctx.const(a), ctx.const(b)
    out = [ctx.out(node.output[0])]
    if ca is None and cb is None:
        ctx.emit(type_, [ctx.blob(a), ctx.blob(b)], out, {"weight_input_index": 1})
    elif cb is not None:
        # The constant operand lives in the layer's resource; weight_input_index says
        # which side of the operation it is on (matters for Sub and Div).
        ctx.emit(type_, [ctx.blob(a)], out, {"weight_input_index": 1}, {"element": _element(cb)})
    else:
        ctx.emit(type_, [ctx.blob(b)], out, {"weight_input_index": 0}, {"element": _element(ca)})


# --------------------------------------------------------------------------- shape ops


@converter("Identity", "Dropout")
def convert_identity(ctx: Context, node) -> None:
    ctx.alias[node.output[0]] = ctx.blob(node.input[0])


@converter("Cast")
def convert_cast(ctx: Context, node) -> None:
    from onnx import TensorProto

    to = ctx.attr("to")
    # Integer casts of shape arithmetic fold away as constants; what is left here acts
    # on activations, which TNN keeps float, so only float targets are a no-op.
    if to not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise ConversionIssue(f"Cast to ONNX type {to} on an activation", "keep activations float; "
                              "integer casts must fold away: " + STATIC_SHAPES_FIX)
    ctx.alias[node.output[0]] = ctx.blob(node.input[0])


def _reshape(ctx: Context, x_blob: str, out_tensor: str, shape: list[int], name: str | None = None,
             out_blob: str | None = None) -> None:
    ctx.emit("Reshape", [x_blob], [out_blob or ctx.out(out_tensor)],
             {"axis": 0, "num_axes": len(shape), "shape": list(shape), "reshape_type": 0}, name=name)


@converter("Reshape", "Flatten")
def convert_reshape(ctx: Context, node) -> None:
    # TNN's Reshape reads 0 as "copy" and -1 as "infer" like ONNX, but we write the
    # concrete static output shape so nothing depends on those rules.
    _reshape(ctx, ctx.blob(node.input[0]), node.output[0], ctx.shape(node.output[0]))


@converter("Transpose")
def convert_transpose(ctx: Context, node) -> None:
    rank = len(ctx.shape(node.input[0]))
    perm = list(ctx.attr("perm", list(range(rank))[::-1]))
    ctx.emit("Permute", [ctx.blob(node.input[0])], [ctx.out(node.output[0])], {"orders": perm})


def _axes(ctx: Context, index: int) -> list[int] | None:
    axes = ctx.attr("axes")
    if axes is None and len(ctx.node.input) > index and ctx.node.input[index]:
        axes = [int(a) for a in ctx.need_const(index, f"{ctx.node.op_type} axes").reshape(-1)]
    return None if axes is None else list(axes)


@converter("Squeeze", "Unsqueeze")
def convert_squeeze(ctx: Context, node) -> None:
    # A Reshape to the static output shape: TNN's ARM Squeeze/Unsqueeze run only in the
    # NCHW layout (layout reformats around them, and illegal in int8 networks), Reshape
    # runs in both.
    _reshape(ctx, ctx.blob(node.input[0]), node.output[0], ctx.shape(node.output[0]))


@converter("Concat")
def convert_concat(ctx: Context, node) -> None:
    rank = len(ctx.shape(node.output[0]))
    ctx.emit("Concat", [ctx.blob(i) for i in node.input if i], [ctx.out(node.output[0])],
             {"axis": _norm_axis(int(ctx.attr("axis")), rank)})


@converter("Split")
def convert_split(ctx: Context, node) -> None:
    shape = ctx.shape(node.input[0])
    axis = _norm_axis(int(ctx.attr("axis", 0)), len(shape))
    split = ctx.attr("split")
    if split is None and len(node.input) > 1 and node.input[1]:
        split = [int(s) for s in ctx.need_const(1, "Split sizes").reshape(-1)]
    if split is None:
        split = [ctx.shape(o)[axis] for o in node.output]
    ctx.emit("SplitV", [ctx.blob(node.input[0])], [ctx.out(o) for o in node.output],
             {"axis": axis, "slices": list(split)})


@converter("Slice")
def convert_slice(ctx: Context, node) -> None:
    shape = ctx.shape(node.input[0])
    if ctx.view.opset >= 10:
        starts = [int(v) for v in ctx.need_const(1, "Slice starts").reshape(-1)]
        ends = [int(v) for v in ctx.need_const(2, "Slice ends").reshape(-1)]
        axes = ([int(v) for v in ctx.need_const(3, "Slice axes").reshape(-1)]
                if ctx.optional_input(3) else list(range(len(starts))))
        steps = ([int(v) for v in ctx.need_const(4, "Slice steps").reshape(-1)]
                 if ctx.optional_input(4) else [1] * len(starts))
    else:
        starts, ends = list(ctx.attr("starts")), list(ctx.attr("ends"))
        axes = list(ctx.attr("axes", list(range(len(starts)))))
        steps = [1] * len(starts)
    begins_out, ends_out, axes_out = [], [], []
    for b, e, a, s in zip(starts, ends, axes, steps):
        a = _norm_axis(a, len(shape))
        d = shape[a]
        if s == 0:
            raise ConversionIssue("Slice with step 0", "fix the model")
        b = b + d if b < 0 else b
        e = e + d if e < 0 else e
        if s > 0:
            b, e = min(max(b, 0), d), min(max(e, 0), d)
        else:
            b, e = min(max(b, 0), d - 1), min(max(e, -1), d - 1)
            if e == -1:
                # TNN spells "before index 0" as INT_MIN, but its shape inference rewrites the
                # param in place (INT_MIN -> -1 -> -1 + dim) when it runs again: the layer
                # fails to load (seen in a TNN build). Only ends >= 0 survive.
                raise ConversionIssue("a reversed Slice that runs through index 0",
                                      "avoid reversed slicing (x.flip / x[..., ::-1]) in the model; reverse on the host")
        begins_out.append(b)
        ends_out.append(e)
        axes_out.append(a)
    # ARM's StridedSliceV2 walks the axes in ascending order (an unsorted list skips axes).
    order = sorted(range(len(axes_out)), key=axes_out.__getitem__)
    ctx.emit("StridedSliceV2", [ctx.blob(node.input[0])], [ctx.out(node.output[0])],
             {"begins": [begins_out[i] for i in order], "ends": [ends_out[i] for i in order],
              "axes": [axes_out[i] for i in order], "strides": [steps[i] for i in order]})


@converter("Gather")
def convert_gather(ctx: Context, node) -> None:
    data, indices = node.input
    cdata, cind = ctx.const(data), ctx.const(indices)
    axis = int(ctx.attr("axis", 0))
    if cind is not None:
        rank = len(ctx.shape(data))
        axis = _norm_axis(axis, rank)
        dim = ctx.shape(data)[axis]
        idx = np.where(cind < 0, cind + dim, cind).astype(np.int32)
        ctx.emit("Gather", [ctx.blob(data)], [ctx.out(node.output[0])],
                 {"axis": axis, "data_in_resource": 0, "indices_in_resource": 1},
                 {"data": None, "indices": idx})
    elif cdata is not None:
        ctx.emit("Gather", [ctx.blob(indices)], [ctx.out(node.output[0])],
                 {"axis": _norm_axis(axis, cdata.ndim), "data_in_resource": 1, "indices_in_resource": 0},
                 {"data": _f32(cdata), "indices": None})
    else:
        ctx.emit("Gather", [ctx.blob(data), ctx.blob(indices)], [ctx.out(node.output[0])],
                 {"axis": axis, "data_in_resource": 0, "indices_in_resource": 0})


_REDUCE = {"ReduceMean": "ReduceMean", "ReduceSum": "ReduceSum", "ReduceMax": "ReduceMax"}


@converter(*_REDUCE)
def convert_reduce(ctx: Context, node) -> None:
    rank = len(ctx.shape(node.input[0]))
    axes = _axes(ctx, 1)
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            ctx.alias[node.output[0]] = ctx.blob(node.input[0])
            return
        axes = list(range(rank))
    ctx.emit(_REDUCE[node.op_type], [ctx.blob(node.input[0])], [ctx.out(node.output[0])],
             {"keep_dims": int(ctx.attr("keepdims", 1)), "axes": sorted(_norm_axis(a, rank) for a in axes)})


@converter("Pad")
def convert_pad(ctx: Context, node) -> None:
    shape = ctx.shape(node.input[0])
    rank = len(shape)
    if ctx.view.opset >= 11:
        pads = [int(p) for p in ctx.need_const(1, "Pad pads").reshape(-1)]
        value = float(ctx.need_const(2, "Pad value").reshape(())) if ctx.optional_input(2) else 0.0
        if ctx.optional_input(3):
            raise ConversionIssue("Pad with an axes input", "pad every axis explicitly")
    else:
        pads, value = list(ctx.attr("pads")), float(ctx.attr("value", 0.0))
    mode = {"constant": 0, "reflect": 1, "edge": 2}.get(ctx.attr("mode", "constant"))
    if mode is None:
        raise ConversionIssue(f"Pad mode {ctx.attr('mode')!r}", "use constant, reflect or edge padding")
    if any(p < 0 for p in pads):
        raise ConversionIssue("Pad with negative pads (cropping)", "use Slice to crop")
    begins, ends = pads[:rank], pads[rank:]
    x, out = ctx.blob(node.input[0]), ctx.out(node.output[0])
    if rank == 4 and begins[0] == 0 and ends[0] == 0:
        ctx.emit("Pad", [x], [out], {"pad_t": begins[2], "pad_b": ends[2], "pad_l": begins[3], "pad_r": ends[3],
                                     "pad_c_b": begins[1], "pad_c_e": ends[1], "type": mode, "value": value})
    else:
        ctx.emit("PadV2", [x], [out], {"pads": begins + ends, "type": mode, "value": value})


# --------------------------------------------------------------------------- resize


@converter("Resize", "Upsample")
def convert_resize(ctx: Context, node) -> None:
    s_in, s_out = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    if len(s_in) != 4 or s_in[:2] != s_out[:2]:
        raise ConversionIssue("Resize of batch or channels, or of a non-4-D tensor",
                              "resize only the spatial axes of an NCHW tensor")
    mode = ctx.attr("mode", "nearest")
    coord = ctx.attr("coordinate_transformation_mode", "half_pixel" if node.op_type == "Resize" else "asymmetric")
    if ctx.attr("antialias", 0):
        raise ConversionIssue("Resize with antialias", "resize without antialias")
    (ih, iw), (oh, ow) = s_in[2:], s_out[2:]
    if mode == "nearest":
        nearest = ctx.attr("nearest_mode", "round_prefer_floor")
        integer_up = oh % ih == 0 and ow % iw == 0
        # TNN picks src = floor(dst * in / out). ONNX asymmetric+floor is exactly that;
        # half-pixel nearest agrees with it for integer upscaling factors.
        ok = (coord == "asymmetric" and nearest == "floor") or (
            coord in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn") and integer_up
            and nearest in ("round_prefer_floor", "round_prefer_ceil"))
        if not ok:
            raise ConversionIssue(f"nearest Resize with {coord}/{nearest} and scale {oh}/{ih}x{ow}/{iw}",
                                  "use F.interpolate(mode='nearest') (asymmetric + floor) or integer upscaling")
        tnn_mode, align = 1, 0
    elif mode == "linear":
        if coord in ("half_pixel", "pytorch_half_pixel"):
            tnn_mode, align = 2, 0
        elif coord == "align_corners":
            tnn_mode, align = 2, 1
        else:
            raise ConversionIssue(f"linear Resize with coordinate mode {coord}",
                                  "use bilinear with align_corners=False (half_pixel) or True")
    else:
        raise ConversionIssue(f"Resize mode {mode!r}", "use nearest or bilinear interpolation")
    ctx.emit("Upsample", [ctx.blob(node.input[0])], [ctx.out(node.output[0])],
             {"mode": tnn_mode, "scale_h": oh / ih, "scale_w": ow / iw, "align_corners": align,
              "output_h": oh, "output_w": ow})


# --------------------------------------------------------------------------- matmul / norm


def _matmul_as_inner_product(ctx: Context, node, weight: np.ndarray) -> None:
    """x[..., K] @ W[K, N] as Reshape [M, K] -> InnerProduct -> Reshape [..., N].

    InnerProduct has NC4HW4 (and int8) kernels on ARM, MatMul has neither."""
    a, out_t = node.input[0], node.output[0]
    shape_in, shape_out = ctx.shape(a), ctx.shape(out_t)
    rows = int(np.prod(shape_in[:-1]))
    flat_in = ctx.new_blob(f"{ctx.blob(a)}_2d", range_of=a)
    flat_out = ctx.new_blob(f"{out_t}_2d", range_of=out_t)
    _reshape(ctx, ctx.blob(a), out_t, [rows, shape_in[-1]], name=ctx.layer_name("_to2d"), out_blob=flat_in)
    name = ctx.layer_name()
    ctx.emit("InnerProduct", [flat_in], [flat_out], {"num_output": weight.shape[1], "has_bias": 1, "transpose": 0,
                                                     "axis": 1},
             {"name": name, "weight": _f32(weight.T), "bias": np.zeros(weight.shape[1], np.float32)}, name=name)
    _reshape(ctx, flat_out, out_t, shape_out, name=ctx.layer_name("_back"))


# A 2-D blob [rows, C] with C a multiple of 4 has the same memory in NC4HW4 (rows x
# ceil(C/4) x 4) and NCHW (rows x C): TNN's ARM MatMul, which reads NCHW only, reads it right
# even in an int8 network, where every float blob stays NC4HW4 (TNN's layout reformats are
# skipped for quantized networks: net_optimizer_insert_layout_reformat.cc).
LAYOUT_AGNOSTIC_MULTIPLE = 4


def _matmul_layout_agnostic(ctx: Context, node) -> None:
    """A MatMul [..., M, K] x [..., K, N] with an activation operand, as one 2-D MatMul per
    batch (attention: per head): each operand becomes [M, K] and [K, N] blobs (SplitV /
    Reshape; a constant operand becomes the layer's weight), K and N zero-padded to
    multiples of 4 where they are not (Pad on a [1, 1, rows, cols] view), the 2-D product is
    cropped back to N columns (StridedSliceV2), reshaped to [1, M, N] and concatenated. Every
    MatMul operand and output blob is then 2-D with a last dim that is a multiple of 4,
    laid out identically in NC4HW4 and NCHW; the other layers run in NC4HW4 as TNN's ARM
    kernels for them expect."""
    a, b = node.input
    out_t = node.output[0]
    ca, cb = ctx.const(a), ctx.const(b)
    sa = list(ca.shape) if ca is not None else ctx.shape(a)
    sb = list(cb.shape) if cb is not None else ctx.shape(b)
    so = ctx.shape(out_t)
    if len(sa) < 2 or len(sb) < 2:
        raise ConversionIssue("a MatMul with a 1-D operand in an int8 network on ARM", "keep both operands 2-D or more")
    m, k, n = sa[-2], sa[-1], sb[-1]
    mult = LAYOUT_AGNOSTIC_MULTIPLE
    k4, n4 = -(-k // mult) * mult, -(-n // mult) * mult
    batch_a, batch_b = int(np.prod(sa[:-2])), int(np.prod(sb[:-2]))
    batch = int(np.prod(so[:-2]))
    if batch_a not in (1, batch) or batch_b not in (1, batch):
        raise ConversionIssue(f"a MatMul broadcasting batch dims {sa[:-2]} x {sb[:-2]}",
                              "expand or reshape the operands so their batch dims are equal, or one has batch 1")

    step = iter(range(10 ** 6))

    def name(hint: str) -> str:
        return ctx.layer_name(f"_{hint}{next(step)}")

    def blob_pieces(x: str, rows: int, cols: int, count: int, rows4: int, cols4: int) -> list[str]:
        """``count`` 2-D [rows4, cols4] blobs of activation ``x`` (zero-padded)."""
        src = ctx.blob(x)
        parts = [src]
        if count > 1:
            stacked = ctx.new_blob(f"{src}_3d", range_of=None)
            _reshape(ctx, src, x, [count, rows, cols], name=name("to3d"), out_blob=stacked)
            parts = [ctx.new_blob(f"{src}_b{i}", range_of=None) for i in range(count)]
            ctx.emit("SplitV", [stacked], parts, {"axis": 0, "slices": [1] * count}, name=name("split"))
        flats = []
        for i, part in enumerate(parts):
            flat = ctx.new_blob(f"{src}_b{i}_2d", range_of=None)
            if (rows4, cols4) == (rows, cols):
                _reshape(ctx, part, x, [rows, cols], name=name("to2d"), out_blob=flat)
            else:
                view = ctx.new_blob(f"{src}_b{i}_4d", range_of=None)
                _reshape(ctx, part, x, [1, 1, rows, cols], name=name("to4d"), out_blob=view)
                padded = ctx.new_blob(f"{src}_b{i}_pad", range_of=None)
                ctx.emit("Pad", [view], [padded], {"pad_t": 0, "pad_b": rows4 - rows, "pad_l": 0,
                                                   "pad_r": cols4 - cols, "pad_c_b": 0, "pad_c_e": 0, "type": 0,
                                                   "value": 0.0}, name=name("pad"))
                _reshape(ctx, padded, x, [rows4, cols4], name=name("to2d"), out_blob=flat)
            flats.append(flat)
        return flats

    def const_pieces(c: np.ndarray, rows: int, cols: int, rows4: int, cols4: int) -> list[np.ndarray]:
        stacked = _f32(c).reshape(-1, rows, cols)
        return [np.pad(piece, ((0, rows4 - rows), (0, cols4 - cols))) for piece in stacked]

    left = const_pieces(ca, m, k, m, k4) if ca is not None else blob_pieces(a, m, k, batch_a, m, k4)
    right = const_pieces(cb, k, n, k4, n4) if cb is not None else blob_pieces(b, k, n, batch_b, k4, n4)
    results = []
    for i in range(batch):
        lhs, rhs = left[i if len(left) > 1 else 0], right[i if len(right) > 1 else 0]
        prod = ctx.new_blob(f"{out_t}_b{i}_2d", range_of=None)
        if isinstance(lhs, np.ndarray):
            layer = ctx.emit("MatMul", [rhs], [prod], {"weight_position": 0}, {"weight": lhs}, name=name("mm"))
        elif isinstance(rhs, np.ndarray):
            layer = ctx.emit("MatMul", [lhs], [prod], {"weight_position": 1}, {"weight": rhs}, name=name("mm"))
        else:
            layer = ctx.emit("MatMul", [lhs, rhs], [prod], {"weight_position": -1}, name=name("mm"))
        ctx.layout_agnostic.add(layer.name)
        if n4 != n:
            cropped = ctx.new_blob(f"{out_t}_b{i}_crop", range_of=None)
            ctx.emit("StridedSliceV2", [prod], [cropped], {"begins": [0], "ends": [n], "axes": [1], "strides": [1]},
                     name=name("crop"))
            prod = cropped
        results.append(prod)
    if batch == 1:
        _reshape(ctx, results[0], out_t, so, name=name("back"))
        return
    stacked = []
    for i, r in enumerate(results):
        three = ctx.new_blob(f"{out_t}_b{i}_3d", range_of=None)
        _reshape(ctx, r, out_t, [1, m, n], name=name("to3d"), out_blob=three)
        stacked.append(three)
    joined = ctx.new_blob(f"{out_t}_3d", range_of=None)
    ctx.emit("Concat", stacked, [joined], {"axis": 0}, name=name("concat"))
    _reshape(ctx, joined, out_t, so, name=name("back"))


@converter("MatMul")
def convert_matmul(ctx: Context, node) -> None:
    a, b = node.input
    ca, cb = ctx.const(a), ctx.const(b)
    if ctx.nc4hw4_only and ca is None and cb is not None and cb.ndim == 2:
        _matmul_as_inner_product(ctx, node, cb)
        return
    if ctx.nc4hw4_only:  # an activation times an activation, or a batched / left constant
        _matmul_layout_agnostic(ctx, node)
        return
    out = [ctx.out(node.output[0])]
    if ca is None and cb is None:
        ctx.emit("MatMul", [ctx.blob(a), ctx.blob(b)], out, {"weight_position": -1})
    elif cb is not None:
        ctx.emit("MatMul", [ctx.blob(a)], out, {"weight_position": 1}, {"weight": _f32(cb)})
    else:
        ctx.emit("MatMul", [ctx.blob(b)], out, {"weight_position": 0}, {"weight": _f32(ca)})


@converter("Gemm")
def convert_gemm(ctx: Context, node) -> None:
    if len(ctx.shape(node.input[0])) != 2 or ctx.attr("transA", 0):
        raise ConversionIssue("Gemm with a transposed or non-2-D A", "use a Linear layer on a 2-D input")
    b = _f32(ctx.need_const(1, "Gemm B (the weight)"))
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    weight = (b if ctx.attr("transB", 0) else b.T) * alpha  # InnerProduct wants [num_output, K]
    n = weight.shape[0]
    bias = np.zeros(n, np.float32)
    if ctx.optional_input(2):
        bias = np.broadcast_to(_f32(ctx.need_const(2, "Gemm C (the bias)")).reshape(-1), (n,)) * beta
    name = ctx.layer_name()
    ctx.emit("InnerProduct", [ctx.blob(node.input[0])], [ctx.out(node.output[0])],
             {"num_output": n, "has_bias": 1, "transpose": 0, "axis": 1},
             {"name": name, "weight": _f32(weight), "bias": _f32(bias)}, name=name)


@converter("Softmax")
def convert_softmax(ctx: Context, node) -> None:
    shape = ctx.shape(node.input[0])
    rank = len(shape)
    # opset >= 13: one axis, default -1 (onnx2tnn reads the old default 1 here).
    # opset < 13: default 1, and the input is flattened to 2-D at the axis.
    axis = _norm_axis(int(ctx.attr("axis", -1 if ctx.view.opset >= 13 else 1)), rank)
    x, out_t = ctx.blob(node.input[0]), node.output[0]
    if ctx.view.opset >= 13 or axis == rank - 1:
        ctx.emit("Softmax", [x], [ctx.out(out_t)], {"axis": axis})
        return
    rows = int(np.prod(shape[:axis])) if axis else 1
    flat_in = ctx.new_blob(f"{x}_2d", range_of=node.input[0])
    flat_out = ctx.new_blob(f"{x}_softmax2d", range_of=out_t)
    _reshape(ctx, x, out_t, [rows, int(np.prod(shape[axis:]))], name=ctx.layer_name("_to2d"), out_blob=flat_in)
    ctx.emit("Softmax", [flat_in], [flat_out], {"axis": 1})
    _reshape(ctx, flat_out, out_t, shape, name=ctx.layer_name("_back"))


def _layernorm_as_elementwise(ctx: Context, node, axes: list[int], scale: np.ndarray, bias: np.ndarray,
                              eps: float) -> None:
    """(x - mean) / sqrt(var + eps) * scale + bias in layers that all have NC4HW4 ARM kernels."""
    x, out_t = ctx.blob(node.input[0]), node.output[0]
    step = iter(range(100))

    def blob(hint: str) -> str:
        return ctx.new_blob(f"{out_t}_{hint}", range_of=None)

    def emit(type_, ins, out, params=None, resource=None):
        ctx.emit(type_, ins, [out], params, resource, name=ctx.layer_name(f"_ln{next(step)}"))
        return out

    reduce = {"keep_dims": 1, "axes": axes}
    mean = emit("ReduceMean", [x], blob("mean"), reduce)
    centered = emit("Sub", [x, mean], blob("centered"), {"weight_input_index": 1})
    squared = emit("Mul", [centered, centered], blob("squared"), {"weight_input_index": 1})
    var = emit("ReduceMean", [squared], blob("var"), reduce)
    var_eps = emit("Add", [var], blob("var_eps"), {"weight_input_index": 1}, {"element": np.array([eps], np.float32)})
    std = emit("Sqrt", [var_eps], blob("std"))
    normed = emit("Div", [centered, std], blob("normed"), {"weight_input_index": 1})
    scaled = emit("Mul", [normed], blob("scaled"), {"weight_input_index": 1}, {"element": _f32(scale)})
    emit("Add", [scaled], ctx.out(out_t), {"weight_input_index": 1}, {"element": _f32(bias)})


@converter("LayerNormalization", "LayerNorm")
def convert_layernorm(ctx: Context, node) -> None:
    shape = ctx.shape(node.input[0])
    axis = _norm_axis(int(ctx.attr("axis", -1)), len(shape))
    scale = _f32(ctx.need_const(1, "LayerNormalization scale"))
    bias_name = ctx.optional_input(2)
    bias = _f32(ctx.need_const(2, "LayerNormalization bias")) if bias_name else np.zeros_like(scale)
    normalized = shape[axis:]
    if ctx.nc4hw4_only:
        _layernorm_as_elementwise(ctx, node, list(range(axis, len(shape))), scale, bias,
                                  float(ctx.attr("epsilon", 1e-5)))
        return
    # TNN's LayerNorm takes scale and bias as blobs from the constant map, shaped like
    # the normalised dims.
    scale_blob = ctx.names.new_blob(f"{node.input[1]}")
    bias_blob = ctx.names.new_blob(f"{bias_name or node.name + '_bias'}")
    ctx.constants[scale_blob] = np.broadcast_to(scale, normalized).astype(np.float32).copy()
    ctx.constants[bias_blob] = np.broadcast_to(bias, normalized).astype(np.float32).copy()
    ctx.emit("LayerNorm", [ctx.blob(node.input[0]), scale_blob, bias_blob], [ctx.out(node.output[0])],
             {"reduce_dims_size": len(normalized), "eps": float(ctx.attr("epsilon", 1e-5))})


# --------------------------------------------------------------------------- x86-only layers
# These have TNN layers but no ARM kernels; the ARM preflight rejects them with a fix.


@converter("Einsum")
def convert_einsum(ctx: Context, node) -> None:
    # TNN separates operands with ';' (a ',' would split the proto line).
    equation = ctx.attr("equation").replace(" ", "").replace(",", ";")
    ctx.emit("Einsum", [ctx.blob(i) for i in node.input], [ctx.out(node.output[0])], {"equation": equation})


@converter("Shape")
def convert_shape(ctx: Context, node) -> None:
    if ctx.attr("start") is not None or ctx.attr("end") is not None:
        raise ConversionIssue("Shape with start/end on a dynamic tensor", STATIC_SHAPES_FIX)
    ctx.emit("Shape", [ctx.blob(node.input[0])], [ctx.out(node.output[0])])


# Ops we know TNN (or our writer) cannot take, with the change that avoids them.
NO_MAPPING_FIXES: dict[str, str] = {
    "Where": "compute the mask on the host, or replace where(m, a, b) by m*a + (1-m)*b with a float mask",
    "Equal": "compare on the host after inference",
    "NonZero": "data-dependent shapes: move this step to host post-processing",
    "TopK": "select the top-k on the host after inference, or rank in the graph (Sign of pairwise differences, "
            "summed per row; a one-hot MatMul gathers the top k, e.g. FastInst's query_select='rank')",
    "Range": STATIC_SHAPES_FIX,
    "ConstantOfShape": STATIC_SHAPES_FIX,
    "Expand": "broadcast with an elementwise op (x * ones) or export with static shapes so it folds",
    "GatherND": "use Gather on one axis, or index on the host",
    "ScatterND": "avoid in-place index assignment in forward()",
    "NonMaxSuppression": "run NMS on the host after inference",
    "ConvTranspose": "upsample with F.interpolate followed by a Conv",
}
