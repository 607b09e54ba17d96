"""trtexec command lines that follow the device's TensorRT version.

* TensorRT >= 10 (strongly typed): ``trtexec --onnx=<QDQ/fp16 ONNX> --stronglyTyped
  --saveEngine=E --skipInference``; no ``--fp16`` / ``--int8`` / ``--calib`` /
  ``--precisionConstraints`` (deprecated in 10.12, gone in 11): the ONNX carries the plan.
* TensorRT 8.5 / 8.6 (weak typing): ``--fp16 --int8 --calib=CACHE
  --precisionConstraints=obey --layerPrecisions=node:prec,...`` from the plan and the
  component tags (``benchmark/runners.trtexec_precision``), on the FP32 ONNX, or on a QDQ
  ONNX (explicit quantization, no ``--calib``).

Both build with ``--profilingVerbosity=detailed`` so the engine's layer information has
precisions, and take ``BuildOptions``: ``--memPoolSize=workspace:N`` (MiB),
``--timingCacheFile``, ``--useDLACore`` / ``--allowGPUFallback``, ``--builderOptimizationLevel``.
A separate profiling run (:func:`profile_argv`) writes ``--exportProfile`` and
``--exportLayerInfo`` for the per-component breakdown, apart from the timed runs.
"""

from __future__ import annotations

from edgeseg.export.tensorrt.build_plan import BuildOptions
from edgeseg.export.tensorrt.versions import TrtVersion


def skip_inference_flag(version: TrtVersion | None) -> str:
    """``--skipInference`` from TensorRT 8.6 (``--buildOnly`` before; 10.x dropped ``--buildOnly``)."""
    return "--skipInference" if version is not None and version.at_least(8, 6) else "--buildOnly"


def option_flags(options: BuildOptions | None, remote_timing_cache: str | None = None) -> list[str]:
    options = options or BuildOptions()
    flags = []
    if options.workspace_mib:
        flags.append(f"--memPoolSize=workspace:{options.workspace_mib}")
    if remote_timing_cache:
        flags.append(f"--timingCacheFile={remote_timing_cache}")
    if options.dla_core is not None:
        flags.append(f"--useDLACore={options.dla_core}")
        if options.gpu_fallback:
            flags.append("--allowGPUFallback")
    if options.optimization_level is not None:
        flags.append(f"--builderOptimizationLevel={options.optimization_level}")
    return flags


def strongly_typed_build_argv(trtexec: str, onnx: str, engine: str, version: TrtVersion,
                              options: BuildOptions | None = None, timing_cache: str | None = None) -> list[str]:
    return [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", "--stronglyTyped",
            "--profilingVerbosity=detailed", *option_flags(options, timing_cache), skip_inference_flag(version)]


def weak_typed_build_argv(trtexec: str, onnx: str, engine: str, version: TrtVersion | None, precision_flags: list[str],
                          options: BuildOptions | None = None, timing_cache: str | None = None) -> list[str]:
    return [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", *precision_flags,
            "--profilingVerbosity=detailed", *option_flags(options, timing_cache), skip_inference_flag(version)]


def profile_argv(trtexec: str, engine: str, iterations: int, profile_json: str, layer_info_json: str) -> list[str]:
    """One profiling run: per-layer times and the engine's layer information, no timing figures."""
    return [trtexec, f"--loadEngine={engine}", f"--iterations={iterations}", "--duration=0", "--warmUp=0",
            f"--exportProfile={profile_json}", f"--exportLayerInfo={layer_info_json}",
            "--profilingVerbosity=detailed"]
