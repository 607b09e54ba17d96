"""Device memory for the TensorRT runtime, through pycuda or NVIDIA's cuda-python.

:class:`CudaMemory` is the little the runtime needs: a stream, device allocations, and
host <-> device copies on that stream. Two implementations, one per binding, chosen by
what imports (``deps.import_cuda``): JetPack images usually carry pycuda; x86 GPU hosts
get cuda-python with ``pip install 'edgeseg[tensorrt]'``. Neither was run here (no GPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError


class CudaMemory:
    name = "?"

    def stream(self) -> Any: ...
    def stream_handle(self, stream: Any) -> int: ...
    def alloc(self, nbytes: int) -> Any: ...
    def ptr(self, allocation: Any) -> int: ...
    def free(self, allocation: Any) -> None: ...
    def to_device(self, allocation: Any, host: np.ndarray, stream: Any) -> None: ...
    def to_host(self, host: np.ndarray, allocation: Any, stream: Any) -> None: ...
    def synchronize(self, stream: Any) -> None: ...
    def device_name(self) -> str: ...

    def host_buffer(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def close(self) -> None:
        pass


class PyCudaMemory(CudaMemory):
    name = "pycuda"

    def __init__(self, driver: Any):
        self.cuda = driver
        driver.init()
        # One context on device 0, made current for this thread (what pycuda.autoinit does).
        self.context = driver.Device(0).make_context()

    def stream(self):
        return self.cuda.Stream()

    def stream_handle(self, stream) -> int:
        return int(stream.handle)

    def alloc(self, nbytes: int):
        return self.cuda.mem_alloc(max(1, nbytes))

    def ptr(self, allocation) -> int:
        return int(allocation)

    def free(self, allocation) -> None:
        allocation.free()

    def host_buffer(self, shape, dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(tuple(shape), dtype)  # async copies need page-locked memory

    def to_device(self, allocation, host, stream) -> None:
        self.cuda.memcpy_htod_async(allocation, np.ascontiguousarray(host), stream)

    def to_host(self, host, allocation, stream) -> None:
        self.cuda.memcpy_dtoh_async(host, allocation, stream)

    def synchronize(self, stream) -> None:
        stream.synchronize()

    def device_name(self) -> str:
        dev = self.cuda.Device(0)
        major, minor = dev.compute_capability()
        return f"{dev.name()} (sm_{major}{minor})"

    def close(self) -> None:
        self.context.pop()


class CudaPythonMemory(CudaMemory):
    """``cuda.bindings.runtime`` / ``cuda.cudart``: every call returns ``(error, value...)``."""

    name = "cuda-python"

    def __init__(self, cudart: Any):
        self.rt = cudart

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            name = self.rt.cudaGetErrorName(err)[1] if hasattr(self.rt, "cudaGetErrorName") else err
            raise EdgesegError(f"CUDA call failed: {name}", "check the GPU is visible (nvidia-smi / tegrastats)")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def stream(self):
        return self._check(self.rt.cudaStreamCreate())

    def stream_handle(self, stream) -> int:
        return int(stream)

    def alloc(self, nbytes: int):
        return self._check(self.rt.cudaMalloc(max(1, nbytes)))

    def ptr(self, allocation) -> int:
        return int(allocation)

    def free(self, allocation) -> None:
        self._check(self.rt.cudaFree(allocation))

    def to_device(self, allocation, host, stream) -> None:
        host = np.ascontiguousarray(host)
        self._check(self.rt.cudaMemcpyAsync(allocation, host.ctypes.data, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def to_host(self, host, allocation, stream) -> None:
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, allocation, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def synchronize(self, stream) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream))

    def device_name(self) -> str:
        props = self._check(self.rt.cudaGetDeviceProperties(0))
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return f"{name.rstrip(chr(0))} (sm_{props.major}{props.minor})"


def open_cuda() -> CudaMemory:
    from edgeseg.export.tensorrt.deps import import_cuda

    name, module = import_cuda()
    return PyCudaMemory(module) if name == "pycuda.driver" else CudaPythonMemory(module)


def device_description() -> str:
    """``"Orin (sm_87)"``-style name of GPU 0 for engine cache keys; ``"unknown GPU"`` when no binding tells."""
    try:
        mem = open_cuda()
    except EdgesegError:
        return "unknown GPU"
    try:
        return mem.device_name()
    except Exception:  # a binding that imports but cannot reach a GPU
        return "unknown GPU"
    finally:
        try:
            mem.close()
        except Exception:
            pass
