"""The int8 chain of the QDQ writer: which nodes compute in int8, which Q/DQ ONNX Runtime fuses,
constants folded from subgraphs of unsimplified exports (issue 20 item 5)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.errors import EdgesegError
from edgeseg.export.tags import get_component, set_component
from edgeseg.quantize.cache import CalibrationTable, TensorRange
from edgeseg.quantize.calibrate import HistogramCalibrator
from edgeseg.quantize.plan import PrecisionPlan
from edgeseg.quantize.qdq import quantize_model
from edgeseg.runtimes.onnxruntime import make_session


def _tagged(nodes, inputs, outputs, inits, component="decoder", opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    for n in m.graph.node:
        set_component(n, n.name.split("/")[1] if n.name.count("/") > 1 else component)
    return m


def unsimplified_attention(tmp_path):
    """What `edgeseg export --simplifier none` leaves in MobileInst's instance decoder: the
    learned queries expanded to the batch and scaled by 1/sqrt(d) *at run time*, from
    initializers only, then multiplied with the image features."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "query"),
        numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "query_pos"),
        numpy_helper.from_array(np.array([1, 4, 8], np.int64), "shape"),
        numpy_helper.from_array(np.array(0.35, np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w_k"),
    ]
    nodes = [
        helper.make_node("Add", ["query", "query_pos"], ["q_pos"], name="/decoder/Add"),
        helper.make_node("Expand", ["q_pos", "shape"], ["q_b"], name="/decoder/Expand"),
        helper.make_node("Mul", ["q_b", "scale"], ["q_scaled"], name="/decoder/Mul"),
        helper.make_node("MatMul", ["feat", "w_k"], ["k"], name="/decoder/k/MatMul"),
        helper.make_node("Transpose", ["k"], ["k_t"], name="/decoder/Transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q_scaled", "k_t"], ["logits"], name="/decoder/MatMul"),
        helper.make_node("Softmax", ["logits"], ["attn"], name="/decoder/Softmax", axis=-1),
        helper.make_node("MatMul", ["attn", "feat"], ["out"], name="/decoder/MatMul_1"),
    ]
    model = _tagged(nodes, [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 16, 8])],
                    [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8])], inits)
    path = tmp_path / "attn.onnx"
    onnx.save(model, str(path))
    cal = HistogramCalibrator(path)
    feeds = [{"feat": rng.standard_normal((1, 16, 8)).astype(np.float32)} for _ in range(4)]
    cal.collect(feeds, total=4)
    table = CalibrationTable("minmax", cal.compute("minmax"), num_images=4)
    return model, table, feeds[0]


def test_constants_computed_at_run_time_are_weights_not_missing_ranges(tmp_path):
    model, table, feed = unsimplified_attention(tmp_path)
    # The calibrator (rightly) collects no range for tensors computed from constants only...
    assert "q_scaled" not in table and "q_pos" not in table
    # ...and the writer quantized them as activations, asking for those ranges: issue 20 item 5
    # (`edgeseg export mobileinst_test --simplifier none --plan int8`).
    q, report = quantize_model(model, PrecisionPlan({"decoder": "int8"}), table)
    onnx.checker.check_model(q)
    producer = {o: n for n in q.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    mm = next(n for n in q.graph.node if n.name == "/decoder/MatMul")
    dq = producer[mm.input[0]]
    assert dq.op_type == "DequantizeLinear" and dq.input[0] in inits  # a quantized weight, folded
    assert inits[dq.input[0]].dtype == np.uint8  # the activations' type, for the integer MatMul
    # The constant subgraph is gone (its value lives in the weight), nothing else is.
    assert not {"/decoder/Add", "/decoder/Expand", "/decoder/Mul"} & {n.name for n in q.graph.node}
    assert {"query", "query_pos", "scale"}.isdisjoint(inits)
    assert report.int8_ops["MatMul"] == 3
    ref = make_session(model).run(None, feed)[0]
    got = make_session(q, numerics="simulated").run(None, feed)[0]
    cos = float(ref.ravel() @ got.ravel() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.995


def test_a_range_missing_for_a_real_activation_is_still_an_error(tmp_path):
    model, table, _ = unsimplified_attention(tmp_path)
    del table.ranges["feat"]  # read by the key projection and the last MatMul
    with pytest.raises(EdgesegError, match="no range for 1 tensor"):
        quantize_model(model, PrecisionPlan({"decoder": "int8"}), table)


# --------------------------------------------------------------------------- the chain
def conv_block():
    """Conv -> Relu -> MaxPool -> Conv, Add with a skip, Relu, then a float LayerNorm-ish
    tail (ReduceMean / Sub) in the same component, and a float reader in another one."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b1"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3, "w2")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="/net/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/net/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="/net/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="/net/Conv_1"),
        helper.make_node("Add", ["c2", "p1"], ["s"], name="/net/Add"),
        helper.make_node("Relu", ["s"], ["r2"], name="/net/Relu_1"),
        helper.make_node("Conv", ["r2", "w2"], ["c3"], name="/net/Conv_2"),
        helper.make_node("ReduceMean", ["c3"], ["m"], name="/net/ReduceMean", axes=[-1]),
        helper.make_node("Sub", ["c3", "m"], ["y"], name="/net/Sub"),
        helper.make_node("Sigmoid", ["r2"], ["z"], name="/head/Sigmoid"),
    ]
    return _tagged(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)


def table_for(model, amax: float = 4.0):
    names = {i.name for i in model.graph.input} | {o for n in model.graph.node for o in n.output}
    return CalibrationTable("minmax", {n: TensorRange(amax, -amax, amax) for n in names}, num_images=1)


def test_chain_continues_through_pooling_and_add_and_folds_relus():
    model = conv_block()
    q, report = quantize_model(model, PrecisionPlan({"net": "int8", "head": "fp32"}), table_for(model))
    assert report.int8_ops == {"Conv": 3, "Relu": 2, "MaxPool": 1, "Add": 1}
    assert report.fused_activations == 2  # both ReLUs follow an int8 producer that only they read
    producer = {o: n for n in q.graph.node for o in n.output}
    readers = {}
    for n in q.graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    # Conv -> Relu with no Q/DQ between them; the Relu's output on [0, amax] (uint8, zero point 0).
    assert [r.op_type for r in readers["c1"]] == ["Relu"] and [r.op_type for r in readers["s"]] == ["Relu"]
    q_r1 = readers["r1"][0]
    assert q_r1.op_type == "QuantizeLinear" and len(readers["r1"]) == 1
    assert inits[q_r1.input[2]] == 0 and inits[q_r1.input[1]] == np.float32(4.0 / 255)
    # MaxPool keeps its input's quantization: the very same scale / zero point initializers.
    q_p1 = readers["p1"][0]
    assert (q_p1.input[1], q_p1.input[2]) == (q_r1.input[1], q_r1.input[2])
    # An int8 node's output is read dequantized by every reader: the float Sigmoid of
    # another component included (the producer writes int8), so the Relu can fold.
    sig = next(n for n in q.graph.node if n.op_type == "Sigmoid")
    assert producer[sig.input[0]].op_type == "DequantizeLinear" and get_component(sig) == "head"
    # The float tail stays float: the last Conv's output is quantized (its producer is
    # int8), ReduceMean and Sub read it dequantized; they are not rewritten.
    assert {n.op_type for n in readers["c3"]} == {"QuantizeLinear"}
    for name in ("/net/ReduceMean", "/net/Sub"):
        n = next(m for m in q.graph.node if m.name == name)
        assert producer[n.input[0]].op_type == "DequantizeLinear"
    # Graph outputs stay float32 tensors written by float nodes.
    assert producer["y"].op_type == "Sub" and producer["z"].op_type == "Sigmoid"


def test_onnx_runtime_fuses_the_chain_into_integer_kernels(tmp_path):
    import onnxruntime as ort

    from edgeseg.runtimes.onnxruntime import session_options

    model = conv_block()
    q, _ = quantize_model(model, PrecisionPlan({"net": "int8", "head": "fp32"}), table_for(model))
    so = session_options(numerics="fused")
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(q.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 3 and "QLinearAdd" in ops
    assert "Relu" not in ops and "Conv" not in ops  # every Relu folded, no float Conv left
    # Q/DQ left: the graph input's Q, and one DQ per float reader (Sigmoid, ReduceMean, Sub).
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 3


def test_nodes_whose_output_no_int8_node_reads_stay_float():
    """Only what pays: an Add between quantized tensors whose sum only float nodes read
    (a transformer's residual stream read by LayerNorm) is not made int8."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="/net/MatMul"),
             helper.make_node("Add", ["a", "x"], ["s"], name="/net/Add"),
             helper.make_node("ReduceMean", ["s"], ["y"], name="/net/ReduceMean", axes=[-1])]
    model = _tagged(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    q, report = quantize_model(model, PrecisionPlan({"net": "int8"}), table_for(model))
    assert report.int8_ops == {"MatMul": 1}
    add = next(n for n in q.graph.node if n.op_type == "Add")
    assert "s" not in {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert add.output == ["s"]


@pytest.mark.slow
def test_cli_export_without_simplifier_then_int8(tmp_path):
    """Issue 20 item 5, end to end: `edgeseg export mobileinst_test --simplifier none --plan
    int8 --calib DIR` stopped with 'calibration table has no range for 2 tensor(s)'."""
    import contextlib
    import io

    from edgeseg.cli import main
    from tests.quant_models import make_images

    images = make_images(tmp_path / "imgs", n=3, size=(64, 64))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main(["export", "mobileinst_test", "--input-size", "64", "--simplifier", "none", "--plan", "int8",
              "--calib", str(images), "-o", str(tmp_path / "out")])
    assert e.value.code == 0, err.getvalue()
    q = onnx.load(str(tmp_path / "out" / "mobileinst_test.int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
