"""Quantized ONNX files hold what they run and nothing else, so they are smaller than FP32.

Before: the float32 original of every quantized (or fp16-converted) weight stayed in the
file as an unused initializer (MobileInst-TopFormer at 640: mixed 50.4 MB vs 44.2 MB FP32,
all-int8 56.0 MB; ONNX Runtime printed one warning per such initializer on load).
benchmarks/artifact_sizes.py prints the figures for the real model.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.export.tags import set_component
from edgeseg.quantize.cache import CalibrationTable, TensorRange
from edgeseg.quantize.plan import PrecisionPlan
from edgeseg.quantize.qdq import quantize_model

COMPS = ("backbone", "neck", "head")


def unused_initializers(model) -> list[str]:
    read = {o.name for o in model.graph.output}

    def walk(graph):
        for n in graph.node:
            read.update(x for x in n.input if x)
            for a in n.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(g)

    walk(model.graph)
    return [t.name for t in model.graph.initializer if t.name not in read]


def stand_in_table(model) -> CalibrationTable:
    names = {i.name for i in model.graph.input} | {o for n in model.graph.node for o in n.output}
    return CalibrationTable("minmax", {n: TensorRange(4.0) for n in names})


def wide_model(shared_weight: bool = False, subgraph_reads: bool = False) -> onnx.ModelProto:
    """Three tagged Conv components whose weights dominate the file (as in a real network):
    the neck's weight is a Constant node (as the TorchScript exporter sometimes writes)."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((64, 16, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    w3 = rng.standard_normal((32, 64, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(64, np.float32), "b1"),
             numpy_helper.from_array(w3, "w3"), numpy_helper.from_array(np.ones(32, np.float32), "b3")]
    nodes = [
        ("backbone", helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1")),
        ("backbone", helper.make_node("Relu", ["c1"], ["r1"], name="relu1")),
        ("neck", helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(w2, "w2"), name="w2_const")),
        ("neck", helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1] * 4, name="conv2")),
        ("head", helper.make_node("Conv", ["c2", "w3", "b3"], ["y"], name="conv3")),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 16, 16])]
    if shared_weight:  # the fp32 head also reads the backbone's weight: it must stay
        nodes.append(("head", helper.make_node("ReduceSum", ["w1"], ["w1_sum"], keepdims=0, name="wsum")))
        outputs.append(helper.make_tensor_value_info("w1_sum", TensorProto.FLOAT, []))
    if subgraph_reads:  # an If branch reads b3 from the enclosing graph only
        inits.append(numpy_helper.from_array(np.array(True), "cond"))
        branch = helper.make_graph([helper.make_node("Identity", ["b3"], ["b3_out"])], "branch", [],
                                   [helper.make_tensor_value_info("b3_out", TensorProto.FLOAT, [32])])
        nodes.append(("head", helper.make_node("If", ["cond"], ["picked"], then_branch=branch,
                                               else_branch=branch, name="if")))
        outputs.append(helper.make_tensor_value_info("picked", TensorProto.FLOAT, [32]))
        nodes[-2][1].input[2] = ""  # conv3 without bias: only the subgraph reads b3
    for comp, n in nodes:
        set_component(n, comp)
    graph = helper.make_graph([n for _, n in nodes], "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 16])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def quantize(model, spec: str):
    plan = PrecisionPlan.parse(spec, COMPS)
    return quantize_model(model, plan, stand_in_table(model) if plan.needs_calibration else None)


def size(model) -> int:
    return len(model.SerializeToString())


@pytest.mark.parametrize("spec, at_most", [("int8", 0.30), ("*=fp16", 0.52),
                                           ("backbone=int8,neck=int8,head=fp16", 0.30)])
def test_quantized_files_are_smaller_than_fp32(spec, at_most):
    src = wide_model()
    q, report = quantize(src, spec)
    assert unused_initializers(q) == []
    assert size(q) / size(src) <= at_most, f"{spec}: {size(q) / size(src):.3f}x of fp32"
    assert report.removed_unused > 0  # the float originals were there to remove
    # Weights are stored as what they run as: int8 (int32 biases), float16, never both.
    dtypes = {t.name: t.data_type for t in q.graph.initializer}
    if spec == "int8":
        assert dtypes[stored(q, "conv1", 1)] == TensorProto.INT8 and dtypes[stored(q, "conv1", 2)] == TensorProto.INT32
        assert "w1" not in dtypes and "w3" not in dtypes
        assert not [n for n in q.graph.node if n.op_type == "Constant"]  # the neck's weight Constant is gone
    if spec == "*=fp16":
        assert dtypes[stored(q, "conv1", 1)] == TensorProto.FLOAT16 and "w1" not in dtypes


def stored(model, node_name: str, slot: int) -> str:
    """The initializer a node's input holds: itself, or what its DequantizeLinear reads."""
    node = next(n for n in model.graph.node if n.name == node_name)
    name = node.input[slot]
    producer = {o: n for n in model.graph.node for o in n.output}
    return producer[name].input[0] if name in producer else name


def test_the_tiny_test_model_keeps_no_float_originals(tmp_path):
    from edgeseg.data.images import select_images, spec_for_model
    from edgeseg.quantize.calibrate import calibrate
    from tests.quant_models import COMPONENTS, make_images, make_model

    path = make_model(tmp_path / "m")
    spec, _ = spec_for_model(path)
    table = calibrate(path, select_images(make_images(tmp_path / "i", n=2), spec, num=2), method="minmax")
    src = onnx.load(path)

    def weight_bytes(m) -> int:  # what holds the weights: initializers and Constant nodes
        return sum(len(t.SerializeToString()) for t in m.graph.initializer) + \
            sum(len(n.SerializeToString()) for n in m.graph.node if n.op_type == "Constant")

    # Margins for a 22 KB model where names and scales weigh as much as the weights.
    for spec_text, at_most in (("int8", 0.6), ("*=fp16", 0.6), ("backbone=int8,neck=int8,head=fp16", 0.6)):
        q, _ = quantize_model(src, PrecisionPlan.parse(spec_text, COMPONENTS), table)
        assert unused_initializers(q) == [], spec_text
        assert weight_bytes(q) / weight_bytes(src) <= at_most, spec_text
        onnx.checker.check_model(q)


def test_quantized_files_carry_no_shape_annotations():
    """value_info was 63 KB of the 2.2 MB all-int8 MobileInst at 256: runtimes infer shapes."""
    from edgeseg.runtimes.onnxruntime import make_session

    src = onnx.shape_inference.infer_shapes(wide_model())
    assert src.graph.value_info
    for spec in ("int8", "*=fp16", "backbone=int8,neck=int8,head=fp16"):
        q, _ = quantize(src, spec)
        assert not q.graph.value_info, spec
        make_session(q, numerics="simulated")  # loads and plans without them
    assert quantize(src, "*=fp32")[0].graph.value_info  # nothing converted: the file as it was


def test_a_weight_still_read_elsewhere_is_kept():
    q, _ = quantize(wide_model(shared_weight=True), "backbone=int8,neck=fp32,head=fp32")
    names = {t.name for t in q.graph.initializer}
    assert "w1" in names and stored(q, "conv1", 1) in names  # the fp32 head still reads the float weight
    assert stored(q, "conv1", 1) != "w1"  # conv1 reads the int8 copy
    assert unused_initializers(q) == []


def test_initializers_read_only_inside_a_subgraph_are_kept():
    q, _ = quantize(wide_model(subgraph_reads=True), "int8")
    assert "b3" in {t.name for t in q.graph.initializer}
    assert unused_initializers(q) == []
    onnx.checker.check_model(q)


def test_onnx_runtime_loads_the_quantized_file_without_unused_initializer_warnings(tmp_path, capfd):
    import onnxruntime as ort

    q, _ = quantize(wide_model(), "backbone=int8,neck=int8,head=fp16")
    path = tmp_path / "q.onnx"
    onnx.save(q, str(path))
    so = ort.SessionOptions()
    so.log_severity_level = 2  # warnings: ORT names every unused initializer it drops
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    sess.run(None, {"x": np.ones((1, 16, 16, 16), np.float32)})
    assert "Removing initializer" not in capfd.readouterr().err
