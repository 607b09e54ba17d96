"""TNN preflight: ops with no TNN mapping, and layers that fail or slow down on ARM.

On ARM, TNN creates each layer's kernel from a registry (``REGISTER_ARM_ACC``); a layer
type missing there fails when the network is created, with no fallback (x86 falls back
to TNN's naive CPU kernels). Separately, only some layer types have fp16 kernels
(``REGISTER_ARM_PRECISION_FP16``); with ``-pr NORMAL`` TNN runs the others in fp32 and
inserts fp16<->fp32 reformat layers around them. The tables below are those registries,
as read from TNN's ``source/tnn/device/arm/acc`` (type strings as in ``.tnnproto``).
"""

from __future__ import annotations

from edgeseg.export.compat import CompatReport

ARM_KERNELS = frozenset({
    "Abs", "Acos", "Add", "ArgMaxOrMin", "Asin", "Atan", "BatchNormCxx", "Cast", "Ceil", "Clip", "Concat",
    "Convolution", "Convolution1D", "Cos", "Deconvolution", "DetectionOutput", "Div", "Elu", "Exp", "Expand",
    "Floor", "GLU", "Gather", "GELU", "GridSample", "GroupNorm", "HardSigmoid", "HardSwish", "InnerProduct",
    "InstBatchNormCxx", "Inverse", "LSTMONNX", "LayerNorm", "Log", "LogSigmoid", "MatMul", "Maximum", "Minimum",
    "Mul", "Neg", "Normalize", "PReLU", "Pad", "PadV2", "Permute", "PixelShuffle", "Pooling", "Power",
    "PriorBox", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
    "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Reformat", "ReLU", "ReLU6",
    "Reorg", "Flatten", "Reshape", "RoiAlign", "Rsqrt", "Scale", "ScatterND", "Selu", "ShuffleChannel",
    "Sigmoid", "Sign", "SignedMul", "Sin", "Softmax", "Softplus", "SplitV", "Sqrt", "Squeeze", "StridedSlice",
    "StridedSliceV2", "Sub", "Swish", "Tan", "Tanh", "Tile", "Unsqueeze", "Upsample",
})

ARM_FP16 = frozenset({
    "Add", "BatchNormCxx", "Concat", "Convolution", "Convolution1D", "Deconvolution", "Div", "Expand", "Flatten",
    "Gather", "GLU", "GroupNorm", "InnerProduct", "InstBatchNormCxx", "LayerNorm", "LSTMONNX", "MatMul",
    "Maximum", "Minimum", "Mul", "Permute", "Pooling", "PReLU", "ReLU", "ReLU6", "Reshape", "Scale", "Sigmoid",
    "Softmax", "SplitV", "Squeeze", "Sub", "Swish", "Unsqueeze",
})

# Why a layer has no ARM kernel, and what to change in the model.
NO_ARM_FIXES: dict[str, str] = {
    "Einsum": "use MatMul instead of Einsum (torch.matmul / @, with reshapes)",
    "Shape": "export with static shapes so Shape folds away (`edgeseg export` does by default)",
    "Erf": "use nn.GELU() (the whole Erf pattern fuses into a GELU layer) or a tanh/ReLU activation",
    "Where": "replace where(m, a, b) by m*a + (1-m)*b with a float mask, or do it on the host",
    "Range": "export with static shapes so Range folds to a constant",
    "TopK": "select the top-k on the host after inference, or rank in the graph (Sign of pairwise differences, "
            "summed per row; a one-hot MatMul gathers the top k, e.g. FastInst's query_select='rank')",
    "GatherND": "use Gather on one axis, or index on the host",
}
FP16_FIXES: dict[str, str] = {
    "HardSwish": "keep this component fp32 or replace HardSwish by x*ReLU6(x+3)/6 (ReLU6, Add, Mul run fp16)",
    "HardSigmoid": "keep this component fp32 or replace HardSigmoid by ReLU6(x+3)/6",
    "Upsample": "keep this component fp32, or accept fp32 resizes between fp16 layers (reformats cost time)",
    "Clip": "use ReLU or ReLU6 where the bounds allow (both run fp16)",
    "ReduceMean": "write layer norms so they fuse into LayerNorm, or pool with GlobalAveragePool (fp16)",
    "GELU": "keep this component fp32, or use ReLU/Swish (fp16 kernels)",
}
GENERIC_FP16_FIX = "keep this component fp32 if the fp16<->fp32 reformats around this layer cost too much"

# ARM kernels registered for the NCHW layout only (REGISTER_ARM_LAYOUT). TNN inserts layout
# reformat layers only in float networks (net_optimizer_insert_layout_reformat.cc skips
# quantized ones, and a Reformat layer in a .tnnproto carries data types, not layouts); in
# a network with int8 layers every float blob stays NC4HW4, and these kernels would read it
# as NCHW (wrong results, no error). Checked with a TNN build: an int8 backbone before an
# attention head gave cosine 0.67 on ARM, 0.99999 with TNN's NAIVE kernels. The writer
# avoids them in such networks: LayerNorm, Linear and Squeeze become NC4HW4 layers, and a
# MatMul of two activations becomes 2-D MatMuls whose operands have the same memory in
# both layouts (ops._matmul_layout_agnostic), reported below as a warning.
ARM_NCHW_ONLY = frozenset({"ArgMaxOrMin", "Expand", "Gather", "GroupNorm", "Inverse", "LayerNorm", "LSTMONNX",
                           "MatMul", "Tile", "ScatterND", "Squeeze", "Unsqueeze"})
LAYOUT_AGNOSTIC_NOTE = ("float MatMul of two activations in an int8 network: written as one 2-D MatMul per "
                        "batch (head) with last dims that are multiples of 4, whose NC4HW4 and NCHW memory agree, "
                        "since TNN adds no layout reformats to int8 networks and ARM's MatMul reads NCHW only")
LAYOUT_AGNOSTIC_FIX = ("nothing to do; the split into per-head MatMuls costs a few SplitV / Reshape / Concat layers "
                       "(keep the attention's component fp32 and the rest int8 for the same layers)")
INT8_LAYOUT_FIX = ("TNN cannot run this int8 network on ARM: keep the model float for TNN (fp32/fp16 plan), "
                   "export int8 TNN for --tnn-device x86, or use int8 on another backend (TFLite, TensorRT)")


# Modules whose exported graph TNN's ARM int8 networks can never run, known before the
# export, so `edgeseg export --to tnn --plan <int8>` refuses without exporting anything
# (module class path -> reason). Empty since attention became writable for ARM int8 (2-D
# layout-agnostic MatMuls): whether it is depends on its dims (multiples of 4), which only
# the exported graph shows, so the ONNX-level preflight decides, right after the export
# and before any calibration.
ARM_INT8_BLOCKING_MODULES: dict[str, str] = {}


def model_blockers(model, device: str | None, plan) -> list[tuple[str, str]]:
    """(module path, reason) of every module of the nn.Module ``model`` that stops a TNN
    network with ``plan`` on ``device`` from running; [] when nothing is known to."""
    if (device or "arm") != "arm" or plan is None or not plan.needs_calibration:
        return []
    found = []
    for path, module in model.named_modules():
        cls = type(module)
        reason = ARM_INT8_BLOCKING_MODULES.get(f"{cls.__module__}.{cls.__qualname__}")
        if reason:
            found.append((path, reason))
    return found


def model_blockers_error(found: list[tuple[str, str]]):
    """One error for :func:`model_blockers`' findings (module paths, reason, fix)."""
    from edgeseg.errors import EdgesegError

    where = ", ".join(p for p, _ in found[:4]) + (f" (+{len(found) - 4} more)" if len(found) > 4 else "")
    return EdgesegError(f"int8 TNN on ARM cannot run this model: {found[0][1]} in {where}; in a network with "
                        "int8 layers TNN keeps every blob NC4HW4 and ARM has only an NCHW kernel for it",
                        INT8_LAYOUT_FIX)


def _arm_layer_items(report: CompatReport, conv, plan) -> None:
    from edgeseg.export.tnn.format import base_type

    # A network with int8 layers runs all its float layers in fp32: fp16 kernels never matter.
    fp16_possible = plan is None or not plan.needs_calibration
    for layer in conv.model.layers:
        t = base_type(layer.type)
        where = layer.source or layer.name
        if t not in ARM_KERNELS:
            report.add(t, where, layer.component, "error", f"TNN has no ARM kernel for {t} (the network fails to load)",
                       NO_ARM_FIXES.get(t, "replace it with ops that have ARM kernels, or export for --tnn-device x86"))
            continue
        if t == "Softmax" and layer.params.get("axis") == 0:
            report.add(t, where, layer.component, "error", "ARM Softmax rejects axis 0",
                       "take the softmax over a non-batch axis (reshape so the axis is >= 1)")
        if not fp16_possible and t in ARM_NCHW_ONLY and layer.name in conv.layout_agnostic:
            report.add(t, where, layer.component, "warn", LAYOUT_AGNOSTIC_NOTE, LAYOUT_AGNOSTIC_FIX)
        elif not fp16_possible and t in ARM_NCHW_ONLY:
            what = "a MatMul of two activations" if t == "MatMul" and len(layer.inputs) == 2 else t
            report.add(t, where, layer.component, "error",
                       f"in a network with int8 layers TNN keeps every blob NC4HW4 (no layout reformats) and "
                       f"ARM has only an NCHW kernel for {what}", INT8_LAYOUT_FIX)
        if t == "Pad" and layer.params.get("type") == 2:
            report.add(t, where, layer.component, "error", "ARM Pad supports constant and reflect padding, not edge",
                       "pad with mode='constant' or 'reflect' (F.pad), or replicate the border on the host")
        if t == "StridedSliceV2" and any(st < 0 for st in layer.params.get("strides", [])):
            report.add(t, where, layer.component, "error",
                       "ARM StridedSliceV2 only steps forward (a negative step copies nothing)",
                       "avoid reversed slicing (x.flip / x[..., ::-1]) in the model; reverse on the host")
        if t == "MatMul" and len(layer.inputs) == 2:
            _check_matmul_batch(report, conv, layer, where)
        if t not in ARM_FP16 and fp16_possible:
            precision = plan.precision_of(layer.component) if plan is not None else None
            if precision in (None, "fp16"):
                report.add(t, where, layer.component, "warn",
                           f"no ARM fp16 kernel for {t}: with -pr NORMAL it runs fp32 between reformat layers",
                           FP16_FIXES.get(t, GENERIC_FP16_FIX))


def _check_matmul_batch(report: CompatReport, conv, layer, where: str) -> None:
    """ARM MatMul indexes batch b of each operand as b (or 0 if that operand's batch is 1)."""
    import numpy as np

    shapes = [conv.tensor_shape(b) for b in layer.inputs]
    if any(s is None or len(s) < 2 for s in shapes):
        return
    batches = [int(np.prod(s[:-2])) if len(s) > 2 else 1 for s in shapes]
    lead = [list(s[:-2]) for s in shapes]
    for dims in lead:  # leading 1s change nothing in how batches pair up
        while dims and dims[0] == 1:
            dims.pop(0)
    if batches[0] > 1 and batches[1] > 1 and lead[0] != lead[1]:
        report.add("MatMul", where, layer.component, "error",
                   f"ARM MatMul cannot broadcast batch dims {lead[0]} x {lead[1]} (it pairs batches index by index)",
                   "expand or reshape the operands so their batch dims are equal, or one has batch 1")


def report_from_conversion(conv, device: str | None, plan=None) -> CompatReport:
    device = device or "arm"
    report = CompatReport(target="tnn", device=device, checked_nodes=len(conv.view.nodes))
    for p in conv.problems:
        report.add(p.op_type, p.node, p.component, "error", p.reason, p.fix)
    if device == "arm":
        _arm_layer_items(report, conv, plan)
    return report


def check(onnx_model, device: str | None = None, plan=None) -> CompatReport:
    """The compat report for exporting ``onnx_model`` (a ModelProto) to TNN on ``device``."""
    from edgeseg.errors import EdgesegError
    from edgeseg.export.tnn.writer import DEVICES, convert, needs_nc4hw4, tagged_for_plan

    if device is not None and device not in DEVICES:
        raise EdgesegError(f"unknown TNN device {device!r}", f"use one of: {', '.join(DEVICES)}")
    onnx_model, plan = tagged_for_plan(onnx_model, plan)  # a plan's units: layers at their unit's precision
    # The layers the export would write for this plan (int8 on ARM: NC4HW4 equivalents).
    return report_from_conversion(convert(onnx_model, nc4hw4_only=needs_nc4hw4(device, plan)), device, plan)
