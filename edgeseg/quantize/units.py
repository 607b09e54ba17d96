"""Units below the component level: layer groups, and plan exceptions every backend honours.

*Layer groups* are a graph's natural blocks, found from the module scopes in the node
names (``/backbone/trans/transformer_blocks.0/attn/MatMul``): starting from a component,
a scope is split into its child scopes while it holds more than ``max_nodes`` nodes, so a
group is a conv block, an attention block, a head branch. Nodes sitting directly in a
scope that is split form a group of their own (``backbone/(own)``). Group names are
unit keys a plan can name (``backbone/trans/transformer_blocks.0=fp16``).

*Exceptions*: :func:`expand` rewrites a plan with exceptions into a plain per-component
plan over *virtual components*, one per unit (``instance_decoder/cls_head``), by
re-tagging the unit's nodes; every per-component pass (QDQ, fp16 casts at component
boundaries, the TFLite denylist, TNN and TensorRT layer precisions) then honours units
with no code of its own. :func:`restore` puts the real component back on every node
(nodes the passes created carry the unit's tag: their component is the unit's parent)
and records the unit in ``metadata_props["edgeseg.unit"]``.
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.export.tags import get_component, set_component
from edgeseg.quantize.plan import PrecisionPlan

UNIT_KEY = "edgeseg.unit"
DEFAULT_MAX_NODES = 32


def scope_of(node_name: str) -> list[str]:
    """Module scope parts of a node name: ``/a/b/Conv`` -> ``["a", "b"]`` (the op name dropped)."""
    parts = [p for p in node_name.split("/") if p]
    return parts[:-1] if len(parts) > 1 else []


def _component_root(component: str, module_paths: dict[str, str] | None) -> list[str]:
    path = (module_paths or {}).get(component, component)
    return [p for p in path.replace(".", "/").split("/") if p] if path else []


# ============================================================================ layer groups
@dataclass
class LayerGroup:
    name: str            # unit key: component/sub/scope, or component/(own)
    component: str
    nodes: list[str] = field(default_factory=list)
    ops: Counter = field(default_factory=Counter)

    @property
    def quantizable(self) -> int:
        """Nodes INT8 changes (Conv / MatMul / Gemm): a group without any is not worth a measurement."""
        return sum(self.ops.get(op, 0) for op in ("Conv", "MatMul", "Gemm"))


def layer_groups(model, component: str, max_nodes: int = DEFAULT_MAX_NODES,
                 module_paths: dict[str, str] | None = None) -> list[LayerGroup]:
    """The natural blocks of ``component`` in graph order (see the module docstring)."""
    root = _component_root(component, module_paths)
    members = [n for n in model.graph.node if get_component(n) == component]
    if not members:
        raise EdgesegError(f"the graph has no node of component {component!r}", "check the component name")

    def rel(node) -> list[str]:
        sc = scope_of(node.name)
        return sc[len(root):] if sc[:len(root)] == root else sc

    def split(prefix: list[str], nodes: list[Any]) -> list[tuple[list[str], list[Any], bool]]:
        children: OrderedDict[str, list[Any]] = OrderedDict()
        own = []
        for n in nodes:
            r = rel(n)
            if len(r) > len(prefix):
                children.setdefault(r[len(prefix)], []).append(n)
            else:
                own.append(n)
        if len(nodes) <= max_nodes or not children:
            return [(prefix, nodes, False)]
        out = []
        if own:
            out.append((prefix, own, True))
        for child, sub in children.items():
            out += split(prefix + [child], sub)
        return out

    groups = []
    for prefix, nodes, own in split([], members):
        name = "/".join([component, *prefix]) + ("/(own)" if own or not prefix else "")
        if not prefix and not own:
            name = f"{component}/(all)"
        g = LayerGroup(name, component, [n.name for n in nodes], Counter(n.op_type for n in nodes))
        groups.append(g)
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    groups.sort(key=lambda g: min(order[x] for x in g.nodes))
    return groups


# ============================================================================ exceptions
def unit_members(model, unit: str, module_paths: dict[str, str] | None = None) -> list[str]:
    """Node names a unit covers: ``re:REGEX`` by search over names; ``comp/(own)`` the nodes
    directly in the component's scope; ``comp/(all)`` the whole component; ``comp/a/b``
    the nodes of that component under module scope a/b."""
    if unit.startswith("re:"):
        rx = re.compile(unit[3:])
        return [n.name for n in model.graph.node if rx.search(n.name)]
    comp, _, sub = unit.partition("/")
    root = _component_root(comp, module_paths)
    nodes = [n for n in model.graph.node if get_component(n) == comp]
    if sub == "(all)":
        return [n.name for n in nodes]
    own = sub.endswith("(own)")
    parts = [p for p in sub.replace("(own)", "").split("/") if p]
    out = []
    for n in nodes:
        sc = scope_of(n.name)
        r = sc[len(root):] if sc[:len(root)] == root else sc
        if own and r == parts or not own and r[:len(parts)] == parts:
            out.append(n.name)
    return out


@dataclass
class Expansion:
    plan: PrecisionPlan                         # plain per-component plan over real + virtual components
    original: dict[str, str]                    # node name -> its real component
    units: dict[str, str]                       # virtual component -> unit key
    parents: dict[str, str]                     # virtual component -> real component


def expand(model, plan: PrecisionPlan, module_paths: dict[str, str] | None = None) -> Expansion:
    """Re-tag ``model`` (in place) so each exception unit is a virtual component; returns
    the plain plan over them. A plan without exceptions returns itself unchanged."""
    original = {n.name: get_component(n) for n in model.graph.node}
    if not plan.exceptions:
        return Expansion(plan, original, {}, {})
    # Broader units first, so narrower (longer) ones win where they overlap.
    ordered = sorted(plan.exceptions, key=lambda u: (not u.startswith("re:"), len(u)))
    assignment: dict[str, str] = {}
    for unit in ordered:
        members = unit_members(model, unit, module_paths)
        if not members:
            raise EdgesegError(f"plan unit {unit!r} matches no node of the graph",
                               "units are COMPONENT/module/path as in the node names (see `edgeseg inspect` "
                               "or `edgeseg sensitivity`), or re:REGEX over node names")
        for name in members:
            assignment[name] = unit
    precisions = dict(plan.precisions)
    units: dict[str, str] = {}
    parents: dict[str, str] = {}
    by_name = {n.name: n for n in model.graph.node}
    for name, unit in assignment.items():
        comp = original[name]
        virtual = f"{comp}/{unit}" if unit.startswith("re:") else unit
        if virtual.split("/")[0] != comp:  # a re: unit spanning components: one virtual part each
            virtual = f"{comp}/{unit}"
        units[virtual] = unit
        parents[virtual] = comp
        precisions[virtual] = plan.exceptions[unit]
        set_component(by_name[name], virtual)
    return Expansion(PrecisionPlan(precisions), original, units, parents)


def restore(model, expansion: Expansion) -> None:
    """Put the real component back on every node (new nodes: their unit's parent) and
    record units in ``edgeseg.unit``."""
    if not expansion.units:
        return
    for node in model.graph.node:
        tag = get_component(node)
        if tag in expansion.units:
            set_component(node, expansion.parents[tag])
            _set_unit(node, expansion.units[tag])


def _set_unit(node, unit: str) -> None:
    for p in node.metadata_props:
        if p.key == UNIT_KEY:
            p.value = unit
            return
    entry = node.metadata_props.add()
    entry.key, entry.value = UNIT_KEY, unit


def unit_of(node) -> str | None:
    for p in node.metadata_props:
        if p.key == UNIT_KEY:
            return p.value
    return None


def node_precisions(model, plan: PrecisionPlan, module_paths: dict[str, str] | None = None) -> dict[str, str]:
    """Node name -> the precision the plan gives it (component, overridden by units): what
    converters that decide per node (TFLite's denylist, TNN and TensorRT layer precisions) read."""
    import copy

    probe = copy.deepcopy(model)
    exp = expand(probe, plan, module_paths)
    return {n.name: exp.plan.precisions.get(get_component(n), "fp32") for n in probe.graph.node}


# ============================================================================ converters
# Converters that decide per node (the TFLite denylist, TNN layers, TensorRT layer
# precisions) work on a *tagged copy*: the graph with every unit's nodes re-tagged as a
# virtual component, and the plain plan over real + virtual components. What they already
# do per component then happens per unit, and their reports name units where they differ.
@dataclass
class UnitView:
    model: Any                # a copy of the graph, units re-tagged as virtual components
    plan: PrecisionPlan       # plain plan over real + virtual components (no exceptions)
    expansion: Expansion
    unit_order: list[str] = field(default_factory=list)  # the plan's units, as written

    @property
    def components(self) -> list[str]:
        """Real components in plan order, each followed by its virtual ones (in the plan's order)."""
        rank = {u: i for i, u in enumerate(self.unit_order)}
        out = []
        for comp in self.expansion.plan.precisions:
            if comp in self.expansion.parents:
                continue
            out.append(comp)
            out += sorted((v for v, parent in self.expansion.parents.items() if parent == comp),
                          key=lambda v: rank.get(self.expansion.units[v], len(rank)))
        return out

    def parent(self, tag: str) -> str:
        """Real component of a (possibly virtual) tag."""
        return self.expansion.parents.get(tag, tag)

    def unit(self, tag: str) -> str | None:
        """The plan's unit key behind a virtual tag (None for a real component)."""
        return self.expansion.units.get(tag)


def unit_view(model, plan: PrecisionPlan, module_paths: dict[str, str] | None = None, *,
              other_graph: bool = False) -> UnitView:
    """A tagged copy of ``model`` for ``plan`` (``model`` itself is not changed); a plan
    without exceptions gives a plain copy and the plan itself.

    ``other_graph``: ``model`` is another graph of the export the plan was written for
    (the features graph): units with no node in it are skipped instead of refused."""
    import onnx

    work = onnx.ModelProto()
    work.CopyFrom(model)
    exp = expand(work, plan_for_graph(plan, work, module_paths) if other_graph else plan, module_paths)
    return UnitView(work, exp.plan, exp, list(plan.exceptions))


def plan_for_graph(plan: PrecisionPlan, model, module_paths: dict[str, str] | None = None) -> PrecisionPlan:
    """``plan`` without the units that match no node of ``model``: for the other graphs of
    an export (the features graph has no instance decoder, so a unit there is not in it).
    The first graph is never passed through this: a unit matching nothing there is a typo."""
    if not plan.exceptions:
        return plan
    keep = {u: p for u, p in plan.exceptions.items() if unit_members(model, u, module_paths)}
    if keep == plan.exceptions:
        return plan
    return PrecisionPlan(dict(plan.precisions), exceptions=keep)


def virtual_component(node) -> str | None:
    """The tag a node had while its plan was expanded: its unit's virtual component when
    :func:`restore` recorded one (a QDQ ONNX written with exceptions), else its component."""
    comp = get_component(node)
    unit = unit_of(node)
    if comp is None or unit is None:
        return comp
    return unit if not unit.startswith("re:") and unit.split("/")[0] == comp else f"{comp}/{unit}"


def has_units(model) -> bool:
    """Whether a graph carries unit records (it was written from a plan with exceptions)."""
    return any(unit_of(n) is not None for n in model.graph.node)


def node_tags(model, plan: PrecisionPlan, module_paths: dict[str, str] | None = None, *,
              other_graph: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """``(node name -> tag, tag -> precision)``: the (virtual) component each node runs as,
    for converters that set a precision per node or layer (TensorRT's layer precisions,
    trtexec ``--layerPrecisions``). A graph already written from the plan (a QDQ ONNX with
    unit records) is read as it is, so the nodes the QDQ pass added keep their unit; any
    other graph is expanded here. With units, only tags some node carries are listed (a
    unit may cover all of its component)."""
    if not plan.exceptions:
        return {n.name: get_component(n) or "" for n in model.graph.node}, dict(plan.precisions)
    if has_units(model):
        tags = {n.name: virtual_component(n) or "" for n in model.graph.node}
        precisions = dict(plan.precisions)
        for n in model.graph.node:
            unit = unit_of(n)
            if unit in plan.exceptions:
                precisions[tags[n.name]] = plan.exceptions[unit]
    else:
        view = unit_view(model, plan, module_paths, other_graph=other_graph)
        tags = {n.name: get_component(n) or "" for n in view.model.graph.node}
        precisions = dict(view.plan.precisions)
    present = set(tags.values())
    return tags, {t: p for t, p in precisions.items() if t in present}
