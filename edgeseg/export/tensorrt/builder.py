"""Carry out an :class:`~edgeseg.export.tensorrt.build_plan.EngineBuildPlan` with TensorRT's Python API.

The sequence (TensorRT 8.5 / 8.6 / 10.x names)::

    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))  # or EXPLICIT_BATCH
    parser = trt.OnnxParser(network, logger); parser.parse_from_file(onnx)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, bytes)
    config.set_flag(trt.BuilderFlag.FP16 / INT8 / OBEY_PRECISION_CONSTRAINTS ...)   # weak typing only
    layer.precision = trt.float16 ...                        # weak typing, mixed plans: per network layer
    config.int8_calibrator = CacheCalibrator(our table as TensorRT's cache)         # weak typing, int8
    config.default_device_type = trt.DeviceType.DLA; config.DLA_core = n           # DLA
    config.set_timing_cache(config.create_timing_cache(previous bytes), ignore_mismatch=False)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    plan = builder.build_serialized_network(network, config)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)

Which network layer gets which precision is decided by the pure :func:`layer_precisions`
(component of each layer from :mod:`~edgeseg.export.tensorrt.names`); only layers whose
outputs are all floating point take one (shape and index layers have no fp16/int8 form,
and constraining them would fail an ``OBEY`` build).

No engine was built on the machine this was written on (no GPU there): the call
sequence is exercised against a stand-in ``tensorrt`` module in the tests, which checks
the order and arguments of the calls, not TensorRT's behaviour.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.export.tensorrt.build_plan import EngineBuildPlan
from edgeseg.export.tensorrt.names import NetworkLayer, OnnxIndex, assign_components


@dataclass
class LayerPrecisionPlan:
    """Per network layer index: the precision to set; and how every layer was matched."""

    precisions: dict[int, str]
    rules: dict[str, int]
    unassigned: list[str] = field(default_factory=list)  # layers with no component (left to TensorRT)
    skipped_non_float: int = 0


def layer_precisions(layers: list[NetworkLayer], index: OnnxIndex, build: EngineBuildPlan) -> LayerPrecisionPlan:
    """Which network layers get which precision under ``build`` (weak typing, mixed plans)."""
    assignments = assign_components(layers, index)
    out: dict[int, str] = {}
    rules: Counter = Counter()
    unassigned: list[str] = []
    skipped = 0
    for i, (layer, a) in enumerate(zip(layers, assignments)):
        rules[a.rule] += 1
        if a.component is None:
            unassigned.append(layer.name)
            continue
        precision = build.layer_precisions.get(a.component)
        if precision is None:
            continue
        if not layer.float_outputs:
            skipped += 1
            continue
        out[i] = precision
    return LayerPrecisionPlan(out, dict(rules), unassigned, skipped)


class _Log:
    """TensorRT log messages, kept so a failed build can say why."""

    def __init__(self, trt: Any, min_severity: str = "WARNING"):
        levels = trt.ILogger.Severity
        self.trt, self.messages = trt, []
        self._min = getattr(levels, min_severity)

        class Logger(trt.ILogger):
            def __init__(inner):
                trt.ILogger.__init__(inner)

            def log(inner, severity, msg):
                if int(severity) <= int(self._min):
                    self.messages.append((str(severity).split(".")[-1], str(msg)))

        self.logger = Logger()

    def errors(self) -> list[str]:
        return [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]

    def warnings(self) -> list[str]:
        return [m for s, m in self.messages if s == "WARNING"]


@dataclass
class BuildResult:
    engine: bytes
    layer_information: str | None  # engine inspector JSON
    seconds: float
    layer_plan: LayerPrecisionPlan | None
    warnings: list[str]
    timing_cache_updated: bool = False


def _network_layers(trt: Any, network: Any) -> list[NetworkLayer]:
    floats = {trt.float32, trt.float16}
    if hasattr(trt, "bfloat16"):
        floats.add(trt.bfloat16)
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(j).name for j in range(layer.num_inputs) if layer.get_input(j) is not None]
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        out.append(NetworkLayer(name=layer.name, type=str(layer.type).split(".")[-1], inputs=ins,
                                outputs=[t.name for t in outs], metadata=getattr(layer, "metadata", None),
                                float_outputs=all(t.dtype in floats for t in outs)))
    return out


def build_engine(trt: Any, onnx_path: Path, build: EngineBuildPlan, index: OnnxIndex,
                 calibration_cache: bytes | None = None, timing_cache: Path | None = None) -> BuildResult:
    """Build ``onnx_path`` as ``build`` says; returns the serialized engine and its layer information."""
    from edgeseg.export.tensorrt.calibrator import make_calibrator
    from edgeseg.utils import atomic

    log = _Log(trt)
    builder = trt.Builder(log.logger)
    flags = 0
    for name in build.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log.logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EdgesegError(f"TensorRT {build.trt_version} cannot parse {onnx_path.name}: "
                           + " | ".join(errors[:3] or log.errors()[:3] or ["no message"]),
                           "run `edgeseg check` on the ONNX; ops TensorRT lacks must be replaced in the model")

    config = builder.create_builder_config()
    if build.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, build.workspace_bytes)
    for name in build.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, build.profiling_verbosity)
    if build.optimization_level is not None:
        config.builder_optimization_level = build.optimization_level

    layer_plan = None
    if build.layer_precisions:
        layers = _network_layers(trt, network)
        layer_plan = layer_precisions(layers, index, build)
        dtypes = {"fp32": trt.float32, "fp16": trt.float16, "int8": trt.int8}
        for i, precision in layer_plan.precisions.items():
            network.get_layer(i).precision = dtypes[precision]

    calibrator = None
    if build.calibration == "cache":
        if calibration_cache is None:
            raise EdgesegError("the plan has int8 components but no calibration table was given",
                               "run `edgeseg calibrate` on the export, or pass --calib TABLE.json")
        calibrator = make_calibrator(trt, calibration_cache)
        config.int8_calibrator = calibrator

    if build.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = build.dla_core

    if timing_cache is not None:
        previous = timing_cache.read_bytes() if timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(previous), False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if calibrator is not None and calibrator.batches_requested:
        raise EdgesegError(f"TensorRT {build.trt_version} did not accept the calibration cache and asked for "
                           "calibration data",
                           "the cache header must carry this TensorRT's version; re-run the export here "
                           "(edgeseg writes the cache for the TensorRT it finds)")
    if serialized is None:
        raise EdgesegError(f"TensorRT {build.trt_version} could not build the engine: "
                           + " | ".join(log.errors()[-3:] or ["no error message"]),
                           "with typing=weak and constraints=obey, try constraints=prefer; "
                           "otherwise rebuild with a plan keeping the failing component in fp16/fp32")
    engine_bytes = bytes(serialized)

    updated = False
    if timing_cache is not None:
        cache = config.get_timing_cache()
        if cache is not None:
            atomic.write_bytes(timing_cache, bytes(cache.serialize()))
            updated = True

    info = None
    runtime = trt.Runtime(log.logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is not None:
        inspector = engine.create_engine_inspector()
        info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    return BuildResult(engine_bytes, info, seconds, layer_plan, log.warnings(), updated)
