"""TensorRT backend: run a serialized ``.engine`` behind the one Runtime interface.

Uses the name-based I/O API that TensorRT 8.5 introduced and 10.x kept
(``engine.num_io_tensors``, ``get_tensor_name/mode/shape/dtype``,
``context.set_tensor_address``, ``context.execute_async_v3``), so one code path serves
JetPack 5 (8.5), JetPack 6 (8.6 / 10.x) and desktop TensorRT 10. Buffers live in device
memory allocated once through pycuda or cuda-python (``export/tensorrt/cuda.py``);
``run`` copies the inputs in, enqueues, copies the outputs back and waits on the stream.
Engines are built for one GPU and one TensorRT version: load them where they were built.

Not run here: this machine has neither a GPU nor TensorRT (see the README's TensorRT section).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.runtimes.base import Runtime, TensorInfo


class TensorRTRuntime(Runtime):
    backend = "tensorrt"

    def __init__(self, path, threads: int = 1, **options: Any):
        super().__init__(path, threads=threads, **options)
        from edgeseg.export.tensorrt.cuda import open_cuda
        from edgeseg.export.tensorrt.deps import import_tensorrt

        trt = import_tensorrt()
        self.trt = trt
        self.cuda = open_cuda()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EdgesegError(f"TensorRT {trt.__version__} cannot load {self.path.name}",
                               "engines only load on the TensorRT version and GPU that built them: "
                               "rebuild it here with `edgeseg export --to tensorrt`")
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self._inputs: list[TensorInfo] = []
        self._outputs: list[TensorInfo] = []
        self._device: dict[str, Any] = {}
        self._host: dict[str, np.ndarray] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = [int(d) for d in self.engine.get_tensor_shape(name)]
            if any(d < 0 for d in shape):
                raise EdgesegError(f"{self.path.name} has a dynamic input shape {shape} for {name!r}",
                                   "edgeseg exports static shapes; rebuild the engine from its export")
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            info = TensorInfo(name, shape, dtype.name)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(info)
            self._host[name] = self.cuda.host_buffer(shape, dtype)
            self._device[name] = self.cuda.alloc(self._host[name].nbytes)
            self.context.set_tensor_address(name, self.cuda.ptr(self._device[name]))

    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def _run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        for info in self._inputs:
            host = self._host[info.name]
            np.copyto(host, np.asarray(feeds[info.name]).astype(host.dtype, copy=False))
            self.cuda.to_device(self._device[info.name], host, self.stream)
        if not self.context.execute_async_v3(self.cuda.stream_handle(self.stream)):
            raise EdgesegError(f"TensorRT failed to run {self.path.name}", "see the TensorRT log above")
        for info in self._outputs:
            self.cuda.to_host(self._host[info.name], self._device[info.name], self.stream)
        self.cuda.synchronize(self.stream)
        return {info.name: self._host[info.name].copy() for info in self._outputs}

    def close(self) -> None:
        for allocation in getattr(self, "_device", {}).values():
            try:
                self.cuda.free(allocation)
            except Exception:
                pass
        self._device = {}
        # Drop TensorRT objects before the CUDA context they live in.
        self.context = self.engine = self.runtime = None
        cuda = getattr(self, "cuda", None)
        if cuda is not None:
            cuda.close()
