"""Short names for what the quantizer adds to a graph, and one copy of identical constants.

A QDQ graph of a small network is mostly names: the synthetic MobileInst at 256 has 384
float nodes and, all-int8, 1158 nodes after quantization. Named after the tensor they
serve (``/backbone/SIM.1/act/Constant_output_0_DequantizeLinear`` reading
``..._quantized``, ``..._scale``, ``..._zero_point``), the added nodes, tensors and
initializers took ~0.45 MB of a 2.52 MB file (weights: 2.0 MB), which put the int8
artifact at 0.35x of fp32 where the weights alone are 0.28x.

What stays as it was: every tensor and node name of the source graph (node-error reports,
fidelity and calibration tables key on them) and the graph's inputs and outputs. What
changes, only for names the quantizer created:

* node names keep the module scope of what they serve (``/backbone/SIM.1/act/DQ17``), so
  layer groups and Model Explorer's grouping by scope still place them;
* tensors and initializers become a role letter and a number (``q17`` a QuantizeLinear
  output, ``d17`` a DequantizeLinear output, ``s17`` a scale, ``z3`` a zero point,
  ``w17`` a quantized weight); the fp16 pass's tensors and casts keep their names (the
  source name + ``_fp16``: fidelity and the ORT profile read them);
* added initializers with identical type, shape and bytes are stored once (every
  activation zero point of one type is the same scalar).
"""

from __future__ import annotations

from collections import defaultdict

# Short node-name stems of the nodes renamed.
_NODE_STEM = {"QuantizeLinear": "Q", "DequantizeLinear": "DQ"}
# Prefix of an added tensor by the op that writes it, and of an added initializer by
# the (op, input slot) reading it.
_OUTPUT_PREFIX = {"QuantizeLinear": "q", "DequantizeLinear": "d"}
_INIT_PREFIX = {1: "s", 2: "z", 0: "w"}


def _scope(name: str) -> str:
    """``/a/b/Conv_output_0`` -> ``/a/b/``; a name without a scope -> ``""``."""
    cut = name.rfind("/")
    return name[:cut + 1] if cut > 0 else ""


def _readers(graph) -> dict[str, list]:
    """Tensor name -> [(node, input slot)] of the top-level nodes reading it."""
    readers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for k, x in enumerate(n.input):
            if x:
                readers[x].append((n, k))
    return readers


def compact_added_names(model, source_tensors: set[str], source_nodes: set[str]) -> dict[str, int]:
    """Rename in place the Q/DQ nodes, their output tensors and the initializers only they
    read, where the name is not one of ``source_tensors`` / ``source_nodes``; return counts."""
    from onnx import numpy_helper

    from edgeseg.quantize.qdq import _names_read

    g = model.graph
    # Names read inside subgraphs (If / Loop bodies) stay: only top-level readers are rewritten.
    in_subgraphs = set().union(*(_names_read(a.g) for n in g.node for a in n.attribute if a.HasField("g")),
                               *(_names_read(s) for n in g.node for a in n.attribute for s in a.graphs))
    keep = set(source_tensors) | {i.name for i in g.input} | {o.name for o in g.output} | in_subgraphs
    taken = keep | set(source_nodes) | {t.name for t in g.initializer} | {n.name for n in g.node} \
        | {o for n in g.node for o in n.output}
    counters: dict[str, int] = defaultdict(int)

    def fresh(stem: str) -> str:
        while True:
            counters[stem] += 1
            name = f"{stem}{counters[stem]}"
            if name not in taken:
                taken.add(name)
                return name

    readers = _readers(g)

    def qdq_only(name: str) -> bool:
        return bool(readers.get(name)) and all(n.op_type in _NODE_STEM for n, _ in readers[name])

    # 1. Added initializers that only Q/DQ nodes read (quantized weights, scales, zero
    #    points): identical ones stored once, the rest renamed by role.
    rename: dict[str, str] = {}
    first_by_content: dict[tuple, str] = {}
    kept_inits = []
    for t in g.initializer:
        if t.name in keep or not qdq_only(t.name):
            kept_inits.append(t)
            continue
        key = (t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
        if key in first_by_content:
            rename[t.name] = first_by_content[key]
            continue
        new = fresh(_INIT_PREFIX.get(readers[t.name][0][1], "c"))
        first_by_content[key] = new
        rename[t.name] = new
        t.name = new
        kept_inits.append(t)
    deduplicated = len(g.initializer) - len(kept_inits)
    if deduplicated:
        del g.initializer[:]
        g.initializer.extend(kept_inits)

    # 2. Added tensors written by Q/DQ nodes. (The fp16 pass's ``<name>_fp16`` tensors keep
    #    their names: they are source tensors in float16, and fidelity reads them by name.)
    for n in g.node:
        if n.op_type not in _NODE_STEM:
            continue
        for k, o in enumerate(n.output):
            if o and o not in keep:
                rename[o] = fresh(_OUTPUT_PREFIX[n.op_type])
                n.output[k] = rename[o]

    # 3. Readers, and the shape annotations of renamed tensors.
    for n in g.node:
        for k, x in enumerate(n.input):
            if x in rename:
                n.input[k] = rename[x]
    for vi in g.value_info:
        if vi.name in rename:
            vi.name = rename[vi.name]

    # 4. Added nodes: the scope of the source tensor or node they serve, and a short stem.
    readers = _readers(g)  # by the new names
    renamed_nodes = 0
    for n in g.node:
        if n.name in source_nodes or n.op_type not in _NODE_STEM:
            continue
        scope = _scope(n.name)
        if not scope:
            # A weight's DQ (``onnx::Conv_12_DequantizeLinear``) carries no scope: take its reader's.
            for reader, _ in readers.get(n.output[0], []) if n.output else []:
                if reader.name in source_nodes:
                    scope = _scope(reader.name)
                    break
        n.name = fresh(scope + _NODE_STEM[n.op_type])
        renamed_nodes += 1
    return {"tensors": len(rename), "nodes": renamed_nodes, "deduplicated_initializers": deduplicated}
