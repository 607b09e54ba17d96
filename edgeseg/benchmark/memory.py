"""How much memory a graph needs: a static estimate from the ONNX file, and a measurement.

* :func:`graph_memory` reads the graph only (no runtime, the same figure on every
  machine): the bytes of its weights (initializers) and the *activation peak*, the most
  bytes of intermediate tensors alive at once when the nodes run in the file's order and
  every tensor is freed after its last reader (graph inputs and outputs count too). It
  is what a runtime that plans memory by lifetime needs at least; runtimes that fuse ops
  need less, arenas with padding more.
* :func:`measured_peak_rss` loads graphs in ONNX Runtime (one thread, as on one phone
  core) in a fresh process, runs them, and reports how much the process's peak resident
  memory (``VmHWM``, Linux) grew over the same process without the sessions: what this
  runtime really took, allocator and arena overheads included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError

_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


@dataclass
class GraphMemory:
    weights_bytes: int
    activation_peak_bytes: int
    peak_node: str              # the node running when the peak is reached
    unknown_tensors: int        # tensors without a static shape (not counted)

    @property
    def total_mb(self) -> float:
        return (self.weights_bytes + self.activation_peak_bytes) / 2 ** 20

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_mb": round(self.total_mb, 3)}


def _sizes(model) -> tuple[dict[str, int], int]:
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    sizes: dict[str, int] = {}
    unknown = 0
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if any(d < 0 for d in dims) or t.elem_type not in _DTYPE_BYTES:
            unknown += 1
            continue
        sizes[vi.name] = int(np.prod(dims, dtype=np.int64)) * _DTYPE_BYTES[t.elem_type]
    return sizes, unknown


def graph_memory(path: str | os.PathLike) -> GraphMemory:
    """Weights and activation peak of the ONNX graph at ``path`` (see the module doc)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise EdgesegError(f"{p} not found", "pass an .onnx file written by `edgeseg export`")
    model = onnx.load(os.fspath(p))
    inits = {i.name for i in model.graph.initializer}
    weights = sum(int(np.prod(i.dims, dtype=np.int64)) * _DTYPE_BYTES.get(i.data_type, 4)
                  for i in model.graph.initializer)
    sizes, unknown = _sizes(model)
    for node in model.graph.node:  # Constant nodes are weights too
        if node.op_type == "Constant":
            for o in node.output:
                weights += sizes.get(o, 0)
                inits.add(o)
    last_use: dict[str, int] = {}
    for i, node in enumerate(model.graph.node):
        for x in node.input:
            if x and x not in inits:
                last_use[x] = i
    outputs = {o.name for o in model.graph.output}
    alive = {i.name for i in model.graph.input if i.name not in inits}
    current = sum(sizes.get(t, 0) for t in alive)
    peak, peak_node = current, ""
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Constant":
            continue
        produced = [o for o in node.output if o and o not in alive]
        current += sum(sizes.get(o, 0) for o in produced)
        alive.update(produced)
        if current > peak:
            peak, peak_node = current, node.name
        for t in [t for t in list(node.input) + produced if t in alive and t not in outputs]:
            if last_use.get(t, -1) <= i:
                alive.discard(t)
                current -= sizes.get(t, 0)
    return GraphMemory(int(weights), int(peak), peak_node, unknown)


_PROBE = r"""
import json, sys
import numpy as np
import onnxruntime as ort
paths = json.loads(sys.argv[1])
def hwm_kb():
    # VmHWM belongs to this process's own address space; ru_maxrss would carry over the
    # high-water mark of the parent that forked it.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status")
def feeds(s):
    out = {}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        out[i.name] = np.random.default_rng(0).standard_normal(shape).astype(
            np.float16 if "float16" in i.type else np.float32)
    return out
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
before = hwm_kb()
sessions = [ort.InferenceSession(p, sess_options=so, providers=["CPUExecutionProvider"]) for p in paths]
for _ in range(3):
    for s in sessions:
        s.run(None, feeds(s))
after = hwm_kb()
print(json.dumps({"before_kb": before, "after_kb": after}))
"""


def measured_peak_rss(paths: list[str | os.PathLike], timeout: float = 600) -> dict[str, float]:
    """Peak resident memory that loading and running ``paths`` together (ONNX Runtime, one
    thread, three runs) added to a fresh process that had imported onnxruntime and numpy."""
    files = [os.fspath(Path(p).resolve()) for p in paths]
    for f in files:
        if not Path(f).is_file():
            raise EdgesegError(f"{f} not found", "pass .onnx files written by `edgeseg export`")
    p = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(files)], capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise EdgesegError(f"the memory probe failed: {p.stderr.strip().splitlines()[-1] if p.stderr else p.returncode}",
                           "check the graphs load in ONNX Runtime (`edgeseg bench`)")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"peak_rss_mb": (r["after_kb"] - r["before_kb"]) / 1024.0, "process_peak_mb": r["after_kb"] / 1024.0}
