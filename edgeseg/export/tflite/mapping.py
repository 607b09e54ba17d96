"""Map TFLite ops and tensors back to ONNX nodes, tensors and component tags.

TFLite names nothing after ONNX. onnx2tf builds a Keras model with one or more layers
per ONNX node (``tf.nn.convolution_3``, ``tf.math.add_3``...) and the TFLite converter
names every tensor after the layers whose ops produced it, joined by ``;`` when ops were
fused (``model_1/tf.nn.relu_1/Relu;model_1/tf.math.add_1/Add;model_1/tf.nn.convolution_1/...``).
While onnx2tf converts, the conversion worker records which ONNX node created each
layer and which layer produces each ONNX tensor; this module turns that record into:

* op -> component(s): from the layers named in the op's output tensors; an op writing a
  graph output (named ``PartitionedCall:0``) from the ONNX node producing that output.
  Ops whose names carry no known layer (quantizer-made
  QUANTIZE/DEQUANTIZE) take the components of their neighbours, like
  :func:`edgeseg.export.tags.tag_graph` does for ONNX nodes. Ops still unknown after that
  are reported to the user.
* tensor -> ONNX tensor: the first name part whose layer produces an ONNX tensor with the
  same number of elements (layouts differ, NCHW vs NHWC, but sizes do not). A fused op's
  output is the ONNX tensor of the *last* op of the fusion, which TFLite names first.

It is pure Python over :class:`~edgeseg.export.tflite.flatbuffer.ModelView`, so it is
tested without TensorFlow.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edgeseg.export.tflite.flatbuffer import ModelView


@dataclass
class ConversionRecord:
    """What the worker learned while onnx2tf converted (all ONNX names are originals)."""

    layer_nodes: dict[str, str]  # Keras layer name -> ONNX node name that created it
    node_components: dict[str, str]  # ONNX node name -> component tag
    tensor_layers: dict[str, str]  # ONNX tensor name -> Keras layer producing it
    tensor_numel: dict[str, int]  # ONNX tensor name -> number of elements
    tensor_nodes: dict[str, str] = field(default_factory=dict)  # ONNX tensor -> producing node
    component_order: list[str] = field(default_factory=list)
    signature_outputs: dict[str, str] = field(default_factory=dict)  # signature key -> ONNX output name

    def to_dict(self) -> dict[str, Any]:
        return {"layer_nodes": self.layer_nodes, "node_components": self.node_components,
                "tensor_layers": self.tensor_layers, "tensor_numel": self.tensor_numel,
                "tensor_nodes": self.tensor_nodes, "component_order": self.component_order,
                "signature_outputs": self.signature_outputs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConversionRecord":
        return cls(dict(d["layer_nodes"]), dict(d["node_components"]), dict(d["tensor_layers"]),
                   {k: int(v) for k, v in d["tensor_numel"].items()}, dict(d.get("tensor_nodes", {})),
                   list(d.get("component_order", [])), dict(d.get("signature_outputs", {})))


@dataclass
class OpComponent:
    index: int
    op_type: str
    components: tuple[str, ...]  # usually one; several when TFLite fused ops across a boundary
    source: str  # "name" (from layer names), "neighbours" (propagated) or "none"
    onnx_nodes: tuple[str, ...] = ()


@dataclass
class TFLiteMapping:
    ops: list[OpComponent]
    tensor_to_onnx: dict[int, str]  # TFLite tensor index -> ONNX tensor name

    def unmapped(self) -> list[OpComponent]:
        return [o for o in self.ops if not o.components]

    def by_component(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for o in self.ops:
            for c in o.components:
                out.setdefault(c, []).append(o.index)
        return out

    def report(self) -> dict[str, Any]:
        src = Counter(o.source for o in self.ops)
        return {
            "ops": len(self.ops),
            "mapped_by_name": src.get("name", 0),
            "mapped_by_neighbours": src.get("neighbours", 0),
            "unmapped": [f"{o.index}:{o.op_type}" for o in self.unmapped()],
            "spanning_components": [f"{o.index}:{o.op_type}:{'+'.join(o.components)}"
                                    for o in self.ops if len(o.components) > 1],
            "tensors_mapped_to_onnx": len(self.tensor_to_onnx),
        }


class _LayerIndex:
    """Find the recorded Keras layer inside one ``/``-separated TFLite name part."""

    def __init__(self, layers: set[str]):
        self.layers = layers
        self.max_depth = max((n.count("/") + 1 for n in layers), default=1)

    def find(self, part: str) -> str | None:
        segs = part.split("/")
        for k in range(len(segs)):
            for j in range(min(self.max_depth, len(segs) - k), 0, -1):
                cand = "/".join(segs[k:k + j])
                if cand in self.layers:
                    return cand
        return None


def _parts(name: str) -> list[str]:
    return [p for p in name.split(";") if p]


def _numel(shape: list[int]) -> int:
    return int(math.prod(shape)) if shape else 1


def map_model(view: ModelView, record: ConversionRecord) -> TFLiteMapping:
    index = _LayerIndex(set(record.layer_nodes) | set(record.tensor_layers.values()))
    layer_tensors: dict[str, list[str]] = {}
    for tensor, layer in record.tensor_layers.items():  # ONNX graph order
        layer_tensors.setdefault(layer, []).append(tensor)

    # ---- tensors -> ONNX tensors
    tensor_to_onnx: dict[int, str] = {}
    for t in view.tensors:
        if t.constant:
            continue
        for part in _parts(t.name):
            layer = index.find(part)
            if layer is None:
                continue
            same = [o for o in layer_tensors.get(layer, []) if record.tensor_numel.get(o) == _numel(t.shape)]
            if same:
                tensor_to_onnx[t.index] = same[-1]  # pass-through ops share a layer: keep the last
                break

    # ---- ops -> components, by name
    order = record.component_order
    rank = {c: i for i, c in enumerate(order)}
    # Graph outputs are named after the signature, not a layer: their ONNX producer is known.
    output_nodes = {view.signature_outputs[k]: record.tensor_nodes[o] for k, o in record.signature_outputs.items()
                    if k in view.signature_outputs and o in record.tensor_nodes}
    # With float I/O, an int8 op's output reaches the graph output through a DEQUANTIZE;
    # the quantizer names that int8 tensor after the output (``PartitionedCall:21``).
    for op in view.ops:
        if op.op_type == "DEQUANTIZE" and op.outputs and op.outputs[0] in output_nodes and op.inputs:
            output_nodes.setdefault(op.inputs[0], output_nodes[op.outputs[0]])
    ops: list[OpComponent] = []
    for op in view.ops:
        nodes: list[str] = [output_nodes[ti] for ti in op.outputs if ti in output_nodes]
        for ti in op.outputs:
            for part in _parts(view.tensors[ti].name):
                layer = index.find(part)
                node = record.layer_nodes.get(layer) if layer else None
                if node is None and layer in layer_tensors:
                    # A layer that only passes an ONNX tensor through: its node is the producer's.
                    node = next((record.tensor_nodes[t] for t in layer_tensors[layer]
                                 if t in record.tensor_nodes), None)
                if node is not None and node not in nodes:
                    nodes.append(node)
        comps = tuple(sorted({record.node_components[n] for n in nodes if n in record.node_components},
                             key=lambda c: rank.get(c, len(rank))))
        ops.append(OpComponent(op.index, op.op_type, comps, "name" if comps else "none", tuple(nodes)))

    # ---- the rest from neighbours: producers first, then consumers
    producer = view.producers()
    consumers = view.consumers()
    changed = True
    while changed:
        changed = False
        for o in ops:
            if o.components:
                continue
            up = [c for ti in view.ops[o.index].inputs if ti in producer for c in ops[producer[ti]].components]
            if not up:
                up = [c for ti in view.ops[o.index].outputs for j in consumers.get(ti, []) for c in ops[j].components]
            if up:
                counts = Counter(up)
                top = max(counts.values())
                best = min((c for c in counts if counts[c] == top), key=lambda c: rank.get(c, len(rank)))
                o.components, o.source = (best,), "neighbours"
                changed = True
    return TFLiteMapping(ops, tensor_to_onnx)


def float_ops(mapping: TFLiteMapping, precisions: dict[str, str]) -> list[int]:
    """Ops to keep out of int8: any op touching a component the plan does not put in int8.

    An op fused across a component boundary stays float if either side must, and an op
    that could not be traced to any component stays float unless the whole plan is int8:
    a float component must never be quantized by accident.
    """
    all_int8 = all(p == "int8" for p in precisions.values())
    return [o.index for o in mapping.ops
            if any(precisions.get(c, "fp32") != "int8" for c in o.components)
            or (not o.components and not all_int8)]


def ops_of_precision(mapping: TFLiteMapping, precisions: dict[str, str], precision: str) -> list[int]:
    """Ops whose every component is planned at ``precision``."""
    return [o.index for o in mapping.ops
            if o.components and all(precisions.get(c, "fp32") == precision for c in o.components)]
