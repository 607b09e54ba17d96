"""Tagged ONNX -> in-memory TNN model -> ``<name>.tnnproto`` + ``<name>.tnnmodel``.

``convert`` turns every node into TNN layers and collects *every* node it cannot
convert (rather than stopping at the first, as onnx2tnn does by asserting). ``export_tnn``
then refuses, with one error that lists them all, or when the ARM preflight fails; it
applies the precision plan (half weights for fp16 components, quantized layers for int8
components), serialises both files in memory and only then writes them atomically, and
records the artifact in the manifest with the TNNTest flags it needs.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.export import tags
from edgeseg.export.tnn import format as fmt
from edgeseg.export.tnn.fuse import fuse_patterns
from edgeseg.export.tnn.graph import GraphView, build_view
from edgeseg.export.tnn.names import NameMap
from edgeseg.export.tnn.ops import CONVERTERS, NO_MAPPING_FIXES, ConversionIssue, Context

DEVICES = ("arm", "x86")


@dataclass
class ConversionProblem:
    op_type: str
    node: str
    component: str
    reason: str
    fix: str


@dataclass
class Conversion:
    """The result of converting a graph, before any precision is applied."""

    model: fmt.TnnModel
    view: GraphView
    names: NameMap
    alias: dict[str, str]
    range_source: dict[str, str]  # TNN blob -> ONNX tensor whose calibration range applies
    problems: list[ConversionProblem]
    fused: dict[str, int]
    # NCHW-only layers written so that NC4HW4 and NCHW memory agree (int8 networks on ARM).
    layout_agnostic: set[str] = field(default_factory=set)

    def output_map(self) -> dict[str, str]:
        """ONNX output name -> TNN blob name."""
        return {o: self.alias.get(o, self.names.blobs.get(o, o)) for o in self.view.outputs}

    def tensor_shape(self, blob: str) -> list[int] | None:
        """Static shape of a blob that is an ONNX tensor (None for blobs only TNN has, e.g. a Pad's output)."""
        tensor = self.range_source.get(blob)
        if not tensor or self.names.blobs.get(tensor) != blob:
            return None
        return self.view.static_shape(tensor)


def _load(onnx_path_or_model) -> tuple[Any, Path | None]:
    import onnx

    if isinstance(onnx_path_or_model, (str, os.PathLike)):
        path = Path(onnx_path_or_model)
        if not path.is_file():
            raise EdgesegError(f"ONNX file {path} not found", "export one with `edgeseg export MODEL`")
        try:
            return onnx.load(str(path)), path
        except Exception as e:  # noqa: BLE001 - protobuf raises several types
            raise EdgesegError(f"cannot read {path} as ONNX: {e}", "pass a .onnx file written by `edgeseg export`") from e
    return onnx_path_or_model, None


def convert(onnx_model, nc4hw4_only: bool = False) -> Conversion:
    """Convert every node; problems are collected, not raised.

    ``nc4hw4_only`` avoids TNN layers whose ARM kernels exist only for the NCHW layout
    (LayerNorm, MatMul with a constant weight, Squeeze/Unsqueeze) where an equivalent with
    an NC4HW4 kernel exists: TNN inserts no layout reformat layers in networks with int8
    layers, so on ARM such a network must be NC4HW4 from end to end. A MatMul of two
    activations (attention), which has only an NCHW kernel, is written as 2-D MatMuls
    whose operands have the same memory in both layouts (``ops._matmul_layout_agnostic``).
    """
    view = build_view(onnx_model)
    fused = fuse_patterns(view, layernorm=not nc4hw4_only)
    ctx = Context(view=view, nc4hw4_only=nc4hw4_only)
    problems: list[ConversionProblem] = []

    inputs: dict[str, tuple[list[int], int]] = {}
    for name in view.inputs:
        shape = view.static_shape(name)
        if shape is None:
            problems.append(ConversionProblem("(input)", name, "", f"input {name!r} has a dynamic shape "
                                              f"{view.shapes.get(name)}", "export with a fixed --input-size"))
            shape = [max(d or 1, 1) for d in view.shapes.get(name, [1])]
        inputs[ctx.blob(name)] = (shape, fmt.DTYPE_CODES["float32"])

    for node in view.nodes:
        if id(node) in ctx.absorbed:
            continue
        ctx.node = node
        ctx.component = tags.get_component(node) or ""
        fn = CONVERTERS.get(node.op_type)
        if fn is None:
            problems.append(ConversionProblem(
                node.op_type, node.name, ctx.component, f"no TNN layer for ONNX op {node.op_type}",
                NO_MAPPING_FIXES.get(node.op_type, "replace it with supported ops (`edgeseg check` lists them)")))
            continue
        try:
            fn(ctx, node)
        except ConversionIssue as e:
            problems.append(ConversionProblem(node.op_type, node.name, ctx.component, e.reason, e.fix))

    outputs = []
    for name in view.outputs:
        if name in view.consts and name not in ctx.alias:
            problems.append(ConversionProblem("(output)", name, "", f"output {name!r} is a constant",
                                              "return only tensors computed from the input"))
            continue
        outputs.append(ctx.alias.get(name) or ctx.names.blob(name))
    model = fmt.TnnModel(inputs=inputs, outputs=outputs, layers=ctx.layers, constants=ctx.constants)
    if not problems:
        _check_wiring(model)
    return Conversion(model=model, view=view, names=ctx.names, alias=ctx.alias, range_source=ctx.range_source,
                      problems=problems, fused=fused, layout_agnostic=set(ctx.layout_agnostic))


def _check_wiring(model: fmt.TnnModel) -> None:
    """Every layer input is an input, a constant or an earlier layer's output (a writer bug otherwise)."""
    known = set(model.inputs) | set(model.constants)
    for layer in model.layers:
        for b in layer.inputs:
            if b not in known:
                raise RuntimeError(f"TNN writer bug: layer {layer.name} reads blob {b!r} that nothing produced")
        known.update(layer.outputs)
    for o in model.outputs:
        if o not in known:
            raise RuntimeError(f"TNN writer bug: output {o!r} is produced by no layer")


# --------------------------------------------------------------------------- precision

# Resource fields that hold float weights, per layer type (fp16 plans store them half).
# Every backend converts these when it loads them: ARM, and on x86 and the naive CPU
# backend the Convolution / InnerProduct / MatMul / BatchNorm / binary-op layers turn a
# half resource into float32 (ConvertHalfResource) before running.
#
# Constant blobs (the constant map: LayerNorm's scale and bias) are NOT in this list and
# stay float32 in every plan: TNN's x86 and naive backends copy a constant blob into a
# blob of the stored data type unconverted (RawBuffer2Blob) and their LayerNorm kernels
# read it as float32, so half constants gave NaN outputs on x86 (found with a TNN x86
# build; only ARM converts them). float32 constants are right everywhere: ARM converts
# them to its network precision itself, and they are a few hundred bytes.
HALF_FIELDS = {"Convolution": ("filter", "bias"), "InnerProduct": ("weight", "bias"), "MatMul": ("weight",),
               "BatchNormCxx": ("scale", "bias"), "Add": ("element",), "Sub": ("element",),
               "Mul": ("element",), "Div": ("element",), "Maximum": ("element",), "Minimum": ("element",)}


def apply_half_weights(model: fmt.TnnModel, components: set[str]) -> int:
    """Store the float layer resources of ``components`` as float16; return how many arrays.

    Constant blobs are left float32 (see :data:`HALF_FIELDS`)."""
    count = 0
    for layer in model.layers:
        if layer.component not in components:
            continue
        for key in HALF_FIELDS.get(layer.type, ()):
            arr = (layer.resource or {}).get(key)
            if arr is not None and np.asarray(arr).dtype == np.float32 and np.asarray(arr).size:
                layer.resource[key] = np.asarray(arr).astype(np.float16)
                count += 1
    return count


def test_flags(proto_name: str, device: str, precisions: set[str]) -> list[str]:
    """TNNTest arguments for this file. TNN picks one precision per network:
    ``-pr HIGH`` is fp32; NORMAL runs fp16 kernels where they exist on ARMv8.2 (LOW is
    bfloat16, not fp16). A network with int8 layers runs its float layers in fp32."""
    pr = "NORMAL" if "fp16" in precisions and "int8" not in precisions else "HIGH"
    return ["-mt", "TNN", "-mp", proto_name, "-dt", "ARM" if device == "arm" else "X86", "-pr", pr]


# --------------------------------------------------------------------------- export


@dataclass
class TnnExportResult:
    proto_path: Path
    model_path: Path
    device: str
    layers: int
    layer_types: dict[str, int]
    precisions: dict[str, str]  # component (and unit of the plan, as component/module) -> precision
    test_flags: list[str]
    name_map: dict[str, Any]
    half_arrays: int = 0
    quantized_layers: list[str] = field(default_factory=list)
    kept_float: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    fused: dict[str, int] = field(default_factory=dict)
    manifest_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"proto": self.proto_path.name, "model": self.model_path.name, "device": self.device,
                "layers": self.layers, "layer_types": self.layer_types, "precisions": self.precisions,
                "test_flags": self.test_flags, "half_arrays": self.half_arrays,
                "quantized_layers": len(self.quantized_layers), "kept_float": self.kept_float,
                "warnings": self.warnings, "fused": self.fused}


def _components(onnx_model) -> list[str]:
    seen: dict[str, None] = {}
    for node in onnx_model.graph.node:
        seen.setdefault(tags.get_component(node) or "", None)
    return [c for c in seen if c]


def _check_plan_covers(onnx_model, plan) -> None:
    if plan is not None:
        unknown = [c for c in _components(onnx_model) if c not in plan.precisions]
        if unknown:
            raise EdgesegError(f"the precision plan does not cover components {', '.join(unknown)} of this graph",
                               f"plan every component: {', '.join(_components(onnx_model))}")


def needs_nc4hw4(device: str | None, plan) -> bool:
    """Whether a network for ``device`` with ``plan`` must run NC4HW4 end to end (int8 on ARM)."""
    return (device or "arm") == "arm" and plan is not None and plan.needs_calibration


def tagged_for_plan(onnx_model, plan, other_graph: bool = False):
    """(graph, plain plan) TNN converts: with exceptions below the component level, a copy
    whose units are virtual components, so each layer gets its unit's precision (int8
    Quantized layers only in int8 units, half resources only in fp16 ones)."""
    if plan is None or not plan.exceptions:
        return onnx_model, plan
    from edgeseg.quantize.units import unit_view

    view = unit_view(onnx_model, plan, other_graph=other_graph)
    return view.model, view.plan


def preflight(onnx_path_or_model, plan=None, device: str = "arm", other_graph: bool = False):
    """Convert in memory and refuse, with every reason, a graph that TNN cannot convert or
    that would fail on ``device`` with ``plan``; returns (conversion, compat report).

    Needs only the FP32 graph, never a calibration: ``edgeseg export --to tnn`` runs it
    right after each ONNX graph is written, so an impossible plan (int8 on ARM with
    attention MatMuls) is refused in seconds, before calibration. ``other_graph``: the
    plan was written for another graph of the export (its units absent here are skipped).
    """
    from edgeseg.export.compat import tnn as tnn_compat
    from edgeseg.quantize.plan import PrecisionPlan

    if device not in DEVICES:
        raise EdgesegError(f"unknown TNN device {device!r}", f"use --tnn-device with one of: {', '.join(DEVICES)}")
    onnx_model, _ = _load(onnx_path_or_model)
    _check_plan_covers(onnx_model, plan)
    onnx_model, plan = tagged_for_plan(onnx_model, plan, other_graph)
    conv = convert(onnx_model, nc4hw4_only=needs_nc4hw4(device, plan))
    # Without a plan everything is fp32 (-pr HIGH), so missing fp16 kernels do not matter.
    report = tnn_compat.report_from_conversion(
        conv, device, plan or PrecisionPlan.uniform("fp32", _components(onnx_model) or [""]))
    if report.errors:
        raise report.as_error()
    return conv, report


def export_tnn(onnx_path_or_model, out_dir: str | os.PathLike, plan=None, table=None, device: str = "arm",
               name: str | None = None, check_table: bool = True, other_graph: bool = False) -> TnnExportResult:
    """Write ``<name>.tnnproto`` + ``<name>.tnnmodel`` into ``out_dir``.

    ``plan`` (:class:`~edgeseg.quantize.plan.PrecisionPlan`) picks fp32/fp16/int8 per
    component; int8 needs ``table`` (:class:`~edgeseg.quantize.cache.CalibrationTable`).
    ``device="arm"`` refuses graphs that would fail to load on an ARM phone.
    ``check_table=False`` skips the table's model-hash check, for a graph exported
    together with the calibrated one (a features graph shares its tensor names); every
    tensor still needs a range. A plan's units below the component level (``head/cls=fp16``)
    decide their layers' precision; ``other_graph`` skips units this graph does not have.
    """
    from edgeseg.export.tnn.quant import quantize_model
    from edgeseg.utils import atomic

    if device not in DEVICES:
        raise EdgesegError(f"unknown TNN device {device!r}", f"use --tnn-device with one of: {', '.join(DEVICES)}")
    onnx_model, onnx_path = _load(onnx_path_or_model)
    _check_plan_covers(onnx_model, plan)
    if plan is not None and plan.needs_calibration:
        if table is None:
            raise EdgesegError("the precision plan has int8 components but no calibration table was given",
                               "run `edgeseg calibrate` and pass its table (--calib)")
        if onnx_path is not None and check_table:
            from edgeseg.utils.hashing import sha256_file

            table.check_model(sha256_file(onnx_path), "ONNX file")

    tagged, unit_plan = tagged_for_plan(onnx_model, plan, other_graph)
    conv, report = preflight(tagged, unit_plan, device)

    def precision_of(component: str) -> str:  # component or unit (virtual component)
        return unit_plan.precision_of(component) if unit_plan is not None else "fp32"

    model = conv.model
    precisions = {c: precision_of(c) for c in (_components(tagged) or [""])}
    used = set(precisions.values())
    half = apply_half_weights(model, {c for c, p in precisions.items() if p == "fp16"})
    qreport = None
    if "int8" in used:
        qreport = quantize_model(model, precision_of, table, conv.range_source, conv.tensor_shape)
    warnings = [f"{item.op_type} ({item.component or 'all'}): {item.reason}; {item.fix}" for item in report.warnings]
    if "int8" in used and "fp16" in used:
        warnings.append("TNN runs the float layers of a network with int8 layers in fp32: the fp16 components "
                        "and units keep half weights but compute in fp32")
    if "fp16" in used and "fp32" in used:
        warnings.append("TNN picks one precision per network: with -pr NORMAL the fp32 components and units also "
                        "run fp16 kernels on ARMv8.2; use -pr HIGH to run everything in fp32")

    try:
        proto_text = fmt.proto_text(model)
        model_data = fmt.model_bytes(model)
    except ValueError as e:
        raise EdgesegError(f"cannot write this graph as TNN: {e}", "shorten the offending names") from e

    out = Path(out_dir)
    stem = name or (onnx_path.stem if onnx_path else (onnx_model.graph.name or "model"))
    proto_path, model_path = out / f"{stem}.tnnproto", out / f"{stem}.tnnmodel"
    # Both files are written to temporaries first; either both appear or neither does.
    with atomic.atomic_path(proto_path) as tmp_proto, atomic.atomic_path(model_path) as tmp_model:
        tmp_proto.write_text(proto_text, encoding="utf-8")
        tmp_model.write_bytes(model_data)

    flags = test_flags(proto_path.name, device, used)
    name_map = conv.names.renamed()
    name_map["outputs"] = conv.output_map()
    result = TnnExportResult(
        proto_path=proto_path, model_path=model_path, device=device, layers=len(model.layers),
        layer_types=dict(Counter(layer.type for layer in model.layers)), precisions=precisions,
        test_flags=flags, name_map=name_map, half_arrays=half,
        quantized_layers=qreport.quantized if qreport else [], kept_float=qreport.kept_float if qreport else {},
        warnings=warnings, fused={k: v for k, v in conv.fused.items() if v})
    result.manifest_path = _record_in_manifest(result, out, onnx_path, plan, table)
    return result


def _record_in_manifest(result: TnnExportResult, out: Path, onnx_path: Path | None, plan, table) -> Path | None:
    from edgeseg.export.manifest import Manifest, find_manifest, tool_versions
    from edgeseg.utils.hashing import sha256_file

    found = find_manifest(out) or (find_manifest(onnx_path) if onnx_path else None)
    if found is None:
        return None
    manifest = Manifest.load(found)
    precision = plan.to_dict() if plan is not None else "fp32"
    # Both files' hashes: bench and eval refuse a pair that changed after it was written.
    info = {"test_flags": result.test_flags, "name_map": result.name_map, "device": result.device,
            "model_file": result.model_path.name, "model_sha256": sha256_file(result.model_path),
            "layers": result.layers,
            "quantized_layers": len(result.quantized_layers), "warnings": result.warnings}
    if onnx_path is not None:
        info["source"] = onnx_path.name
    manifest.add_artifact(result.proto_path.name, target="tnn", precision=precision, tnn=info,
                          sha256=sha256_file(result.proto_path),
                          calibration=(table.method if table is not None else None))
    manifest.add_files(result.model_path.name)
    manifest.record("convert", target="tnn", artifact=result.proto_path.name,
                    versions=tool_versions("onnx", "numpy"))
    return manifest.save(out)
