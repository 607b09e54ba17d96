"""What each target will actually run for a precision plan, per component and per unit.

``edgeseg check MODEL --plan SPEC`` prints, for every target, one row per component (its
nodes outside any unit of the plan) and one per unit (``instance_decoder/cls_head=fp16``):
the planned precision, what the target computes those ops in, and, where the two differ
or the target computes differently from the QDQ ONNX, why. Everything is derived from the
FP32 graph and the converters' own rules, without any calibration or toolchain:

* **onnxruntime** (the QDQ ONNX) and **tensorrt >= 10** (strongly typed, it parses that
  same ONNX): the QDQ writer is run on the graph with a stand-in range for every tensor,
  and each node's precision is read off the result (inputs from DequantizeLinear: int8;
  float16 tensors: fp16). Where the writer puts Q/DQ is exactly what these targets run.
* **tensorrt 8.x** (weak typing from the FP32 ONNX): each float layer is constrained to
  its node's precision, so rows follow the plan; notes say where the constraints reach
  further than the QDQ ONNX (implicit int8 on Softmax, normalisations, additions).
* **tflite**: the denylist rules of :mod:`edgeseg.export.tflite.mapping` over the
  activation fusions TFLite makes (an op fused across a unit boundary stays float when
  either side is float); fp16 units store float16 weights and compute fp32 on the CPU.
* **tnn**: the real converter (:mod:`edgeseg.export.tnn`) in memory, quantized with a
  stand-in table: Quantized layers are what TNN would run int8; TNN's one precision per
  network (``-pr``) decides fp16 vs fp32 for the rest.

Counts are ONNX nodes that compute (reshapes, transposes, slices and constants are
left out), TNN layers for TNN. Reasons are grouped by op type.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

# ONNX ops that only move or shape data: they run in whatever type flows through them.
MOVEMENT_OPS = frozenset({
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Gather", "Slice", "Split", "Constant",
    "Identity", "Cast", "Expand", "Tile", "ConstantOfShape", "Range", "QuantizeLinear", "DequantizeLinear", "Size",
    "Dropout",
})
TNN_MOVEMENT = frozenset({"Reshape", "Permute", "Flatten", "Squeeze", "Unsqueeze", "StridedSliceV2", "SplitV",
                          "Gather", "Shape", "Pad", "PadV2"})
# Activations TFLite folds into the op before them (fused_activation_function), and those ops.
_TFLITE_ACTIVATIONS = ("Relu", "Clip", "Tanh")
_TFLITE_FUSING = ("Conv", "Gemm", "MatMul", "Add", "Sub", "Mul")
# Activations TensorRT fuses into the convolution / matrix multiply before them.
_TRT_ACTIVATIONS = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Add")
_TRT_FUSING = ("Conv", "ConvTranspose", "Gemm", "MatMul")
TARGETS = ("onnxruntime", "tflite", "tnn", "tensorrt")


# ============================================================================ results
@dataclass
class Difference:
    """Ops of one row that run at ``runs`` for one ``reason``."""

    reason: str
    runs: str
    ops: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "runs": self.runs, "ops": dict(self.ops), "count": sum(self.ops.values())}

    def text(self) -> str:
        ops = ", ".join(f"{op} {n}" if n > 1 else op for op, n in self.ops.most_common())
        return f"{ops} -> {self.runs}: {self.reason}"


@dataclass
class UnitRow:
    """One component's own ops (those in no unit of the plan), or one unit's."""

    name: str
    component: str
    unit: str | None  # the plan's unit key; None for the component row
    planned: str
    runs: Counter = field(default_factory=Counter)  # precision -> ops
    differences: list[Difference] = field(default_factory=list)  # ops not at the planned precision
    notes: list[Difference] = field(default_factory=list)  # at the plan, but unlike the QDQ ONNX

    @property
    def counted(self) -> int:
        return sum(self.runs.values())

    @property
    def as_planned(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "component": self.component, "unit": self.unit, "planned": self.planned,
                "ops": self.counted, "runs": dict(self.runs), "as_planned": self.as_planned,
                "differences": [d.to_dict() for d in self.differences], "notes": [d.to_dict() for d in self.notes]}


@dataclass
class TargetRuns:
    target: str  # onnxruntime | tflite | tnn | tensorrt
    variant: str  # e.g. "arm", ">= 10, strongly typed"
    counted: str  # what a count is: "ONNX nodes" or "TNN layers"
    rows: list[UnitRow]
    notes: list[str] = field(default_factory=list)  # network-wide
    error: str | None = None  # the target refuses this plan (the compat report says why)

    @property
    def title(self) -> str:
        return f"{self.target} ({self.variant})" if self.variant else self.target

    @property
    def short(self) -> str:
        """Column title of the summary table."""
        if self.target == "tensorrt":
            return "tensorrt >= 10" if "strong" in self.variant else "tensorrt 8.x"
        return f"tnn {self.variant}" if self.target == "tnn" else self.target

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "variant": self.variant, "counted": self.counted, "error": self.error,
                "as_planned": all(r.as_planned for r in self.rows) and self.error is None,
                "rows": [r.to_dict() for r in self.rows], "notes": self.notes}


class _Rows:
    """Collects (tag, op, planned, runs, reason) per node or layer into rows, plan order."""

    def __init__(self, view):
        self.view = view
        self.rows: dict[str, UnitRow] = {}

    def row(self, tag: str) -> UnitRow:
        if tag not in self.rows:
            unit = self.view.unit(tag)
            self.rows[tag] = UnitRow(unit or tag, self.view.parent(tag), unit, self.view.plan.precision_of(tag))
        return self.rows[tag]

    def add(self, tag: str, op: str, runs: str, reason: str | None = None, note: str | None = None) -> None:
        row = self.row(tag)
        row.runs[runs] += 1
        if runs != row.planned:
            _bucket(row.differences, reason or "differs from the plan", runs)[op] += 1
        elif note:
            _bucket(row.notes, note, runs)[op] += 1

    def result(self) -> list[UnitRow]:
        order = {c: i for i, c in enumerate(self.view.components)}
        for tag in self.view.components:  # rows without any counted op still show their plan
            if tag in self.view.plan.precisions:
                self.row(tag)
        return sorted(self.rows.values(), key=lambda r: order.get(_tag_of(r), len(order)))


def _tag_of(row: UnitRow) -> str:
    return row.name if row.unit is None or not row.unit.startswith("re:") else f"{row.component}/{row.unit}"


def _bucket(items: list[Difference], reason: str, runs: str) -> Counter:
    for d in items:
        if d.reason == reason and d.runs == runs:
            return d.ops
    items.append(Difference(reason, runs))
    return items[-1].ops


# ============================================================================ graph helpers
class _Graph:
    def __init__(self, model):
        self.model = model
        self.nodes = list(model.graph.node)
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for x in n.input:
                if x:
                    self.consumers.setdefault(x, []).append(n)
        self.outputs = {o.name for o in model.graph.output}

    def const(self, name: str):
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def only_consumer(self, node):
        """The single node reading ``node``'s single output (None when shared or a graph output)."""
        if len(node.output) != 1 or node.output[0] in self.outputs:
            return None
        users = self.consumers.get(node.output[0], [])
        return users[0] if len(users) == 1 else None

    def has_weight(self, node) -> bool:
        return any(self.const(x) is not None for x in node.input[1:] if x)


def _counted(node) -> bool:
    return node.op_type not in MOVEMENT_OPS


def _clip_fusable(g: _Graph, node) -> bool:
    """Clip(0, 6) / Clip(-1, 1): TFLite's RELU6 / RELU_N1_TO_1, fused like ReLU."""
    def bound(k):
        if len(node.input) > k and node.input[k]:
            v = g.const(node.input[k])
            return None if v is None else float(v)
        return None

    return (bound(1), bound(2)) in ((0.0, 6.0), (-1.0, 1.0))


def _fusions(g: _Graph, ops: tuple[str, ...], activations: tuple[str, ...],
             clip_ok: Callable[[Any], bool] | None = None) -> list[tuple[Any, Any]]:
    pairs = []
    for n in g.nodes:
        if n.op_type not in ops:
            continue
        act = g.only_consumer(n)
        if act is None or act.op_type not in activations:
            continue
        if act.op_type == "Clip" and clip_ok is not None and not clip_ok(act):
            continue
        pairs.append((n, act))
    return pairs


# ============================================================================ QDQ ONNX
class _StandIn:
    """A calibration table holding a range for every tensor: the views need where Q/DQ go
    and which layers quantize, never the scales."""

    def __new__(cls):
        from edgeseg.quantize.cache import CalibrationTable, TensorRange

        class StandIn(CalibrationTable):
            def __contains__(self, name) -> bool:
                return True

        class Ranges(dict):
            def __missing__(self, key):
                return TensorRange(1.0, -1.0, 1.0)

            def __contains__(self, key) -> bool:
                return True

            def get(self, key, default=None):
                return self[key]

        table = StandIn("stand-in")
        table.ranges = Ranges()
        return table


def qdq_precisions(model, plan) -> dict[str, str]:
    """Node name -> the precision it computes in within the QDQ/fp16 ONNX that
    ``edgeseg quantize`` (and TensorRT's strongly typed build) writes for ``plan``."""
    import onnx

    from edgeseg.quantize.qdq import quantize_model

    qmodel, _ = quantize_model(model, plan, _StandIn(), activation_dtype="int8")
    try:
        qmodel = onnx.shape_inference.infer_shapes(qmodel)
    except Exception:  # types help; the Q/DQ placement alone still tells int8 apart
        pass
    types = {vi.name: vi.type.tensor_type.elem_type for vi in
             list(qmodel.graph.value_info) + list(qmodel.graph.output) + list(qmodel.graph.input)}
    for init in qmodel.graph.initializer:
        types[init.name] = init.data_type
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in qmodel.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    original = {n.name for n in model.graph.node}
    out = {}
    for n in qmodel.graph.node:
        if n.name not in original:
            continue
        # An int8 node unit, as ONNX Runtime's QDQ fusion and TensorRT read one: every
        # activation input dequantized, and a Conv/MatMul/Gemm, or an op whose outputs
        # are all quantized again (DQ -> Relu -> Q). Anything else computes in float.
        computed = [x for x in n.input if x and x in producer]
        quantized_in = computed and all(producer[x].op_type == "DequantizeLinear" for x in computed)
        readers = [c for o in n.output for c in consumers.get(o, [])]
        quantized_out = readers and all(c.op_type == "QuantizeLinear" for c in readers)
        if quantized_in and (n.op_type in ("Conv", "MatMul", "Gemm", "ConvTranspose") or quantized_out):
            out[n.name] = "int8"
        elif any(types.get(x) == onnx.TensorProto.FLOAT16 for x in (*n.input, *n.output) if x):
            out[n.name] = "fp16"
        else:
            out[n.name] = "fp32"
    return out


def _qdq_reason(planned: str) -> str:
    if planned == "int8":
        return "no Q/DQ around them in the QDQ ONNX: fp32 between the int8 layers"
    return "kept fp32 by the fp16 pass"


def onnxruntime_runs(view, qdq: dict[str, str]) -> TargetRuns:
    rows = _Rows(view)
    for n in view.model.graph.node:
        if _counted(n) and n.name in qdq:
            tag = _tag(n)
            rows.add(tag, n.op_type, qdq[n.name], _qdq_reason(view.plan.precision_of(tag)))
    return TargetRuns("onnxruntime", "QDQ ONNX, simulated or fused int8", "ONNX nodes", rows.result())


def tensorrt_strong_runs(view, qdq: dict[str, str]) -> TargetRuns:
    rows = _Rows(view)
    for n in view.model.graph.node:
        if _counted(n) and n.name in qdq:
            tag = _tag(n)
            rows.add(tag, n.op_type, qdq[n.name], _qdq_reason(view.plan.precision_of(tag)))
    notes = ["strongly typed: built from the QDQ/fp16 ONNX written from the whole plan (units included), every "
             "layer runs in the type the ONNX gives it; Q/DQ pairs fuse into the layers around them"]
    notes += _boundary_notes(view, "TensorRT")
    return TargetRuns("tensorrt", ">= 10, strongly typed", "ONNX nodes", rows.result(), notes)


def tensorrt_weak_runs(view, qdq: dict[str, str], float_nodes: set[str]) -> TargetRuns:
    rows = _Rows(view)
    for n in view.model.graph.node:
        if not _counted(n) or n.name not in float_nodes:
            continue
        tag = _tag(n)
        planned = view.plan.precision_of(tag)
        note = None
        if planned == "int8" and qdq.get(n.name) == "fp32":
            note = "constrained to int8 (implicit, from the calibration cache); fp32 in the QDQ ONNX"
        rows.add(tag, n.op_type, planned, note=note)
    notes = ["every float layer is constrained to its node's unit or component (--layerPrecisions per node for "
             "trtexec); helper layers TensorRT adds follow the node they serve",
             "constraints=obey fails the build where TensorRT has no kernel at the planned precision; "
             "constraints=prefer falls back, and the engine's precision report (.precision.md) shows where"]
    notes += _boundary_notes(view, "TensorRT")
    return TargetRuns("tensorrt", "8.5/8.6, weak typing", "ONNX nodes", rows.result(), notes)


def _boundary_notes(view, who: str) -> list[str]:
    g = _Graph(view.model)
    pairs = [(a, b) for a, b in _fusions(g, _TRT_FUSING, _TRT_ACTIVATIONS)
             if view.plan.precision_of(_tag(a)) != view.plan.precision_of(_tag(b))]
    if not pairs:
        return []
    a, b = pairs[0]
    return [f"{who} cannot fuse {len(pairs)} activation(s) into the layer before them across a unit boundary "
            f"at another precision (e.g. {a.name} -> {b.op_type}): one more kernel and a reformat each"]


def _tag(node) -> str:
    from edgeseg.export.tags import get_component

    return get_component(node) or ""


# ============================================================================ TFLite
def tflite_runs(view, qdq: dict[str, str]) -> TargetRuns:
    g = _Graph(view.model)
    prec = view.plan.precision_of
    forced: dict[str, str] = {}  # node -> why it stays float (a fusion across a unit boundary)
    for a, b in _fusions(g, _TFLITE_FUSING, _TFLITE_ACTIVATIONS, lambda n: _clip_fusable(g, n)):
        pa, pb = prec(_tag(a)), prec(_tag(b))
        if pa == pb or "int8" not in (pa, pb):
            continue
        if pa == "int8":
            forced[a.name] = (f"TFLite fuses the activation after it, which is {pb}, into it; a fused op stays "
                              "float when either side is float")
        else:
            forced[b.name] = f"fused into the {pa} op before it, which stays float"
    rows = _Rows(view)
    for n in view.model.graph.node:
        if not _counted(n):
            continue
        tag = _tag(n)
        planned = prec(tag)
        if n.name in forced:
            rows.add(tag, n.op_type, "fp32", forced[n.name])
        elif planned == "fp16":
            reason = ("float16 weights, fp32 arithmetic on the CPU (XNNPACK); the GPU delegate computes fp16"
                      if g.has_weight(n) else "fp32 activations on the CPU (XNNPACK); fp16 units only store "
                                              "float16 weights")
            rows.add(tag, n.op_type, "fp32", reason)
        elif planned == "int8":
            note = None
            if n.op_type in ("Softmax", "Sigmoid"):
                note = "int8 with TFLite's fixed output scale 1/256 " + (
                    "(the QDQ ONNX uses the calibrated range)" if qdq.get(n.name) == "int8" else
                    "(fp32 in the QDQ ONNX)")
            elif qdq.get(n.name) == "fp32":
                note = "int8 in TFLite (it quantizes every op with an int8 kernel); fp32 in the QDQ ONNX"
            rows.add(tag, n.op_type, "int8", note=note)
        else:
            rows.add(tag, n.op_type, planned)
    notes = ["ops fused across a unit boundary stay float when either side is float (the denylist keeps a float "
             "unit float); the converted file's .tflite.json lists every op with its component and unit"]
    return TargetRuns("tflite", "LiteRT, XNNPACK CPU", "ONNX nodes", rows.result(), notes)


# ============================================================================ TNN
def tnn_runs(view, device: str) -> tuple[TargetRuns, Any]:
    """TNN's layers for the plan on ``device``; also returns the compat report of that
    conversion (its errors are why a target refuses the plan)."""
    import copy

    from edgeseg.export.compat import tnn as tnn_compat
    from edgeseg.export.tnn.format import base_type, is_quantized
    from edgeseg.export.tnn.quant import quantize_model
    from edgeseg.export.tnn.writer import convert, needs_nc4hw4, test_flags

    plan = view.plan
    conv = convert(view.model, nc4hw4_only=needs_nc4hw4(device, plan))  # what the export writes
    report = tnn_compat.report_from_conversion(conv, device, plan)
    model = copy.deepcopy(conv.model)
    used = {plan.precision_of(layer.component) for layer in model.layers}
    kept: dict[str, str] = {}
    failed = None
    if "int8" in used:
        from edgeseg.errors import EdgesegError

        try:
            kept = quantize_model(model, plan.precision_of, _StandIn(), conv.range_source,
                                  conv.tensor_shape).kept_float
        except EdgesegError as e:  # blobs with no ONNX tensor behind them: no table could give a range
            failed = f"TNN's int8 pass cannot give every int8 layer a scale: {e.problem}"
    flags = test_flags("model.tnnproto", device, used)
    pr = flags[-1]
    rows = _Rows(view)
    for layer in model.layers:
        t = base_type(layer.type)
        if t in TNN_MOVEMENT:
            continue
        planned = plan.precision_of(layer.component)
        runs, reason = planned, None
        if planned == "int8":
            if not is_quantized(layer.type):
                why = kept.get(layer.name, f"{t} stays float")
                runs, reason = "fp32", why[len(t) + 1:] if why.startswith(f"{t} ") else why  # grouped by reason
        elif "int8" in used:
            runs = "fp32"
            reason = "TNN runs the float layers of a network with int8 layers in fp32 (half weights are kept)"
        elif device == "x86":
            if planned == "fp16":
                runs, reason = "fp32", "TNN on x86 converts half weights to fp32 when it loads them"
        elif pr == "NORMAL" and t in tnn_compat.ARM_FP16:
            runs = "fp16"
            if planned != "fp16":
                reason = ("TNN picks one precision per network: -pr NORMAL (for the fp16 units) runs fp32 ones in "
                          "fp16 too on ARMv8.2; -pr HIGH keeps them fp32 and runs the fp16 ones in fp32")
        elif planned == "fp16":
            runs, reason = "fp32", f"no ARM fp16 kernel for {t}: fp32 between reformat layers"
        rows.add(layer.component, t, runs, reason)
    notes = [f"TNNTest {' '.join(flags[4:])}"]
    error = failed
    if report.errors:
        first = report.errors[0]
        error = f"{len(report.errors)} problem(s) stop TNN on {device}, e.g. {first.op_type}: {first.reason}"
    return TargetRuns("tnn", device, "TNN layers", rows.result(), notes, error), report


# ============================================================================ all of them
def target_runs(model, plan, targets: tuple[str, ...] = TARGETS, tnn_device: str = "arm",
                trt_paths: tuple[str, ...] = ("weak", "strong")) -> tuple[list[TargetRuns], dict[str, Any]]:
    """What each of ``targets`` runs for ``plan`` on the FP32 graph ``model``; also the TNN
    compat report when TNN was looked at (``{"tnn": report}``)."""
    from edgeseg.quantize.units import unit_view

    view = unit_view(model, plan)
    need_qdq = any(t in targets for t in ("onnxruntime", "tflite", "tensorrt"))
    qdq = qdq_precisions(model, plan) if need_qdq else {}
    out: list[TargetRuns] = []
    extra: dict[str, Any] = {}
    for target in targets:
        if target == "onnxruntime":
            out.append(onnxruntime_runs(view, qdq))
        elif target == "tflite":
            out.append(tflite_runs(view, qdq))
        elif target == "tnn":
            runs, extra["tnn"] = tnn_runs(view, tnn_device)
            out.append(runs)
        elif target == "tensorrt":
            if "weak" in trt_paths:
                from edgeseg.benchmark.runners import float_nodes

                out.append(tensorrt_weak_runs(view, qdq, float_nodes(model)))
            if "strong" in trt_paths:
                out.append(tensorrt_strong_runs(view, qdq))
        else:
            raise ValueError(target)
    return out, extra


def print_summary(plan, results: list[TargetRuns], console=None) -> None:
    """One table: components and units down, targets across, what each runs."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    names: dict[str, tuple[str, str | None, str]] = {}
    for r in results:
        for row in r.rows:
            names.setdefault(row.name, (row.component, row.unit, row.planned))
    table = Table(title=f"what runs, per target, for plan {plan.spec()}")
    table.add_column("component / unit", no_wrap=True, min_width=max(len(n) + 2 for n in names) if names else 8)
    table.add_column("plan")
    for r in results:
        table.add_column(r.short + (" [red](refused)[/red]" if r.error else ""), overflow="fold")
    for name, (_, unit, planned) in names.items():
        cells = []
        for r in results:
            row = next((x for x in r.rows if x.name == name), None)
            if row is None or not row.runs:
                cells.append("-")
                continue
            text = " / ".join(f"{p} {n}" for p, n in sorted(row.runs.items(), key=lambda kv: -kv[1]))
            cells.append(text if row.as_planned else f"[yellow]{text}[/yellow]")
        table.add_row(name if unit is None else f"  {name}", planned, *cells)
    console.print(table)
    console.print("  counts: ONNX nodes that compute (TNN: layers); yellow: not all at the planned precision, "
                  "the tables above say why")


def print_target_runs(plan, results: list[TargetRuns], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for r in results:
        table = Table(title=f"{r.title}: what runs for plan {plan.spec()} ({r.counted})", show_lines=False)
        width = max((len(row.name) + 2 for row in r.rows), default=8)
        table.add_column("component / unit", no_wrap=True, min_width=width)
        for col in ("plan", "runs", "differs from the plan (or from the QDQ ONNX) because"):
            table.add_column(col, overflow="fold")
        for row in r.rows:
            name = row.name if row.unit is None else f"  {row.name}"
            runs = ", ".join(f"{p} {n}" for p, n in sorted(row.runs.items(), key=lambda kv: -kv[1])) or "-"
            why = [f"[yellow]{d.text()}[/yellow]" for d in row.differences] + [d.text() for d in row.notes]
            style = "" if row.as_planned else "yellow"
            table.add_row(name, row.planned, f"[{style}]{runs}[/{style}]" if style else runs,
                          "\n".join(why) or "as planned")
        console.print(table)
        for note in r.notes:
            console.print(f"  note: {note}")
        if r.error:
            console.print(f"  [red]refused[/red]: {r.error}")
