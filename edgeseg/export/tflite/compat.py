"""TFLite preflight: ONNX ops that would become Flex ops, convert wrongly, or lose precision.

edgeseg converts with onnx2tf and TFLite's converter restricted to *builtin* ops: a
TensorFlow op without a builtin kernel would need the Flex delegate, which LiteRT on a
phone does not have. The tables below were measured, one ONNX op per graph, with
``benchmarks/tflite_op_support.py`` (onnx2tf 1.29.24, TensorFlow 2.21, LiteRT 2.3.0,
graphs simplified by onnxslim as ``edgeseg export`` does). Re-run it after upgrading.

``--plan`` adds int8 warnings: TFLite fixes the output scale of an int8 SOFTMAX at
1/256, so over many elements (attention over H*W positions) most probabilities round
to zero.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgeseg.export.compat import CompatReport

# ONNX op -> fix, for ops whose TensorFlow op has no TFLite builtin kernel (measured).
FLEX_OPS: dict[str, str] = {
    "Erf": "GELU exported at opset 17 becomes Erf: use GELU(approximate='tanh') (exports Tanh; verified to "
           "convert) or ReLU/SiLU",
    "Atan": "compute the angle on the host, or approximate atan with a polynomial (Mul/Add)",
    "Asin": "compute it on the host, or replace it with a polynomial approximation",
    "Acos": "compute it on the host, or replace it with a polynomial approximation",
    "Sinh": "write sinh(x) as (exp(x) - exp(-x)) / 2",
    "Cosh": "write cosh(x) as (exp(x) + exp(-x)) / 2",
    "Tan": "write tan(x) as sin(x) / cos(x)",
}

TOPK_FIX = ("select the top-k on the host in post-processing, or rank in the graph: Sign of pairwise "
            "differences summed per row gives each element's rank, and relu(1 - |rank - k|) is a one-hot "
            "matrix whose MatMul gathers the top k (e.g. FastInst's query_select='rank')")

# ONNX op -> (what goes wrong, fix): converted, but onnx2tf fails or the result is wrong (measured).
BROKEN_OPS: dict[str, tuple[str, str]] = {
    "TopK": ("onnx2tf fails on TopK (k given as a 1-D tensor, as ONNX requires)", TOPK_FIX),
    "CumSum": ("onnx2tf keeps the ONNX axis after transposing 4-D tensors to NHWC: wrong values",
               "do the cumulative sum on the host, or on a tensor reshaped to 2-D"),
    "Trilu": ("onnx2tf's Trilu gives wrong values on 4-D tensors", "apply the triangular mask as a constant Mul"),
    "Einsum": ("onnx2tf fails or gets the layout wrong for Einsum on NCHW tensors (e.g. 'bchw,bchw->bhw')",
               "write the contraction as MatMul / Mul + ReduceSum"),
    "NonZero": ("the output shape depends on the data; TFLite models here need static shapes",
                "do it on the host in post-processing"),
}

# An int8 SOFTMAX has output scale 1/256: values under 1/512 become 0. Warn when the
# softmax runs over more elements than that resolution can represent as a uniform value.
SOFTMAX_INT8_MAX_ELEMENTS = 128


def _onnx2tf_ops_dir() -> Path | None:
    # Look at the files, never import onnx2tf: its __init__ imports TensorFlow (seconds).
    spec = importlib.util.find_spec("onnx2tf")
    if spec is None or not spec.submodule_search_locations:
        return None
    ops = Path(next(iter(spec.submodule_search_locations))) / "ops"
    return ops if ops.is_dir() else None


def _onnx2tf_has(op_type: str, ops_dir: Path | None) -> bool | None:
    """Whether onnx2tf has a converter for ``op_type`` (None when onnx2tf is not installed)."""
    if ops_dir is None:
        return None
    return (ops_dir / f"{op_type}.py").is_file()


def _shapes(model) -> dict[str, list[int]]:
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shapes only refine warnings; never block the check on them
        inferred = model
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = dims
    return out


def _softmax_length(node, shapes: dict[str, list[int]]) -> int | None:
    shape = shapes.get(node.input[0]) if node.input else None
    if not shape or any(d <= 0 for d in shape):
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    return int(shape[axis % len(shape)])


def check(onnx_model, device: str | None = None, plan=None) -> CompatReport:
    """The TFLite compat report for ``onnx_model`` (a ModelProto). ``device`` is not used:
    one LiteRT build (XNNPACK) runs the same ops on every ARM and x86 CPU."""
    from edgeseg.export.tags import get_component

    report = CompatReport(target="tflite", device=device, checked_nodes=len(onnx_model.graph.node))
    inits = {i.name for i in onnx_model.graph.initializer}
    for inp in onnx_model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            report.add("(input)", inp.name, "", "error", "the input shape is not static",
                       "export with a fixed --input-size (TFLite with XNNPACK needs static shapes)")
    shapes = _shapes(onnx_model) if plan is not None else {}
    # Per node: a unit of the plan (instance_decoder/cls_head=fp16) overrides its component.
    node_precision = {}
    if plan is not None and plan.exceptions:
        from edgeseg.quantize.units import node_precisions

        node_precision = node_precisions(onnx_model, plan)
    ops_dir = _onnx2tf_ops_dir()
    missing_converters: dict[str, bool | None] = {}
    for node in onnx_model.graph.node:
        comp = get_component(node) or ""
        where = node.name or node.op_type
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            report.add(op, where, comp, "error", f"custom-domain op {node.domain}::{op} has no TFLite equivalent",
                       "export with standard ONNX ops only")
            continue
        if op in FLEX_OPS:
            report.add(op, where, comp, "error",
                       f"{op} becomes a TensorFlow (Flex) op with no TFLite builtin kernel; LiteRT cannot run it",
                       FLEX_OPS[op])
            continue
        if op in BROKEN_OPS:
            reason, fix = BROKEN_OPS[op]
            report.add(op, where, comp, "error", reason, fix)
            continue
        if op not in missing_converters:
            missing_converters[op] = _onnx2tf_has(op, ops_dir)
        if missing_converters[op] is False:
            report.add(op, where, comp, "error", f"onnx2tf has no converter for {op}",
                       "replace it with standard ops, or do it on the host")
            continue
        if op == "Softmax" and plan is not None and node_precision.get(node.name, plan.precision_of(comp)) == "int8":
            n = _softmax_length(node, shapes)
            if n is not None and n > SOFTMAX_INT8_MAX_ELEMENTS:
                report.add(op, where, comp, "warn",
                           f"int8 Softmax over {n} elements: TFLite fixes the output scale at 1/256, so "
                           f"probabilities under 0.002 (uniform would be {1 / n:.4f}) become 0",
                           f"keep {_unit_hint(node.name, comp)} in fp16 or fp32 in the plan")
    return report


def _unit_hint(node_name: str, component: str) -> str:
    """What a plan can keep float for one node: its innermost module scope as a unit
    (``head/attn=fp16``), or its component when the node sits directly in it."""
    from edgeseg.quantize.units import scope_of

    scope = scope_of(node_name)
    if component and scope[:1] == [component] and len(scope) > 1:
        return f"{component} (or just {'/'.join(scope)})"
    return component or "this component"
