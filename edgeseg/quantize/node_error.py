"""Per-node error of a quantized graph against its FP32 source, to look at.

Every node of the FP32 graph whose output tensor still exists under the same name in the
quantized graph (QDQ and fp16 rewrites keep the original tensor names; the Q/DQ/Cast
tensors they add are new) is compared on a few held-out images: SQNR (dB) and cosine of
its first output, accumulated over the images. Errors propagate, so reading the values
in graph order shows where fidelity is lost; the first nodes whose SQNR falls are the
ones a plan exception (``component/sub/module=fp16``) should keep in float.

Written as:

* node data for Google's Model Explorer (``<stem>.sqnr.node_data.json``,
  ``<stem>.cosine.node_data.json``): ``{graph name: {"results": {node name: {"value": v}},
  "thresholds": [...]}}``, keyed by node name as its ONNX adapter names nodes; node names
  carry the module scopes (``/backbone/...``), which Model Explorer shows as the component
  groups. Open with ``model-explorer model.onnx --node_data_paths=<stem>.sqnr.node_data.json``
  (with the ``model-explorer-onnx`` adapter);
* a self-contained HTML page (``<stem>.node_error.html``) for people without Model
  Explorer: per-component summary, then every node in graph order with a coloured SQNR bar;
* JSON with everything (``<stem>.node_error.json``).
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError

# SQNR bands (dB) and colours, from lossless to broken: the same bands in Model Explorer and HTML.
SQNR_BANDS = ((10.0, "#d32f2f"), (20.0, "#ff5722"), (30.0, "#ffa000"), (40.0, "#c8e6c9"), (1e9, "#388e3c"))
COSINE_BANDS = ((0.9, "#d32f2f"), (0.99, "#ff5722"), (0.999, "#ffa000"), (0.9999, "#c8e6c9"), (2.0, "#388e3c"))

# The files NodeErrorReport.save writes, as suffixes of the quantized model's stem.
NODE_ERROR_SUFFIXES = (".node_error.json", ".sqnr.node_data.json", ".cosine.node_data.json", ".node_error.html")


@dataclass
class NodeError:
    node: str
    op: str
    component: str | None
    tensor: str
    sqnr_db: float
    cosine: float
    max_abs_error: float


@dataclass
class NodeErrorReport:
    source: str
    candidate: str
    graph: str                   # the ONNX graph's name (Model Explorer's graph id)
    images: int
    nodes: list[NodeError] = field(default_factory=list)

    def by_component(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for comp in dict.fromkeys(n.component or "?" for n in self.nodes):
            rows = [n for n in self.nodes if (n.component or "?") == comp]
            finite = [n.sqnr_db for n in rows if math.isfinite(n.sqnr_db)]
            out[comp] = {"nodes": len(rows), "min_sqnr_db": min(finite) if finite else math.inf,
                         "median_sqnr_db": float(np.median(finite)) if finite else math.inf,
                         "min_cosine": min(n.cosine for n in rows)}
        return out

    def worst(self, k: int = 10) -> list[NodeError]:
        return sorted(self.nodes, key=lambda n: n.sqnr_db)[:k]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "candidate": self.candidate, "graph": self.graph, "images": self.images,
                "components": self.by_component(), "nodes": [_finite(asdict(n)) for n in self.nodes]}

    # -------------------------------------------------------------- Model Explorer
    def model_explorer(self, metric: str) -> dict[str, Any]:
        """Model Explorer node data (``ModelNodeData``) for ``sqnr_db`` or ``cosine``."""
        bands = SQNR_BANDS if metric == "sqnr_db" else COSINE_BANDS
        results = {}
        for n in self.nodes:
            v = getattr(n, metric)
            results[n.node] = {"value": _clip(v)}
        return {self.graph: {"results": results,
                             "thresholds": [{"value": _clip(v), "bgColor": c} for v, c in bands]}}

    def save(self, folder: str | os.PathLike, stem: str) -> list[Path]:
        from edgeseg.utils import atomic

        folder = Path(folder)
        data, sqnr, cosine, page = (folder / f"{stem}{s}" for s in NODE_ERROR_SUFFIXES)
        paths = [atomic.write_json(data, self.to_dict()),
                 atomic.write_json(sqnr, self.model_explorer("sqnr_db")),
                 atomic.write_json(cosine, self.model_explorer("cosine")),
                 atomic.write_text(page, self.html())]
        return paths

    # -------------------------------------------------------------- HTML
    def html(self) -> str:
        e = html.escape
        rows = []
        for comp, s in self.by_component().items():
            rows.append(f"<tr><td>{e(comp)}</td><td>{s['nodes']}</td><td>{_db(s['min_sqnr_db'])}</td>"
                        f"<td>{_db(s['median_sqnr_db'])}</td><td>{s['min_cosine']:.5f}</td></tr>")
        nodes = []
        for i, n in enumerate(self.nodes):
            width = 0 if not math.isfinite(n.sqnr_db) and n.sqnr_db < 0 else min(100.0, max(0.0, _clip(n.sqnr_db)) * 2)
            nodes.append(f"<tr><td>{i}</td><td>{e(n.component or '?')}</td><td class=n>{e(n.node)}</td>"
                         f"<td>{e(n.op)}</td><td><div class=bar style='width:{width:.0f}%;"
                         f"background:{_band(n.sqnr_db, SQNR_BANDS)}'></div>{_db(n.sqnr_db)}</td>"
                         f"<td style='background:{_band(n.cosine, COSINE_BANDS)}'>{n.cosine:.5f}</td>"
                         f"<td>{n.max_abs_error:.3g}</td></tr>")
        worst = ", ".join(f"{e(n.node)} ({_db(n.sqnr_db)})" for n in self.worst(5))
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>Per-node error: {e(self.candidate)}</title>
<style>body{{font:13px sans-serif;margin:20px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:2px 6px}}td.n{{font-family:monospace}}.bar{{display:inline-block;height:9px;margin-right:6px;
vertical-align:middle}}</style></head><body>
<h1>Per-node error of {e(self.candidate)} against {e(self.source)}</h1>
<p>{self.images} held-out image(s); SQNR = 10 log10(sum ref&sup2; / sum err&sup2;) of each node's output,
accumulated over the images (higher is better: above ~40 dB is near-lossless, below ~20 dB usually costs
accuracy). Bands: &lt;10, 10-20, 20-30, 30-40, &ge;40 dB. Lowest: {worst}.</p>
<h2>By component</h2><table><tr><th>component</th><th>nodes</th><th>min SQNR</th><th>median SQNR</th>
<th>min cosine</th></tr>{''.join(rows)}</table>
<h2>Every node, in graph order</h2><table><tr><th>#</th><th>component</th><th>node</th><th>op</th>
<th>SQNR</th><th>cosine</th><th>max abs err</th></tr>{''.join(nodes)}</table></body></html>
"""


def _clip(v: float) -> float:
    """JSON has no infinity: lossless nodes are shown as 200 dB."""
    if math.isnan(v):
        return 0.0
    return max(-200.0, min(200.0, v))


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_clip(v) if isinstance(v, float) else v) for k, v in d.items()}


def _db(v: float) -> str:
    return "lossless" if v == math.inf else f"{v:.1f} dB"


def _band(v: float, bands) -> str:
    for limit, colour in bands:
        if v <= limit:
            return colour
    return bands[-1][1]


# ============================================================================ measuring
def comparable_nodes(source_model, candidate_model) -> list[tuple[Any, str]]:
    """(FP32 node, its first output) for the nodes whose output the candidate still has."""
    from edgeseg.quantize.calibrate import select_tensors

    have = {o for n in candidate_model.graph.node for o in n.output}
    floats = {t.name for t in select_tensors(source_model)}
    out = []
    for node in source_model.graph.node:
        if node.op_type in ("Constant", "ConstantOfShape") or not node.output:
            continue
        t = node.output[0]
        if t in have and t in floats:
            out.append((node, t))
    return out


def node_errors(source: str | os.PathLike, candidate: str | os.PathLike, feeds: list[dict[str, np.ndarray]],
                threads: int = 1) -> NodeErrorReport:
    """Per-node SQNR / cosine of ``candidate`` (a QDQ / fp16 ONNX) against ``source`` (its
    FP32 ONNX) over ``feeds`` (accuracy numerics: Q/DQ simulated on every host)."""
    from edgeseg.export.tags import get_component
    from edgeseg.quantize.calibrate import load_onnx
    from edgeseg.quantize.fidelity import _Accumulator
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    if not feeds:
        raise EdgesegError("no images to measure per-node error on", "pass held-out images")
    src_model, cand_model = load_onnx(source), load_onnx(candidate)
    pairs = comparable_nodes(src_model, cand_model)
    if not pairs:
        raise EdgesegError(f"{Path(candidate).name} shares no tensor names with {Path(source).name}",
                           "compare a quantized model with the FP32 file it was made from")
    names = [t for _, t in pairs]
    ref_rt = OnnxRuntimeRuntime(source, threads=threads, optimization="basic", extra_outputs=names)
    cand_rt = OnnxRuntimeRuntime(candidate, threads=threads, optimization="basic", extra_outputs=names)
    acc = {t: _Accumulator() for t in names}
    for feed in feeds:
        ref = ref_rt.run(feed, output_names=names)
        got = cand_rt.run(feed, output_names=names)
        for t in names:
            acc[t].add(np.asarray(ref[t], np.float32), np.asarray(got[t], np.float32))
    rows = []
    for node, t in pairs:
        r = acc[t].result(t, get_component(node))
        rows.append(NodeError(node.name, node.op_type, get_component(node), t, r.sqnr_db, r.cosine, r.max_abs_error))
    return NodeErrorReport(Path(source).name, Path(candidate).name, src_model.graph.name or "main_graph",
                           len(feeds), rows)
