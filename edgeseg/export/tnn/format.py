"""The TNN model format: an in-memory model and its two files, ``.tnnproto`` + ``.tnnmodel``.

Facts below come from reading TNN's interpreter and packer (``model_interpreter.cc``,
``model_packer.cc``, ``objseri.h``, ``layer_interpreter/*.cc``, ``core/layer_type.h``);
the code is ours.

``.tnnproto`` is text. Every line is one quoted piece ending in a comma. TNN drops every
``"`` and newline, splits the rest on ``,`` and each piece on spaces, and reads at most
4095 characters of a piece (longer pieces are silently cut). Pieces, in order:

0. ``1 <blob count> 1 <magic>`` (magic 0xFABC0004 selects the input format below)
1. inputs, ``name ndims d0 d1 ... dtype`` joined by ``:``
2. every blob name (informational: TNN rebuilds the blob set from the layers)
3. output blob names
4. layer count
5. one piece per layer: ``Type name n_in n_out in... out... params...``

``.tnnmodel`` is little-endian binary: magic, resource count, then per resource a header
(int type id, string type, string name) and the layer's payload; strings are an int
length and bytes; a raw buffer is magic, data type (0 float, 1 half, 2 int8, 3 int32),
byte count and, when non-empty, ndims, dims and the bytes. After the resources an
optional constant map (magic, count, then name + raw buffer per constant) holds tensors
that are layer inputs but produced by no layer (e.g. LayerNorm scale and bias).

Layer parameters and resources are kept here as *named* dicts; :data:`PARAM_SCHEMAS`
and :data:`RESOURCE_CODECS` say how each layer type lays them out on disk, so the writer
and the reader share one description and round trips are exact.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

MAGIC_V2 = 0xFABC0004  # g_version_magic_number_v2: inputs carry ndims and a data type
MAX_PIECE_CHARS = 4095  # SplitUtils keeps at most 4095 characters of a comma-separated piece
BLOB_SCALE_SUFFIX = "_scale_data_"
QUANTIZED_PREFIX = "Quantized"

# TNN DataType codes used in raw buffers and on the inputs line.
DTYPE_CODES: dict[str, int] = {"float32": 0, "float16": 1, "int8": 2, "int32": 3}
CODE_DTYPES: dict[int, str] = {v: k for k, v in DTYPE_CODES.items()}

# Layer type ids (enum LayerType in core/layer_type.h) for the type strings we write or
# read. The id is written in each resource header; TNN prefers the type string when it
# knows it, so an id only has to be right, not complete.
LAYER_TYPE_IDS: dict[str, int] = {
    "Convolution": 1, "BatchNormCxx": 2, "Pooling": 4, "ReLU": 5, "Concat": 8, "Reshape": 9,
    "Flatten": 10, "Scale": 16, "InnerProduct": 19, "Softmax": 21, "Deconvolution": 22,
    "Sigmoid": 23, "Permute": 32, "PReLU": 35, "Add": 38, "Tanh": 39, "Abs": 41, "Mul": 42,
    "Pad": 44, "Power": 69, "Neg": 70, "Shape": 72, "Gather": 104, "MatMul": 105, "Sub": 108,
    "Squeeze": 118, "ReLU6": 125, "Sqrt": 130, "Maximum": 137, "Minimum": 140, "Exp": 141,
    "Upsample": 149, "SplitV": 153, "Unsqueeze": 164, "ReduceMean": 169, "Clip": 171,
    "HardSigmoid": 172, "HardSwish": 173, "Div": 175, "Sign": 176, "ReduceMax": 177, "Log": 184,
    "Reciprocal": 185, "ReduceSum": 133, "StridedSliceV2": 306, "Erf": 307, "PadV2": 316,
    "Einsum": 321, "LayerNorm": 326, "GELU": 327, "Swish": 401, "BlobScale": 600,
}


def base_type(layer_type: str) -> str:
    """``QuantizedConvolution`` -> ``Convolution`` (params and resources follow the base type)."""
    return layer_type[len(QUANTIZED_PREFIX):] if layer_type.startswith(QUANTIZED_PREFIX) else layer_type


def is_quantized(layer_type: str) -> bool:
    return layer_type.startswith(QUANTIZED_PREFIX)


# --------------------------------------------------------------------------- model


@dataclass
class TnnLayer:
    """One layer line of the proto, plus its resource (weights) when it has one.

    ``source`` (the ONNX node it came from) and ``component`` are bookkeeping for
    reports and precision plans; they are not written to the files.
    """

    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] | None = None
    source: str = ""
    component: str = ""


@dataclass
class TnnModel:
    inputs: dict[str, tuple[list[int], int]]  # blob -> (dims, TNN data type code)
    outputs: list[str]
    layers: list[TnnLayer]
    blob_scales: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # blob -> BlobScale
    constants: dict[str, np.ndarray] = field(default_factory=dict)

    def blobs(self) -> list[str]:
        """Every blob name, inputs first then in layer order (line 3 of the proto)."""
        seen: dict[str, None] = {name: None for name in self.inputs}
        for layer in self.layers:
            for b in (*layer.inputs, *layer.outputs):
                seen.setdefault(b, None)
        return list(seen)

    def layer(self, name: str) -> TnnLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


# --------------------------------------------------------------------------- params
# A schema is a list of (field, kind). Kinds:
#   int, float, str   one token
#   zero              a literal 0 token (TNN reads and ignores it); not in the dict
#   ints              count-prefixed list of ints
#   pairs             count n, then 2n ints (PadV2: begins then ends per dim)
#   rest_ints         every remaining token as an int (reduce axes)

Schema = list[tuple[str, str]]

_BINARY: Schema = [("weight_input_index", "int")]
_REDUCE: Schema = [("keep_dims", "int"), ("axes", "rest_ints")]

PARAM_SCHEMAS: dict[str, Schema] = {
    # kernel/stride/pad/dilation are written h then w (TNN stores w,h and writes reversed)
    "Convolution": [("group", "int"), ("input_channel", "int"), ("output_channel", "int"),
                    ("kernel_h", "int"), ("kernel_w", "int"), ("stride_h", "int"), ("stride_w", "int"),
                    ("pad_h", "int"), ("pad_w", "int"), ("bias", "int"), ("pad_type", "int"),
                    ("dilation_h", "int"), ("dilation_w", "int"), ("activation_type", "int")],
    "Pooling": [("pool_type", "int"), ("kernel_h", "int"), ("kernel_w", "int"),
                ("stride_h", "int"), ("stride_w", "int"), ("pad_h", "int"), ("pad_w", "int"),
                ("kernel_index_h", "int"), ("kernel_index_w", "int"), ("pad_type", "int"),
                ("ceil_mode", "int"), ("is_adaptive_pool", "int"), ("output_h", "int"),
                ("output_w", "int")],
    "Upsample": [("mode", "int"), ("scale_h", "float"), ("scale_w", "float"),
                 ("align_corners", "int"), ("output_h", "int"), ("output_w", "int")],
    "Pad": [("_n1", "zero"), ("_n2", "zero"), ("pad_t", "int"), ("pad_b", "int"), ("pad_l", "int"),
            ("pad_r", "int"), ("pad_c_b", "int"), ("pad_c_e", "int"), ("type", "int"), ("value", "float")],
    "PadV2": [("pads", "pairs"), ("type", "int"), ("value", "float")],
    "Concat": [("axis", "int")],
    "Softmax": [("axis", "int")],
    "Flatten": [("axis", "int")],
    "LayerNorm": [("reduce_dims_size", "int"), ("eps", "float")],
    "MatMul": [("weight_position", "int")],
    "InnerProduct": [("num_output", "int"), ("has_bias", "int"), ("transpose", "int"), ("axis", "int")],
    "Add": _BINARY, "Sub": _BINARY, "Mul": _BINARY, "Div": _BINARY,
    "Maximum": _BINARY, "Minimum": _BINARY,
    "Clip": [("min", "float"), ("max", "float")],
    "HardSigmoid": [("alpha", "float"), ("beta", "float")],
    "HardSwish": [("alpha", "float"), ("beta", "float")],
    "Power": [("exponent", "float"), ("scale", "float"), ("shift", "float")],
    "Reshape": [("axis", "int"), ("num_axes", "int"), ("shape", "ints"), ("reshape_type", "int")],
    "Permute": [("orders", "ints")],
    "Squeeze": [("axes", "ints")],
    "Unsqueeze": [("axes", "ints")],
    "StridedSliceV2": [("begins", "ints"), ("ends", "ints"), ("axes", "ints"), ("strides", "ints")],
    "SplitV": [("axis", "int"), ("slices", "ints")],
    "Gather": [("axis", "int"), ("data_in_resource", "int"), ("indices_in_resource", "int")],
    "ReduceMean": _REDUCE, "ReduceSum": _REDUCE, "ReduceMax": _REDUCE,
    "Einsum": [("equation", "str")],
    "Scale": [("axis", "int"), ("num_axes", "int"), ("bias_term", "int")],
}
# Layer types written with no parameters at all.
NO_PARAM_TYPES = {"ReLU", "ReLU6", "Sigmoid", "Sqrt", "Tanh", "Exp", "Abs", "Neg", "Sign", "Erf", "Log",
                  "Reciprocal", "Shape", "Swish", "GELU", "BatchNormCxx", "PReLU"}

INT_MAX = 2**31 - 1
INT_MIN = -(2**31)


def format_float(value: float) -> str:
    """Shortest decimal that reads back (atof -> float) as the same float32.

    Infinities become +-FLT_MAX: TNN's params are float32 and FLT_MAX is what TNN
    itself uses for "no bound" (e.g. Clip).
    """
    v = np.float32(value)
    if np.isnan(v):
        raise ValueError("NaN cannot be written as a TNN parameter")
    if np.isinf(v):
        v = np.float32(np.finfo(np.float32).max) * np.float32(np.sign(v))
    return str(v)


def encode_params(layer_type: str, params: dict[str, Any]) -> list[str]:
    """Named params -> proto tokens, in TNN's on-disk order."""
    kind_of = base_type(layer_type)
    if kind_of in NO_PARAM_TYPES:
        return []
    schema = PARAM_SCHEMAS.get(kind_of)
    if schema is None:
        raise KeyError(f"no parameter layout known for TNN layer type {layer_type!r}")
    out: list[str] = []
    for name, kind in schema:
        if kind == "zero":
            out.append("0")
            continue
        value = params[name]
        if kind == "int":
            out.append(str(int(value)))
        elif kind == "float":
            out.append(format_float(value))
        elif kind == "str":
            out.append(str(value))
        elif kind == "ints":
            out.append(str(len(value)))
            out.extend(str(int(v)) for v in value)
        elif kind == "pairs":
            if len(value) % 2:
                raise ValueError(f"{layer_type}.{name} needs an even number of values")
            out.append(str(len(value) // 2))
            out.extend(str(int(v)) for v in value)
        elif kind == "rest_ints":
            out.extend(str(int(v)) for v in value)
        else:  # pragma: no cover - schema typo
            raise ValueError(kind)
    return out


def decode_params(layer_type: str, tokens: list[str]) -> dict[str, Any]:
    """Proto tokens -> named params. Unknown layer types keep their raw tokens."""
    kind_of = base_type(layer_type)
    if kind_of in NO_PARAM_TYPES:
        return {} if not tokens else {"_tokens": list(tokens)}
    schema = PARAM_SCHEMAS.get(kind_of)
    if schema is None:
        return {"_tokens": list(tokens)}
    out: dict[str, Any] = {}
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise IndexError
        i += 1
        return tokens[i - 1]

    for pos, (name, kind) in enumerate(schema):
        if i >= len(tokens) and kind != "rest_ints":
            # TNN reads trailing parameters "or default": files written by other tools
            # may stop early. Say which fields were absent instead of guessing defaults.
            out["_missing"] = [n for n, k in schema[pos:] if k != "zero"]
            break
        if kind == "zero":
            take()
        elif kind == "int":
            out[name] = int(take())
        elif kind == "float":
            out[name] = float(np.float32(float(take())))
        elif kind == "str":
            out[name] = take()
        elif kind in ("ints", "pairs"):
            n = int(take()) * (2 if kind == "pairs" else 1)
            try:
                out[name] = [int(take()) for _ in range(n)]
            except IndexError:
                raise ValueError(f"{layer_type}: {name} announces {n} values, fewer follow") from None
        elif kind == "rest_ints":
            out[name] = [int(t) for t in tokens[i:]]
            i = len(tokens)
    if i != len(tokens):
        out["_extra"] = tokens[i:]
    return out


# --------------------------------------------------------------------------- binary io


class _Writer:
    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def u32(self, v: int) -> None:
        self.buf.write(struct.pack("<I", v))

    def i32(self, v: int) -> None:
        self.buf.write(struct.pack("<i", int(v)))

    def string(self, s: str) -> None:
        data = s.encode("utf-8")
        self.i32(len(data))
        self.buf.write(data)

    def raw(self, arr: np.ndarray | None) -> None:
        """RawBuffer: magic, dtype, byte count, then (if non-empty) ndims, dims, bytes."""
        self.u32(MAGIC_V2)
        if arr is None or arr.size == 0:
            self.i32(DTYPE_CODES["float32"] if arr is None else DTYPE_CODES[str(arr.dtype)])
            self.i32(0)
            return
        dtype = str(arr.dtype)
        if dtype not in DTYPE_CODES:
            raise TypeError(f"TNN raw buffers hold {', '.join(DTYPE_CODES)}, not {dtype}")
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        self.i32(DTYPE_CODES[dtype])
        self.i32(len(data))
        self.i32(arr.ndim)
        for d in arr.shape:
            self.i32(d)
        self.buf.write(data)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"truncated .tnnmodel: wanted {n} bytes at offset {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self._take(4))[0]

    def i32(self) -> int:
        return struct.unpack("<i", self._take(4))[0]

    def string(self) -> str:
        n = self.i32()
        if n < 0:
            raise ValueError(f"negative string length at offset {self.pos}")
        return self._take(n).decode("utf-8")

    def raw(self) -> np.ndarray:
        magic = self.u32()
        code = self.i32()
        length = self.i32()
        if code not in CODE_DTYPES:
            raise ValueError(f"unknown raw buffer data type {code} at offset {self.pos}")
        native = np.dtype(CODE_DTYPES[code])
        if length <= 0:
            return np.zeros((0,), native)
        dims: list[int] = []
        if magic == MAGIC_V2:
            dims = [self.i32() for _ in range(self.i32())]
        arr = np.frombuffer(self._take(length), dtype=native.newbyteorder("<")).astype(native)
        if dims and int(np.prod(dims)) == arr.size:
            arr = arr.reshape(dims)
        elif not dims and magic == MAGIC_V2 and arr.size == 1:
            arr = arr.reshape(())
        return arr


# --------------------------------------------------------------------------- resources
# Each codec mirrors one TNN InterpretResource/SaveResource pair: (encode, decode).


def _enc_conv(w: _Writer, r: dict[str, Any]) -> None:
    w.string(r["name"])
    w.i32(int(r["has_bias"]))
    w.raw(r["filter"])
    if r["has_bias"]:
        w.raw(r["bias"])
    if r["filter"].dtype == np.int8:
        # zero point before scale: TNN tells the new layout from the old by the first dtype
        w.raw(r["zero_point"])
        w.raw(r["scale"])


def _dec_conv(rd: _Reader) -> dict[str, Any]:
    r: dict[str, Any] = {"name": rd.string(), "has_bias": rd.i32()}
    r["filter"] = rd.raw()
    if r["has_bias"]:
        r["bias"] = rd.raw()
    if r["filter"].dtype == np.int8:
        first = rd.raw()
        if first.dtype == np.int8:
            r["zero_point"], r["scale"] = first, rd.raw()
        else:
            r["scale"] = first
    return r


def _enc_fc(w: _Writer, r: dict[str, Any]) -> None:
    w.string(r["name"])
    w.raw(r["weight"])
    w.raw(r["bias"])
    if r["weight"].dtype == np.int8:
        w.raw(r["zero_point"])
        w.raw(r["scale"])


def _dec_fc(rd: _Reader) -> dict[str, Any]:
    r: dict[str, Any] = {"name": rd.string(), "weight": rd.raw(), "bias": rd.raw()}
    if r["weight"].dtype == np.int8:
        first = rd.raw()
        if first.dtype == np.int8:
            r["zero_point"], r["scale"] = first, rd.raw()
        else:
            r["scale"] = first
    return r


def _enc_element(w: _Writer, r: dict[str, Any]) -> None:
    w.raw(r["element"])


def _dec_element(rd: _Reader) -> dict[str, Any]:
    return {"element": rd.raw()}


def _enc_matmul(w: _Writer, r: dict[str, Any]) -> None:
    w.raw(r["weight"])


def _dec_matmul(rd: _Reader) -> dict[str, Any]:
    return {"weight": rd.raw()}


def _enc_bn(w: _Writer, r: dict[str, Any]) -> None:
    w.raw(r["scale"])
    w.raw(r["bias"])


def _dec_bn(rd: _Reader) -> dict[str, Any]:
    return {"scale": rd.raw(), "bias": rd.raw()}


def _enc_gather(w: _Writer, r: dict[str, Any]) -> None:
    for key in ("data", "indices"):
        if r.get(key) is not None:
            w.i32(1)
            w.raw(r[key])
        else:
            w.i32(0)


def _dec_gather(rd: _Reader) -> dict[str, Any]:
    r: dict[str, Any] = {}
    for key in ("data", "indices"):
        r[key] = rd.raw() if rd.i32() == 1 else None
    return r


def _enc_blob_scale(w: _Writer, r: dict[str, Any]) -> None:
    w.raw(r["zero_point"])
    w.raw(r["scale"])
    w.raw(r["bias"])


def _dec_blob_scale(rd: _Reader) -> dict[str, Any]:
    first = rd.raw()
    if first.dtype == np.int8:
        r = {"zero_point": first, "scale": rd.raw()}
    else:
        r = {"scale": first, "zero_point": np.zeros(first.shape, np.int8)}
    r["bias"] = rd.raw()
    return r


RESOURCE_CODECS: dict[str, tuple[Callable, Callable]] = {
    "Convolution": (_enc_conv, _dec_conv),
    "Deconvolution": (_enc_conv, _dec_conv),
    "InnerProduct": (_enc_fc, _dec_fc),
    "Add": (_enc_element, _dec_element), "Sub": (_enc_element, _dec_element),
    "Mul": (_enc_element, _dec_element), "Div": (_enc_element, _dec_element),
    "Maximum": (_enc_element, _dec_element), "Minimum": (_enc_element, _dec_element),
    "MatMul": (_enc_matmul, _dec_matmul),
    "BatchNormCxx": (_enc_bn, _dec_bn),
    "Gather": (_enc_gather, _dec_gather),
    "BlobScale": (_enc_blob_scale, _dec_blob_scale),
}


# --------------------------------------------------------------------------- files


def _check_piece(text: str, what: str) -> str:
    if len(text) > MAX_PIECE_CHARS:
        raise ValueError(f"{what} is {len(text)} characters; TNN reads at most {MAX_PIECE_CHARS}")
    return text


def _check_token(token: str, what: str) -> str:
    if not token or any(c in token for c in ' ,"\n\t\r') or any(ord(c) < 0x20 for c in token):
        raise ValueError(f"{what} {token!r} is not a valid TNN name (no spaces, commas, quotes)")
    return token


def proto_text(model: TnnModel) -> str:
    """The ``.tnnproto`` text.

    Every piece TNN parses (inputs, outputs, each layer) must stay under 4096 characters.
    The blob list (piece 2) is the exception: TNN's interpreter never reads it and its own
    packer writes it in full however long it is (TNN's benchmark quant_inception_v3
    proto has a 4586-character blob line), so we do too; our reader reads all of it.
    """
    blobs = model.blobs()
    lines = [f'"1 {len(blobs)} 1 {MAGIC_V2} ,"']
    inputs = []
    for name, (dims, code) in model.inputs.items():
        _check_token(name, "input name")
        if ":" in name:
            raise ValueError(f"input name {name!r} may not contain ':' (TNN splits inputs on it)")
        inputs.append(" ".join([name, str(len(dims)), *(str(int(d)) for d in dims), str(code)]))
    lines.append('"' + _check_piece(" : ".join(inputs) + " ", "the inputs line") + ',"')
    lines.append('" ' + " ".join(blobs) + ' ,"')
    outputs = [_check_token(o, "output name") for o in model.outputs]
    lines.append('"' + _check_piece(" ".join(outputs) + " ", "the outputs line") + ',"')
    lines.append(f'" {len(model.layers)} ,"')
    for layer in model.layers:
        tokens = [_check_token(layer.type, "layer type"), _check_token(layer.name, "layer name"),
                  str(len(layer.inputs)), str(len(layer.outputs)),
                  *(_check_token(b, "blob name") for b in layer.inputs),
                  *(_check_token(b, "blob name") for b in layer.outputs),
                  *encode_params(layer.type, layer.params)]
        for t in tokens[4 + len(layer.inputs) + len(layer.outputs):]:
            _check_token(t, f"parameter of {layer.name}")
        lines.append('"' + _check_piece(" ".join(tokens) + " ", f"layer {layer.name}") + ',"')
    return "\n".join(lines) + "\n"


def _resource_order(model: TnnModel) -> list[tuple[str, str, dict[str, Any]]]:
    """(type string, resource name, payload) in TNN's packing order.

    Like ModelPacker::PackLayers: for each layer, the scales of its input blobs (if it is
    quantized and they were not written yet), its own resource, then its output scales.
    """
    out: list[tuple[str, str, dict[str, Any]]] = []
    written: set[str] = set()

    def scales(blobs: list[str]) -> None:
        for b in blobs:
            key = b + BLOB_SCALE_SUFFIX
            if b in model.blob_scales and key not in written:
                out.append(("BlobScale", key, model.blob_scales[b]))
                written.add(key)

    for layer in model.layers:
        quant = is_quantized(layer.type)
        if quant:
            scales(layer.inputs)
        if layer.resource is not None:
            out.append((layer.type, layer.name, layer.resource))
        if quant:
            scales(layer.outputs)
    return out


def model_bytes(model: TnnModel) -> bytes:
    """The ``.tnnmodel`` bytes."""
    w = _Writer()
    w.u32(MAGIC_V2)
    entries = _resource_order(model)
    w.i32(len(entries))
    for type_str, name, payload in entries:
        kind = base_type(type_str)
        if kind not in RESOURCE_CODECS:
            raise KeyError(f"no resource layout known for TNN layer type {type_str!r}")
        w.i32(LAYER_TYPE_IDS.get(kind, 0))
        w.string(type_str)
        w.string(name)
        RESOURCE_CODECS[kind][0](w, payload)
    if model.constants:
        w.u32(MAGIC_V2)
        w.i32(len(model.constants))
        for name, arr in model.constants.items():
            w.string(name)
            w.raw(np.asarray(arr))
    return w.buf.getvalue()


def parse_model_bytes(data: bytes) -> tuple[dict[str, tuple[str, dict[str, Any]]], dict[str, np.ndarray]]:
    """``.tnnmodel`` bytes -> ({resource name: (type string, payload)}, constants)."""
    rd = _Reader(data)
    first = rd.u32()
    if first not in (MAGIC_V2, 0xFABC0002):
        rd.pos = 0  # very old files start with the count
    count = rd.i32() & 0x1FFFFFFF
    resources: dict[str, tuple[str, dict[str, Any]]] = {}
    for _ in range(count):
        type_id = rd.i32()
        type_str = rd.string()
        name = rd.string()
        kind = base_type(type_str)
        if kind not in RESOURCE_CODECS:
            raise ValueError(f"resource {name!r} has type {type_str!r} (id {type_id}) "
                             "that this reader cannot decode")
        resources[name] = (type_str, RESOURCE_CODECS[kind][1](rd))
    constants: dict[str, np.ndarray] = {}
    if rd.remaining() >= 4:
        rd.u32()
        for _ in range(rd.i32()):
            key = rd.string()
            constants[key] = rd.raw()
    return resources, constants
