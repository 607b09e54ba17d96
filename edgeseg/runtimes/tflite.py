"""LiteRT (TFLite) backend: XNNPACK on ``threads`` threads (1 by default: one phone core).

Inputs and outputs are presented with the ONNX names, shapes and layout, so code written
against the ONNX model (parity checks, evaluation, the benchmark harness) runs the
``.tflite`` unchanged. The conversion records, per input/output, the signature key
TFLite uses and the permutation onnx2tf applied (NCHW -> NHWC for images); the runtime
reads it from the artifact's manifest entry and transposes on the way in and out.
Without a manifest the signature keys and TFLite's native shapes are used as they are.

INT8 inputs/outputs (``--int8-io``) are quantized/dequantized here with the tensor's
scale and zero point, so callers always exchange float32.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.runtimes.base import Runtime, TensorInfo

# LiteRT 2.1.x computes int8 BATCH_MATMUL wrongly under XNNPACK (measured: wrong masks);
# 2.3.0 is the first version verified here to be right.
MIN_LITERT_FOR_INT8_BATCH_MATMUL = (2, 3)


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _io_from_manifest(path) -> list[dict[str, Any]] | None:
    from edgeseg.export.manifest import Manifest, find_manifest

    if find_manifest(path) is None:
        return None
    try:
        entry = Manifest.load(path).artifacts.get(os.path.basename(path))
    except EdgesegError:
        return None
    return entry.get("io") if entry else None


class _Binding:
    """One ONNX-named input/output bound to a TFLite tensor."""

    def __init__(self, name: str, index: int, shape: list[int], perm: list[int] | None,
                 dtype: np.dtype, scale: float, zero_point: int):
        self.name, self.index, self.shape, self.perm = name, index, shape, perm
        self.dtype, self.scale, self.zero_point = dtype, scale, zero_point
        self.inverse = None if perm is None else list(np.argsort(perm))

    @property
    def quantized(self) -> bool:
        return self.dtype in (np.int8, np.uint8, np.int16) and self.scale > 0


class TFLiteRuntime(Runtime):
    backend = "tflite"

    def __init__(self, path, threads: int = 1, io: list[dict[str, Any]] | None = None,
                 layout: str = "onnx", **options: Any):
        super().__init__(path, threads=threads, **options)
        if layout not in ("onnx", "native"):
            raise EdgesegError(f"unknown layout {layout!r}", "use 'onnx' (ONNX names/shapes) or 'native'")
        try:
            from ai_edge_litert import interpreter as litert
        except ImportError as e:
            raise EdgesegError(f"LiteRT is not installed: {e}", "pip install 'edgeseg[tflite]'") from e
        try:
            # The builtin resolver applies the XNNPACK delegate by default: what phone apps run.
            self.interpreter = litert.Interpreter(
                model_path=os.fspath(self.path), num_threads=threads,
                experimental_op_resolver_type=litert.OpResolverType.BUILTIN)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EdgesegError(f"LiteRT cannot load {self.path.name}: {str(e).strip().splitlines()[0]}",
                               "the file is corrupt, not TFLite, or needs Flex ops; "
                               "re-export it with `edgeseg export MODEL --to tflite`") from e
        self._check_litert_version()
        if io is None and layout == "onnx":
            io = _io_from_manifest(self.path)
        self._inputs, self._outputs = self._bind(io if layout == "onnx" else None)

    # ---------------------------------------------------------------- setup
    def _check_litert_version(self) -> None:
        from importlib import metadata

        try:
            version = metadata.version("ai-edge-litert")
        except metadata.PackageNotFoundError:
            return
        if _version_tuple(version) >= MIN_LITERT_FOR_INT8_BATCH_MATMUL:
            return
        details = {t["index"]: t for t in self.interpreter.get_tensor_details()}
        for op in self.interpreter._get_ops_details():
            if op["op_name"] == "BATCH_MATMUL" and any(details[i]["dtype"] == np.int8 for i in op["inputs"]):
                raise EdgesegError(f"ai-edge-litert {version} computes int8 BATCH_MATMUL wrongly with XNNPACK",
                                   "pip install 'ai-edge-litert>=2.3.0'")

    def _bind(self, io: list[dict[str, Any]] | None) -> tuple[list[_Binding], list[_Binding]]:
        sigs = self.interpreter._get_full_signature_list()
        if sigs:
            sig = sigs.get("serving_default") or next(iter(sigs.values()))
            keyed_in, keyed_out = dict(sig["inputs"]), dict(sig["outputs"])
        else:  # a .tflite without signature (not made by edgeseg): tensor names as keys
            keyed_in = {d["name"]: d["index"] for d in self.interpreter.get_input_details()}
            keyed_out = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        details = {d["index"]: d for d in self.interpreter.get_tensor_details()}

        def make(name, index, shape, perm) -> _Binding:
            d = details[index]
            scale, zp = d["quantization"]
            return _Binding(name, index, list(shape), perm, np.dtype(d["dtype"]), float(scale), int(zp))

        if io is None:
            ins = [make(k, i, details[i]["shape"].tolist(), None) for k, i in keyed_in.items()]
            outs = [make(k, i, details[i]["shape"].tolist(), None) for k, i in keyed_out.items()]
            return ins, outs
        ins, outs = [], []
        for entry in io:
            keyed = keyed_in if entry["kind"] == "input" else keyed_out
            if entry["key"] not in keyed:
                raise EdgesegError(f"{self.path.name} has no {entry['kind']} {entry['key']!r} "
                                   f"(it has {', '.join(keyed)})",
                                   "the manifest does not describe this file; re-export it")
            index = keyed[entry["key"]]
            native = details[index]["shape"].tolist()
            if native != list(entry["tflite_shape"]):
                raise EdgesegError(f"{entry['kind']} {entry['name']!r} of {self.path.name} has shape {native}, "
                                   f"the manifest says {entry['tflite_shape']}",
                                   "the manifest does not describe this file; re-export it")
            (ins if entry["kind"] == "input" else outs).append(make(entry["name"], index, entry["shape"],
                                                                    entry.get("perm")))
        return ins, outs

    @property
    def delegated(self) -> bool:
        """Whether XNNPACK took (part of) the graph: delegated ops become DELEGATE nodes."""
        return any(op["op_name"] == "DELEGATE" for op in self.interpreter._get_ops_details())

    # ---------------------------------------------------------------- Runtime
    def inputs(self) -> list[TensorInfo]:
        # Quantized inputs still take float32: run() quantizes them.
        return [TensorInfo(b.name, list(b.shape), "float32" if b.quantized else b.dtype.name) for b in self._inputs]

    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(b.name, list(b.shape), "float32" if b.quantized else b.dtype.name) for b in self._outputs]

    def _run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        for b in self._inputs:
            x = np.asarray(feeds[b.name])
            if b.perm is not None:
                x = x.transpose(b.perm)
            if b.quantized and x.dtype != b.dtype:
                info = np.iinfo(b.dtype)
                x = np.clip(np.round(x / b.scale) + b.zero_point, info.min, info.max)
            self.interpreter.set_tensor(b.index, np.ascontiguousarray(x, dtype=b.dtype))
        self.interpreter.invoke()
        out = {}
        for b in self._outputs:
            y = self.interpreter.get_tensor(b.index)
            if b.quantized:
                y = (y.astype(np.float32) - b.zero_point) * np.float32(b.scale)
            if b.inverse is not None:
                y = y.transpose(b.inverse)
            out[b.name] = np.ascontiguousarray(y)
        return out

    def close(self) -> None:
        self.interpreter = None
