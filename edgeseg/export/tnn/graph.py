"""A read-only view of an ONNX graph prepared for conversion: constants folded, shapes known.

TNN layers take their shapes and constant operands as *parameters* (a Reshape's target,
a Resize's output size, a Slice's bounds), so the converter needs every constant and
every static shape up front. This module:

* collects initializers and ``Constant`` nodes,
* folds ``Shape`` of statically shaped tensors and every node whose inputs are all
  constant (with ONNX's reference evaluator), so a graph exported without a simplifier
  still converts,
* runs ONNX shape inference once for the shapes of everything else.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

# Ops never folded even when their inputs are constant (nondeterministic or stateful).
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
            "Bernoulli"}


@dataclass
class GraphView:
    model: object  # onnx.ModelProto (a copy with value_info filled in)
    nodes: list  # nodes left to convert, in topological order
    consts: dict[str, np.ndarray]
    shapes: dict[str, list[int | None]]
    inputs: list[str]  # graph inputs that are not initializers
    outputs: list[str]
    opset: int
    consumers: dict[str, list] = field(default_factory=dict)
    producer: dict[str, object] = field(default_factory=dict)
    folded: int = 0

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def static_shape(self, name: str) -> list[int] | None:
        shape = self.shapes.get(name)
        if shape is None or any(d is None or d < 0 for d in shape):
            return None
        return [int(d) for d in shape]

    def is_graph_output(self, name: str) -> bool:
        return name in self.outputs


def _shape_of(value_info) -> list[int | None] | None:
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims: list[int | None] = []
    for d in t.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else None)
    return dims


def _fold_node(node, values: list[np.ndarray | None], opset: int) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    try:
        ev = ReferenceEvaluator(node, opsets={"": opset})
        feeds = {name: v for name, v in zip(node.input, values) if name}
        out = ev.run(None, feeds)
    except Exception:  # noqa: BLE001 - an op the evaluator cannot run simply stays a layer
        return None
    return [np.asarray(o) for o in out]


def build_view(model) -> GraphView:
    """Prepare ``model`` (an ``onnx.ModelProto``, not modified) for conversion."""
    import onnx
    from onnx import numpy_helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - fall back to whatever shapes the model carries
        inferred = model
    graph = inferred.graph

    consts: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    shapes: dict[str, list[int | None]] = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        s = _shape_of(vi)
        if s is not None:
            shapes[vi.name] = s
    for name, arr in consts.items():
        shapes[name] = list(arr.shape)

    kept = []
    folded = 0
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            out = _fold_node(node, [], opset)
            if out is not None:
                consts[node.output[0]] = out[0]
                shapes[node.output[0]] = list(out[0].shape)
                folded += 1
                continue
        if node.op_type == "Shape" and node.domain in ("", "ai.onnx"):
            s = shapes.get(node.input[0])
            if s is not None and all(d is not None for d in s):
                start = next((a.i for a in node.attribute if a.name == "start"), 0)
                end = next((a.i for a in node.attribute if a.name == "end"), None)
                value = np.asarray(s[start:end] if end is not None else s[start:], dtype=np.int64)
                consts[node.output[0]] = value
                shapes[node.output[0]] = list(value.shape)
                folded += 1
                continue
        real_inputs = [i for i in node.input if i]
        if (real_inputs and node.domain in ("", "ai.onnx") and node.op_type not in _NO_FOLD
                and all(i in consts for i in real_inputs)):
            out = _fold_node(node, [consts.get(i) if i else None for i in node.input], opset)
            if out is not None and len(out) == len([o for o in node.output]):
                for name, value in zip(node.output, out):
                    if name:
                        consts[name] = value
                        shapes[name] = list(value.shape)
                folded += 1
                continue
        kept.append(node)

    init_names = {init.name for init in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in init_names]
    outputs = [o.name for o in graph.output]
    consumers: dict[str, list] = defaultdict(list)
    producer: dict[str, object] = {}
    for node in kept:
        for i in node.input:
            if i:
                consumers[i].append(node)
        for o in node.output:
            if o:
                producer[o] = node
    return GraphView(model=inferred, nodes=kept, consts=consts, shapes=shapes, inputs=inputs,
                     outputs=outputs, opset=opset, consumers=dict(consumers), producer=producer,
                     folded=folded)
