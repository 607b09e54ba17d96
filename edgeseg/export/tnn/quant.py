"""INT8 layers for TNN from our own calibration table.

TNN's int8 format (read from its ARM int8 kernels and its quantization tool):

* a quantized layer is written as ``Quantized<Type>`` (Convolution, InnerProduct, Add,
  Concat; ReLU and max Pooling follow a quantized producer);
* every input and output blob of a quantized layer has a ``BlobScale`` resource named
  ``<blob>_scale_data_``: int8 zero points, float scales, int32 bias, one value per
  tensor here (symmetric, per-tensor: scale = amax / 127);
* weights are int8 with one float scale per output channel that *folds in the input
  blob's scale*: the kernel computes ``acc = sum(x_q * w_q) + b_q`` and writes
  ``round(acc * w_scale[c] / out_scale)``, so ``w_scale[c] = max|W_c| / 127 * in_scale``
  and the bias is int32 ``round(b / w_scale[c])``;
* TNN inserts int8 <-> float reformat layers between quantized and float layers when it
  loads the network, so only the planned components need to be int8.

Ranges come from :class:`~edgeseg.quantize.cache.CalibrationTable` (``amax`` per ONNX
tensor), the same table that feeds ONNX Runtime QDQ and TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.export.tnn.format import QUANTIZED_PREFIX, TnnLayer, TnnModel

WEIGHTED = {"Convolution", "InnerProduct"}
# Layers that keep their input's scale (TNN merges the blob scales of these).
FOLLOWERS = {"ReLU", "Pooling"}


@dataclass
class QuantReport:
    quantized: list[str] = field(default_factory=list)  # layer names now Quantized<Type>
    kept_float: dict[str, str] = field(default_factory=dict)  # layer in an int8 component -> why float


def blob_scale_resource(scale: float) -> dict[str, np.ndarray]:
    return {"zero_point": np.zeros(1, np.int8), "scale": np.array([scale], np.float32),
            "bias": np.zeros(1, np.int32)}


def quantize_weights(weight: np.ndarray, input_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 weights and their scales with ``input_scale`` folded in."""
    flat = weight.reshape(weight.shape[0], -1).astype(np.float64)
    wmax = np.abs(flat).max(axis=1)
    safe = np.where(wmax > 0, wmax, 1.0)
    q = np.clip(np.round(flat / safe[:, None] * 127.0), -127, 127).astype(np.int8).reshape(weight.shape)
    scale = np.where(wmax > 0, wmax / 127.0 * input_scale, 0.0).astype(np.float32)
    return q, scale


def quantize_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    b = np.asarray(bias, np.float64).reshape(-1)
    q = np.where(scale > 0, np.round(b / np.where(scale > 0, scale, 1.0)), 0.0)
    info = np.iinfo(np.int32)
    return np.clip(q, info.min, info.max).astype(np.int32)


def _quantizable(layer: TnnLayer, model: TnnModel, producer: dict[str, TnnLayer], done: set[str],
                 shape_of: Callable[[str], list[int] | None]) -> str | None:
    """None if the layer can be int8 in TNN, else the reason it stays float."""
    t = layer.type
    if t in WEIGHTED:
        return None
    if t in ("Add", "Concat"):
        if layer.resource is not None or any(b in model.constants for b in layer.inputs):
            return f"TNN quantizes {t} only between two activations, not with a constant"
        # ARM's int8 Add and Concat work on 4-D NC4HW4 blobs; int8 Add does not broadcast.
        shapes = [shape_of(b) for b in (*layer.inputs, *layer.outputs)]
        if any(s is None or len(s) != 4 for s in shapes):
            return f"TNN's int8 {t} needs 4-D tensors of known shape"
        if t == "Add" and any(s != shapes[-1] for s in shapes):
            return "TNN's int8 Add does not broadcast"
        return None
    if t in FOLLOWERS:
        if t == "Pooling" and layer.params.get("pool_type") != 0:
            return "TNN keeps average pooling float"
        src = producer.get(layer.inputs[0])
        if src is None or src.name not in done:
            return f"{t} is int8 only after an int8 layer"
        return None
    # Conservative on purpose: these are the layers TNN's own quantizer makes int8.
    return f"{t} stays float (int8 here: Convolution, InnerProduct, Add, Concat; ReLU/max Pooling after them)"


def quantize_model(model: TnnModel, precision_of: Callable[[str], str], table, range_source: dict[str, str],
                   shape_of: Callable[[str], list[int] | None] | None = None) -> QuantReport:
    """Turn the layers of int8 components into TNN quantized layers, in place.

    ``shape_of(blob)`` gives static blob shapes (Add/Concat stay float without them)."""
    shape_of = shape_of or (lambda blob: None)
    report = QuantReport()
    producer = {out: layer for layer in model.layers for out in layer.outputs}
    missing: dict[str, str] = {}  # blob -> tensor (or "" when no ONNX tensor backs it)

    def scale_of(blob: str) -> float | None:
        if blob in model.blob_scales:
            return float(model.blob_scales[blob]["scale"][0])
        tensor = range_source.get(blob, "")
        if not tensor or tensor not in table:
            missing[blob] = tensor
            return None
        scale = float(table.ranges[tensor].scale)
        model.blob_scales[blob] = blob_scale_resource(scale)
        return scale

    done: set[str] = set()
    for layer in model.layers:
        if precision_of(layer.component) != "int8":
            continue
        reason = _quantizable(layer, model, producer, done, shape_of)
        if reason:
            report.kept_float[layer.name] = reason
            continue
        in_scales = [scale_of(b) for b in layer.inputs]
        if layer.type in FOLLOWERS:
            # Same scale in and out: ReLU and max pooling never leave the input's range.
            for out in layer.outputs:
                if in_scales[0] is not None:
                    model.blob_scales[out] = blob_scale_resource(in_scales[0])
        else:
            for out in layer.outputs:
                scale_of(out)
        if any(s is None for s in in_scales):
            continue
        if layer.type in WEIGHTED:
            _quantize_weighted(layer, in_scales[0])
        layer.type = QUANTIZED_PREFIX + layer.type
        done.add(layer.name)
        report.quantized.append(layer.name)

    if missing:
        names = [t or f"(TNN blob {b})" for b, t in missing.items()]
        raise EdgesegError(
            f"the calibration table has no range for {len(names)} tensors of int8 components: "
            f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}",
            "re-run `edgeseg calibrate` on this exact ONNX file (the table is keyed by its tensor names)")
    return report


def _quantize_weighted(layer: TnnLayer, input_scale: float) -> None:
    res = layer.resource
    assert res is not None
    key = "filter" if layer.type == "Convolution" else "weight"
    weight = np.asarray(res[key], np.float32)
    q, scale = quantize_weights(weight, input_scale)
    bias = res.get("bias")
    bias = np.zeros(weight.shape[0], np.float32) if bias is None or np.asarray(bias).size == 0 else bias
    res[key] = q
    res["bias"] = quantize_bias(np.asarray(bias, np.float32), scale)
    res["zero_point"] = np.zeros(weight.shape[0], np.int8)
    res["scale"] = scale
    if layer.type == "Convolution":
        res["has_bias"] = 1
        layer.params["bias"] = 1
