"""Where an ONNX Runtime session spends its time: per-node profiling grouped by kind of work.

ONNX Runtime's profiler (``SessionOptions.enable_profiling``) records one event per node
execution after the graph optimizations ran, so the node types it names are the *fused*
ones (``QLinearConv``, ``QLinearMatMul``, ``QGemm``, ``QLinearAdd``..., ``FusedConv``) and
its ``input_type_shape`` says in which type each node really computed. That is what
tells a quantized graph that pays from one that does not: time spent converting
(QuantizeLinear / DequantizeLinear), time in integer kernels, and time in float work left
between them ("float islands": a DequantizeLinear -> Add -> QuantizeLinear costs three
passes over the tensor where ``QLinearAdd`` costs one).

Categories (:func:`category`):

* ``qdq``: QuantizeLinear / DequantizeLinear (any domain);
* ``int8``: every other node whose first data input is int8 / uint8 (integer kernels, and
  layout ops such as Transpose / Reshape / MaxPool running on int8 data);
* ``float_mac``: float Conv / MatMul / Gemm and their fused forms (the work int8 is for);
* ``float_other``: every other float node (elementwise, pooling, resize, layout
  transposes...): the float islands;
* ``cast``: Cast nodes (fp16 component boundaries and ONNX Runtime's own fp16 fallbacks).

:func:`profile_model` runs a model on one pinned core (the pinning of
:mod:`edgeseg.benchmark.targets.local`) with profiling on and returns a
:class:`NodeProfile` (milliseconds per run, per category and per op). Used by
``benchmarks/int8_profile.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ("qdq", "int8", "float_mac", "float_other", "cast")
CATEGORY_TITLES = {"qdq": "Q/DQ", "int8": "int8 kernels", "float_mac": "float Conv/MatMul/Gemm",
                   "float_other": "float islands", "cast": "Cast"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
FLOAT_MAC_OPS = {"Conv", "FusedConv", "NhwcFusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm",
                 "ConvTranspose", "NhwcConv"}
INT_TYPES = {"int8", "uint8"}


def category(op: str, input_types: list[str]) -> str:
    """Kind of work of one executed node from its (fused) op type and its input types."""
    if op in QDQ_OPS:
        return "qdq"
    if op == "Cast":
        return "cast"
    first = input_types[0] if input_types else ""
    if first in INT_TYPES or op.startswith("QLinear") or op in ("QGemm", "MatMulIntegerToFloat",
                                                                   "ConvInteger", "MatMulInteger"):
        return "int8"
    if op in FLOAT_MAC_OPS:
        return "float_mac"
    return "float_other"


@dataclass
class NodeProfile:
    """Milliseconds per run spent in each category and each (op, first input type)."""

    runs: int
    by_category: dict[str, float] = field(default_factory=dict)
    by_op: dict[str, float] = field(default_factory=dict)  # "QLinearConv(uint8)" -> ms/run
    node_count: dict[str, int] = field(default_factory=dict)  # category -> nodes executed per run

    @property
    def total_ms(self) -> float:
        return sum(self.by_category.values())

    def share(self, cat: str) -> float:
        total = self.total_ms
        return self.by_category.get(cat, 0.0) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "total_ms": self.total_ms, "by_category": self.by_category,
                "by_op": self.by_op, "node_count": self.node_count}


def summarize(events: list[dict[str, Any]], runs: int) -> NodeProfile:
    """Group ONNX Runtime profiler events (``cat == "Node"``, ``*_kernel_time``) of ``runs``
    timed runs; durations are microseconds in the trace."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    cat_us: dict[str, float] = defaultdict(float)
    op_us: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        op = args.get("op_name", "?")
        types = [next(iter(t), "") for t in args.get("input_type_shape", []) if isinstance(t, dict)]
        c = category(op, types)
        dur = float(e.get("dur", 0))
        cat_us[c] += dur
        op_us[f"{op}({types[0] if types else '-'})"] += dur
        count[c] += 1
    return NodeProfile(
        runs=runs,
        by_category={c: cat_us.get(c, 0.0) / runs / 1000.0 for c in CATEGORIES},
        by_op={k: v / runs / 1000.0 for k, v in sorted(op_us.items(), key=lambda kv: -kv[1])},
        node_count={c: round(count.get(c, 0) / runs) for c in CATEGORIES},
    )


def profile_model(model_or_path: Any, feeds: dict[str, Any], runs: int = 20, warmup: int = 5,
                  numerics: str = "fused", core: int | None = None) -> NodeProfile:
    """Profile ``runs`` runs (after ``warmup`` unprofiled ones would skew nothing: the trace
    is cut to the last ``runs`` runs) on one pinned core with one thread."""
    import onnxruntime as ort

    from edgeseg.benchmark.targets.local import ProcessPinning, default_core
    from edgeseg.runtimes.onnxruntime import session_options

    source = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") \
        else os.fspath(model_or_path)
    core = default_core() if core is None else core
    with tempfile.TemporaryDirectory(prefix="edgeseg-ortprof-") as tmp, ProcessPinning(core):
        so = session_options(threads=1, numerics=numerics)
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(source, sess_options=so, providers=["CPUExecutionProvider"])
        for _ in range(warmup):
            session.run(None, feeds)
        for _ in range(runs):
            session.run(None, feeds)
        path = session.end_profiling()
        with open(path) as f:
            events = json.load(f)
    run_events = _last_runs(events, runs)
    return summarize(run_events, runs)


def _last_runs(events: list[dict[str, Any]], runs: int) -> list[dict[str, Any]]:
    """Node events of the last ``runs`` ``model_run`` spans (drops session set-up and warm-up)."""
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(spans) < runs:
        return [e for e in events if e.get("cat") == "Node"]
    kept = spans[-runs:]
    start = kept[0][0]
    return [e for e in events if e.get("cat") == "Node" and e.get("ts", 0) >= start]
