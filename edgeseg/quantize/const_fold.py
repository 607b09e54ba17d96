"""Tensors computed from constants only, and their values.

An ONNX file exported without a simplifier (``edgeseg export --simplifier none``) keeps
small subgraphs that read nothing but initializers: learned queries expanded to the
batch, a query scaled by ``1/sqrt(d)``, positional embeddings added to learned
embeddings. Every runtime folds them when it loads the model, so they are weights, not
activations: the calibrator does not collect them (``calibrate.select_tensors`` uses the
same rule), and the QDQ writer quantizes them as weights, with the value computed here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CONSTANT_OPS = {"Constant", "ConstantOfShape"}


def constant_tensors(graph) -> set[str]:
    """Initializers, Constant outputs and outputs of nodes that read only those (graph order)."""
    const = {t.name for t in graph.initializer}
    const -= {i.name for i in graph.input}  # an initializer listed as an input can be overridden
    for node in graph.node:
        inputs = [x for x in node.input if x]
        if node.op_type in CONSTANT_OPS or (inputs and all(x in const for x in inputs)):
            const.update(o for o in node.output if o)
    return const


class ConstantFolder:
    """Values of constant tensors of one model, computed once with ONNX's reference evaluator."""

    def __init__(self, model):
        self.model = model
        self.producer = {o: n for n in model.graph.node for o in n.output if o}
        self.inits = {t.name: t for t in model.graph.initializer}
        self._cache: dict[str, np.ndarray] = {}

    def value(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self._evaluate(name)
        return self._cache[name]

    def _evaluate(self, name: str) -> np.ndarray:
        import onnx
        from onnx import helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        nodes: list[Any] = []
        needed_inits: set[str] = set()
        seen: set[str] = set()
        stack = [name]
        while stack:
            t = stack.pop()
            if t in seen or not t:
                continue
            seen.add(t)
            if t in self.inits:
                needed_inits.add(t)
                continue
            p = self.producer.get(t)
            if p is None:
                raise ValueError(f"{t} is not computed from constants only")
            if all(p is not n for n in nodes):
                nodes.append(p)
            stack.extend(p.input)
        order = {id(n): i for i, n in enumerate(self.model.graph.node)}
        nodes.sort(key=lambda n: order[id(n)])
        graph = helper.make_graph(
            nodes, "fold", [], [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
            initializer=[self.inits[i] for i in sorted(needed_inits)])
        m = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        m.ir_version = self.model.ir_version
        (out,) = ReferenceEvaluator(m).run(None, {})
        return np.asarray(out)
