"""The ONNX TensorRT parses: our QDQ/fp16 ONNX, with activations TensorRT can read.

TensorRT's explicit quantization takes symmetric INT8 Q/DQ only (zero point 0). Our QDQ
ONNX stores activations as uint8 with zero point 128 by default, because ONNX Runtime
fuses more integer kernels on x86 that way (``quantize/qdq.py``). The two are the same
grid: ``q_u8 = q_i8 + 128`` with ``zp 128`` vs ``zp 0`` dequantize to identical values.
:func:`to_int8_activations` rewrites the zero points (and the Q outputs' declared types)
so a uint8 artifact becomes one TensorRT accepts, without touching any scale.
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
    """A copy of ``model`` whose uint8 (zero point 128) Q/DQ pairs are int8 (zero point 0).

    Returns ``(model, rewritten zero points)``. A uint8 zero point other than 128 is an
    asymmetric range, which TensorRT cannot run: that is an error, not a silent shift.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    zero_points = set()
    quantized_outputs = set()
    for node in m.graph.node:
        if node.op_type not in QDQ_OPS or len(node.input) < 3 or node.input[2] not in inits:
            continue
        arr = numpy_helper.to_array(inits[node.input[2]])
        if arr.dtype != np.uint8:
            continue
        if np.any(arr != 128):
            raise EdgesegError(f"{node.name} has an asymmetric uint8 zero point ({arr.ravel()[:4].tolist()})",
                               "TensorRT runs symmetric INT8 only: quantize with `edgeseg quantize` "
                               "(its uint8 activations use zero point 128) or with --activation-type int8")
        zero_points.add(node.input[2])
        if node.op_type == "QuantizeLinear":
            quantized_outputs.add(node.output[0])
    for name in zero_points:
        old = inits[name]
        shape = numpy_helper.to_array(old).shape
        new = numpy_helper.from_array(np.zeros(shape, dtype=np.int8), name)
        old.CopyFrom(new)
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        if vi.name in quantized_outputs and vi.type.tensor_type.elem_type == TensorProto.UINT8:
            vi.type.tensor_type.elem_type = TensorProto.INT8
    return m, len(zero_points)
