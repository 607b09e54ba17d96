"""ONNX + PrecisionPlan + CalibrationTable -> one QDQ / FP16 ONNX (the universal quantized artifact).

Per component, as the plan says:

* **int8**: the nodes :mod:`edgeseg.quantize.int8_chains` picks inside the int8
  components: Conv, MatMul and Gemm always, and between them every Add, Mul (and Div by a
  constant, written as a Mul by its reciprocal), Concat, pooling, Resize, Softmax, Sigmoid,
  layout op and Relu/Clip(0, x) where the int8 chain continues, so ONNX Runtime fuses them
  into integer kernels (QLinearConv, QLinearAdd, QLinearConcat...) instead of leaving
  DequantizeLinear -> float op -> QuantizeLinear islands. Weights: per-channel symmetric
  int8 on the output-channel axis, narrow range [-127, 127]. Activations: per-tensor,
  scale = amax / 127 from the table (stored as uint8 with zero point 128 by default, or
  int8; see ``ACTIVATION_DTYPES``); a Relu / Clip(0, x) output on [0, amax] (uint8 zero
  point 0, which lets ONNX Runtime fold the activation into the producer's kernel), a
  Softmax / Sigmoid output on [0, observed max]; pass-through ops keep their input's.
  Conv and Gemm biases become int32 with scale = input scale x weight scale, so ONNX
  Runtime adds them inside the integer accumulator of its fused kernel; constant operands
  of int8 Add / Mul / Concat are quantized per tensor in the activations' type.
  A quantized tensor is one Q/DQ pair right after its producer. Every reader of a tensor
  an int8 node writes reads its DequantizeLinear (the producer writes int8, as on TFLite
  and TNN; a graph output a Conv writes keeps its name on the DequantizeLinear and stays
  float32); a tensor a float node writes is dequantized only for the int8 nodes reading
  it. Nothing outside an int8 component is rewritten, graph inputs and outputs keep their
  names and float32 types. Tensors computed from constants only (an export without a
  simplifier keeps such subgraphs) are weights: their value is folded, and the subgraph
  dropped.
* **fp16**: float initializers and activations of the component become float16; Casts
  are inserted only where a float tensor crosses the component's boundary (one Cast per
  tensor and direction). Inputs that the ONNX spec keeps float32 (Resize ``scales``)
  stay float32.
* **fp32**: untouched, node for node.

A quantized file carries no shape annotations (``value_info``: every runtime infers them),
and what the writer adds has short names (:mod:`edgeseg.quantize.names`).

Graph input and output names and dtypes never change: float32 in, float32 out.
The float original of a converted weight is not kept: every initializer and Constant that
no node reads any more is dropped, so int8 files are ~0.28x and fp16 ~0.50x of fp32.
Every node created here carries the component tag of the component it belongs to.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.export.tags import get_component, set_component
from edgeseg.quantize.cache import CalibrationTable
from edgeseg.quantize.const_fold import ConstantFolder, constant_tensors
from edgeseg.quantize.int8_chains import MAC_OPS
from edgeseg.quantize.plan import PrecisionPlan

# Op types that are always int8 in an int8 component: they carry nearly all the multiply-
# accumulates of a segmentation network, and they are what every backend runs in int8
# (TensorRT, TFLite, TNN, ONNX Runtime's QLinearConv / QLinearMatMul / QGemm). The ops
# between them follow (int8_chains).
QUANTIZED_OPS = MAC_OPS
# Storage type of quantized activations. Both hold the same symmetric grid (uint8 with
# zero point 128 is int8 shifted by 128: identical values after DequantizeLinear).
# Measured on MobileInst-TopFormer at 640 (ORT 1.31, x86, one core): with uint8 ORT fuses
# every Conv into QLinearConv; with int8 it leaves about half of them as float Conv
# between Q/DQ, so int8 runs no faster than fp32 there. TensorRT's explicit-quantization
# path needs int8, hence the choice.
ACTIVATION_DTYPES = ("int8", "uint8")

# (op_type, input index) that the ONNX spec types as float32 whatever T is.
_KEEP_FP32_INPUTS = {("Resize", 2), ("Upsample", 1)}


@dataclass
class QuantizeReport:
    plan: dict[str, str]
    activation_dtype: str
    quantized_nodes: dict[str, int] = field(default_factory=dict)  # component -> count
    quantized_tensors: int = 0
    quantized_weights: int = 0
    fp16_nodes: dict[str, int] = field(default_factory=dict)
    casts: int = 0
    skipped: list[str] = field(default_factory=list)  # "node: reason"
    bias_clipped: int = 0
    removed_unused: int = 0  # float originals of quantized / fp16 weights, no longer read
    int8_ops: dict[str, int] = field(default_factory=dict)  # op type -> nodes computed in int8
    fused_activations: int = 0  # Relu / Clip folded into their producer's QuantizeLinear

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "activation_dtype": self.activation_dtype,
                "quantized_nodes": self.quantized_nodes, "quantized_tensors": self.quantized_tensors,
                "quantized_weights": self.quantized_weights, "fp16_nodes": self.fp16_nodes,
                "casts": self.casts, "skipped": self.skipped, "bias_clipped": self.bias_clipped,
                "removed_unused": self.removed_unused, "int8_ops": self.int8_ops,
                "fused_activations": self.fused_activations}


# ============================================================================ helpers
class _Graph:
    """Indexes over a graph that the passes below keep up to date as they rewrite it."""

    def __init__(self, model):
        self.model = model
        self.g = model.graph
        self.inits = {t.name: t for t in self.g.initializer}
        self.outputs = {o.name for o in self.g.output}
        self.taken = set(self.inits) | {i.name for i in self.g.input}
        for n in self.g.node:
            self.taken.update(n.output)
            self.taken.add(n.name)
        self.producer = {}
        self.consumers: dict[str, list[tuple[Any, int]]] = defaultdict(list)
        # Tensors computed from constants only (folded by every runtime): weights, not activations.
        self.constants = constant_tensors(self.g)
        self._folder = ConstantFolder(model)
        for n in self.g.node:
            for o in n.output:
                self.producer[o] = n
            for k, x in enumerate(n.input):
                if x:
                    self.consumers[x].append((n, k))

    def rewire(self, node, slot: int, new: str) -> None:
        """Point ``node.input[slot]`` at ``new`` and keep the consumer index true."""
        old = node.input[slot]
        self.consumers[old] = [(c, k) for c, k in self.consumers[old] if not (c is node and k == slot)]
        node.input[slot] = new
        self.consumers[new].append((node, slot))

    def add_consumer(self, node) -> None:
        for k, x in enumerate(node.input):
            if x:
                self.consumers[x].append((node, k))

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def const(self, name: str) -> np.ndarray | None:
        """Value of an initializer or Constant-node output, else None (an activation)."""
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant":
            for a in p.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def const_value(self, name: str) -> np.ndarray | None:
        """Like :meth:`const`, and also the value of a tensor computed from constants only
        (an export without a simplifier keeps such subgraphs); None for an activation."""
        value = self.const(name)
        if value is not None or name not in self.constants:
            return value
        try:
            return self._folder.value(name)
        except Exception:  # an op the reference evaluator lacks: leave the tensor float
            return None

    def add_init(self, base: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(base)
        t = numpy_helper.from_array(array, name)
        self.g.initializer.append(t)
        self.inits[name] = t
        return name


def _make_node(op: str, inputs: list[str], outputs: list[str], name: str, component: str | None, **attrs):
    from onnx import helper

    node = helper.make_node(op, inputs, outputs, name=name, **attrs)
    if component:
        set_component(node, component)
    return node


def _attr(node, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _weight_scales(w: np.ndarray, axis: int | None) -> np.ndarray:
    """Symmetric per-channel (or per-tensor) scales max|w| / 127; all-zero channels get 1."""
    if axis is None:
        amax = np.abs(w).max(initial=0.0)
    else:
        amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1, initial=0.0)
    return np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)


def _quantize_weight(w: np.ndarray, scale: np.ndarray, axis: int | None) -> np.ndarray:
    s = scale if axis is None else scale.reshape([-1 if d == axis else 1 for d in range(w.ndim)])
    return np.clip(np.rint(w.astype(np.float64) / s), -127, 127).astype(np.int8)


# ============================================================================ int8
def _weight_axis(node, slot: int, w: np.ndarray) -> int | None:
    """Output-channel axis of a weight, or None for per-tensor."""
    op = node.op_type
    if op == "Conv" and slot == 1:
        return 0  # (C_out, C_in/groups, kh, kw)
    if op == "Gemm" and slot == 1:
        return 0 if _attr(node, "transB", 0) else 1  # B is (N, K) when transposed, else (K, N)
    if op == "Gemm" and slot == 0:
        return None  # a constant A is rare; per-tensor keeps the math simple
    if op == "MatMul" and slot == 1 and w.ndim >= 2:
        return w.ndim - 1  # (..., K, N): one scale per output column
    return None


def _insert_int8(gr: _Graph, plan: PrecisionPlan, table: CalibrationTable,
                 report: QuantizeReport, act_dtype: str) -> tuple[dict[str, list], set[str]]:
    """Plan and create the QDQ nodes; returns (tensor -> nodes to emit after its producer,
    names of the new float32 DequantizeLinear outputs)."""
    from edgeseg.quantize.int8_chains import plan_int8

    int8 = {c for c, p in plan.precisions.items() if p == "int8"}
    if not int8:
        return {}, set()
    chains = plan_int8(gr, int8, table, act_dtype, gr.constants)
    if chains.missing:
        uniq = sorted(set(chains.missing))
        raise EdgesegError(
            f"the calibration table has no range for {len(uniq)} tensor(s) the plan quantizes "
            f"(e.g. {', '.join(uniq[:3])})",
            "re-run `edgeseg calibrate` on this exact ONNX file")
    report.skipped.extend(chains.skipped)
    for n in chains.nodes.values():
        comp = get_component(n)
        report.quantized_nodes[comp] = report.quantized_nodes.get(comp, 0) + 1
        report.int8_ops[n.op_type] = report.int8_ops.get(n.op_type, 0) + 1
    report.fused_activations = len(chains.fused)

    np_dtype = np.int8 if act_dtype == "int8" else np.uint8
    emit: dict[str, list] = defaultdict(list)  # tensor -> nodes emitted right after its producer
    dq_params: dict[str, Any] = {}  # dequantized name -> QParams (bias scales)
    shared: dict[str, tuple[str, str]] = {}  # QParams.source -> (scale, zero point) initializers

    # 1. Activations: one Q/DQ pair per tensor right after its producer.
    for x, qp in chains.params.items():
        if x in chains.all_readers:
            readers = list(gr.consumers.get(x, []))
        else:  # written by a float node: dequantized for the int8 nodes only
            readers = [(c, k) for c, k in gr.consumers.get(x, []) if chains.is_int8(c)]
        if not readers and x not in chains.graph_outputs:
            continue
        p = gr.producer.get(x)
        comp = get_component(p) if p is not None and get_component(p) in int8 else None
        if comp is None:  # written outside the int8 components: tagged like its first int8 reader
            comp = next(get_component(c) for c, _ in readers if get_component(c) in int8)
        if qp.source not in shared:
            shared[qp.source] = (gr.add_init(f"{qp.source}_scale", np.array(qp.scale, np.float32)),
                                 gr.add_init(f"{qp.source}_zero_point", np.array(qp.zero_point, np_dtype)))
        s_name, z_name = shared[qp.source]
        src = x
        if x in chains.graph_outputs:
            # The graph output keeps its name: the producer writes a new one, the DQ the output.
            src = gr.fresh(f"{x}_float")
            p.output[list(p.output).index(x)] = src
            gr.producer[src] = p
        q_out = gr.fresh(f"{x}_quantized")
        dq_out = x if x in chains.graph_outputs else gr.fresh(f"{x}_dequantized")
        q = _make_node("QuantizeLinear", [src, s_name, z_name], [q_out], gr.fresh(f"{x}_QuantizeLinear"), comp)
        dq = _make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                        gr.fresh(f"{x}_DequantizeLinear"), comp)
        emit[src] += [q, dq]
        gr.add_consumer(q)
        gr.add_consumer(dq)
        gr.producer[q_out], gr.producer[dq_out] = q, dq
        if dq_out != x:
            for c, k in readers:
                gr.rewire(c, k, dq_out)
        dq_params[dq_out] = qp
        report.quantized_tensors += 1

    # 2. Constant operands of int8 Add / Mul / Concat: per tensor, in the activations' type
    #    (ONNX Runtime's QLinearAdd / QLinearConcat take one type for all inputs).
    const_dq: dict[str, str] = {}
    zp_act = 128 if act_dtype == "uint8" else 0
    for n, k in chains.const_operands:
        name = n.input[k]
        reciprocal = n.op_type == "Div"
        if reciprocal:
            # x / c as x * (1/c): ONNX Runtime has an integer Mul, no integer Div (same value
            # to a float rounding, before quantization).
            n.op_type = "Mul"
            name = f"{name}\0reciprocal"
        if name not in const_dq:
            c = gr.const_value(n.input[k]).astype(np.float32)
            if reciprocal:
                c = (1.0 / c.astype(np.float64)).astype(np.float32)
            label = n.input[k] + ("_reciprocal" if reciprocal else "")
            scale = _weight_scales(c, None)
            qc = (_quantize_weight(c, scale, None).astype(np.int16) + zp_act).astype(np_dtype)
            q_name = gr.add_init(f"{label}_quantized", qc)
            s_name = gr.add_init(f"{label}_scale", np.array(scale, np.float32))
            z_name = gr.add_init(f"{label}_zero_point", np.array(zp_act, np_dtype))
            dq_out = gr.fresh(f"{label}_dequantized")
            dq = _make_node("DequantizeLinear", [q_name, s_name, z_name], [dq_out],
                            gr.fresh(f"{label}_DequantizeLinear"), get_component(n))
            emit[""].append(dq)
            gr.add_consumer(dq)
            const_dq[name] = dq_out
            report.quantized_weights += 1
        gr.rewire(n, k, const_dq[name])

    # 3. Weights (per channel) and biases (int32) of the mac nodes.
    dq_cache: dict[tuple[str, int | None], str] = {}
    for n in chains.nodes.values():
        if chains.kind[id(n)] != "mac":
            continue
        comp = get_component(n)
        w_scales: np.ndarray | None = None
        w_axis: int | None = None
        for k in chains.mac_weights[id(n)]:
            name = n.input[k]
            w = gr.const_value(name)
            if w is None or w.dtype not in (np.float32, np.float64, np.float16):
                continue
            w = w.astype(np.float32)
            if k == 0:
                # A constant left operand (a query folded from constants): per tensor in the
                # activations' type, so the integer MatMul sees the usual (activation, weight) pair.
                key = (name, -1)
                if key not in dq_cache:
                    scale = _weight_scales(w, None)
                    qw = (_quantize_weight(w, scale, None).astype(np.int16) + zp_act).astype(np_dtype)
                    q_name = gr.add_init(f"{name}_quantized", qw)
                    s_name = gr.add_init(f"{name}_scale", np.array(scale, np.float32))
                    z_name = gr.add_init(f"{name}_zero_point", np.array(zp_act, np_dtype))
                    dq_out = gr.fresh(f"{name}_dequantized")
                    dq = _make_node("DequantizeLinear", [q_name, s_name, z_name], [dq_out],
                                    gr.fresh(f"{name}_DequantizeLinear"), comp)
                    emit[""].append(dq)
                    gr.add_consumer(dq)
                    dq_cache[key] = dq_out
                    dq_params[dq_out] = None
                    report.quantized_weights += 1
                gr.rewire(n, k, dq_cache[key])
                continue
            axis = _weight_axis(n, k, w)
            scales = _weight_scales(w, axis)
            key = (name, axis)
            if key not in dq_cache:
                q_name = gr.add_init(f"{name}_quantized", _quantize_weight(w, scales, axis))
                s_name = gr.add_init(f"{name}_scale", scales if axis is not None else np.array(scales, np.float32))
                zeros = np.zeros(scales.shape, np.int8) if axis is not None else np.array(0, np.int8)
                z_name = gr.add_init(f"{name}_zero_point", zeros)
                dq_out = gr.fresh(f"{name}_dequantized")
                extra = {"axis": axis} if axis is not None else {}
                dq = _make_node("DequantizeLinear", [q_name, s_name, z_name], [dq_out],
                                gr.fresh(f"{name}_DequantizeLinear"), comp, **extra)
                emit[""].append(dq)
                gr.add_consumer(dq)
                dq_cache[key] = dq_out
                report.quantized_weights += 1
            gr.rewire(n, k, dq_cache[key])
            w_scales, w_axis = scales, axis
        # Bias: int32 on the accumulator's scale, so the integer kernel adds it directly.
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] and w_scales is not None:
            if n.op_type == "Gemm" and (_attr(n, "alpha", 1.0) != 1.0 or _attr(n, "beta", 1.0) != 1.0):
                continue
            b = gr.const_value(n.input[2])
            src = dq_params.get(n.input[0])
            if b is None or b.ndim != 1 or src is None:
                continue
            in_scale = np.float32(src.scale)
            if w_axis is None and w_scales.ndim == 0:
                bs = np.full(b.shape, in_scale * w_scales, np.float32)
            elif w_scales.shape != b.shape:
                continue
            else:
                bs = (in_scale * w_scales).astype(np.float32)
            raw = np.rint(b.astype(np.float64) / bs.astype(np.float64))
            lim = 2 ** 31 - 1
            report.bias_clipped += int((np.abs(raw) > lim).sum())
            qb = np.clip(raw, -lim, lim).astype(np.int32)
            qb_name = gr.add_init(f"{n.input[2]}_quantized", qb)
            s_name = gr.add_init(f"{n.input[2]}_scale", bs)
            z_name = gr.add_init(f"{n.input[2]}_zero_point", np.zeros(b.shape, np.int32))
            dq_out = gr.fresh(f"{n.input[2]}_dequantized")
            dq = _make_node("DequantizeLinear", [qb_name, s_name, z_name], [dq_out],
                            gr.fresh(f"{n.input[2]}_DequantizeLinear"), comp, axis=0)
            emit[""].append(dq)
            gr.add_consumer(dq)
            gr.rewire(n, 2, dq_out)
    return emit, set(dq_params)


# ============================================================================ fp16
def _convert_fp16(gr: _Graph, plan: PrecisionPlan, report: QuantizeReport,
                  float_types: set[str]) -> tuple[dict[str, list], set[str]]:
    """Convert fp16 components; returns (nodes to emit, tensors whose type changed)."""
    from onnx import TensorProto, numpy_helper

    fp16 = {c for c, p in plan.precisions.items() if p == "fp16"}
    if not fp16:
        return {}, set()
    emit: dict[str, list] = defaultdict(list)
    g = gr.g

    def in16(n) -> bool:
        return get_component(n) in fp16

    work = [n for n in g.node if in16(n)]
    for n in work:
        report.fp16_nodes[get_component(n)] = report.fp16_nodes.get(get_component(n), 0) + 1
    # Float tensors computed inside fp16 components become float16. Constant nodes are
    # left alone and converted per use (a few uses must stay float32).
    produced16 = {o for n in work if n.op_type != "Constant" for o in n.output if o in float_types}

    # 1. Inputs: float32 constants get a float16 copy, float activations from outside a Cast.
    const16: dict[str, str] = {}
    cast_in: dict[tuple[str, str], str] = {}
    for n in work:
        if n.op_type == "Constant":
            continue
        comp = get_component(n)
        for k, x in enumerate(n.input):
            if not x or (n.op_type, k) in _KEEP_FP32_INPUTS or x in produced16:
                continue
            value = gr.const(x)
            if value is not None:
                if value.dtype != np.float32:
                    continue
                if x not in const16:
                    const16[x] = gr.add_init(f"{x}_fp16", value.astype(np.float16))
                gr.rewire(n, k, const16[x])
            elif x in float_types:
                key = (x, comp)
                if key not in cast_in:
                    out = gr.fresh(f"{x}_fp16")
                    cast = _make_node("Cast", [x], [out], gr.fresh(f"{x}_Cast_fp16"), comp, to=TensorProto.FLOAT16)
                    emit[x].append(cast)
                    gr.add_consumer(cast)
                    cast_in[key] = out
                    report.casts += 1
                gr.rewire(n, k, cast_in[key])
    # 2. Ops whose attributes fix a float32 output type.
    for n in work:
        if n.op_type == "Cast" and _attr(n, "to", 0) == TensorProto.FLOAT:
            _set_attr(n, "to", TensorProto.FLOAT16)
        elif n.op_type == "ConstantOfShape":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
    # 3. Outputs: the float16 tensor gets a new name inside; readers outside the component
    #    and graph outputs read a Cast back to float32 under the original name, so no node
    #    outside the component and no graph output is renamed.
    for n in work:
        if n.op_type == "Constant":
            continue
        comp = get_component(n)
        for idx, y in enumerate(n.output):
            if y not in produced16:
                continue
            inner = gr.fresh(f"{y}_fp16")
            n.output[idx] = inner
            gr.producer[inner] = n
            outside = False
            for c, k in list(gr.consumers.get(y, [])):
                if in16(c) and (c.op_type, k) not in _KEEP_FP32_INPUTS:
                    gr.rewire(c, k, inner)
                else:
                    outside = True
            if outside or y in gr.outputs:
                cast = _make_node("Cast", [inner], [y], gr.fresh(f"{y}_Cast_fp32"), comp, to=TensorProto.FLOAT)
                emit[inner].append(cast)
                gr.add_consumer(cast)
                gr.producer[y] = cast
                report.casts += 1
    return emit, produced16 | set(const16.values())


def _set_attr(node, name: str, value: Any) -> None:
    from onnx import helper

    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def _float_tensors(model) -> set[str]:
    """Names of float32 tensors (activations and constants), from shape inference."""
    from onnx import TensorProto, shape_inference

    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception as e:
        raise EdgesegError(f"ONNX shape inference failed on this model: {e}",
                           "re-export it with `edgeseg export`") from e
    g = inferred.graph
    out = {vi.name for vi in list(g.value_info) + list(g.input) + list(g.output)
           if vi.type.tensor_type.elem_type == TensorProto.FLOAT}
    out |= {t.name for t in g.initializer if t.data_type == TensorProto.FLOAT}
    return out


# ============================================================================ assembly
def _rebuild_nodes(gr: _Graph, emits: list[dict[str, list]]) -> None:
    """Put each new node right after the producer of the tensor it was emitted for.

    Keeps the file readable (a Q/DQ pair sits next to its tensor's producer); nodes for
    graph inputs and constants go first. A stable topological sort then guarantees validity.
    """
    after: dict[str, list] = defaultdict(list)
    for e in emits:
        for tensor, nodes in e.items():
            after[tensor].extend(nodes)
    ordered: list = []

    def place(node) -> None:
        ordered.append(node)
        for o in node.output:
            for m in after.pop(o, []):
                place(m)

    originals = list(gr.g.node)
    produced = {o for n in originals for o in n.output}
    produced |= {o for nodes in after.values() for n in nodes for o in n.output}
    for t in [t for t in after if t not in produced]:  # graph inputs and constants ("")
        for m in after.pop(t):
            place(m)
    for n in originals:
        place(n)
    for nodes in after.values():  # defensive: the sort below puts them where they can run
        ordered.extend(nodes)
    del gr.g.node[:]
    gr.g.node.extend(_toposort(ordered, gr))


def _toposort(nodes: list, gr: _Graph) -> list:
    """Stable topological order: the given order wherever it is already valid."""
    import heapq

    produced_by: dict[str, int] = {}
    for idx, n in enumerate(nodes):
        for o in n.output:
            produced_by[o] = idx
    users: dict[int, list[int]] = defaultdict(list)
    indegree = [0] * len(nodes)
    for idx, n in enumerate(nodes):
        deps = {produced_by[x] for x in n.input if x in produced_by}
        indegree[idx] = len(deps)
        for d in deps:
            users[d].append(idx)
    ready = [i for i, d in enumerate(indegree) if d == 0]
    heapq.heapify(ready)
    out: list = []
    while ready:
        i = heapq.heappop(ready)
        out.append(nodes[i])
        for u in users[i]:
            indegree[u] -= 1
            if indegree[u] == 0:
                heapq.heappush(ready, u)
    if len(out) != len(nodes):
        raise EdgesegError("internal error: the rewritten graph has a cycle", "please report this with the model")
    return out


def _names_read(graph) -> set[str]:
    """Every tensor name a node reads, subgraphs (If/Loop bodies) included: they may read
    initializers of the enclosing graph."""
    read: set[str] = set()
    for n in graph.node:
        read.update(x for x in n.input if x)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                read |= _names_read(sub)
    return read


def _drop_unused(gr: _Graph) -> int:
    """Remove every initializer and Constant node that nothing reads any more.

    Quantizing a weight adds its int8 copy (and fp16 adds a float16 copy); the float32
    original is dead from then on. Left in the file it made quantized models larger than
    float ones (MobileInst-TopFormer at 640, mixed plan: 50.4 MB vs 44.2 MB fp32, 95 unused
    initializers, one ONNX Runtime warning each on load). Returns how many were removed.
    """
    g = gr.g
    outputs = {o.name for o in g.output}
    # Nodes computing constants only (Constant, or a subgraph of an export without a
    # simplifier whose value became an int8 weight) that nothing reads any more; repeated,
    # since removing one can leave its own inputs unread.
    dead_nodes: list = []
    while True:
        read = _names_read(g) | outputs
        constants = constant_tensors(g)
        dead = [n for n in g.node if not (set(n.output) & read)
                and (n.op_type == "Constant" or all(o in constants for o in n.output if o))]
        if not dead:
            break
        dead_nodes += dead
        dead_ids = {id(n) for n in dead}
        keep_nodes = [n for n in g.node if id(n) not in dead_ids]
        del g.node[:]
        g.node.extend(keep_nodes)
    dead_inits = {t.name for t in g.initializer if t.name not in read}
    if dead_inits:
        keep = [t for t in g.initializer if t.name not in dead_inits]
        del g.initializer[:]
        g.initializer.extend(keep)
        # Old-style models also list initializers as graph inputs: a dead one would
        # otherwise become a required input.
        inputs = [i for i in g.input if i.name not in dead_inits]
        del g.input[:]
        g.input.extend(inputs)
    gone = dead_inits | {o for n in dead_nodes for o in n.output}
    if gone:
        keep_vi = [vi for vi in g.value_info if vi.name not in gone]
        del g.value_info[:]
        g.value_info.extend(keep_vi)
        for name in gone:
            gr.inits.pop(name, None)
    return len(dead_inits) + len(dead_nodes)


def quantize_model(model, plan: PrecisionPlan, table: CalibrationTable | None,
                   activation_dtype: str = "uint8"):
    """Return ``(new_model, QuantizeReport)``; ``model`` is not modified.

    A plan with exceptions below the component level is first rewritten into virtual
    components, one per unit (:mod:`edgeseg.quantize.units`), so every pass below honours
    them; the real component tags are put back afterwards.
    """
    import onnx

    if plan.exceptions:
        from edgeseg.quantize.units import expand, restore

        work = onnx.ModelProto()
        work.CopyFrom(model)
        expansion = expand(work, plan)
        qmodel, report = quantize_model(work, expansion.plan, table, activation_dtype)
        restore(qmodel, expansion)
        report.plan = {**plan.precisions, **plan.exceptions}
        return qmodel, report
    if activation_dtype not in ACTIVATION_DTYPES:
        raise EdgesegError(f"unknown activation type {activation_dtype!r}", f"use one of {ACTIVATION_DTYPES}")
    untagged = [n.name for n in model.graph.node if get_component(n) is None]
    if untagged:
        raise EdgesegError(f"{len(untagged)} nodes carry no component tag (e.g. {untagged[0]!r})",
                           "export with `edgeseg export`, which tags every node with its component")
    comps = {get_component(n) for n in model.graph.node}
    not_planned = sorted(c for c in comps if c not in plan.precisions)
    if not_planned:
        raise EdgesegError(f"plan does not cover component(s) {', '.join(not_planned)} of this graph",
                           f"parse the plan against the model's components: {', '.join(sorted(comps))}")
    if plan.needs_calibration and table is None:
        raise EdgesegError("the plan has int8 components but no calibration table was given",
                           "run `edgeseg calibrate MODEL.onnx --images DIR -o table.json` and pass --calib table.json")
    _check_opset(model, 13)  # per-axis DequantizeLinear needs opset >= 13
    m = onnx.ModelProto()
    m.CopyFrom(model)
    report = QuantizeReport(plan=dict(plan.precisions), activation_dtype=activation_dtype)
    float_types = _float_tensors(m) if "fp16" in plan.precisions.values() else set()
    gr = _Graph(m)
    emits = []
    if plan.needs_calibration:
        emit8, dequantized = _insert_int8(gr, plan, table, report, activation_dtype)  # type: ignore[arg-type]
        emits.append(emit8)
        float_types |= dequantized  # an fp16 reader of a dequantized tensor casts it like any float input
    emit16, changed = _convert_fp16(gr, plan, report, float_types)
    emits.append(emit16)
    _rebuild_nodes(gr, emits)
    report.removed_unused = _drop_unused(gr)
    if plan.needs_calibration or changed:
        # Shape annotations are optional (ONNX Runtime, TensorRT's parser and our converters
        # infer what they need) and in a quantized file they cost more than they tell: 63 KB
        # of the 2.2 MB all-int8 MobileInst at 256, which kept it above 0.30x of fp32. (Stale
        # float32 annotations on float16 tensors would also make ONNX Runtime refuse the
        # model.) `onnx.shape_inference.infer_shapes` writes them back for a viewer.
        del m.graph.value_info[:]
    # Names of what was added, shortened (half the file of a small int8 network was names).
    from edgeseg.quantize.names import compact_added_names

    source_tensors = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    compact_added_names(m, source_tensors, {n.name for n in model.graph.node})
    return m, report


def _check_opset(model, minimum: int) -> None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version < minimum:
            raise EdgesegError(f"the model uses opset {imp.version}; per-channel QDQ needs opset >= {minimum}",
                               "re-export with `edgeseg export` (opset 17)")


@dataclass
class QuantizeResult:
    path: Path
    report: QuantizeReport
    sha256: str


def quantize_file(src: str | os.PathLike, plan: PrecisionPlan, table: CalibrationTable | None,
                  out: str | os.PathLike, activation_dtype: str = "uint8", check: bool = True) -> QuantizeResult:
    """Quantize ``src`` into ``out`` atomically; refuse a table computed for another file."""
    import onnx

    from edgeseg.quantize.calibrate import load_onnx
    from edgeseg.utils import atomic
    from edgeseg.utils.hashing import sha256_file

    from edgeseg.export.foreign import ensure_tagged

    src = Path(src)
    model = load_onnx(src)
    ensure_tagged(model, src, list(plan.precisions))  # a foreign ONNX: tags from its patterns
    if table is not None and plan.needs_calibration:
        table.check_model(sha256_file(src), what=f"model than {src.name}")
    qmodel, report = quantize_model(model, plan, table, activation_dtype)
    qmodel.producer_name = "edgeseg"  # how a later run recognises the file as its own (utils/outputs.py)
    out = Path(out)
    with atomic.atomic_path(out) as tmp:
        onnx.save(qmodel, os.fspath(tmp))
        if check:
            _check_runs(tmp, out.name)
    return QuantizeResult(out, report, sha256_file(out))


def _check_runs(path: Path, label: str) -> None:
    """Load and run the artifact once in ONNX Runtime CPU before it is renamed into place."""
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    try:
        # The fused kernels: the path a deployment with ONNX Runtime loads.
        rt = OnnxRuntimeRuntime(path, threads=1, numerics="fused")
        rt.run(rt.random_feeds())
    except EdgesegError as e:
        raise EdgesegError(f"the quantized model {label} does not run in ONNX Runtime: {e.problem}",
                           "please report this with the model and plan") from e
    except Exception as e:
        raise EdgesegError(f"the quantized model {label} does not run in ONNX Runtime: {e}",
                           "please report this with the model and plan") from e
