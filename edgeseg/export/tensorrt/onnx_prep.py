"""The ONNX TensorRT parses: our QDQ/fp16 ONNX, with activations TensorRT can read.

TensorRT's explicit quantization takes symmetric INT8 Q/DQ only (zero point 0). Our QDQ
ONNX stores activations as uint8 with zero point 128 by default, because ONNX Runtime
fuses more integer kernels on x86 that way (``quantize/qdq.py``). The two are the same
grid: ``q_u8 = q_i8 + 128`` with ``zp 128`` vs ``zp 0`` dequantize to identical values.
Outputs of a Relu / Clip(0, x) / Softmax / Sigmoid are stored as uint8 with zero point 0
and scale amax / 255 (``quantize/int8_chains.py``: ONNX Runtime folds the activation into
its integer kernel only then); TensorRT gets the symmetric int8 grid of the same range,
scale amax / 127 (``scale * 255 / 127``). :func:`to_int8_activations` rewrites the zero
points, those scales and the Q outputs' declared types, so a uint8 artifact becomes
exactly the one ``quantize --activation-type int8`` writes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def is_qdq(model) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def activation_types(model) -> set[str]:
    """Numpy dtype names of the Q/DQ zero points in ``model`` (``{"int8"}``, ``{"uint8", "int8"}``...)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = set()
    for node in model.graph.node:
        if node.op_type in QDQ_OPS and len(node.input) > 2 and node.input[2] in inits:
            out.add(numpy_helper.to_array(inits[node.input[2]]).dtype.name)
    return out


def to_int8_activations(model) -> tuple[Any, int]:
    """A copy of ``model`` whose uint8 Q/DQ pairs are int8 with zero point 0.

    Returns ``(model, rewritten zero points)``. Zero point 128 keeps its scale (same
    grid); zero point 0 (a non-negative range [0, amax] on 256 levels) becomes the
    symmetric grid of the same range, scale x 255 / 127. Any other uint8 zero point is an
    asymmetric range TensorRT cannot run: that is an error, not a silent shift.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    zero_points = set()
    quantized_outputs = set()
    widened: dict[str, str] = {}  # scale of a [0, amax] pair -> its symmetric int8 scale
    for node in m.graph.node:
        if node.op_type not in QDQ_OPS or len(node.input) < 3 or node.input[2] not in inits:
            continue
        arr = numpy_helper.to_array(inits[node.input[2]])
        if arr.dtype != np.uint8:
            continue
        if np.all(arr == 0) and node.input[1] in inits:
            scale = node.input[1]
            if scale not in widened:
                name = f"{scale}_int8"
                value = (numpy_helper.to_array(inits[scale]).astype(np.float64) * 255.0 / 127.0).astype(np.float32)
                t = numpy_helper.from_array(value, name)
                m.graph.initializer.append(t)
                inits[name] = t
                widened[scale] = name
            node.input[1] = widened[scale]
        elif np.any(arr != 128):
            raise EdgesegError(f"{node.name} has an asymmetric uint8 zero point ({arr.ravel()[:4].tolist()})",
                               "TensorRT runs symmetric INT8 only: quantize with `edgeseg quantize` "
                               "(its uint8 activations use zero point 128, or 0 after a Relu) "
                               "or with --activation-type int8")
        zero_points.add(node.input[2])
        if node.op_type == "QuantizeLinear":
            quantized_outputs.add(node.output[0])
        elif node.input[0] in inits and inits[node.input[0]].data_type == TensorProto.UINT8:
            # A constant operand stored in the activations' type (an int8 Add's bias): the
            # same values on the int8 grid (zero point 128 -> 0; it is never 0 for constants).
            data = numpy_helper.to_array(inits[node.input[0]]).astype(np.int16) - arr.astype(np.int16)
            inits[node.input[0]].CopyFrom(numpy_helper.from_array(data.astype(np.int8), node.input[0]))
    for name in zero_points:
        old = inits[name]
        shape = numpy_helper.to_array(old).shape
        new = numpy_helper.from_array(np.zeros(shape, dtype=np.int8), name)
        old.CopyFrom(new)
    used = {x for n in m.graph.node for x in n.input}
    unused = [t for t in m.graph.initializer if t.name in widened and t.name not in used]
    for t in unused:  # a [0, amax] scale that every pair now reads in its int8 form
        m.graph.initializer.remove(t)
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        if vi.name in quantized_outputs and vi.type.tensor_type.elem_type == TensorProto.UINT8:
            vi.type.tensor_type.elem_type = TensorProto.INT8
    return m, len(zero_points)
