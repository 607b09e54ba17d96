"""Read ``.tnnproto`` + ``.tnnmodel`` back into a :class:`TnnModel` (pure Python).

Used by the round-trip tests, by the reference interpreter in the tests and by
``edgeseg inspect``. It parses the proto the way TNN does (drop quotes and newlines,
split on commas, then on spaces) so a file TNN would misread reads wrong here too.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.export.tnn.format import (BLOB_SCALE_SUFFIX, MAGIC_V2, TnnLayer, TnnModel, decode_params,
                                       parse_model_bytes)


def parse_proto_text(text: str) -> TnnModel:
    """Proto text -> model without resources (layers, params, inputs, outputs)."""
    flat = text.replace('"', "").replace("\n", "")
    pieces = flat.split(",")
    if len(pieces) <= 5:
        raise ValueError(f"a .tnnproto has at least 6 pieces, this one has {len(pieces)}")
    head = pieces[0].split()
    magic = int(head[3]) if len(head) >= 4 else 0
    inputs: dict[str, tuple[list[int], int]] = {}
    for item in pieces[1].split(":"):
        tok = item.split()
        if not tok:
            continue
        if magic == MAGIC_V2:
            ndims = int(tok[1])
            inputs[tok[0]] = ([int(t) for t in tok[2:2 + ndims]], int(tok[-1]) if len(tok) > 2 + ndims else 0)
        else:  # old format: name followed by dims, float input
            inputs[tok[0]] = ([int(t) for t in tok[1:]], 0)
    outputs = pieces[3].split()
    declared = int(pieces[4].split()[0]) if pieces[4].split() else 0
    layers: list[TnnLayer] = []
    for piece in pieces[5:]:
        tok = piece.split()
        if not tok:
            continue
        n_in, n_out = int(tok[2]), int(tok[3])
        ins = tok[4:4 + n_in]
        outs = tok[4 + n_in:4 + n_in + n_out]
        params = decode_params(tok[0], tok[4 + n_in + n_out:])
        layers.append(TnnLayer(type=tok[0], name=tok[1], inputs=ins, outputs=outs, params=params))
    if declared != len(layers):
        raise ValueError(f"the proto declares {declared} layers but lists {len(layers)}")
    return TnnModel(inputs=inputs, outputs=outputs, layers=layers)


def attach_resources(model: TnnModel, data: bytes) -> TnnModel:
    resources, constants = parse_model_bytes(data)
    by_name = {layer.name: layer for layer in model.layers}
    for name, (type_str, payload) in resources.items():
        if type_str == "BlobScale" and name.endswith(BLOB_SCALE_SUFFIX):
            model.blob_scales[name[: -len(BLOB_SCALE_SUFFIX)]] = payload
        elif name in by_name:
            by_name[name].resource = payload
        else:
            raise ValueError(f".tnnmodel has a resource for {name!r} but the proto has no such layer")
    model.constants = constants
    return model


def read_tnn(proto: str | os.PathLike, model: str | os.PathLike | None = None) -> TnnModel:
    """Read a TNN model from its proto (and the ``.tnnmodel`` beside it, if any)."""
    proto_path = Path(proto)
    if proto_path.suffix == ".tnnmodel":
        proto_path, model = proto_path.with_suffix(".tnnproto"), proto_path
    model_path = Path(model) if model else proto_path.with_suffix(".tnnmodel")
    if not proto_path.is_file():
        raise EdgesegError(f"{proto_path} not found", "pass the .tnnproto written by `edgeseg export --to tnn`")
    try:
        result = parse_proto_text(proto_path.read_text(encoding="utf-8"))
        if model_path.is_file():
            attach_resources(result, model_path.read_bytes())
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise EdgesegError(f"cannot read TNN model {proto_path.name}: {e}",
                           "re-export it with `edgeseg export --to tnn`") from e
    return result


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > 8:
        return "[" + ",".join(map(str, value[:8])) + f",...({len(value)})]"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def describe(model: TnnModel) -> dict:
    """A JSON-friendly summary: inputs, outputs, layer counts, and per layer its params
    and the dtype/shape of every weight array (for ``edgeseg inspect``)."""
    import numpy as np

    layers = []
    weight_bytes: dict[str, int] = {}
    for layer in model.layers:
        weights = {}
        for key, value in (layer.resource or {}).items():
            if isinstance(value, np.ndarray):
                weights[key] = f"{value.dtype}{list(value.shape)}"
                weight_bytes[str(value.dtype)] = weight_bytes.get(str(value.dtype), 0) + value.nbytes
        layers.append({"type": layer.type, "name": layer.name, "inputs": layer.inputs, "outputs": layer.outputs,
                       "params": {k: _short(v) for k, v in layer.params.items()}, "weights": weights})
    counts: dict[str, int] = {}
    for layer in model.layers:
        counts[layer.type] = counts.get(layer.type, 0) + 1
    for arr in model.constants.values():
        weight_bytes[str(arr.dtype)] = weight_bytes.get(str(arr.dtype), 0) + arr.nbytes
    return {"inputs": {k: {"dims": v[0], "dtype": v[1]} for k, v in model.inputs.items()},
            "outputs": model.outputs, "layer_count": len(model.layers), "layer_types": counts,
            "blob_scales": len(model.blob_scales),
            "constants": {k: f"{v.dtype}{list(v.shape)}" for k, v in model.constants.items()},
            "weight_bytes": weight_bytes, "layers": layers}
