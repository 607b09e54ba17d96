"""A stand-in ``tensorrt`` module for tests on machines without a GPU.

It has the names edgeseg's builder and runtime call (Builder, OnnxParser, BuilderConfig,
IInt8EntropyCalibrator2, Runtime, the engine inspector, the name-based I/O API) and
records every call in ``module.calls``, so tests check the *sequence and arguments* of
the calls edgeseg makes. It is not TensorRT: it builds no kernels, and its "engine" runs
the ONNX with ONNX Runtime. Nothing here says anything about TensorRT's behaviour; the
README says plainly that no real engine was built where these tests run.

Its parser turns each ONNX node into one layer named after the node, and adds a helper
``(Unnamed Layer* N) [Shuffle]`` layer in front of every MatMul (as TensorRT's parser does
for some inputs), so the layer-matching rules meet a generated name. With
``version >= 10`` layers carry ``[ONNX Layer: node]`` metadata.
"""

from __future__ import annotations

import enum
import json
import types
from typing import Any

import numpy as np


def make_fake_tensorrt(version: str = "8.5.2.2", reject_cache: bool = False) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    major = int(version.split(".")[0])

    def log(*call):
        trt.calls.append(call)

    class DataType(enum.Enum):
        FLOAT = 0
        HALF = 1
        INT8 = 2
        INT32 = 3
        BOOL = 4
        INT64 = 5

    trt.DataType = DataType
    trt.float32, trt.float16, trt.int8, trt.int32, trt.bool, trt.int64 = (
        DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32, DataType.BOOL, DataType.INT64)
    trt.nptype = lambda dt: {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                             DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.INT64: np.int64}[dt]

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 5

    class BuilderFlag(enum.IntEnum):
        FP16 = 0
        INT8 = 1
        GPU_FALLBACK = 3
        OBEY_PRECISION_CONSTRAINTS = 11
        PREFER_PRECISION_CONSTRAINTS = 12

    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    trt.BuilderFlag = BuilderFlag
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED="DETAILED", LAYER_NAMES_ONLY="LAYER_NAMES_ONLY")
    trt.DeviceType = types.SimpleNamespace(GPU="GPU", DLA="DLA")
    trt.LayerInformationFormat = types.SimpleNamespace(JSON="JSON", ONELINE="ONELINE")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.LayerType = types.SimpleNamespace()

    class _Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        Severity = _Severity
        WARNING = _Severity.WARNING

        def __init__(self):
            pass

        def log(self, severity, msg):
            pass

    trt.ILogger = ILogger

    class Logger(ILogger):
        def __init__(self, severity=_Severity.WARNING):
            super().__init__()

    trt.Logger = Logger

    class IInt8EntropyCalibrator2:
        def __init__(self):
            log("IInt8EntropyCalibrator2.__init__")

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    # ------------------------------------------------------------------ network
    class Tensor:
        def __init__(self, name, dtype=DataType.FLOAT):
            self.name, self.dtype = name, dtype

    class Layer:
        def __init__(self, name, op, inputs, outputs, metadata=None):
            self.name, self.type, self._in, self._out = name, f"LayerType.{op.upper()}", inputs, outputs
            self._precision = None
            if metadata is not None:
                self.metadata = metadata

        num_inputs = property(lambda self: len(self._in))
        num_outputs = property(lambda self: len(self._out))

        def get_input(self, i):
            return self._in[i]

        def get_output(self, i):
            return self._out[i]

        @property
        def precision(self):
            return self._precision or DataType.FLOAT

        @precision.setter
        def precision(self, value):
            log("layer.precision", self.name, value.name)
            self._precision = value

    class Network:
        def __init__(self, flags):
            self.flags, self.layers, self.inputs, self.outputs = flags, [], [], []

        num_layers = property(lambda self: len(self.layers))

        def get_layer(self, i):
            return self.layers[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []
            log("OnnxParser")

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i):
            return self.errors[i]

        def parse_from_file(self, path):
            import onnx

            log("parse_from_file", path)
            model = onnx.load(path)
            net = self.network
            net.onnx_path = path
            tensors: dict[str, Tensor] = {}
            types = {vi.name: vi.type.tensor_type.elem_type for vi in
                     list(onnx.shape_inference.infer_shapes(model).graph.value_info) + list(model.graph.output)}
            net.inputs = [i.name for i in model.graph.input]
            net.outputs = [o.name for o in model.graph.output]
            count = 0
            inits = {i.name for i in model.graph.initializer}
            for node in model.graph.node:
                ins = [tensors.setdefault(t, Tensor(t)) for t in node.input if t and t not in inits]
                if node.op_type == "MatMul":  # a generated helper layer, as the real parser adds
                    helper = Tensor(f"(Unnamed Layer* {count}) [Shuffle]_output")
                    net.layers.append(Layer(f"(Unnamed Layer* {count}) [Shuffle]", "shuffle", ins[:1], [helper]))
                    count += 1
                    ins = [helper] + ins[1:]
                outs = []
                for t in node.output:
                    dt = DataType.INT64 if types.get(t) == onnx.TensorProto.INT64 else DataType.FLOAT
                    outs.append(tensors.setdefault(t, Tensor(t, dt)))
                meta = f"[ONNX Layer: {node.name}]" if major >= 10 else None
                net.layers.append(Layer(node.name, node.op_type, ins, outs, meta))
                count += 1
            return True

    trt.OnnxParser = OnnxParser

    # ------------------------------------------------------------------ config and build
    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+timed"

    class BuilderConfig:
        def __init__(self):
            self.flags, self.pools, self.int8_calibrator = [], {}, None
            self.default_device_type, self.DLA_core, self._timing = "GPU", -1, None
            self.profiling_verbosity = None

        def set_memory_pool_limit(self, pool, size):
            log("set_memory_pool_limit", pool, size)
            self.pools[pool] = size

        def set_flag(self, flag):
            log("set_flag", flag.name)
            self.flags.append(flag.name)

        def create_timing_cache(self, data):
            log("create_timing_cache", bytes(data))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            log("set_timing_cache", ignore_mismatch)
            self._timing = cache
            return True

        def get_timing_cache(self):
            return self._timing

    class Builder:
        def __init__(self, logger):
            self.logger = logger
            log("Builder")

        def create_network(self, flags):
            log("create_network", flags)
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def build_serialized_network(self, network, config):
            log("build_serialized_network", sorted(config.flags), config.profiling_verbosity)
            cal = config.int8_calibrator
            if cal is not None:
                cache = cal.read_calibration_cache()
                header = bytes(cache or b"").split(b"\n", 1)[0].decode()
                code = int(version.split(".")[0]) * (10000 if major >= 10 else 1000) + \
                    int(version.split(".")[1]) * 100 + int(version.split(".")[2])
                log("read_calibration_cache", header)
                if reject_cache or header != f"TRT-{code}-EntropyCalibration2":
                    cal.get_batch(["image"])  # what TensorRT does with a cache it does not take
                else:
                    cal.write_calibration_cache(memoryview(cache))
            if config.DLA_core >= 0:
                log("DLA", config.default_device_type, config.DLA_core)
            layers = []
            for layer in network.layers:
                prec = layer._precision
                if prec is None:
                    prec = DataType.HALF if "FP16" in config.flags else DataType.FLOAT
                    if "INT8" in config.flags and layer.type.endswith(("CONV", "MATMUL")):
                        prec = DataType.INT8
                layers.append({"name": layer.name, "precision": prec.name, "meta": getattr(layer, "metadata", None)})
            plan = {"onnx": network.onnx_path, "layers": layers, "inputs": network.inputs, "outputs": network.outputs,
                    "flags": sorted(config.flags), "strongly_typed": bool(network.flags >> 5 & 1)}
            return memoryview(json.dumps(plan).encode())

    trt.Builder = Builder

    # ------------------------------------------------------------------ engine and runtime
    _FORMAT = {"FLOAT": "Row major linear FP32", "HALF": "Row major linear FP16 format",
               "INT8": "Thirty-two wide channel vectorized row major Int8 format"}

    class Inspector:
        def __init__(self, plan):
            self.plan = plan

        def get_engine_information(self, fmt):
            log("get_engine_information", fmt)
            layers = []
            for layer in self.plan["layers"]:
                entry = {"Name": layer["name"], "LayerType": "CaskConvolution",
                         "Inputs": [{"Name": "x", "Format/Datatype": _FORMAT[layer["precision"]]}],
                         "Outputs": [{"Name": "y", "Format/Datatype": _FORMAT[layer["precision"]]}]}
                if layer["meta"]:
                    entry["Metadata"] = layer["meta"]
                layers.append(entry)
            return json.dumps({"Layers": layers, "Bindings": self.plan["inputs"] + self.plan["outputs"]})

    class Context:
        def __init__(self, engine):
            self.engine, self.addresses = engine, {}

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream):
            log("execute_async_v3", stream)
            memory = trt.fake_device_memory
            feeds = {n: memory.read(self.addresses[n], self.engine.io[n]) for n in self.engine.plan["inputs"]}
            outs = self.engine.session.run(None, feeds)
            for name, value in zip(self.engine.plan["outputs"], outs):
                memory.write(self.addresses[name], value)
            return True

    class Engine:
        def __init__(self, plan):
            import onnxruntime as ort

            self.plan = plan
            self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
            self.io = {}
            for a in self.session.get_inputs() + self.session.get_outputs():
                self.io[a.name] = ([int(d) for d in a.shape], np.float32)
            self.names = plan["inputs"] + plan["outputs"]

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return "INPUT" if name in self.plan["inputs"] else "OUTPUT"

        def get_tensor_shape(self, name):
            return self.io[name][0]

        def get_tensor_dtype(self, name):
            return DataType.FLOAT

        def create_execution_context(self):
            return Context(self)

        def create_engine_inspector(self):
            return Inspector(self.plan)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            log("deserialize_cuda_engine")
            raw = bytes(data)
            if raw.startswith(b"engine built from "):  # what tests/fake_runners.py's trtexec writes
                import onnx

                path = raw.decode().split("engine built from ", 1)[1].strip()
                g = onnx.load(path, load_external_data=False).graph
                inits = {i.name for i in g.initializer}
                return Engine({"onnx": path, "layers": [], "inputs": [i.name for i in g.input if i.name not in inits],
                               "outputs": [o.name for o in g.output]})
            try:
                return Engine(json.loads(raw))
            except (ValueError, KeyError):
                return None

    trt.Runtime = Runtime
    return trt


class FakeDeviceMemory:
    """``CudaMemory`` stand-in: "device" allocations are numpy byte buffers addressed by an int."""

    name = "fake"

    def __init__(self):
        self.buffers: dict[int, bytearray] = {}
        self.calls: list[tuple] = []

    def stream(self):
        return 7

    def stream_handle(self, stream) -> int:
        return int(stream)

    def host_buffer(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def alloc(self, nbytes):
        ptr = 0x1000 * (len(self.buffers) + 1)
        self.buffers[ptr] = bytearray(nbytes)
        return ptr

    def ptr(self, allocation):
        return int(allocation)

    def free(self, allocation):
        self.buffers.pop(allocation, None)

    def to_device(self, allocation, host, stream):
        self.calls.append(("h2d", allocation))
        self.buffers[allocation][:] = np.ascontiguousarray(host).tobytes()

    def to_host(self, host, allocation, stream):
        self.calls.append(("d2h", allocation))
        host[...] = np.frombuffer(bytes(self.buffers[allocation]), dtype=host.dtype).reshape(host.shape)

    def synchronize(self, stream):
        self.calls.append(("sync", stream))

    def read(self, ptr, spec):
        shape, dtype = spec
        return np.frombuffer(bytes(self.buffers[ptr]), dtype=dtype).reshape(shape)

    def write(self, ptr, value):
        self.buffers[ptr][:] = np.ascontiguousarray(value).tobytes()

    def device_name(self):
        return "Fake GPU (sm_00)"

    def close(self):
        self.calls.append(("close",))


def install(monkeypatch, version: str = "8.5.2.2", **kw) -> Any:
    """Put a fake ``tensorrt`` (and fake device memory) in place for one test."""
    import sys

    from edgeseg.export.tensorrt import cuda

    trt = make_fake_tensorrt(version, **kw)
    memory = FakeDeviceMemory()
    trt.fake_device_memory = memory
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda, "open_cuda", lambda: memory)
    return trt
