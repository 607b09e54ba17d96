"""Where the time goes, per component: ONNX Runtime's profiler rolled up by component tags.

``profile_components(onnx_path)`` runs a tagged graph (every node carries
``edgeseg.component``, see :mod:`edgeseg.export.tags`) on one pinned core with one
thread, ONNX Runtime's profiler on, and sums each node's kernel time into its component:
the per-component cost table of YolactEdge's Table II (backbone, FPN, ProtoNet, head),
for any family. ONNX Runtime optimises the graph first (fusions, and Q/DQ pairs folded
into QLinear kernels), so a profiled node is mapped to a component by its name, which
keeps the original node's name or module scope; ORT's own layout copies (blocked NCHWc
reorders, NHWC transposes around int8 convolutions) are counted apart as ``(layout
reorders)``, and its fp16 fallback casts in the component whose tensor they convert; a name that matches nothing
is counted as ``untagged`` (and reported, not hidden).

Profiling adds a little overhead per node; shares are more reliable than absolute ms.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError

KERNEL_SUFFIX = "_kernel_time"


@dataclass
class ComponentProfile:
    model: str
    file: str
    runs: int
    core: int
    wall_ms_p50: float                       # whole run() wall time, p50 over the profiled runs
    component_ms: dict[str, float]           # mean kernel ms per run, pipeline order
    op_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # component -> op type -> ms
    unmatched_nodes: list[str] = field(default_factory=list)

    @property
    def kernel_ms(self) -> float:
        return float(sum(self.component_ms.values()))

    def shares(self) -> dict[str, float]:
        total = self.kernel_ms or 1.0
        return {c: 100.0 * ms / total for c, ms in self.component_ms.items()}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kernel_ms": self.kernel_ms, "shares": self.shares()}

    def markdown(self) -> str:
        lines = [f"| component | ms per run | share |", "|---|---:|---:|"]
        for c, ms in self.component_ms.items():
            lines.append(f"| {c} | {ms:.2f} | {self.shares()[c]:.1f}% |")
        lines.append(f"| **sum of kernels** | {self.kernel_ms:.2f} | 100% |")
        return "\n".join(lines)


def _node_components(model, manifest) -> tuple[dict[str, str], Any]:
    from edgeseg.export import tags
    from edgeseg.models.base import ComponentMap

    by_name = {n.name: tags.get_component(n) or "untagged" for n in model.graph.node}
    # ORT names some rewritten nodes after the tensor they produce ("proto_nchwc").
    for n in model.graph.node:
        for out in n.output:
            by_name.setdefault(out, tags.get_component(n) or "untagged")
    for n in model.graph.node:  # weights (no producer) belong to the node that reads them
        for inp in n.input:
            by_name.setdefault(inp, tags.get_component(n) or "untagged")
    cmap = ComponentMap({c: (info or {}).get("module") or c for c, info in (manifest.components or {}).items()}) \
        if manifest is not None else ComponentMap({})
    return by_name, cmap


LAYOUT = "(layout reorders)"  # ORT's NCHW <-> blocked-layout copies between kernels
CAST_PREFIX = "InsertedPrecisionFreeCast_"


def _component_of(name: str, by_name: dict[str, str], cmap) -> str | None:
    if name in by_name:
        return by_name[name]
    if name.startswith(("ReorderInput", "ReorderOutput")) or name == "Transpose" or name.startswith("Transpose_token_"):
        return LAYOUT  # ORT's own layout copies (NCHWc blocks; NHWC around QLinearConv), not graph nodes
    if name.endswith("_nchwc") and name[: -len("_nchwc")] in by_name:
        return by_name[name[: -len("_nchwc")]]
    if name.startswith(CAST_PREFIX):
        # ORT's CPU kernels are float32: fp16 nodes get casts named after the tensor they
        # convert (``..._fp16``); they are that component's cost of running in fp16 here.
        tensor = name[len(CAST_PREFIX):]
        for candidate in (tensor, tensor.rsplit("_", 1)[0]):
            if candidate in by_name:
                return by_name[candidate]
    # ORT renames fused / quantized nodes by appending to the original name.
    for cut in ("_token_", "_quant", "_Fused", "/Fused"):
        if cut in name and name.split(cut)[0] in by_name:
            return by_name[name.split(cut)[0]]
    best = max((n for n in by_name if n and name.startswith(n)), key=len, default=None)
    if best is not None:
        return by_name[best]
    return cmap.component_for_scope(name)


def profile_components(onnx_path: str | os.PathLike, runs: int = 20, warmup: int = 5, core: int | None = None,
                       seed: int = 0, feeds: dict[str, np.ndarray] | None = None) -> ComponentProfile:
    """Profile ``onnx_path`` on one pinned core (one thread) and roll kernel times up by component."""
    import time

    import onnx
    import onnxruntime as ort

    from edgeseg.benchmark.targets.local import ProcessPinning, default_core
    from edgeseg.export.manifest import Manifest, find_manifest
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    path = Path(onnx_path)
    if not path.is_file():
        raise EdgesegError(f"{path} does not exist", "export the model first (`edgeseg export MODEL -o DIR`)")
    if runs < 1 or warmup < 0:
        raise EdgesegError(f"runs must be >= 1 and warm-up >= 0, got {runs} / {warmup}", "e.g. --runs 20 --warmup 5")
    model = onnx.load(os.fspath(path), load_external_data=False)
    manifest = Manifest.load(path) if find_manifest(path) else None
    by_name, cmap = _node_components(model, manifest)
    order = list(manifest.components) if manifest is not None and manifest.components else []
    feeds = feeds or OnnxRuntimeRuntime(path, threads=1).random_feeds(seed)
    pin = ProcessPinning(default_core() if core is None else core)
    with pin, tempfile.TemporaryDirectory(prefix="edgeseg-profile-") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        session = ort.InferenceSession(os.fspath(path), sess_options=so, providers=["CPUExecutionProvider"])
        for _ in range(warmup):  # untimed, unprofiled: first runs allocate
            session.run(None, feeds)
        del session
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(os.fspath(path), sess_options=so, providers=["CPUExecutionProvider"])
        session.run(None, feeds)  # the profiled session's own first run: not counted
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, feeds)
            walls.append((time.perf_counter() - t0) * 1e3)
        trace = session.end_profiling()
        events = json.loads(Path(trace).read_text())
    # The first profiled run is in the trace too: drop it by skipping the first run's nodes.
    node_events = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX)]
    per_run = len(node_events) // (runs + 1) if node_events else 0
    node_events = node_events[per_run:]
    totals: dict[str, float] = {}
    ops: dict[str, dict[str, float]] = {}
    unmatched: set[str] = set()
    for e in node_events:
        name = e["name"][: -len(KERNEL_SUFFIX)]
        comp = _component_of(name, by_name, cmap)
        if comp is None:
            unmatched.add(name)
            comp = "untagged"
        ms = float(e.get("dur", 0)) / 1000.0 / runs
        totals[comp] = totals.get(comp, 0.0) + ms
        op = str((e.get("args") or {}).get("op_name", "?"))
        ops.setdefault(comp, {})[op] = ops.setdefault(comp, {}).get(op, 0.0) + ms
    ordered = {c: totals[c] for c in order if c in totals}
    ordered.update({c: v for c, v in totals.items() if c not in ordered})
    return ComponentProfile(model=manifest.model if manifest else path.stem, file=path.name, runs=runs,
                            core=pin.core, wall_ms_p50=float(np.median(walls)), component_ms=ordered,
                            op_ms={c: dict(sorted(v.items(), key=lambda kv: -kv[1])) for c, v in ops.items()},
                            unmatched_nodes=sorted(unmatched))
