"""Command lines of the on-device benchmark tools, and which parser reads each one.

Pure functions of the plan, paths and settings: testable here, run for real on phones
and Jetsons by ``targets/runner.py`` and ``targets/ssh.py``.

* TFLite ``benchmark_model``: ``--num_threads=1 --use_xnnpack=true``, exact run counts
  (``--min_secs=0 --warmup_min_secs=0`` so the tool does not add runs to fill a second).
* TNN ``TNNTest``: ``-dt ARM -th 1 -dl CORE -wc W -ic N``.
* TensorRT ``trtexec``: precision flags generated from the precision plan and the
  component tags of the ONNX nodes (``--int8 --fp16 --calib=CACHE
  --precisionConstraints=obey --layerPrecisions=node:precision,...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.benchmark import parsers
from edgeseg.benchmark.stats import LatencyStats
from edgeseg.errors import EdgesegError


def taskset_mask(core: int) -> str:
    """Hex CPU mask for ``taskset`` (core 7 -> ``80``), as both toybox and util-linux read it."""
    if core < 0:
        raise EdgesegError(f"core {core} is not a CPU index", "pass --core 0 or higher")
    return format(1 << core, "x")


# --------------------------------------------------------------------------- phone runners
@dataclass
class PhoneRunner:
    """A benchmark binary that loads the model, warms up, times N runs and prints a summary."""

    name: str
    log_tag: str | None = None  # logcat tag to read when the tool prints only there (Android)

    def model_files(self, model: Path) -> list[Path]:
        return [model]

    def argv(self, binary: str, model: str, runs: int, warmup: int, core: int | None,
             timeout_s: float) -> list[str]:
        raise NotImplementedError

    def parse(self, output: str, runs: int, warmup: int) -> tuple[LatencyStats, dict[str, Any]]:
        raise NotImplementedError


class BenchmarkModelRunner(PhoneRunner):
    def __init__(self):
        super().__init__("benchmark_model", log_tag="tflite")

    def argv(self, binary, model, runs, warmup, core, timeout_s):
        return [binary, f"--graph={model}", "--num_threads=1", "--use_xnnpack=true",
                f"--num_runs={runs}", f"--warmup_runs={warmup}", "--min_secs=0", "--warmup_min_secs=0",
                f"--max_secs={max(1, int(timeout_s))}"]

    def parse(self, output, runs, warmup):
        r = parsers.parse_benchmark_model(output)
        return r.stats(), r.extra()


class TNNTestRunner(PhoneRunner):
    def __init__(self):
        super().__init__("TNNTest", log_tag="tnn")

    def model_files(self, model: Path) -> list[Path]:
        # TNN reads NAME.tnnmodel from beside NAME.tnnproto.
        weights = model.with_suffix(".tnnmodel")
        if not weights.is_file():
            raise EdgesegError(f"{weights.name} is missing beside {model.name}",
                               "TNN needs both files; convert again with `edgeseg export --to tnn`")
        return [model, weights]

    def argv(self, binary, model, runs, warmup, core, timeout_s):
        argv = [binary, "-mt", "TNN", "-mp", model, "-dt", "ARM", "-th", "1", "-wc", str(warmup), "-ic", str(runs)]
        if core is not None:
            argv += ["-dl", str(core)]
        return argv

    def parse(self, output, runs, warmup):
        r = parsers.parse_tnn(output)
        return r.stats(runs, warmup), {"tnn_model": r.model, "tnn_device": r.device}


PHONE_RUNNERS = {".tflite": BenchmarkModelRunner, ".tnnproto": TNNTestRunner}


def phone_runner_for(model: Path) -> PhoneRunner:
    cls = PHONE_RUNNERS.get(model.suffix.lower())
    if cls is None:
        raise EdgesegError(f"no phone benchmark runner for {model.name}",
                           "benchmark a .tflite (TFLite benchmark_model) or .tnnproto (TNNTest) file; "
                           "ONNX files run on the host (--target local) or a Jetson (--target ssh://...)")
    return cls()


# --------------------------------------------------------------------------- trtexec
_TRT_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8": "int8"}
# One argument may not exceed the kernel's MAX_ARG_STRLEN (128 KiB), and the remote command
# line travels as one `sh -c` argument; stay well below it.
MAX_LAYER_SPEC_CHARS = 60_000  # leaves room for the sh -c wrapping of the whole command


@dataclass
class TrtexecPlan:
    """Precision flags for one ONNX + plan, and what they mean (for the report)."""

    flags: list[str]
    needs_calibration: bool
    layer_spec_mode: str  # "none" | "explicit" | "wildcard"
    layers: dict[str, int]  # precision -> layers constrained to it


def float_nodes(model) -> set[str]:
    """Nodes whose outputs are all floating point (where a precision constraint means something).

    Shape, index and boolean computations (Shape, Gather on shapes, NonZero, Equal...)
    have no fp16/int8 variant; constraining them would make ``obey`` fail the build.
    Types come from ONNX shape inference; a node whose output types stay unknown is kept.
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort; without it every node counts as float
        inferred = model
    types: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        types[vi.name] = vi.type.tensor_type.elem_type
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    keep = set()
    for node in inferred.graph.node:
        outs = [types.get(o, 0) for o in node.output if o]
        if all(t in floats or t == 0 for t in outs):
            keep.add(node.name)
    return keep


def is_qdq_model(model) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def trtexec_precision(plan: dict[str, str], nodes_by_component: dict[str, list[str]],
                      float_node_names: set[str] | None = None, calib: str | None = None,
                      explicit_quantization: bool = False) -> TrtexecPlan:
    """trtexec flags realising ``plan`` (component -> fp32|fp16|int8).

    * uniform plan: just the builder flags (``--fp16`` / ``--int8``);
    * mixed plan: also ``--precisionConstraints=obey`` and ``--layerPrecisions`` naming
      every float node of each component (TensorRT names layers after ONNX nodes), or,
      when that list would not fit in one argument, ``*:<most common>`` plus the others;
    * INT8 without Q/DQ nodes (implicit quantization) needs ``--calib=CACHE``, the
      TensorRT cache written from the host's calibration table.
    """
    for comp, prec in plan.items():
        if prec not in _TRT_PRECISION:
            raise EdgesegError(f"precision {prec!r} of {comp!r} has no TensorRT equivalent", "use fp32, fp16 or int8")
    missing = [c for c in plan if c not in nodes_by_component]
    if missing:
        raise EdgesegError(f"the ONNX graph has no nodes tagged with component(s) {', '.join(missing)}",
                           "re-export with `edgeseg export` so every node carries its component tag")
    used = set(plan.values())
    flags: list[str] = []
    if "fp16" in used:
        flags.append("--fp16")
    needs_calib = False
    if "int8" in used:
        flags.append("--int8")
        if not explicit_quantization:
            if not calib:
                raise EdgesegError("the plan runs components in INT8 but there is no calibration cache",
                                   "run `edgeseg calibrate` first, or pass --calib TABLE.json")
            flags.append(f"--calib={calib}")
            needs_calib = True
    layers = {p: 0 for p in sorted(used)}
    constrained = {p for p in used if not (explicit_quantization and p == "int8")}
    if len(used) <= 1 or not constrained:
        return TrtexecPlan(flags, needs_calib, "none", layers)

    per_node: list[tuple[str, str]] = []
    for comp, prec in plan.items():
        if explicit_quantization and prec == "int8":
            continue  # Q/DQ nodes already fix these layers to INT8; constraining them again conflicts
        for name in nodes_by_component[comp]:
            if float_node_names is not None and name not in float_node_names:
                continue
            if "," in name or ":" in name:
                raise EdgesegError(f"node name {name!r} contains ',' or ':' and cannot be written in --layerPrecisions",
                                   "re-export with `edgeseg export` (it names nodes by module scope)")
            per_node.append((name, _TRT_PRECISION[prec]))
            layers[prec] += 1
    spec = ",".join(f"{n}:{p}" for n, p in per_node)
    mode = "explicit"
    if len(spec) > MAX_LAYER_SPEC_CHARS:
        # Later entries override earlier ones, so "*:<majority>" first, then the rest.
        majority = max((p for p in layers if layers[p]), key=lambda p: layers[p])
        rest = [(n, p) for n, p in per_node if p != majority]
        spec = ",".join([f"*:{majority}"] + [f"{n}:{p}" for n, p in rest])
        mode = "wildcard"
        if len(spec) > MAX_LAYER_SPEC_CHARS:
            raise EdgesegError("the per-layer precision list is too long for one trtexec argument",
                               "use a plan with fewer distinct precisions (e.g. one precision per backbone/head)")
    flags += ["--precisionConstraints=obey", f"--layerPrecisions={spec}"]
    return TrtexecPlan(flags, needs_calib, mode, layers)


def trt_version_tuple(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    parts = []
    for p in str(text).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def trtexec_build_argv(trtexec: str, onnx: str, engine: str, precision: TrtexecPlan, trt_version: str | None) -> list[str]:
    """Build (and only build) the engine: ``--skipInference`` from TensorRT 8.6, ``--buildOnly`` before."""
    skip = "--skipInference" if trt_version_tuple(trt_version) >= (8, 6) else "--buildOnly"
    return [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", *precision.flags, skip]


def trtexec_time_argv(trtexec: str, engine: str, runs: int, warmup: int, times_json: str) -> list[str]:
    """Time exactly ``warmup + runs`` inferences and export each one's timing.

    trtexec's own time-based warm-up is turned off (``--warmUp=0``) and the first
    ``warmup`` entries of ``--exportTimes`` are discarded instead, so warm-up means the
    same thing (a count of runs) on every target.
    """
    return [trtexec, f"--loadEngine={engine}", f"--iterations={runs + warmup}", "--duration=0", "--warmUp=0",
            f"--exportTimes={times_json}"]
