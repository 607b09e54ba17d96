"""TensorRT layer names <-> ONNX node names <-> components.

Two places need the link, with different evidence:

**Network layers** (``INetworkDefinition``, before the build; weak typing sets their
precision). The ONNX parser names each layer after its ONNX node, and helper layers it
adds (an Unsqueeze before a MatMul, a Shuffle after a Gemm) get generated names such as
``(Unnamed Layer* 21) [Shuffle]``. :func:`network_layer_node` tries, in order:

1. the layer's metadata ``[ONNX Layer: NODE]`` (set by the parser from TensorRT 10);
2. the layer name equals a node name;
3. one of its output tensors is an ONNX tensor (the parser keeps ONNX tensor names): its producer;
4. the longest node name the layer name starts with, followed by ``_``, ``/``, ``.``, ``:`` or a space;
5. otherwise none. :func:`assign_components` then gives such a layer the component of the
   layer producing its first input (else of its first consumer), so a helper layer runs
   at the precision of the node it serves.

**Engine layers** (after the build: engine inspector JSON, ``trtexec --exportLayerInfo``
/ ``--exportProfile``). Fusion merges several nodes into one layer, and names say so:

* ``A + B + C``: fused nodes, split at the top level (not inside brackets);
* ``PWN(PWN(relu_1), add_1)``: a generated pointwise kernel over those nodes;
* ``{ForeignNode[FIRST...LAST]}``: a Myelin region; only its first and last nodes are
  named, so it covers every ONNX node between them in graph order;
* ``Reformatting CopyNode for Input Tensor 0 to LAYER``: a format/precision conversion
  feeding LAYER; it counts for LAYER's component;
* a fragment that is not a node may be a tensor (``X_output_0``: its producer), a weight
  (``conv1.weight``: the node reading it), or carry TensorRT's affixes
  (``copied_squeeze_after_X``, ``unsqueeze_node_after_X``, ``X_output``); generated names
  (``(Unnamed Layer* 360) [Shuffle]``) match nothing;
* when the layer information has ``Metadata`` (``[ONNX Layer: A]\\x1e[ONNX Layer: B]``,
  TensorRT 8.6+ with detailed verbosity), that list is used instead of the name.

Everything here is pure Python over names and an :class:`OnnxIndex`; it is what the
tests pin down, since no TensorRT runs on the machines that test it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

RECORD_SEPARATOR = "\x1e"  # between "[ONNX Layer: ...]" entries of a layer's metadata
_METADATA_ENTRY = re.compile(r"^\[ONNX Layer:\s*(.*)\]$", re.S)
_REFORMAT = re.compile(r"^Reformatting CopyNode for (Input|Output) Tensor (\d+) to (.+)$", re.S)
_FOREIGN = re.compile(r"^\{ForeignNode\[(.*)\]\}$", re.S)
_PWN = re.compile(r"^PWN\((.*)\)$", re.S)
_UNNAMED = re.compile(r"^\(Unnamed Layer\* \d+\) \[[^\]]+\]")
# Names TensorRT derives from a node or tensor name X.
_PREFIXES = ("copied_squeeze_after_", "unsqueeze_node_after_", "squeeze_after_", "reshape_before_",
             "reshape_after_", "shuffle_before_", "shuffle_after_")
_SUFFIXES = ("_output", "_out_tensor", "_clone")
_PREFIX_BOUNDARY = ("_", "/", ".", ":", " ", "[", "(")


@dataclass
class OnnxIndex:
    """What the matching rules need to know about the ONNX graph the engine was built from."""

    order: dict[str, int] = field(default_factory=dict)  # node name -> position (graph order)
    component: dict[str, str] = field(default_factory=dict)  # node name -> component ("" if untagged)
    producer: dict[str, str] = field(default_factory=dict)  # tensor -> node
    consumers: dict[str, list[str]] = field(default_factory=dict)  # tensor or initializer -> nodes
    initializers: set[str] = field(default_factory=set)

    @classmethod
    def from_model(cls, model, tags: dict[str, str] | None = None) -> "OnnxIndex":
        """``tags`` (node name -> tag) replaces the component tags: with a plan's units
        (:func:`edgeseg.quantize.units.node_tags`) layers are matched to units."""
        from edgeseg.export.tags import get_component

        idx = cls()
        idx.initializers = {i.name for i in model.graph.initializer}
        for i, node in enumerate(model.graph.node):
            idx.order[node.name] = i
            idx.component[node.name] = (tags.get(node.name) if tags is not None else None) or \
                get_component(node) or ""
            for t in node.output:
                if t:
                    idx.producer[t] = node.name
            for t in node.input:
                if t:
                    idx.consumers.setdefault(t, []).append(node.name)
        return idx

    @classmethod
    def from_components(cls, nodes_by_component: dict[str, list[str]]) -> "OnnxIndex":
        """Nodes only (no tensors), in the order given: enough for name-only rules (tests, trtexec)."""
        idx = cls()
        for comp, nodes in nodes_by_component.items():
            for n in nodes:
                idx.order.setdefault(n, len(idx.order))
                idx.component[n] = comp
        return idx

    # ---------------------------------------------------------------- one fragment
    def node_of(self, fragment: str) -> str | None:
        """The ONNX node one name fragment stands for, or None (rules in the module docstring)."""
        text = fragment.strip()
        if not text or _UNNAMED.match(text):
            return None
        for candidate in self._variants(text):
            if candidate in self.order:
                return candidate
            if candidate in self.producer:
                return self.producer[candidate]
            if candidate in self.initializers or (candidate in self.consumers and candidate not in self.producer):
                readers = self.consumers.get(candidate)
                if readers:
                    return readers[0]
        return None

    @staticmethod
    def _variants(text: str) -> list[str]:
        out = [text]
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if out[-1].startswith(p) and len(out[-1]) > len(p):
                    out.append(out[-1][len(p):])
                    changed = True
            for s in _SUFFIXES:
                if out[-1].endswith(s) and len(out[-1]) > len(s):
                    out.append(out[-1][: -len(s)])
                    changed = True
        return out

    def nodes_between(self, first: str, last: str) -> list[str]:
        a, b = self.order[first], self.order[last]
        if a > b:
            a, b = b, a
        return [n for n, i in sorted(self.order.items(), key=lambda kv: kv[1]) if a <= i <= b]


# --------------------------------------------------------------------------- helpers
def split_top_level(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside (), [] and {} (generated names hold ' + ' inside brackets)."""
    parts, depth, start, i = [], 0, 0, 0
    opening, closing = "([{", ")]}"
    while i < len(text):
        ch = text[i]
        if ch in opening:
            depth += 1
        elif ch in closing:
            depth = max(0, depth - 1)
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return [p for p in (s.strip() for s in parts) if p]


def metadata_nodes(metadata: str | None) -> list[str]:
    """``[ONNX Layer: A]\\x1e[ONNX Layer: B]`` -> ``[A, B]`` (other entries are ignored)."""
    out = []
    for entry in (metadata or "").split(RECORD_SEPARATOR):
        m = _METADATA_ENTRY.match(entry.strip())
        if m and m.group(1).strip():
            out.append(m.group(1).strip())
    return out


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for x in items:
        seen.setdefault(x, None)
    return list(seen)


# --------------------------------------------------------------------------- engine layers
@dataclass
class LayerMatch:
    """The ONNX nodes an engine layer stands for, and how that was decided."""

    nodes: list[str]
    kind: str  # layer | fused | pointwise | myelin | reformat | generated
    rule: str  # metadata | name | fused name | PWN | ForeignNode range | ... (for the report)
    unmatched: list[str] = field(default_factory=list)  # fragments that named no ONNX node


def match_engine_layer(name: str, index: OnnxIndex, metadata: str | None = None) -> LayerMatch:
    from_metadata = [n for n in metadata_nodes(metadata) if n in index.order]
    kind = _kind(name)
    if from_metadata:
        return LayerMatch(_unique(from_metadata), kind, "metadata")
    nodes, unmatched, rule = _match_name(name.strip(), index)
    return LayerMatch(_unique(nodes), kind, rule, unmatched)


def _kind(name: str) -> str:
    text = name.strip()
    if _REFORMAT.match(text):
        return "reformat"
    if _FOREIGN.match(text):
        return "myelin"
    if _PWN.match(text):
        return "pointwise"
    if len(split_top_level(text, " + ")) > 1:
        return "fused"
    if _UNNAMED.match(text):
        return "generated"
    return "layer"


def _match_name(text: str, index: OnnxIndex) -> tuple[list[str], list[str], str]:
    m = _REFORMAT.match(text)
    if m:
        nodes, unmatched, rule = _match_name(m.group(3).strip(), index)
        return nodes, unmatched, f"reformat for {rule}"
    m = _FOREIGN.match(text)
    if m:
        return _match_foreign(m.group(1), index)
    m = _PWN.match(text)
    if m:
        nodes, unmatched = [], []
        for part in split_top_level(m.group(1), ", "):
            n, u, _ = _match_name(part, index)
            nodes += n
            unmatched += u
        return nodes, unmatched, "PWN"
    fragments = split_top_level(text, " + ")
    if len(fragments) > 1:
        nodes, unmatched = [], []
        for part in fragments:
            n, u, _ = _match_name(part, index)
            nodes += n
            unmatched += u
        return nodes, unmatched, "fused name"
    node = index.node_of(text)
    if node is None:
        return [], [text], "no match"
    return [node], [], "name" if node == text else "derived name"


def _match_foreign(body: str, index: OnnxIndex) -> tuple[list[str], list[str], str]:
    ends = body.split("...")
    if len(ends) != 2:  # a single-node region, or '...' inside a name: treat as a fused list
        nodes, unmatched, _ = _match_name(body, index)
        return nodes, unmatched, "ForeignNode"
    first_nodes, u1, _ = _match_name(ends[0], index)
    last_nodes, u2, _ = _match_name(ends[1], index)
    known = first_nodes + last_nodes
    if first_nodes and last_nodes:
        lo = min(known, key=lambda n: index.order[n])
        hi = max(known, key=lambda n: index.order[n])
        return index.nodes_between(lo, hi), u1 + u2, "ForeignNode range"
    # One end is a generated layer: only the named end is known for sure.
    return known, u1 + u2, "ForeignNode end"


def component_of_nodes(nodes: list[str], index: OnnxIndex) -> tuple[str | None, list[str]]:
    """(majority component, all components) of ``nodes``; None when no node is tagged."""
    comps = [index.component.get(n, "") for n in nodes]
    comps = [c for c in comps if c]
    if not comps:
        return None, []
    counts = Counter(comps)
    ordered = sorted(counts, key=lambda c: (-counts[c], min(index.order[n] for n in nodes
                                                                if index.component.get(n) == c)))
    return ordered[0], ordered


# --------------------------------------------------------------------------- network layers
@dataclass
class NetworkLayer:
    """What the builder reads off one ``ILayer`` (kept plain so the rules are testable)."""

    name: str
    type: str = ""
    inputs: list[str] = field(default_factory=list)  # tensor names
    outputs: list[str] = field(default_factory=list)
    metadata: str | None = None
    float_outputs: bool = True  # every output is fp32/fp16 (only those take a precision)


def network_layer_node(layer: NetworkLayer, index: OnnxIndex) -> tuple[str | None, str]:
    for n in metadata_nodes(layer.metadata):
        if n in index.order:
            return n, "metadata"
    if layer.name in index.order:
        return layer.name, "name"
    for t in layer.outputs:
        if t in index.producer:
            return index.producer[t], "output tensor"
    best = None
    for node in index.order:
        if len(layer.name) > len(node) and layer.name.startswith(node) and layer.name[len(node)] in _PREFIX_BOUNDARY:
            if best is None or len(node) > len(best):
                best = node
    if best is not None:
        return best, "name prefix"
    return None, "no match"


@dataclass
class LayerAssignment:
    component: str | None
    node: str | None
    rule: str


def assign_components(layers: list[NetworkLayer], index: OnnxIndex) -> list[LayerAssignment]:
    """Component of every network layer: its node's, else its neighbours' (see module docstring)."""
    out: list[LayerAssignment] = []
    for layer in layers:
        node, rule = network_layer_node(layer, index)
        comp = index.component.get(node) if node else None
        out.append(LayerAssignment(comp or None, node, rule))
    producer_layer = {t: i for i, layer in enumerate(layers) for t in layer.outputs}
    consumer_layers: dict[str, list[int]] = defaultdict(list)
    for i, layer in enumerate(layers):
        for t in layer.inputs:
            consumer_layers[t].append(i)
    changed = True
    while changed:
        changed = False
        for i, layer in enumerate(layers):
            if out[i].component is not None:
                continue
            for t in layer.inputs:
                j = producer_layer.get(t)
                if j is not None and out[j].component is not None:
                    out[i] = LayerAssignment(out[j].component, None, "input neighbour")
                    changed = True
                    break
            else:
                for t in layer.outputs:
                    js = [j for j in consumer_layers.get(t, []) if out[j].component is not None]
                    if js:
                        out[i] = LayerAssignment(out[js[0]].component, None, "output neighbour")
                        changed = True
                        break
    return out
