"""ONNX Runtime backend (CPU), configured for honest single-core measurement."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.runtimes.base import Runtime, TensorInfo

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}


class OnnxRuntimeRuntime(Runtime):
    backend = "onnxruntime"

    def __init__(self, path, threads: int = 1, optimization: str = "all",
                 extra_outputs: list[str] | None = None, **options: Any):
        super().__init__(path, threads=threads, **options)
        import onnxruntime as ort

        so = ort.SessionOptions()
        # One intra-op and one inter-op thread and sequential execution: what one phone
        # core does. Spinning is off so a pinned process does not burn a second core.
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        so.log_severity_level = 3
        source: Any = os.fspath(self.path)
        if extra_outputs:
            source = _with_extra_outputs(self.path, extra_outputs)
        try:
            self.session = ort.InferenceSession(source, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise EdgesegError(f"ONNX Runtime cannot load {self.path.name}: {str(e).strip().splitlines()[0]}",
                               "the file is corrupt or not ONNX; re-export it with `edgeseg export`") from e

    @staticmethod
    def _info(args) -> list[TensorInfo]:
        return [TensorInfo(a.name, list(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in args]

    def inputs(self) -> list[TensorInfo]:
        return self._info(self.session.get_inputs())

    def outputs(self) -> list[TensorInfo]:
        return self._info(self.session.get_outputs())

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        names = output_names or [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {k: v for k, v in feeds.items()})
        return dict(zip(names, values))


def _with_extra_outputs(path, names: list[str]) -> bytes:
    """Serialized copy of the model that also exposes intermediate tensors as outputs."""
    import onnx

    model = onnx.load(os.fspath(path))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    return model.SerializeToString()
