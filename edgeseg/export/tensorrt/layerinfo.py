"""An engine's layer information, and the planned-vs-actual precision report per component.

The input is the JSON that ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``
returns and ``trtexec --exportLayerInfo=FILE`` writes (the same text)::

    {"Layers": [{"Name": "...", "LayerType": "CaskConvolution",
                 "Inputs": [{"Name": "...", "Format/Datatype": "Row major Int8 format", ...}],
                 "Outputs": [...], "Weights": {"Type": "Int8", "Count": 9408},
                 "Metadata": "[ONNX Layer: /backbone/conv/Conv]", ...}, ...],
     "Bindings": ["image", "masks"]}

With ``ProfilingVerbosity.DETAILED`` (``--profilingVerbosity=detailed``) every layer is an
object; otherwise only its name is listed, and precisions are unknown (said so, never guessed).

A layer's precision is its weights' type when it has weights (Conv, MatMul with constant
weights), else its first input's data type, else its first output's: the precision its
kernel computes in. Each layer is attributed to components through
:func:`~edgeseg.export.tensorrt.names.match_engine_layer`; the report then compares, per
component, the plan's precision with what the engine's compute layers actually run in,
and lists the layers where they differ (precision lost in a fusion shows up here).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.export.tensorrt.names import OnnxIndex, component_of_nodes, match_engine_layer

# Data type words in "Format/Datatype" strings and weight "Type" fields, most specific first.
_DTYPE_WORDS = [
    (re.compile(r"\bUInt8\b", re.I), "uint8"),
    (re.compile(r"\bInt8\b", re.I), "int8"),
    (re.compile(r"\bInt4\b", re.I), "int4"),
    (re.compile(r"\b(?:BFloat16|BF16)\b", re.I), "bf16"),
    (re.compile(r"\b(?:FP8|Float8|E4M3)\b", re.I), "fp8"),
    (re.compile(r"\b(?:FP16|Half)\b", re.I), "fp16"),
    (re.compile(r"\b(?:FP32|Float)\b", re.I), "fp32"),
    (re.compile(r"\bInt32\b", re.I), "int32"),
    (re.compile(r"\bInt64\b", re.I), "int64"),
    (re.compile(r"\bBool\b", re.I), "bool"),
]
FLOAT_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8", "int4")
_COMPUTE_TYPES = re.compile(r"conv|gemm|matrixmultiply|matmul|fullyconnected|deconv|myelin", re.I)
_MOVEMENT_TYPES = {"reformat", "noop", "shuffle", "constant", "slice", "concatenation", "gather"}


def dtype_of(text: str | None) -> str | None:
    for pattern, name in _DTYPE_WORDS:
        if text and pattern.search(text):
            return name
    return None


@dataclass
class EngineLayer:
    name: str
    layer_type: str | None = None
    precision: str | None = None
    inputs: list[str] = field(default_factory=list)  # "Format/Datatype" of each input
    outputs: list[str] = field(default_factory=list)
    weights_type: str | None = None
    metadata: str | None = None
    origin: str | None = None

    @property
    def is_compute(self) -> bool:
        """A layer that does the arithmetic a precision plan is about (not a copy or a reformat)."""
        if self.weights_type:
            return True
        if self.layer_type is None and not self.inputs and not self.outputs:
            return True  # names-only information: counted, its precision stays unknown
        t = (self.layer_type or "").lower()
        if t in _MOVEMENT_TYPES:
            return False
        return bool(_COMPUTE_TYPES.search(t)) or self.name.startswith("{ForeignNode[")

    @classmethod
    def from_json(cls, raw: Any) -> "EngineLayer":
        if isinstance(raw, str):  # LAYER_NAMES_ONLY verbosity
            return cls(name=raw)
        if not isinstance(raw, dict) or "Name" not in raw:
            raise EdgesegError(f"a layer entry has no name: {str(raw)[:80]}",
                               "pass the JSON written by trtexec --exportLayerInfo or the engine inspector")
        ins = [t.get("Format/Datatype", "") for t in raw.get("Inputs", []) if isinstance(t, dict)]
        outs = [t.get("Format/Datatype", "") for t in raw.get("Outputs", []) if isinstance(t, dict)]
        weights = raw.get("Weights") or raw.get("ConvWeights")
        wtype = dtype_of(weights.get("Type")) if isinstance(weights, dict) else None
        precision = wtype or next((d for d in map(dtype_of, ins) if d), None) or \
            next((d for d in map(dtype_of, outs) if d), None)
        return cls(name=str(raw["Name"]), layer_type=raw.get("LayerType") or raw.get("ParameterType"),
                   precision=precision, inputs=ins, outputs=outs, weights_type=wtype,
                   metadata=raw.get("Metadata"), origin=raw.get("Origin"))


@dataclass
class EngineInfo:
    layers: list[EngineLayer]
    bindings: list[str]
    detailed: bool  # False: names only (the engine was built without detailed profiling verbosity)

    def by_name(self) -> dict[str, EngineLayer]:
        return {layer.name: layer for layer in self.layers}


def parse_layer_information(text: str | dict) -> EngineInfo:
    """Engine inspector / ``--exportLayerInfo`` JSON -> :class:`EngineInfo`."""
    if isinstance(text, dict):
        data = text
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise EdgesegError(f"the layer information is not JSON: {e}",
                               "pass the file written by trtexec --exportLayerInfo=FILE") from e
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise EdgesegError("the layer information has no 'Layers' list",
                           "pass the file written by trtexec --exportLayerInfo=FILE (TensorRT 8.4+)")
    layers = [EngineLayer.from_json(raw) for raw in data["Layers"]]
    bindings = [b if isinstance(b, str) else str(b.get("Name", b)) for b in data.get("Bindings", [])]
    return EngineInfo(layers, bindings, detailed=any(isinstance(raw, dict) for raw in data["Layers"]))


# --------------------------------------------------------------------------- the report
@dataclass
class ComponentPrecision:
    component: str
    planned: str | None
    layers: int = 0  # engine layers attributed to this component
    compute_layers: int = 0
    reformats: int = 0
    actual: dict[str, int] = field(default_factory=dict)  # precision -> compute layers
    mismatched: list[dict[str, Any]] = field(default_factory=list)  # compute layers not at the plan's precision
    spanning: list[dict[str, Any]] = field(default_factory=list)  # layers fused across components

    @property
    def verdict(self) -> str:
        if self.planned is None:
            return "not in plan"
        if not self.compute_layers:
            return "no compute layers"
        if not self.actual:
            return "unknown (names only)"
        return "as planned" if not self.mismatched else f"{len(self.mismatched)} layer(s) differ"


@dataclass
class PrecisionReport:
    source: str
    detailed: bool
    components: list[ComponentPrecision]
    unattributed: list[str] = field(default_factory=list)
    rules: dict[str, int] = field(default_factory=dict)  # matching rule -> layers

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "detailed": self.detailed,
                "components": [{**asdict(c), "verdict": c.verdict} for c in self.components],
                "unattributed": self.unattributed, "rules": self.rules}

    @property
    def ok(self) -> bool:
        return all(not c.mismatched for c in self.components)

    def to_markdown(self) -> str:
        lines = [f"# Planned vs actual precision ({self.source})", ""]
        if not self.detailed:
            lines += ["Layer information has names only: rebuild with detailed profiling verbosity "
                      "(`--profilingVerbosity=detailed`) to see precisions.", ""]
        lines += ["| component | planned | compute layers | actual | reformats | verdict |",
                  "|---|---|---:|---|---:|---|"]
        for c in self.components:
            actual = ", ".join(f"{p} {n}" for p, n in sorted(c.actual.items(), key=lambda kv: -kv[1])) or "-"
            lines.append(f"| {c.component} | {c.planned or '-'} | {c.compute_layers} | {actual} | {c.reformats} | "
                         f"{c.verdict} |")
        for c in self.components:
            if c.mismatched:
                lines += ["", f"**{c.component}**: compute layers not in {c.planned}:", ""]
                lines += [f"- `{m['layer']}` runs in {m['precision']}" for m in c.mismatched[:20]]
                if len(c.mismatched) > 20:
                    lines.append(f"- ... {len(c.mismatched) - 20} more")
            if c.spanning:
                lines += ["", f"**{c.component}**: {len(c.spanning)} layer(s) fused across components, e.g. "
                              f"`{c.spanning[0]['layer']}` ({', '.join(c.spanning[0]['components'])})"]
        if self.unattributed:
            lines += ["", f"{len(self.unattributed)} layer(s) named no ONNX node (generated by TensorRT), e.g. "
                          f"`{self.unattributed[0]}`"]
        return "\n".join(lines) + "\n"


def precision_report(info: EngineInfo, index: OnnxIndex, plan: dict[str, str],
                     source: str = "engine inspector") -> PrecisionReport:
    """Per component of ``plan``: the precisions its engine layers actually run in."""
    comps = {c: ComponentPrecision(c, p) for c, p in plan.items()}
    unattributed: list[str] = []
    rules: Counter = Counter()
    for layer in info.layers:
        match = match_engine_layer(layer.name, index, layer.metadata)
        rules[match.rule] += 1
        comp, all_comps = component_of_nodes(match.nodes, index)
        if comp is None:
            unattributed.append(layer.name)
            continue
        entry = comps.setdefault(comp, ComponentPrecision(comp, None))
        entry.layers += 1
        if len(all_comps) > 1:
            entry.spanning.append({"layer": layer.name, "components": all_comps})
        if match.kind == "reformat":
            entry.reformats += 1
            continue
        if not layer.is_compute:
            continue
        entry.compute_layers += 1
        if layer.precision is None:
            continue
        entry.actual[layer.precision] = entry.actual.get(layer.precision, 0) + 1
        if entry.planned and layer.precision != entry.planned:
            entry.mismatched.append({"layer": layer.name, "precision": layer.precision, "type": layer.layer_type,
                                     "nodes": match.nodes[:8]})
    return PrecisionReport(source, info.detailed, list(comps.values()), unattributed, dict(rules))
