"""An ``IInt8EntropyCalibrator2`` that never calibrates: it hands TensorRT our table as its cache.

TensorRT 8.x (weak typing) takes INT8 ranges from a calibrator. Before running any
calibration batch it calls ``read_calibration_cache()``; when that returns a cache it
accepts (header ``TRT-<its version code>-EntropyCalibration2``, then ``tensor: <hex
big-endian float32 scale>`` lines), it uses those scales and never asks for a batch. So
the calibrator below returns the bytes of :func:`edgeseg.quantize.cache.trt_cache_bytes`
written for *that* TensorRT's version, and ``get_batch`` returns ``None`` (no data): the
device runs no calibration pass, and the engine uses exactly the ranges ONNX Runtime,
TFLite and TNN use. If TensorRT rejects the cache (version line, format) it asks for a
batch; the calibrator records that, and the builder turns it into an error instead of an
engine calibrated on nothing.

The class is created on first use from the imported ``tensorrt`` module, so this file
imports without TensorRT (the cache bytes are tested here).
"""

from __future__ import annotations

from typing import Any

from edgeseg.export.tensorrt.versions import TrtVersion


def calibration_cache(table, version: TrtVersion) -> bytes:
    """The cache bytes for ``version``'s TensorRT (its version code in the header)."""
    from edgeseg.quantize.cache import trt_cache_bytes

    return trt_cache_bytes(table, trt_version=version.code)


def make_calibrator(trt: Any, cache: bytes) -> Any:
    """An instance of a ``trt.IInt8EntropyCalibrator2`` subclass serving ``cache``."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self, data: bytes):
            # pybind11 trampolines need the base initialiser called explicitly.
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cache = data
            self.batches_requested = 0  # > 0: TensorRT did not take the cache
            self.written: bytes | None = None

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names, *args) -> None:
            self.batches_requested += 1
            return None  # no calibration data on purpose: ranges come from the cache only

        def read_calibration_cache(self) -> bytes:
            return self.cache

        def write_calibration_cache(self, cache) -> None:
            self.written = bytes(cache)  # what TensorRT kept (compared in the build report)

    return CacheCalibrator(cache)
