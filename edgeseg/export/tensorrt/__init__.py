"""TensorRT backend: engines built from our ONNX, on both of TensorRT's typing paths.

* :mod:`.versions`     version parsing, strongly typed (>= 10) vs weak typing (8.5 / 8.6), device probes
* :mod:`.build_plan`   ``EngineBuildPlan``: flags, per-component layer precisions, calibration, cache key
* :mod:`.names`        TensorRT layer names <-> ONNX node names <-> components (the matching rules)
* :mod:`.calibrator`   an ``IInt8EntropyCalibrator2`` that serves our table as TensorRT's cache
* :mod:`.onnx_prep`    the ONNX TensorRT parses (int8 Q/DQ zero points)
* :mod:`.builder`      the TensorRT Python API calls that build an engine
* :mod:`.engine_cache` built engines keyed by ONNX, plan, ranges, TensorRT version and GPU
* :mod:`.layerinfo`    engine layer information -> planned-vs-actual precision per component
* :mod:`.profile`      trtexec per-layer times -> per-component latency breakdown
* :mod:`.trtexec`      trtexec command lines per TensorRT version (bench / sweep on a Jetson)
* :mod:`.cuda`         device buffers through pycuda or cuda-python (the runtime)
* :mod:`.export`       ``export_tensorrt``: folder + plan -> ``.engine`` + reports + manifest entry

``tensorrt`` and the CUDA bindings are imported only when an engine is built or run
(``edgeseg[tensorrt]``); everything else here is plain Python and tested without a GPU.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"export_tensorrt": "export", "export_tensorrt_graphs": "export", "print_tensorrt_results": "export",
            "TensorRTExport": "export", "BuildOptions": "build_plan", "EngineBuildPlan": "build_plan",
            "make_build_plan": "build_plan", "TrtVersion": "versions"}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"edgeseg.export.tensorrt.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
