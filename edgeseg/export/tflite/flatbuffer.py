"""Read, inspect and edit ``.tflite`` flatbuffers without TensorFlow.

The schema bindings come from LiteRT (``ai_edge_litert.schema_py_generated``), the
package that also runs the models, so inspecting a model needs nothing heavier than the
runtime. Three jobs:

* :func:`describe`: tensors (name, dtype, shape, constant or not, quantization) and ops
  (type, inputs, outputs), plus the signature's named inputs and outputs. Tests and
  ``edgeseg inspect`` read per-component precision from this.
* :func:`set_calibration_ranges`: overwrite the ``min``/``max`` that TFLite's calibrator
  recorded on activation tensors with ours, before the quantizer turns them into
  scales. The quantizer still applies every constraint of the TFLite kernels (fixed
  output scales of LOGISTIC/SOFTMAX, shared scales through PAD/RESHAPE/CONCATENATION...),
  which is why ranges are written here and not as scales after quantization.
* :func:`fp16_weights`: store the float constants of chosen ops as float16 behind a
  DEQUANTIZE op, the representation TFLite's own float16 quantization produces. Used for
  the fp16 components of a mixed plan (TFLite's converter only does fp16 for a whole model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from edgeseg.errors import EdgesegError

FILE_IDENTIFIER = b"TFL3"


def schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as e:
        raise EdgesegError(f"cannot read .tflite files: {e}",
                           "install the TFLite extra: pip install 'edgeseg[tflite]'") from e
    return schema_py_generated


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


_NUMPY_DTYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "FLOAT64": "float64", "INT8": "int8",
                 "UINT8": "uint8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def dtype_name(tensor_type: int) -> str:
    """numpy dtype name of a TFLite tensor type (schema name, lower case, when numpy has none)."""
    name = _enum_names(schema().TensorType).get(tensor_type, str(tensor_type))
    return _NUMPY_DTYPES.get(name, name.lower())


def read_model(buf: bytes):
    """Unpack a flatbuffer into the schema's mutable object API (``ModelT``)."""
    S = schema()
    if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
        raise EdgesegError("the file is not a TFLite flatbuffer (no TFL3 identifier)",
                           "re-export it with `edgeseg export MODEL --to tflite`")
    model = S.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    for b in model.buffers or []:
        if getattr(b, "offset", 0) > 1:
            # Models over 2 GB keep buffers outside the flatbuffer; edge models never do.
            raise EdgesegError("the .tflite file stores its weights outside the flatbuffer (> 2 GB model)",
                               "edgeseg edits models under 2 GB only")
    return model


def write_model(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _name(raw) -> str:
    if raw is None:
        return ""
    return raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)


def op_type_name(model, opcode_index: int) -> str:
    code = model.operatorCodes[opcode_index]
    # builtinCode holds codes >= 127; deprecatedBuiltinCode the older ones (schema v3a).
    value = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = _enum_names(schema().BuiltinOperator).get(value, str(value))
    if name == "CUSTOM" and code.customCode:
        return f"CUSTOM:{_name(code.customCode)}"
    return name


# ============================================================================ describe
@dataclass
class TensorView:
    index: int
    name: str
    dtype: str
    shape: list[int]
    constant: bool  # holds data in the flatbuffer (weights, biases, shape operands)
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)
    min: list[float] = field(default_factory=list)  # calibration statistics (calibrated models)
    max: list[float] = field(default_factory=list)

    @property
    def quantized(self) -> bool:
        return bool(self.scale)


@dataclass
class OpView:
    index: int
    op_type: str
    inputs: list[int]
    outputs: list[int]


@dataclass
class ModelView:
    tensors: list[TensorView]
    ops: list[OpView]
    inputs: list[int]  # subgraph inputs
    outputs: list[int]
    signature_inputs: dict[str, int]  # signature key -> tensor index
    signature_outputs: dict[str, int]

    def producers(self) -> dict[int, int]:
        return {t: op.index for op in self.ops for t in op.outputs}

    def consumers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for op in self.ops:
            for t in op.inputs:
                if t >= 0:
                    out.setdefault(t, []).append(op.index)
        return out

    def op_types(self) -> list[str]:
        return [op.op_type for op in self.ops]

    def op_dtypes(self, op: OpView) -> dict[str, list[str]]:
        """dtypes of an op's activation inputs, constant inputs and outputs."""
        acts = [self.tensors[i].dtype for i in op.inputs if i >= 0 and not self.tensors[i].constant]
        consts = [self.tensors[i].dtype for i in op.inputs if i >= 0 and self.tensors[i].constant]
        return {"inputs": acts, "constants": consts, "outputs": [self.tensors[i].dtype for i in op.outputs]}


def _arr(x) -> list:
    return [] if x is None else [v.item() if hasattr(v, "item") else v for v in np.asarray(x).ravel()]


def describe_model(model) -> ModelView:
    if not model.subgraphs:
        raise EdgesegError("the TFLite model has no subgraph", "re-export it")
    g = model.subgraphs[0]
    tensors = []
    for i, t in enumerate(g.tensors or []):
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers or []) else None
        has_data = buf is not None and buf.data is not None and len(buf.data) > 0
        q = t.quantization
        tensors.append(TensorView(
            index=i, name=_name(t.name), dtype=dtype_name(t.type),
            shape=_arr(t.shape), constant=has_data,
            scale=_arr(q.scale) if q else [], zero_point=_arr(q.zeroPoint) if q else [],
            min=_arr(q.min) if q else [], max=_arr(q.max) if q else []))
    ops = [OpView(i, op_type_name(model, op.opcodeIndex), _arr(op.inputs), _arr(op.outputs))
           for i, op in enumerate(g.operators or [])]
    sig_in: dict[str, int] = {}
    sig_out: dict[str, int] = {}
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex != 0:
            continue
        sig_in.update({_name(x.name): int(x.tensorIndex) for x in sig.inputs or []})
        sig_out.update({_name(x.name): int(x.tensorIndex) for x in sig.outputs or []})
        break
    return ModelView(tensors, ops, _arr(g.inputs), _arr(g.outputs), sig_in, sig_out)


def describe(buf: bytes) -> ModelView:
    return describe_model(read_model(buf))


# ============================================================================ edits
def set_calibration_ranges(buf: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """Replace the calibrated ``min``/``max`` of tensors (by index) in a calibrated model."""
    S = schema()
    model = read_model(buf)
    tensors = model.subgraphs[0].tensors
    for index, (lo, hi) in ranges.items():
        t = tensors[index]
        if t.quantization is None:
            t.quantization = S.QuantizationParametersT()
        t.quantization.min = np.asarray([lo], dtype=np.float32)
        t.quantization.max = np.asarray([hi], dtype=np.float32)
    return write_model(model)


def _opcode_index(model, builtin: int, version: int) -> int:
    S = schema()
    for i, code in enumerate(model.operatorCodes):
        if max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) == builtin and not code.customCode:
            code.version = max(int(code.version), version)
            return i
    code = S.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, S.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def fp16_weights(buf: bytes, op_indices: Iterable[int]) -> tuple[bytes, int]:
    """Store float32 constants consumed only by ``op_indices`` as float16 + DEQUANTIZE.

    Returns the new model and the number of constants converted. On a CPU the DEQUANTIZE
    runs once at load time (XNNPACK folds it), so compute stays float32 and the file
    shrinks; GPU delegates run those ops in float16.
    """
    S = schema()
    model = read_model(buf)
    g = model.subgraphs[0]
    chosen = set(op_indices)
    consumers: dict[int, set[int]] = {}
    for i, op in enumerate(g.operators or []):
        for t in _arr(op.inputs):
            if t >= 0:
                consumers.setdefault(t, set()).add(i)
    graph_outputs = set(_arr(g.outputs))
    buffer_users: dict[int, int] = {}
    for t in g.tensors:
        buffer_users[t.buffer] = buffer_users.get(t.buffer, 0) + 1

    new_ops = []
    converted = 0
    for ti in sorted({t for i in chosen for t in _arr(g.operators[i].inputs) if t >= 0}):
        t = g.tensors[ti]
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        if t.type != S.TensorType.FLOAT32 or data is None or len(data) == 0:
            continue
        if not consumers.get(ti, set()) <= chosen or ti in graph_outputs:
            continue  # shared with an op that must keep float32 weights
        values = np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=np.float32)
        half = S.BufferT()
        half.data = np.frombuffer(values.astype(np.float16).tobytes(), dtype=np.uint8)
        model.buffers.append(half)
        t16 = S.TensorT()
        t16.shape = None if t.shape is None else np.asarray(t.shape, dtype=np.int32)
        t16.type = S.TensorType.FLOAT16
        t16.buffer = len(model.buffers) - 1
        t16.name = (_name(t.name) + "_fp16").encode()
        g.tensors.append(t16)
        if buffer_users.get(t.buffer, 0) <= 1:
            model.buffers[t.buffer].data = None  # the float32 copy is no longer stored
        t.buffer = 0  # buffer 0 is the schema's empty sentinel: the tensor is now computed
        op = S.OperatorT()
        op.opcodeIndex = _opcode_index(model, S.BuiltinOperator.DEQUANTIZE, 3)  # v3: fp16 input
        op.inputs = np.asarray([len(g.tensors) - 1], dtype=np.int32)
        op.outputs = np.asarray([ti], dtype=np.int32)
        new_ops.append(op)
        converted += 1
    # DEQUANTIZE of a constant has no dependency: putting them first keeps the
    # operator list in execution order.
    g.operators = new_ops + list(g.operators or [])
    return write_model(model), converted


def summary(view: ModelView) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for op in view.ops:
        counts[op.op_type] = counts.get(op.op_type, 0) + 1
    return {"ops": len(view.ops), "tensors": len(view.tensors), "op_types": counts}
