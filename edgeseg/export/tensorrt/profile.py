"""Per-layer times from trtexec, rolled up to components (a per-component latency breakdown).

Two inputs, both what trtexec itself writes:

* ``--exportProfile=FILE``: a JSON list, ``[{"count": N}, {"name": L, "timeMs": total,
  "averageMs": per-run, "medianMs": ..., "percentage": ...}, ...]``. trtexec writes layer
  names without JSON escaping, so a name holding a quote breaks ``json.loads``; the
  parser then reads the file entry by entry instead of giving up.
* the ``--dumpProfile`` table printed in the log (``=== Profile (N iterations ) ===``), in
  both layouts trtexec has used: times first and the layer name last (``Time(ms) Avg.(ms)
  Median(ms) Time(%) Layer``), or the name first (``Layer Time (ms) Avg. Time (ms) ...``).

Each layer's average time goes to the component that holds most of its ONNX nodes
(:func:`~edgeseg.export.tensorrt.names.match_engine_layer`; the layer information's
metadata is used when given); reformat layers count for the component of the layer they
feed, and are also reported apart. Layers that name no ONNX node stay "unattributed"
rather than being spread over components.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.export.tensorrt.names import OnnxIndex, component_of_nodes, match_engine_layer

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
UNATTRIBUTED = "(unattributed)"


@dataclass
class LayerTime:
    name: str
    average_ms: float
    total_ms: float | None = None
    median_ms: float | None = None
    percentage: float | None = None


@dataclass
class LayerProfile:
    layers: list[LayerTime]
    iterations: int | None = None
    source: str = "trtexec --exportProfile"

    @property
    def total_ms(self) -> float:
        return sum(layer.average_ms for layer in self.layers)


_ENTRY = re.compile(rf'\{{\s*"name"\s*:\s*"(?P<name>.*)"\s*,\s*"timeMs"\s*:\s*(?P<time>{NUM})\s*,\s*'
                    rf'"averageMs"\s*:\s*(?P<avg>{NUM})\s*(?:,\s*"medianMs"\s*:\s*(?P<med>{NUM})\s*)?'
                    rf'(?:,\s*"percentage"\s*:\s*(?P<pct>{NUM})\s*)?\}}')
_COUNT = re.compile(r'\{\s*"count"\s*:\s*(\d+)\s*\}')


def parse_trtexec_profile(text: str) -> LayerProfile:
    """``trtexec --exportProfile`` JSON -> :class:`LayerProfile`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list):
        count = next((int(d["count"]) for d in data if isinstance(d, dict) and "count" in d), None)
        layers = [LayerTime(str(d["name"]), float(d["averageMs"]), _f(d.get("timeMs")), _f(d.get("medianMs")),
                            _f(d.get("percentage")))
                  for d in data if isinstance(d, dict) and "name" in d and "averageMs" in d]
    else:  # unescaped names: read entry by entry
        m = _COUNT.search(text or "")
        count = int(m.group(1)) if m else None
        layers = [LayerTime(e["name"], float(e["avg"]), float(e["time"]), _f(e["med"]), _f(e["pct"]))
                  for e in _ENTRY.finditer(text or "")]
    if not layers:
        raise EdgesegError("the trtexec profile lists no layers",
                           "pass the file written by trtexec --exportProfile=FILE (after a run that finished)")
    return LayerProfile(layers, count)


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


_TABLE_HEADER = re.compile(r"=== Profile \((\d+) iterations?\s*\) ===")
_LOG_PREFIX = re.compile(r"^\s*(?:\[[^\]]*\]\s*)*")
_TIMES_FIRST = re.compile(rf"^({NUM})\s+({NUM})\s+({NUM})\s+({NUM})\s+(\S.*?)\s*$")
_NAME_FIRST = re.compile(rf"^(\S.*?)\s+({NUM})\s+({NUM})\s+({NUM})\s+({NUM})\s*$")
_TIMES_FIRST_3 = re.compile(rf"^({NUM})\s+({NUM})\s+({NUM})\s+(\S.*?)\s*$")  # TensorRT 7/8.0: no median


def parse_profile_table(text: str) -> LayerProfile:
    """The ``--dumpProfile`` table of a trtexec log -> :class:`LayerProfile` (the last table printed)."""
    lines = (text or "").splitlines()
    starts = [i for i, ln in enumerate(lines) if _TABLE_HEADER.search(ln)]
    if not starts:
        raise EdgesegError("no '=== Profile (N iterations) ===' table in the trtexec output",
                           "run trtexec with --dumpProfile (and --separateProfileRun)")
    start = starts[-1]
    iterations = int(_TABLE_HEADER.search(lines[start]).group(1))
    layers: list[LayerTime] = []
    for raw in lines[start + 1:]:
        line = _LOG_PREFIX.sub("", raw.rstrip())
        if not line.strip():
            if layers:
                break
            continue
        if line.startswith("==="):
            break
        m = _TIMES_FIRST.match(line)
        if m:
            name, total, avg, med, pct = m.group(5), m.group(1), m.group(2), m.group(3), m.group(4)
        else:
            m = _NAME_FIRST.match(line)
            if m:
                name, total, avg, med, pct = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
            else:
                m = _TIMES_FIRST_3.match(line)
                if not m:
                    continue  # the header row, or a wrapped line
                name, total, avg, med, pct = m.group(4), m.group(1), m.group(2), None, m.group(3)
        if name.strip().lower() == "total":
            continue
        layers.append(LayerTime(name.strip(), float(avg), float(total), _f(med), _f(pct)))
    if not layers:
        raise EdgesegError("the trtexec profile table lists no layers", "check trtexec finished the profiling run")
    return LayerProfile(layers, iterations, source="trtexec --dumpProfile")


# --------------------------------------------------------------------------- roll-up
@dataclass
class ComponentTime:
    component: str
    planned: str | None = None
    average_ms: float = 0.0
    share: float = 0.0  # of the profiled total
    layers: int = 0
    reformat_ms: float = 0.0  # part of average_ms spent converting formats/precisions


@dataclass
class ComponentBreakdown:
    total_ms: float
    iterations: int | None
    components: list[ComponentTime]
    unattributed_layers: list[str] = field(default_factory=list)
    spanning: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""

    def component(self, name: str) -> ComponentTime:
        for c in self.components:
            if c.component == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"total_ms": self.total_ms, "iterations": self.iterations, "source": self.source,
                "components": [asdict(c) for c in self.components],
                "unattributed_layers": self.unattributed_layers, "spanning": self.spanning}

    def to_markdown(self) -> str:
        lines = [f"Per-component GPU time ({self.source}, {self.iterations or '?'} iterations; "
                 f"sum of layer averages {self.total_ms:.3f} ms)", "",
                 "| component | planned | ms / run | share | layers | of which reformat ms |",
                 "|---|---|---:|---:|---:|---:|"]
        for c in self.components:
            lines.append(f"| {c.component} | {c.planned or '-'} | {c.average_ms:.3f} | {100 * c.share:.1f}% | "
                         f"{c.layers} | {c.reformat_ms:.3f} |")
        return "\n".join(lines) + "\n"


def component_times(profile: LayerProfile, index: OnnxIndex, plan: dict[str, str] | None = None,
                    metadata: dict[str, str | None] | None = None) -> ComponentBreakdown:
    """Roll per-layer average times up to components (``metadata``: layer name -> Metadata)."""
    plan = plan or {}
    comps: dict[str, ComponentTime] = {c: ComponentTime(c, p) for c, p in plan.items()}
    unattributed: list[str] = []
    spanning: list[dict[str, Any]] = []
    for layer in profile.layers:
        match = match_engine_layer(layer.name, index, (metadata or {}).get(layer.name))
        comp, all_comps = component_of_nodes(match.nodes, index)
        key = comp if comp is not None else UNATTRIBUTED
        if comp is None:
            unattributed.append(layer.name)
        entry = comps.setdefault(key, ComponentTime(key, plan.get(key)))
        entry.average_ms += layer.average_ms
        entry.layers += 1
        if match.kind == "reformat":
            entry.reformat_ms += layer.average_ms
        if len(all_comps) > 1:
            spanning.append({"layer": layer.name, "components": all_comps, "ms": layer.average_ms})
    total = profile.total_ms
    for c in comps.values():
        c.share = c.average_ms / total if total > 0 else 0.0
    ordered = [comps[c] for c in comps if c != UNATTRIBUTED] + ([comps[UNATTRIBUTED]] if UNATTRIBUTED in comps else [])
    return ComponentBreakdown(total, profile.iterations, ordered, unattributed, spanning, profile.source)
