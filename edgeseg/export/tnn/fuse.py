"""Fuse decomposed ONNX patterns into the single TNN layers that run them well on ARM.

* **GELU** exported from ``nn.GELU()`` is ``x * 0.5 * (1 + Erf(x / sqrt(2)))``. TNN has no
  ARM kernel for ``Erf`` (the network would fail to load on a phone) but has one for
  ``GELU``, so the pattern becomes one GELU layer.
* **LayerNorm** written out in elementwise ops (``ReduceMean``, ``Sub``, ``Mul``/``Pow``,
  ``ReduceMean``, ``Add``, ``Sqrt``, ``Div``, ``Mul``, ``Add``: what exporters that avoid
  opset-17 ``LayerNormalization`` produce) becomes one LayerNorm layer: 1 layer instead
  of 9, and it has an ARM fp16 kernel while ReduceMean and Sqrt do not.

Fused nodes are ordinary ``NodeProto`` objects in the ``edgeseg`` domain, placed where
the pattern's last node was, carrying the component tag of the pattern's first node.
Every intermediate tensor must be used only inside the pattern; otherwise nothing fuses.
"""

from __future__ import annotations

import numpy as np

from edgeseg.export import tags
from edgeseg.export.tnn.graph import GraphView

DOMAIN = "edgeseg"


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def _only_consumer(view: GraphView, tensor: str, removed: set[int]):
    users = [n for n in view.consumers.get(tensor, []) if id(n) not in removed]
    if len(users) != 1 or view.is_graph_output(tensor):
        return None
    return users[0]


def _scalar(view: GraphView, name: str) -> float | None:
    arr = view.consts.get(name)
    if arr is None or arr.size != 1:
        return None
    return float(np.asarray(arr).reshape(()))


def _other_input(node, known: str) -> str | None:
    ins = list(node.input)
    if len(ins) != 2 or known not in ins:
        return None
    return ins[1] if ins[0] == known else ins[0]


def _match_gelu(view: GraphView, erf, removed: set[int]):
    """Erf(x/sqrt2) -> +1 -> *x -> *0.5 (or x*0.5 first). Returns (x, out, nodes)."""
    div = view.producer.get(erf.input[0])
    if div is None or _only_consumer(view, div.output[0], removed) is not erf:
        return None
    if div.op_type == "Div" and abs((_scalar(view, div.input[1]) or 0) - np.sqrt(2)) < 1e-3:
        x = div.input[0]
    elif div.op_type == "Mul":
        other = next((i for i in div.input if _scalar(view, i) is not None), None)
        if other is None or abs(_scalar(view, other) - 1 / np.sqrt(2)) > 1e-3:
            return None
        x = _other_input(div, other)
    else:
        return None
    add = _only_consumer(view, erf.output[0], removed)
    if add is None or add.op_type != "Add":
        return None
    one = _other_input(add, erf.output[0])
    if one is None or _scalar(view, one) != 1.0:
        return None
    mul = _only_consumer(view, add.output[0], removed)
    if mul is None or mul.op_type != "Mul":
        return None
    y = _other_input(mul, add.output[0])
    if y == x:  # (x * (1 + erf)) * 0.5
        half = _only_consumer(view, mul.output[0], removed)
        if half is None or half.op_type != "Mul":
            return None
        c = _other_input(half, mul.output[0])
        if c is None or _scalar(view, c) != 0.5:
            return None
        return x, half.output[0], [div, erf, add, mul, half]
    pre = view.producer.get(y) if y else None  # (x * 0.5) * (1 + erf)
    if pre is None or pre.op_type != "Mul" or _only_consumer(view, y, removed) is not mul:
        return None
    c = _other_input(pre, x)
    if c is None or _scalar(view, c) != 0.5:
        return None
    return x, mul.output[0], [pre, div, erf, add, mul]


def _reduces_last_axis(view: GraphView, node) -> bool:
    if node.op_type != "ReduceMean" or _attr(node, "keepdims", 1) != 1:
        return False
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1:
        arr = view.consts.get(node.input[1])
        axes = None if arr is None else [int(a) for a in np.asarray(arr).reshape(-1)]
    shape = view.shapes.get(node.input[0])
    if axes is None or shape is None or len(axes) != 1:
        return False
    return axes[0] in (-1, len(shape) - 1)


def _match_layernorm(view: GraphView, mean, removed: set[int]):
    """ReduceMean -> Sub -> Mul/Pow -> ReduceMean -> Add eps -> Sqrt -> Div [-> Mul g] [-> Add b]."""
    if not _reduces_last_axis(view, mean):
        return None
    x = mean.input[0]
    sub = _only_consumer(view, mean.output[0], removed)
    if sub is None or sub.op_type != "Sub" or list(sub.input) != [x, mean.output[0]]:
        return None
    c = sub.output[0]
    users = [n for n in view.consumers.get(c, []) if id(n) not in removed]
    uniq = {id(n): n for n in users}
    if len(uniq) != 2 or view.is_graph_output(c):
        return None
    sq = next((n for n in uniq.values() if n.op_type in ("Mul", "Pow")), None)
    div = next((n for n in uniq.values() if n.op_type == "Div"), None)
    if sq is None or div is None or list(div.input)[0] != c:
        return None
    if sq.op_type == "Mul" and list(sq.input) != [c, c]:
        return None
    if sq.op_type == "Pow" and (sq.input[0] != c or _scalar(view, sq.input[1]) != 2.0):
        return None
    var = _only_consumer(view, sq.output[0], removed)
    if var is None or not _reduces_last_axis(view, var):
        return None
    add = _only_consumer(view, var.output[0], removed)
    if add is None or add.op_type != "Add":
        return None
    eps_name = _other_input(add, var.output[0])
    eps = _scalar(view, eps_name) if eps_name else None
    if eps is None:
        return None
    sqrt = _only_consumer(view, add.output[0], removed)
    if sqrt is None or sqrt.op_type != "Sqrt" or _only_consumer(view, sqrt.output[0], removed) is not div:
        return None
    if list(div.input) != [c, sqrt.output[0]]:
        return None
    nodes = [mean, sub, sq, var, add, sqrt, div]
    out = div.output[0]
    width = (view.shapes.get(x) or [None])[-1]
    gamma = beta = None
    nxt = _only_consumer(view, out, removed)
    if nxt is not None and nxt.op_type == "Mul":
        g = _other_input(nxt, out)
        if g in view.consts and view.consts[g].size == width:
            gamma, out = g, nxt.output[0]
            nodes.append(nxt)
            nxt = _only_consumer(view, out, removed)
    if nxt is not None and nxt.op_type == "Add":
        b = _other_input(nxt, out)
        if b in view.consts and view.consts[b].size == width:
            beta, out = b, nxt.output[0]
            nodes.append(nxt)
    return x, gamma, beta, eps, out, nodes


def fuse_patterns(view: GraphView, layernorm: bool = True) -> dict[str, int]:
    """Rewrite ``view.nodes`` in place; return how many of each pattern were fused.

    ``layernorm=False`` keeps written-out layer norms as they are (int8 networks on ARM
    must avoid TNN's LayerNorm layer, which has only an NCHW kernel)."""
    from onnx import helper

    removed: set[int] = set()
    replacement: dict[int, object] = {}  # id(last node of pattern) -> fused node
    counts = {"GELU": 0, "LayerNorm": 0}

    for node in list(view.nodes):
        if id(node) in removed:
            continue
        if node.op_type == "Erf":
            m = _match_gelu(view, node, removed)
            if m:
                x, out, nodes = m
                fused = helper.make_node("Gelu", [x], [out], name=f"{nodes[-1].name}_gelu", domain=DOMAIN)
                _place(view, fused, nodes, removed, replacement)
                counts["GELU"] += 1
        elif node.op_type == "ReduceMean" and layernorm:
            m = _match_layernorm(view, node, removed)
            if m:
                x, gamma, beta, eps, out, nodes = m
                width = view.shapes[x][-1]
                gname = gamma or _add_const(view, f"{node.name}_ln_scale", np.ones(width, np.float32))
                bname = beta or _add_const(view, f"{node.name}_ln_bias", np.zeros(width, np.float32))
                fused = helper.make_node("LayerNorm", [x, gname, bname], [out], name=f"{node.name}_layernorm",
                                         domain=DOMAIN, epsilon=float(eps), axis=-1)
                _place(view, fused, nodes, removed, replacement)
                counts["LayerNorm"] += 1

    if removed:
        new_nodes = []
        for node in view.nodes:
            if id(node) in replacement:
                new_nodes.append(replacement[id(node)])
            elif id(node) not in removed:
                new_nodes.append(node)
        view.nodes = new_nodes
        _reindex(view)
    return counts


def _add_const(view: GraphView, name: str, value: np.ndarray) -> str:
    while name in view.consts:
        name += "_"
    view.consts[name] = value
    view.shapes[name] = list(value.shape)
    return name


def _place(view: GraphView, fused, nodes: list, removed: set[int], replacement: dict[int, object]) -> None:
    comp = tags.get_component(nodes[0])
    if comp is not None:
        tags.set_component(fused, comp)
    last = max(nodes, key=lambda n: next(i for i, m in enumerate(view.nodes) if m is n))
    for n in nodes:
        removed.add(id(n))
    replacement[id(last)] = fused


def _reindex(view: GraphView) -> None:
    from collections import defaultdict

    consumers: dict[str, list] = defaultdict(list)
    producer: dict[str, object] = {}
    for node in view.nodes:
        for i in node.input:
            if i:
                consumers[i].append(node)
        for o in node.output:
            if o:
                producer[o] = node
    view.consumers = dict(consumers)
    view.producer = producer
