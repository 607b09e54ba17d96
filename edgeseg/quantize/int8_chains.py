"""Which nodes of the INT8 components compute in int8, and the quantization of every tensor between them.

Quantizing only Conv / MatMul / Gemm leaves float islands between them: every Add,
Concat, Resize, pooling or activation reads a DequantizeLinear and feeds a
QuantizeLinear, three passes over the tensor where an integer kernel makes one (measured
with ``benchmarks/int8_profile.py``). This module decides, inside the plan's INT8
components only, which nodes continue the int8 chain, so the QDQ writer
(:mod:`edgeseg.quantize.qdq`) can put Q/DQ pairs exactly where ONNX Runtime's QDQ fusions
(and TensorRT's) turn them into integer kernels:

========== ========================================================= ====================
kind       ops                                                       ONNX Runtime runs
========== ========================================================= ====================
mac        Conv, MatMul, Gemm                                         QLinearConv, QLinearMatMul, QGemm
binary     Add, Mul, Div by a constant (as Mul by 1/c)                QLinearAdd, QLinearMul
variadic   Concat                                                     QLinearConcat
unary      Sigmoid, AveragePool, GlobalAveragePool, Softmax, LeakyRelu QLinear<op> (lookup tables)
pass       Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Slice,    the op on int8 data (Q/DQ
           Split, Gather, Expand, Tile, MaxPool, Resize                dropped; output keeps the
                                                                      input's scale and zero point)
activation Relu, Clip(min >= 0)                                       folded into the producer's
                                                                      QuantizeLinear
========== ========================================================= ====================

Rules, applied in graph order:

* ``mac`` nodes are always int8 (their activation inputs must have a range).
* Any other kind is int8 only where the chain already is: every activation input is
  quantized anyway (written by an int8 node, or read by a mac node), its output is not a
  graph output, and the table has a range for it (``pass`` needs none: it keeps its
  input's). So a LayerNorm spelled out in ReduceMean / Sub / Sqrt / Div stays float, and
  nothing outside an INT8 component is touched.
* A ``Relu`` or ``Clip(0, x)`` that is the only reader of an int8 node's output is
  *fused*: the producer's output gets no Q/DQ, the activation's output does, with a
  zero point at the bottom of the range (uint8 activations: zero point 0, scale
  amax / 255, the grid TFLite uses for the same range). ONNX Runtime then drops the
  activation into the QuantizeLinear (its ``ReluQuantFusion`` / ``ClipQuantFusion``) and
  fuses ``DQ -> Conv -> Q`` into one QLinearConv. The Relu node stays in the file:
  TensorRT (which has symmetric int8 only: ``export/tensorrt/onnx_prep.py`` rewrites such
  pairs to int8 with scale amax / 127) and any reader of the ONNX still see it.
* Every reader of a tensor an int8 node writes reads its DequantizeLinear, float
  readers outside the component included (a graph output a mac node writes too: the
  DequantizeLinear then writes the output's name, a float32 tensor as before): the producer writes int8 (as on TFLite and
  TNN, where a dequantize / reformat layer follows the int8 layer), and ONNX Runtime
  fuses a producer only when the QuantizeLinear is its output's sole reader. A tensor
  written by a float node is dequantized only for the int8 nodes that read it.

Scales come from the one calibration table (symmetric: amax / 127, stored as uint8 with
zero point 128 or int8 with zero point 0); ``pass`` outputs reuse their input's; a
Softmax / Sigmoid output takes the table's observed max instead of its KL threshold (a
probability's rare peaks are what attention is about).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeseg.export.tags import get_component

MAC_OPS = ("Conv", "MatMul", "Gemm")
BINARY_OPS = ("Add", "Mul")
VARIADIC_OPS = ("Concat",)
UNARY_OPS = ("Sigmoid", "AveragePool", "GlobalAveragePool", "Softmax", "LeakyRelu")
PASS_OPS = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Gather",
            "Expand", "Tile", "MaxPool", "Resize")
ACTIVATION_OPS = ("Relu", "Clip")
# Ops whose output is a probability in [0, 1]: quantized on [0, observed max] (not the
# KL threshold), on 256 levels for uint8 like an activation's [0, amax].
NONNEGATIVE_OPS = ("Softmax", "Sigmoid")
# Producers whose QuantizeLinear ONNX Runtime can absorb a following Relu / Clip into.
_FUSABLE_PRODUCERS = ("mac", "binary", "variadic", "unary")


@dataclass(frozen=True)
class QParams:
    """Quantization of one activation tensor: ``x = (q - zero_point) * scale``."""

    scale: float
    zero_point: int
    dtype: str  # "uint8" | "int8"
    source: str  # the tensor whose Q/DQ initializers these are (shared by pass-through outputs)


@dataclass
class Int8Plan:
    kind: dict[int, str] = field(default_factory=dict)  # id(node) -> kind, for int8 nodes
    nodes: dict[int, Any] = field(default_factory=dict)  # id(node) -> node
    params: dict[str, QParams] = field(default_factory=dict)  # tensor -> its Q/DQ (graph order)
    all_readers: set[str] = field(default_factory=set)  # tensors every reader reads dequantized
    fused: set[str] = field(default_factory=set)  # outputs folded into a following Relu / Clip
    graph_outputs: set[str] = field(default_factory=set)  # graph outputs written through their DQ
    const_operands: list[tuple[Any, int]] = field(default_factory=list)  # (node, slot) of binary/variadic
    mac_weights: dict[int, list[int]] = field(default_factory=dict)  # id(mac node) -> constant slots
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def is_int8(self, node) -> bool:
        return id(node) in self.kind


def _clip_bounds(gr, node) -> tuple[float | None, float | None] | None:
    """Constant (min, max) of a Clip (opset >= 11 inputs or opset 6 attributes), None if computed."""
    lo = hi = None
    for a in node.attribute:
        if a.name == "min":
            lo = a.f
        elif a.name == "max":
            hi = a.f
    for slot in (1, 2):
        if len(node.input) > slot and node.input[slot]:
            v = gr.const(node.input[slot])
            if v is None:
                return None
            if slot == 1:
                lo = float(np.asarray(v).reshape(-1)[0])
            else:
                hi = float(np.asarray(v).reshape(-1)[0])
    return lo, hi


def _data_slots(node) -> list[int]:
    op = node.op_type
    if op in BINARY_OPS or op in VARIADIC_OPS or op == "Div":
        return [k for k, x in enumerate(node.input) if x]
    return [0] if node.input and node.input[0] else []


def plan_int8(gr, int8_components: set[str], table, act_dtype: str, constants: set[str]) -> Int8Plan:
    """Decide the int8 nodes and the quantization of every tensor between them (see module doc)."""
    plan = Int8Plan()
    outputs = gr.outputs
    consumers = gr.consumers

    def in_int8(n) -> bool:
        return get_component(n) in int8_components

    def readers(t: str) -> list:
        return [c for c, _ in consumers.get(t, [])]

    # 1. Mac nodes: always int8; their activation inputs are quantized whatever wrote them.
    quantized: set[str] = set()
    mac_inputs: set[str] = set()
    for n in gr.g.node:
        if not in_int8(n) or n.op_type not in MAC_OPS:
            continue
        ins = [x for x in n.input if x]
        if ins and all(x in constants for x in ins):
            continue  # folded by every runtime at load time
        acts, ws = [], []
        for k in (0, 1):
            x = n.input[k]
            (ws if x in constants else acts).append(k)
        if n.op_type == "Conv" and 1 not in ws:
            plan.skipped.append(f"{n.name}: Conv weight is computed at run time")
            continue
        plan.kind[id(n)] = "mac"
        plan.nodes[id(n)] = n
        plan.mac_weights[id(n)] = ws
        mac_inputs.update(n.input[k] for k in acts)
        quantized.update(o for o in n.output if o and o not in outputs and o in table)
    quantized |= mac_inputs

    # 2. The chain, in graph order (a node's inputs are decided before it).
    for n in gr.g.node:
        if not in_int8(n) or id(n) in plan.kind:
            continue
        op = n.op_type
        if op in BINARY_OPS or (op == "Div" and len(n.input) == 2 and n.input[1] in constants):
            kind = "binary"  # a Div by a constant is written as a Mul by its reciprocal
        elif op in VARIADIC_OPS:
            kind = "variadic"
        elif op in UNARY_OPS:
            kind = "unary"
        elif op in PASS_OPS:
            kind = "pass"
        elif op in ACTIVATION_OPS:
            kind = "activation"
        else:
            continue
        ins = [x for x in n.input if x]
        if not ins or all(x in constants for x in ins):
            continue
        outs = [o for o in n.output if o]
        if not outs or any(o in outputs for o in outs):
            continue  # graph outputs stay float
        slots = _data_slots(n)
        acts = [n.input[k] for k in slots if n.input[k] not in constants]
        if not acts or not all(x in quantized for x in acts):
            continue
        if kind in ("binary", "variadic"):
            consts = [k for k in slots if n.input[k] in constants]
            values = [gr.const_value(n.input[k]) for k in consts]
            if any(v is None or v.dtype.kind != "f" for v in values):
                continue
        if kind == "pass":
            if op == "MaxPool" and len(outs) > 1:
                continue  # the indices output is int64
        else:
            if len(outs) != 1 or outs[0] not in table:
                continue
        if kind == "activation" and op == "Clip":
            bounds = _clip_bounds(gr, n)
            if bounds is None or bounds[0] is None or bounds[0] < 0:
                continue
        plan.kind[id(n)] = kind
        plan.nodes[id(n)] = n
        quantized.update(outs)

    # 2b. Only what pays: a chain node none of whose readers computes in int8 would just
    #     quantize a tensor for float readers (a transformer's residual stream read by a
    #     LayerNorm: -0.8 AP on the shipped checkpoint for no speed); it stays float.
    #     Repeated, as dropping one node can leave its producer without int8 readers.
    changed = True
    while changed:
        changed = False
        for n in list(plan.nodes.values()):
            kind = plan.kind[id(n)]
            if kind == "mac":
                continue
            if any(id(c) in plan.kind for o in n.output if o for c in readers(o)):
                continue
            if kind == "activation":
                p = gr.producer.get(n.input[0])
                if p is not None and plan.kind.get(id(p)) in _FUSABLE_PRODUCERS:
                    continue  # folded into the producer's int8 output: free
            del plan.kind[id(n)], plan.nodes[id(n)]
            changed = True
    for n in plan.nodes.values():
        if plan.kind[id(n)] in ("binary", "variadic"):
            plan.const_operands += [(n, k) for k in _data_slots(n) if n.input[k] in constants]

    # 3. Relu / Clip(0, x) right after an int8 producer whose only reader it is: fused.
    for n in gr.g.node:
        if plan.kind.get(id(n)) != "activation":
            continue
        t = n.input[0]
        p = gr.producer.get(t)
        if p is None or plan.kind.get(id(p)) not in _FUSABLE_PRODUCERS or t in outputs:
            continue
        if len(readers(t)) == 1:
            plan.fused.add(t)

    # 4. Outputs of int8 nodes are quantized (unless fused: a mac output without a range
    #    stays float); parameters in graph order, so a pass node's input is done first.
    #    A graph output a mac node writes is quantized like any int8 output (the DQ writes
    #    the output's name; it stays a float32 tensor): int8 components output int8, as on
    #    TFLite and TNN, and MobileInst's mask features are then one tensor for the mask
    #    MatMul and the output, the same in the frame and the features graph. Left float,
    #    the Conv writing them had a float reader beside its QuantizeLinear, stayed a float
    #    Conv in ONNX Runtime and pinned its neighbours to NCHW (14 ms of 160 at 640).
    final = set(mac_inputs)
    for n in gr.g.node:
        k = plan.kind.get(id(n))
        if k is None:
            continue
        for o in n.output:
            if not o or o in plan.fused or (k == "mac" and o not in table):
                continue
            if not readers(o) and o not in outputs:
                continue
            if o in outputs:
                plan.graph_outputs.add(o)
            final.add(o)
            plan.all_readers.add(o)
    for t in _graph_order(gr, final):
        p = gr.producer.get(t)
        kind = plan.kind.get(id(p)) if p is not None else None
        if kind == "pass" and p.input[0] in plan.params:
            plan.params[t] = plan.params[p.input[0]]
        elif t in table:
            r = table.ranges[t]
            amax = r.amax
            bounded = p is not None and p.op_type in NONNEGATIVE_OPS
            if bounded and r.max is not None and r.max > 0:
                # A probability: KL clips the rare large values, which are the ones that
                # matter (attention peaks): the shipped checkpoint's self-attention Softmax
                # got amax 0.15 for a max of 1.0, and all-INT8 lost 1.1 AP instead of 0.4.
                amax = min(float(r.max), 1.0)
            plan.params[t] = _params(amax, act_dtype, nonnegative=kind == "activation" or bounded, source=t)
        elif t in mac_inputs:
            plan.missing.append(t)
    return plan


def _graph_order(gr, tensors: set[str]) -> list[str]:
    """``tensors`` in the order their producers appear (graph inputs first)."""
    inputs = [i.name for i in gr.g.input if i.name in tensors]
    rest = [o for n in gr.g.node for o in n.output if o in tensors]
    return inputs + rest


def _params(amax: float, act_dtype: str, nonnegative: bool, source: str) -> QParams:
    amax = float(amax)
    if nonnegative and act_dtype == "uint8":
        # [0, amax] on 256 levels: ONNX Runtime folds a Relu / Clip(0, x) into such a Q.
        scale = amax / 255.0 if amax > 0 else 1.0 / 255.0
        return QParams(float(np.float32(scale)), 0, act_dtype, source)
    scale = amax / 127.0 if amax > 0 else 1.0 / 127.0
    return QParams(float(np.float32(scale)), 128 if act_dtype == "uint8" else 0, act_dtype, source)
