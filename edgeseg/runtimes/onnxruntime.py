"""ONNX Runtime backend (CPU), configured for honest single-core measurement.

``numerics`` says how QDQ (int8) graphs are computed (:mod:`edgeseg.runtimes.numerics`):
``simulated`` (the default: Q/DQ as float ops, the same numbers on every host) for
accuracy, ``fused`` (ONNX Runtime's integer kernels of this CPU) for latency. Float graphs
compute the same either way.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.runtimes import numerics as _numerics
from edgeseg.runtimes.base import Runtime, TensorInfo

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}


class OnnxRuntimeRuntime(Runtime):
    backend = "onnxruntime"

    def __init__(self, path, threads: int = 1, optimization: str = "all",
                 extra_outputs: list[str] | None = None, numerics: str = _numerics.SIMULATED, **options: Any):
        super().__init__(path, threads=threads, **options)
        import onnxruntime as ort

        so = session_options(threads=threads, optimization=optimization, numerics=numerics)
        source: Any = os.fspath(self.path)
        if extra_outputs:
            source = _with_extra_outputs(self.path, extra_outputs)
        try:
            self.session = ort.InferenceSession(source, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise EdgesegError(f"ONNX Runtime cannot load {self.path.name}: {str(e).strip().splitlines()[0]}",
                               "the file is corrupt or not ONNX; re-export it with `edgeseg export`") from e
        # Read back from the session, not assumed: reports record what really ran.
        self.numerics = numerics_in_effect(self.session)

    @staticmethod
    def _info(args) -> list[TensorInfo]:
        return [TensorInfo(a.name, list(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in args]

    def inputs(self) -> list[TensorInfo]:
        return self._info(self.session.get_inputs())

    def outputs(self) -> list[TensorInfo]:
        return self._info(self.session.get_outputs())

    def _run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        names = output_names or [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {k: v for k, v in feeds.items()})
        return dict(zip(names, values))


def session_options(threads: int = 1, optimization: str = "all", numerics: str = _numerics.SIMULATED):
    """SessionOptions for one honest single-core run with the chosen int8 numerics."""
    import onnxruntime as ort

    _numerics.check_numerics(numerics, "numerics")
    so = ort.SessionOptions()
    # One intra-op and one inter-op thread and sequential execution: what one phone
    # core does. Spinning is off so a pinned process does not burn a second core.
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if numerics == _numerics.SIMULATED:
        # Q/DQ stay float ops: no fused integer kernel, so no host-dependent saturation.
        so.add_session_config_entry(_numerics.DISABLE_QDQ_KEY, "1")
    so.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    so.log_severity_level = 3
    return so


def make_session(model_or_path: Any, numerics: str = _numerics.SIMULATED, threads: int = 1,
                 optimization: str = "all"):
    """A CPU InferenceSession of a path, bytes or ModelProto with the chosen numerics (for
    tests and benchmarks that need the raw session)."""
    import onnxruntime as ort

    if hasattr(model_or_path, "SerializeToString"):
        source: Any = model_or_path.SerializeToString()
    elif isinstance(model_or_path, (bytes, bytearray)):
        source = bytes(model_or_path)
    else:
        source = os.fspath(model_or_path)
    so = session_options(threads=threads, optimization=optimization, numerics=numerics)
    return ort.InferenceSession(source, sess_options=so, providers=["CPUExecutionProvider"])


def numerics_in_effect(session) -> str:
    """``simulated`` or ``fused``, as the session's own options say."""
    try:
        value = session.get_session_options().get_session_config_entry(_numerics.DISABLE_QDQ_KEY)
    except RuntimeError:  # the key was never set: ONNX Runtime's default, fusion on
        return _numerics.FUSED
    return _numerics.SIMULATED if value == "1" else _numerics.FUSED


def _with_extra_outputs(path, names: list[str]) -> bytes:
    """Serialized copy of the model that also exposes intermediate tensors as outputs."""
    import onnx

    model = onnx.load(os.fspath(path))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    return model.SerializeToString()
