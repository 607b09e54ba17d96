"""A small numpy interpreter for the TNN layers our writer emits (test helper).

No TNN runtime installs here, so the tests read back *our* ``.tnnproto``/``.tnnmodel``
and run them with this interpreter, which follows TNN's own layer semantics (as read
from TNN's ARM kernels: Upsample's ``floor(dst * in / out)`` nearest and PyTorch-style
half-pixel bilinear, pooling's valid-area average, LayerNorm over the trailing
``reduce_dims_size`` dims...), then compare with ONNX Runtime on the source ONNX.
Quantized layers are simulated the way TNN's int8 kernels compute: inputs rounded to
int8 with their blob scale, int32 accumulation, ``acc * w_scale`` (input scale folded
in), output rounded to int8 with the output blob scale.

Memory layouts are modelled where they change results: in an int8 network on ARM, TNN
adds no layout reformats (``net_optimizer_insert_layout_reformat.cc`` skips quantized
networks), so every float blob stays NC4HW4 and a layer whose ARM kernel is registered for
NCHW only (``ARM_NCHW_ONLY``: MatMul, LayerNorm...) reads the blob's NC4HW4 memory as if it
were NCHW and writes NCHW memory that the next layers read as NC4HW4
(:func:`nchw_kernel_reads`, :func:`nchw_kernel_wrote`). That is the bug found by running
exports in a TNN build (benchmarks/tnn_vs_onnxruntime.py: cosine 0.67 on ARM); a 2-D blob
whose last dim is a multiple of 4 has the same memory in both layouts, which the writer's
layout-agnostic MatMuls rely on.

``device`` models how a backend loads stored data types (read from TNN's sources,
``device/*/acc/*_layer_acc.cc``, ``utils/blob_transfer_utils.cc``):

* ``"arm"``: half layer resources and half constant blobs are converted to float
  (ConvertHalfHandle in ArmLayerAcc::ReloadConstantBlobs);
* ``"x86"`` and ``"naive"``: half resources of the layers in :data:`CONVERTED_RESOURCES`
  are converted (ConvertHalfResource in their Init), but a constant blob is copied
  byte for byte into a blob of its stored type (RawBuffer2Blob) and the kernels read it
  as float32. A float16 constant is therefore read as float32 reinterpretations of its
  bytes, and the second half of the elements lies past the buffer (undefined memory,
  modelled as NaN): the bug that gave NaN outputs for fp16 LayerNorm on x86.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from edgeseg.export.tnn.format import INT_MAX, INT_MIN, TnnModel, base_type, is_quantized


def _nc4hw4_memory(x: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The NC4HW4 memory TNN's ARM backend keeps for a blob with logical value ``x``
    (dims [n, c, ...]: channels packed by 4, zero padded), and (n, c, hw)."""
    n = x.shape[0] if x.ndim else 1
    c = x.shape[1] if x.ndim > 1 else 1
    hw = int(np.prod(x.shape[2:])) if x.ndim > 2 else 1
    c4 = -(-c // 4)
    mem = np.zeros((n, c4 * 4, hw))
    mem[:, :c, :] = x.reshape(n, c, hw)
    return mem.reshape(n, c4, 4, hw).transpose(0, 1, 3, 2).ravel(), (n, c, hw)


def nchw_kernel_reads(x: np.ndarray) -> np.ndarray:
    """What an NCHW-only kernel sees when handed an NC4HW4 blob holding ``x``."""
    mem, _ = _nc4hw4_memory(x)
    return mem[:x.size].reshape(x.shape)


def nchw_kernel_wrote(y: np.ndarray) -> np.ndarray:
    """What NC4HW4 readers see after an NCHW-only kernel wrote ``y`` densely into its blob."""
    _, (n, c, hw) = _nc4hw4_memory(y)
    c4 = -(-c // 4)
    mem = np.zeros(n * c4 * 4 * hw)
    mem[:y.size] = y.ravel()
    packed = mem.reshape(n, c4, hw, 4).transpose(0, 1, 3, 2).reshape(n, c4 * 4, hw)
    return packed[:, :c, :].reshape(y.shape)


def _q(x: np.ndarray, scale: float) -> np.ndarray:
    """Float -> int8 grid (kept as float64 values)."""
    return np.clip(np.round(x / scale), -128, 127)


def _conv(x, w, b, stride, pad, dil, group):
    n, c, h, wd = x.shape
    o, ipg, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    eh, ew = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    oh = (x.shape[2] - eh) // stride[0] + 1
    ow = (x.shape[3] - ew) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    opg = o // group
    for g in range(group):
        xs = x[:, g * ipg:(g + 1) * ipg]
        cols = np.zeros((n, ipg, kh, kw, oh, ow))
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = xs[:, :, i * dil[0]: i * dil[0] + stride[0] * oh: stride[0],
                                      j * dil[1]: j * dil[1] + stride[1] * ow: stride[1]]
        wg = w[g * opg:(g + 1) * opg].reshape(opg, -1)
        out[:, g * opg:(g + 1) * opg] = np.einsum("ok,nkhw->nohw", wg, cols.reshape(n, -1, oh, ow))
    return out + np.asarray(b).reshape(1, -1, 1, 1)


def _pool(x, p):
    n, c, h, w = x.shape
    kh, kw = (p["kernel_h"] or h), (p["kernel_w"] or w)
    sh, sw, ph, pw = p["stride_h"], p["stride_w"], p["pad_h"], p["pad_w"]
    rnd = np.ceil if p["ceil_mode"] else np.floor
    oh = int(rnd((h + 2 * ph - kh) / sh + 1))
    ow = int(rnd((w + 2 * pw - kw) / sw + 1))
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h), min(ws + kw, w)
            hs, ws = max(hs, 0), max(ws, 0)
            win = x[:, :, hs:he, ws:we]
            out[:, :, i, j] = win.max(axis=(2, 3)) if p["pool_type"] == 0 else win.mean(axis=(2, 3))
    return out


def _upsample(x, p):
    n, c, ih, iw = x.shape
    oh, ow = p["output_h"], p["output_w"]
    if p["mode"] == 1:
        # ARM: int(h * (float)ih / oh), computed in float32
        hi = (np.arange(oh, dtype=np.float32) * np.float32(ih / oh)).astype(np.int64)
        wi = (np.arange(ow, dtype=np.float32) * np.float32(iw / ow)).astype(np.int64)
        return x[:, :, hi][:, :, :, wi]

    def coords(i_len, o_len):
        if p["align_corners"]:
            r = (i_len - 1) / (o_len - 1) if o_len > 1 else 0.0
            src = np.arange(o_len) * r
        else:
            r = i_len / o_len if o_len > 1 else 0.0
            src = np.maximum(r * (np.arange(o_len) + 0.5) - 0.5, 0)
        lo = src.astype(np.int64)
        step = (lo < i_len - 1).astype(np.int64)
        return lo, lo + step, src - lo

    h0, h1, lh = coords(ih, oh)
    w0, w1, lw = coords(iw, ow)
    lh, lw = lh.reshape(1, 1, -1, 1), lw.reshape(1, 1, 1, -1)
    top = x[:, :, h0][:, :, :, w0] * (1 - lw) + x[:, :, h0][:, :, :, w1] * lw
    bot = x[:, :, h1][:, :, :, w0] * (1 - lw) + x[:, :, h1][:, :, :, w1] * lw
    return top * (1 - lh) + bot * lh


def _slice(x, p):
    idx = [slice(None)] * x.ndim
    for b, e, a, s in zip(p["begins"], p["ends"], p["axes"], p["strides"]):
        d = x.shape[a]
        b = b + d if b < 0 else b
        if e == INT_MAX or e > d:
            e = d
        elif e == INT_MIN:
            e = -1
        elif e < 0:
            e += d
        idx[a] = slice(b, e if e >= 0 else None, s)
    return x[tuple(idx)]


def _binary(op, a, b):
    return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
            "Maximum": np.maximum, "Minimum": np.minimum}[op](a, b)


DEVICES = ("arm", "x86", "naive")
# Layer types whose half resources x86 and naive convert to float32 when they load them.
CONVERTED_RESOURCES = {"Convolution", "Deconvolution", "InnerProduct", "MatMul", "BatchNormCxx",
                       "Add", "Sub", "Mul", "Div", "Maximum", "Minimum"}


def read_as_float32(arr: np.ndarray) -> np.ndarray:
    """What a float32 kernel sees in a buffer stored as ``arr.dtype`` and copied unconverted:
    its bytes as float32 values, and NaN for elements past the end of the buffer."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.float32:
        return arr.astype(np.float64)
    data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    seen = np.frombuffer(data[:len(data) // 4 * 4], dtype="<f4").astype(np.float64)
    out = np.full(arr.size, np.nan)
    out[:min(arr.size, seen.size)] = seen[:arr.size]
    return out.reshape(arr.shape)


def _constant(arr: np.ndarray, device: str) -> np.ndarray:
    if arr.dtype.kind != "f":
        return np.asarray(arr)
    if device != "arm":
        return read_as_float32(arr)
    return np.asarray(arr, np.float64)


def _check_resources(model: TnnModel, device: str) -> None:
    if device == "arm":
        return
    for layer in model.layers:
        half = [k for k, v in (layer.resource or {}).items() if isinstance(v, np.ndarray) and v.dtype == np.float16]
        if half and base_type(layer.type) not in CONVERTED_RESOURCES:
            raise NotImplementedError(f"{layer.name}: {device} reads the half resource(s) {half} of a "
                                      f"{layer.type} layer as float32; the writer must not store them half")


def run(model: TnnModel, feeds: dict[str, np.ndarray], device: str = "arm") -> dict[str, np.ndarray]:
    """Run every layer in order as TNN's ``device`` backend would; return the outputs (float32)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    _check_resources(model, device)
    blobs: dict[str, np.ndarray] = {k: np.asarray(v, np.float64) for k, v in feeds.items()}
    for name, arr in model.constants.items():
        blobs[name] = _constant(arr, device)

    def scale(blob):
        return float(model.blob_scales[blob]["scale"][0])

    from edgeseg.export.compat.tnn import ARM_NCHW_ONLY

    # ARM, int8 network: no layout reformats, NCHW-only kernels see NC4HW4 memory.
    layouts_clash = device == "arm" and any(is_quantized(layer.type) for layer in model.layers)
    for layer in model.layers:
        t, p, r = base_type(layer.type), layer.params, layer.resource or {}
        quant = is_quantized(layer.type)
        nchw_only = layouts_clash and t in ARM_NCHW_ONLY
        ins = [blobs[b] for b in layer.inputs]
        if nchw_only:
            ins = [nchw_kernel_reads(v) if b not in model.constants else v for v, b in zip(ins, layer.inputs)]
        if quant:
            ins = [_q(x, scale(b)) for x, b in zip(ins, layer.inputs)]  # int8 grid values
        x = ins[0] if ins else None
        if t == "Convolution":
            w = np.asarray(r["filter"], np.float64)
            b = np.asarray(r["bias"], np.float64) if r.get("has_bias") else np.zeros(w.shape[0])
            y = _conv(x, w, b, (p["stride_h"], p["stride_w"]), (p["pad_h"], p["pad_w"]),
                      (p["dilation_h"], p["dilation_w"]), p["group"])
            if quant:
                y = y * np.asarray(r["scale"], np.float64).reshape(1, -1, 1, 1)
            if p["activation_type"] == 1:
                y = np.maximum(y, 0)
            elif p["activation_type"] == 2:
                y = np.clip(y, 0, 6)
        elif t == "InnerProduct":
            flat = x.reshape(x.shape[0], -1)
            y = flat @ np.asarray(r["weight"], np.float64).T + np.asarray(r["bias"], np.float64)
            if quant:
                y = y * np.asarray(r["scale"], np.float64)
        elif t == "Pad":
            if p["type"] != 0:
                mode = "reflect" if p["type"] == 1 else "edge"
                y = np.pad(x, ((0, 0), (p["pad_c_b"], p["pad_c_e"]), (p["pad_t"], p["pad_b"]),
                               (p["pad_l"], p["pad_r"])), mode=mode)
            else:
                y = np.pad(x, ((0, 0), (p["pad_c_b"], p["pad_c_e"]), (p["pad_t"], p["pad_b"]),
                               (p["pad_l"], p["pad_r"])), constant_values=p["value"])
        elif t == "Pooling":
            y = _pool(x, p)
        elif t == "Upsample":
            y = _upsample(x, p)
        elif t in ("Add", "Sub", "Mul", "Div", "Maximum", "Minimum"):
            if "element" in r:
                e = np.asarray(r["element"], np.float64)
                y = _binary(t, e, x) if p["weight_input_index"] == 0 else _binary(t, x, e)
            else:
                y = _binary(t, ins[0], ins[1])
                if quant:  # QuantizedAdd adds the dequantized inputs
                    y = ins[0] * scale(layer.inputs[0]) + ins[1] * scale(layer.inputs[1])
        elif t == "Concat":
            if quant:
                ins = [v * scale(b) for v, b in zip(ins, layer.inputs)]
            y = np.concatenate(ins, axis=p["axis"])
        elif t == "Reshape":
            y = x.reshape(p["shape"])
        elif t == "Permute":
            y = x.transpose(p["orders"])
        elif t == "Squeeze":
            y = np.squeeze(x, axis=tuple(p["axes"]))
        elif t == "Unsqueeze":
            y = x
            for a in sorted(p["axes"]):
                y = np.expand_dims(y, a)
        elif t == "StridedSliceV2":
            y = _slice(x, p)
        elif t == "SplitV":
            bounds = np.cumsum(p["slices"])[:-1]
            for out, part in zip(layer.outputs, np.split(x, bounds, axis=p["axis"])):
                blobs[out] = part
            continue
        elif t == "Gather":
            if p["indices_in_resource"]:
                y = np.take(x, np.asarray(r["indices"]), axis=p["axis"])
            elif p["data_in_resource"]:
                y = np.take(np.asarray(r["data"], np.float64), x.astype(np.int64), axis=p["axis"])
            else:
                y = np.take(ins[0], ins[1].astype(np.int64), axis=p["axis"])
        elif t in ("ReduceMean", "ReduceSum", "ReduceMax"):
            fn = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max}[t]
            y = fn(x, axis=tuple(p["axes"]), keepdims=bool(p["keep_dims"]))
        elif t == "Softmax":
            z = np.exp(x - x.max(axis=p["axis"], keepdims=True))
            y = z / z.sum(axis=p["axis"], keepdims=True)
        elif t == "LayerNorm":
            axes = tuple(range(x.ndim - p["reduce_dims_size"], x.ndim))
            mean = x.mean(axis=axes, keepdims=True)
            var = (x * x).mean(axis=axes, keepdims=True) - mean * mean  # TNN: E[x^2] - E[x]^2
            y = (x - mean) / np.sqrt(var + p["eps"]) * ins[1] + ins[2]
        elif t == "MatMul":
            if len(ins) == 2:
                y = ins[0] @ ins[1]
            else:
                w = np.asarray(r["weight"], np.float64)
                y = w @ x if p["weight_position"] == 0 else x @ w
        elif t == "BatchNormCxx":
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = x * np.asarray(r["scale"], np.float64).reshape(shape) + np.asarray(r["bias"], np.float64).reshape(shape)
        elif t == "ReLU":
            y = np.maximum(x, 0)
        elif t == "ReLU6":
            y = np.clip(x, 0, 6)
        elif t == "Clip":
            y = np.clip(x, p["min"], p["max"])
        elif t == "Sigmoid":
            y = 1 / (1 + np.exp(-x))
        elif t == "HardSigmoid":
            y = np.clip(p["alpha"] * x + p["beta"], 0, 1)
        elif t == "HardSwish":
            y = x * np.clip(p["alpha"] * x + p["beta"], 0, 1)
        elif t == "GELU":
            y = 0.5 * x * (1 + erf(x / np.sqrt(2)))
        elif t == "Power":
            y = (p["shift"] + p["scale"] * x) ** p["exponent"]
        elif t in ("Sqrt", "Exp", "Tanh", "Abs", "Neg", "Sign", "Log", "Reciprocal", "Erf"):
            y = {"Sqrt": np.sqrt, "Exp": np.exp, "Tanh": np.tanh, "Abs": np.abs, "Neg": np.negative, "Sign": np.sign,
                 "Log": np.log, "Reciprocal": np.reciprocal, "Erf": erf}[t](x)
        else:
            raise NotImplementedError(f"reference interpreter has no {layer.type}")
        if quant:
            if t in ("ReLU", "Pooling"):  # int8 in, int8 out on the same scale
                y = y * scale(layer.inputs[0])
            y = _q(y, scale(layer.outputs[0])) * scale(layer.outputs[0])
        if nchw_only:
            y = nchw_kernel_wrote(y)
        blobs[layer.outputs[0]] = y
    return {o: np.asarray(blobs[o], np.float32) for o in model.outputs}
