"""Component tags on ONNX nodes.

Every node of an exported graph carries ``metadata_props["edgeseg.component"]``: the
component (``backbone``, ``mask_decoder``...) whose module scope produced it. Precision
plans, quantizers, converters and fidelity reports all read this one tag, so a node
renamed or fused by a simplifier or a converter still knows where it belongs.

Tags come first from the TorchScript exporter's scoped node names (``/backbone/...``);
nodes whose names lost the scope (fused or renamed by the simplifier, or created by our
own passes) take the component of their producers, then of their consumers.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

COMPONENT_KEY = "edgeseg.component"


def get_component(node) -> str | None:
    for prop in node.metadata_props:
        if prop.key == COMPONENT_KEY:
            return prop.value
    return None


def set_component(node, component: str) -> None:
    for prop in node.metadata_props:
        if prop.key == COMPONENT_KEY:
            prop.value = component
            return
    prop = node.metadata_props.add()
    prop.key, prop.value = COMPONENT_KEY, component


def copy_component(src_node, dst_node) -> None:
    comp = get_component(src_node)
    if comp is not None:
        set_component(dst_node, comp)


def ensure_unique_node_names(graph) -> None:
    """Give every node a non-empty, unique name (manifests and reports refer to nodes by name)."""
    seen: Counter = Counter()
    for i, node in enumerate(graph.node):
        base = node.name or f"{node.op_type}_{i}"
        name = base
        while seen[name]:
            name = f"{base}_{seen[base]}"
            seen[base] += 1
        seen[name] += 1
        node.name = name


def _majority(values: Iterable[str], order: list[str]) -> str | None:
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return None
    top = max(counts.values())
    # Ties break by pipeline order (earlier component wins) so tagging is deterministic.
    return next(c for c in order if counts.get(c) == top) if order else counts.most_common(1)[0][0]


def tag_graph(model, component_map, default: str | None = None) -> dict[str, int]:
    """Tag every node of ``model.graph`` in place; return node counts per component.

    ``component_map`` is an :class:`edgeseg.models.base.ComponentMap`. Raises
    ``ValueError`` if some node cannot be tagged and no ``default`` is given.
    """
    graph = model.graph
    ensure_unique_node_names(graph)
    order = component_map.names()
    tags: dict[int, str | None] = {}
    for i, node in enumerate(graph.node):
        tags[i] = get_component(node) or component_map.component_for_scope(node.name)

    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        for out in node.output:
            producer[out] = i
        for inp in node.input:
            if inp:
                consumers[inp].append(i)

    # Propagate until nothing changes: producers first (a fused Conv+BN output still
    # comes from the backbone's input), then consumers (for nodes fed only by graph
    # inputs or initializers, e.g. a renamed first layer).
    changed = True
    while changed:
        changed = False
        for i, node in enumerate(graph.node):
            if tags[i] is not None:
                continue
            comp = _majority((tags[producer[x]] for x in node.input if x in producer), order)
            if comp is None:
                comp = _majority((tags[j] for out in node.output for j in consumers.get(out, ())), order)
            if comp is not None:
                tags[i] = comp
                changed = True

    missing = [graph.node[i].name for i, c in tags.items() if c is None]
    if missing:
        if default is None:
            raise ValueError(f"{len(missing)} nodes could not be tagged with a component: {missing[:5]}")
        for i, c in tags.items():
            if c is None:
                tags[i] = default
    for i, node in enumerate(graph.node):
        set_component(node, tags[i])  # type: ignore[arg-type]
    return dict(Counter(tags.values()))


def nodes_by_component(model) -> dict[str, list[str]]:
    """Component -> node names, in graph order (untagged nodes under ``""``)."""
    out: dict[str, list[str]] = defaultdict(list)
    for node in model.graph.node:
        out[get_component(node) or ""].append(node.name)
    return dict(out)


def untagged_nodes(model) -> list[str]:
    return [n.name for n in model.graph.node if get_component(n) is None]


def component_boundary_tensors(model) -> dict[str, list[str]]:
    """Per component, the tensors it produces that are consumed outside it or are graph outputs.

    These are the "component outputs" that fidelity reports compare.
    """
    comp_of_producer: dict[str, str] = {}
    for node in model.graph.node:
        for out in node.output:
            comp_of_producer[out] = get_component(node) or ""
    graph_outputs = {o.name for o in model.graph.output}
    result: dict[str, list[str]] = defaultdict(list)
    for node in model.graph.node:
        c = get_component(node) or ""
        for inp in node.input:
            src = comp_of_producer.get(inp)
            if src is not None and src != c and inp not in result[src]:
                result[src].append(inp)
    for name in graph_outputs:
        src = comp_of_producer.get(name)
        if src is not None and name not in result[src]:
            result[src].append(name)
    return dict(result)
