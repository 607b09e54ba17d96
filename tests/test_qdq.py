"""QDQ / FP16 artifacts: they run in ONNX Runtime, touch exactly the planned components, keep I/O."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from edgeseg.data.images import select_images, spec_for_model
from edgeseg.errors import EdgesegError
from edgeseg.export.tags import get_component
from edgeseg.quantize.cache import CalibrationTable, TensorRange
from edgeseg.quantize.calibrate import calibrate
from edgeseg.quantize.plan import PrecisionPlan
from edgeseg.quantize.qdq import quantize_file, quantize_model
from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime, make_session
from tests.quant_models import COMPONENTS, make_images, make_model


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    root = tmp_path_factory.mktemp("qdq")
    model = make_model(root / "model")
    folder = make_images(root / "images", n=6)
    spec, _ = spec_for_model(model)
    table = calibrate(model, select_images(folder, spec, num=4), method="minmax")
    return model, folder, table


def plan(spec: str) -> PrecisionPlan:
    return PrecisionPlan.parse(spec, COMPONENTS)


def run(path_or_model, x):
    # Simulated Q/DQ: these tests check our quantizer, not ONNX Runtime's fused kernels,
    # which saturate on x86 without VNNI (all-int8 masks cosine 0.955 on AVX2).
    sess = make_session(path_or_model, numerics="simulated")
    return {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, {"image": x}))}


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def sample_input(folder, model):
    spec, _ = spec_for_model(model)
    return next(iter(select_images(folder, spec, num=1, seed=5).feeds()))["image"]


def nodes_of(model, component):
    return [n for n in model.graph.node if get_component(n) == component]


def test_int8_everywhere_runs_and_stays_close(art):
    model_path, folder, table = art
    src = onnx.load(model_path)
    q, report = quantize_model(src, plan("int8"), table)
    onnx.checker.check_model(q)
    x = sample_input(folder, model_path)
    ref, got = run(src, x), run(q, x)
    for name in ref:
        assert got[name].dtype == np.float32 and got[name].shape == ref[name].shape
        assert cosine(ref[name], got[name]) > 0.98, name
        assert not np.array_equal(ref[name], got[name])  # it really is quantized
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == report.quantized_tensors
    # 5 Conv + 2 MatMul with weights + 2 MatMul between activations + 1 Gemm
    mac = {k: v for k, v in report.int8_ops.items() if k in ("Conv", "MatMul", "Gemm")}
    assert sum(mac.values()) == 10
    # The int8 chain continues between them: residual Add, pooling, Resize, layout ops,
    # the attention's scaling (a Div by 4, written as a Mul by 0.25) and Softmax, and the
    # ReLUs folded into their producer's quantization.
    for op in ("Add", "MaxPool", "Resize", "Relu", "Transpose", "Div", "Softmax"):
        assert report.int8_ops.get(op), op
    div = [n for n in q.graph.node if n.name == "/head/Div"]
    assert [n.op_type for n in div] == ["Mul"]
    producer = {o: n for n in q.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    c = producer[div[0].input[1]]  # the reciprocal, quantized per tensor in the activations' type
    assert (inits[c.input[0]].astype(int) - 128) * inits[c.input[1]] == pytest.approx(0.25)
    assert report.fused_activations == 4  # stem, conv1, conv2 and neck.reduce ReLUs
    assert sum(report.quantized_nodes.values()) == sum(report.int8_ops.values())


def test_fp32_components_are_untouched_node_for_node(art):
    model_path, folder, table = art
    src = onnx.load(model_path)
    q, _ = quantize_model(src, plan("backbone=int8"), table)
    producer = {o: n for n in q.graph.node for o in n.output}
    backbone_out = {o for n in nodes_of(src, "backbone") for o in n.output}
    for comp in ("neck", "head"):
        before, after = nodes_of(src, comp), nodes_of(q, comp)
        assert len(before) == len(after), comp
        for b, a in zip(before, after):
            # Same op, attributes and order; an input differs only where it crosses from
            # the int8 backbone, whose int8 nodes write int8 (read through its DQ, as on
            # TFLite and TNN, where a dequantize follows the int8 layer).
            assert (a.op_type, a.name, list(a.output), list(a.attribute)) == \
                (b.op_type, b.name, list(b.output), list(b.attribute)), comp
            for x_before, x_after in zip(b.input, a.input):
                if x_before != x_after:
                    assert x_before in backbone_out, a.name
                    dq = producer[x_after]
                    assert dq.op_type == "DequantizeLinear" and get_component(dq) == "backbone"
                    assert producer[dq.input[0]].input[0] == x_before
    # Every node is tagged, and every new node belongs to the int8 component.
    assert all(get_component(n) for n in q.graph.node)
    new = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert new and {get_component(n) for n in new} == {"backbone"}
    assert [i.name for i in q.graph.input] == ["image"]
    assert [(o.name, o.type.tensor_type.elem_type) for o in q.graph.output] == \
        [(o.name, o.type.tensor_type.elem_type) for o in src.graph.output]
    x = sample_input(folder, model_path)
    assert all(cosine(a, b) > 0.98 for a, b in zip(run(src, x).values(), run(q, x).values()))


def test_float_tensors_are_dequantized_only_for_int8_nodes(art):
    """A tensor a float node writes stays float for every float reader (here: the
    head=int8 plan leaves the neck float; only the head's int8 nodes read its DQ)."""
    model_path, _, table = art
    q, _ = quantize_model(onnx.load(model_path), plan("head=int8"), table)
    dq_out = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    for n in q.graph.node:
        if get_component(n) != "head":
            assert not dq_out.intersection(n.input), n.name


def test_matmul_between_two_activations_gets_both_inputs_quantized(art):
    model_path, _, table = art
    q, _ = quantize_model(onnx.load(model_path), plan("head=int8"), table)
    producer = {o: n for n in q.graph.node for o in n.output}
    mm = [n for n in q.graph.node if n.op_type == "MatMul" and n.name in ("/head/MatMul", "/head/MatMul_1")]
    assert len(mm) == 2
    for n in mm:
        assert [producer[x].op_type for x in n.input] == ["DequantizeLinear", "DequantizeLinear"]
        # both are activations: per-tensor scales taken from the table; a Softmax output
        # (never negative) on [0, amax] with 256 levels, anything else symmetric
        inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
        for x in n.input:
            dq = producer[x]
            src_tensor = producer[dq.input[0]].input[0]
            scale, zp = inits[dq.input[1]], inits[dq.input[2]]
            amax = table.ranges[src_tensor].amax
            writer = producer[src_tensor]
            while writer.op_type in ("Transpose", "Reshape"):  # pass-through: the input's scale
                writer = producer[producer[producer[writer.input[0]].input[0]].input[0]]
            if writer.op_type == "Softmax":  # a probability: [0, observed max], not the KL threshold
                assert (scale, zp) == (np.float32(min(table.ranges[writer.output[0]].max, 1.0) / 255), 0)
            else:
                assert scale.shape == () and (scale, zp) == (np.float32(amax / 127), 128)


def test_weights_are_per_channel_symmetric_on_the_output_axis(art):
    model_path, _, table = art
    src = onnx.load(model_path)
    q, _ = quantize_model(src, plan("int8"), table, activation_dtype="int8")
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    orig = {t.name: numpy_helper.to_array(t) for t in src.graph.initializer}
    src_weight = {n.name: n.input[1] for n in src.graph.node if len(n.input) > 1}
    producer = {o: n for n in q.graph.node for o in n.output}
    checked = 0
    for n in q.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        dq = producer.get(n.input[1])
        if dq is None or dq.input[0] not in inits or inits[dq.input[0]].dtype != np.int8:
            continue  # activation input (attention MatMul)
        wq, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        w = orig[src_weight[n.name]]  # the node keeps its name; its weight is renamed
        expected_axis = {"Conv": 0, "Gemm": 0, "MatMul": 1}[n.op_type]  # Gemm here has transB=1
        assert axis == expected_axis, n.name
        assert np.abs(wq).max() == 127 and wq.min() >= -127
        per = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(1)
        np.testing.assert_allclose(scale, per / 127, rtol=1e-6)
        deq = wq * scale.reshape([-1 if d == axis else 1 for d in range(w.ndim)])
        assert np.abs(deq - w).max() <= scale.max() / 2 + 1e-7
        if n.op_type in ("Conv", "Gemm"):  # bias: int32 on the accumulator's scale
            bdq = producer[n.input[2]]
            assert inits[bdq.input[0]].dtype == np.int32
            xdq = producer[n.input[0]]
            sx = inits[xdq.input[1]]
            np.testing.assert_allclose(inits[bdq.input[1]], sx * scale, rtol=1e-6)
        checked += 1
    assert checked == 8  # 5 Conv + 2 MatMul (Linear) + 1 Gemm


def test_uint8_and_int8_activations_differ_only_on_nonnegative_ranges(art):
    """Both store the same table; uint8 puts a Relu / Softmax output on [0, amax] with 256
    levels (ONNX Runtime folds the Relu only then), int8 keeps the symmetric grid. The
    TensorRT rewrite of the uint8 file is the int8 file."""
    from edgeseg.export.tensorrt.onnx_prep import to_int8_activations

    model_path, folder, table = art
    src = onnx.load(model_path)
    x = sample_input(folder, model_path)
    q8 = quantize_model(src, plan("int8"), table, activation_dtype="int8")[0]
    qu8 = quantize_model(src, plan("int8"), table, activation_dtype="uint8")[0]
    assert [n.op_type for n in q8.graph.node] == [n.op_type for n in qu8.graph.node]  # same placement
    zp_names = {n.input[2] for n in qu8.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    zps = {int(numpy_helper.to_array(t)) for t in qu8.graph.initializer if t.name in zp_names
           and t.data_type == TensorProto.UINT8}
    assert zps == {0, 128}
    converted = to_int8_activations(qu8)[0]
    act_scales = {n.input[1] for n in q8.graph.node if n.op_type == "QuantizeLinear"}
    scales = [(numpy_helper.to_array(t), t.name) for t in q8.graph.initializer if t.name in act_scales]
    conv_inits = {t.name: numpy_helper.to_array(t) for t in converted.graph.initializer}
    for value, name in scales:  # [0, amax] scales x 255/127 = amax / 127, to float rounding
        got = conv_inits[f"{name}_int8"] if f"{name}_int8" in conv_inits else conv_inits[name]
        np.testing.assert_allclose(got, value, rtol=1e-6)
    a, b, c = run(q8, x), run(qu8, x), run(converted, x)
    for k in a:
        assert cosine(c[k], a[k]) > 0.9999 and cosine(a[k], b[k]) > 0.99


def test_fp16_component_has_casts_only_at_its_boundary(art):
    model_path, folder, _ = art
    src = onnx.load(model_path)
    q, report = quantize_model(src, plan("neck=fp16"), None)
    casts = [n for n in q.graph.node if n.op_type == "Cast"]
    # In: the backbone output (read by MaxPool and Add: one cast). Out: the neck output to the head.
    assert len(casts) == report.casts == 2
    assert {get_component(n) for n in casts} == {"neck"}
    to = sorted(next(a.i for a in n.attribute if a.name == "to") for n in casts)
    assert to == [TensorProto.FLOAT, TensorProto.FLOAT16]
    assert [n.SerializeToString() for n in nodes_of(src, "head")] == [n.SerializeToString() for n in nodes_of(q, "head")]
    # Weights of the neck are float16 now; Resize keeps its float32 scales (the spec demands it).
    inits = {t.name: t for t in q.graph.initializer}
    neck_convs = [n for n in nodes_of(q, "neck") if n.op_type == "Conv"]
    assert all(inits[n.input[1]].data_type == TensorProto.FLOAT16 for n in neck_convs)
    resize = next(n for n in q.graph.node if n.op_type == "Resize")
    const = next(n for n in q.graph.node if resize.input[2] in n.output)
    assert const.attribute[0].t.data_type == TensorProto.FLOAT
    # Type annotations agree with the conversion (stale ones make ORT refuse the model).
    vi = {v.name: v.type.tensor_type.elem_type for v in q.graph.value_info}
    conv_out = neck_convs[0].output[0]
    assert vi.get(conv_out, TensorProto.FLOAT16) == TensorProto.FLOAT16
    x = sample_input(folder, model_path)
    ref, got = run(src, x), run(q, x)
    for k in ref:
        assert got[k].dtype == np.float32
        assert cosine(ref[k], got[k]) > 0.999
        assert np.abs(ref[k] - got[k]).max() < 0.05 * max(1.0, np.abs(ref[k]).max())


def test_mixed_plan_and_all_fp16_run(art):
    model_path, folder, table = art
    src = onnx.load(model_path)
    x = sample_input(folder, model_path)
    ref = run(src, x)
    for spec in ("backbone=int8,neck=int8,head=fp16", "*=fp16", "backbone=fp16,neck=int8,head=int8"):
        q, report = quantize_model(src, plan(spec), table)
        got = run(q, x)
        assert all(cosine(ref[k], got[k]) > 0.97 for k in ref), spec
        assert all(get_component(n) for n in q.graph.node)
    q, report = quantize_model(src, plan("*=fp16"), None)
    assert report.casts == 3  # image in, two outputs back to float32
    assert [o.name for o in q.graph.output] == ["logits", "masks"]


def test_quantize_file_refuses_a_table_for_another_model(art, tmp_path):
    model_path, _, table = art
    other = make_model(tmp_path / "other", seed=1)
    out = tmp_path / "other" / "q.onnx"
    with pytest.raises(EdgesegError, match="different model"):
        quantize_file(other, plan("int8"), table, out)
    assert not out.exists()


def test_missing_ranges_and_missing_table_are_clear_errors(art):
    model_path, _, table = art
    src = onnx.load(model_path)
    partial = CalibrationTable("kl", {"image": TensorRange(2.0)}, model_sha256=table.model_sha256)
    with pytest.raises(EdgesegError, match="no range for"):
        quantize_model(src, plan("int8"), partial)
    with pytest.raises(EdgesegError, match="no calibration table"):
        quantize_model(src, plan("backbone=int8"), None)


def test_plan_must_cover_the_graph_and_graph_must_be_tagged(art):
    model_path, _, table = art
    src = onnx.load(model_path)
    with pytest.raises(EdgesegError, match="does not cover component"):
        quantize_model(src, PrecisionPlan({"backbone": "int8"}), table)
    untagged = onnx.load(model_path)
    del untagged.graph.node[0].metadata_props[:]
    with pytest.raises(EdgesegError, match="no component tag"):
        quantize_model(untagged, plan("int8"), table)


def test_corrupt_onnx_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf" * 5)
    with pytest.raises(EdgesegError, match="not a readable ONNX"):
        quantize_file(bad, plan("fp16"), None, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


# ----------------------------------------------------------------------------- CLI
def _cli(args):
    from click.testing import CliRunner

    from edgeseg.cli import cli

    return CliRunner().invoke(cli, args)


def test_cli_quantize_with_fidelity_records_everything(tmp_path):
    model = make_model(tmp_path / "art")
    folder = make_images(tmp_path / "imgs", n=7)
    res = _cli(["calibrate", str(model), "--images", str(folder), "--num", "4"])
    assert res.exit_code == 0, res.output
    table_path = tmp_path / "art" / "tiny.kl.calib.json"
    # No --fidelity-images: the calibration folder's unused images are the held-out set.
    res = _cli(["quantize", str(tmp_path / "art"), "--plan", "mixed", "--calib", str(table_path),
                "--fidelity-num", "10"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "art" / "tiny.mixed.onnx"
    rt = OnnxRuntimeRuntime(out)
    assert {o.name: o.dtype for o in rt.outputs()} == {"logits": "float32", "masks": "float32"}
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    entry = manifest["artifacts"]["tiny.mixed.onnx"]
    assert entry["precision"]["precisions"] == {"backbone": "int8", "neck": "int8", "head": "fp16"}
    assert entry["calibration"]["method"] == "kl" and entry["calibration"]["table"] == "tiny.kl.calib.json"
    fid = entry["fidelity"]
    assert fid["num_images"] == 3  # the 7 images minus the 4 used for calibration: held out
    assert set(fid["components"]) == set(COMPONENTS)
    assert (tmp_path / "art" / "tiny.mixed.fidelity.md").read_text().count("| output |") == 2
    assert [h["step"] for h in manifest["history"]] == ["export", "calibrate", "quantize"]
    res = _cli(["quantize", str(model), "--plan", "int8", "--calib", str(table_path), "--no-fidelity"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["artifacts"]["tiny.int8.onnx"]["fidelity"] is None
    assert not (tmp_path / "art" / "tiny.int8.fidelity.json").exists()


def test_cli_quantize_bad_plan_fails_without_output(tmp_path):
    from edgeseg.cli import main

    model = make_model(tmp_path / "art")
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(model), "--plan", "backbone=int8,decoder=fp16"])
    assert e.value.code == 1
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["manifest.json", "tiny.onnx"]


def test_cli_quantize_help_shows_an_example():
    res = _cli(["quantize", "--help"])
    assert res.exit_code == 0 and "Examples:" in res.output and "--plan" in res.output


def test_added_names_are_short_and_source_names_stay(art):
    """What the quantizer adds is named briefly (half a small int8 file was names), while
    every source node and tensor name that tables and reports key on is unchanged."""
    model_path, folder, table = art
    src = onnx.load(model_path)
    q, _ = quantize_model(src, plan("int8"), table)
    src_nodes = {n.name for n in src.graph.node if n.op_type != "Constant"}
    src_outputs = {o for n in src.graph.node if n.op_type != "Constant" for o in n.output}
    q_nodes = {n.name: n for n in q.graph.node}
    assert src_nodes <= set(q_nodes)
    assert src_outputs <= {o for n in q.graph.node for o in n.output}
    added = [n for n in q.graph.node if n.name not in {m.name for m in src.graph.node}]
    assert added and all(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in added)
    scopes = {n.name.rsplit("/", 1)[0] + "/" for n in src.graph.node if "/" in n.name}
    for n in added:
        scope, _, stem = n.name.rpartition("/")
        assert stem.rstrip("0123456789") in ("Q", "DQ"), n.name
        assert not scope or scope + "/" in scopes, n.name  # placed in a module scope of the source
        assert all(len(x) <= 6 for x in list(n.output) + list(n.input[1:])), n.name
    # identical added constants (every activation zero point of one type) are stored once
    qdq = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    contents = [(a.dtype.str, a.shape, a.tobytes()) for name, a in inits.items() if name in {n.input[2] for n in qdq}]
    assert len(contents) == len(set(contents))
    assert len({n.input[2] for n in qdq if inits[n.input[2]].ndim == 0}) <= 2  # uint8 128 and uint8 0
    x = sample_input(folder, model_path)
    ref = quantize_model(src, plan("int8"), table)[0]
    np.testing.assert_array_equal(run(q, x)["masks"], run(ref, x)["masks"])  # deterministic, runs
