"""ONNX -> TNN: golden structure, exact round trips, numerics against ONNX Runtime, plans, errors.

There is no TNN runtime here, so semantics are checked by running the files we wrote with
tests/tnn_reference.py (TNN's layer semantics in numpy) and comparing with ONNX Runtime
on the source graph.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from edgeseg.errors import EdgesegError
from edgeseg.export.manifest import Manifest
from edgeseg.export.tnn import export_tnn, read_tnn
from edgeseg.export.tnn import format as fmt
from edgeseg.export.tnn.quant import quantize_model
from edgeseg.export.tnn.reader import attach_resources, parse_proto_text
from edgeseg.export.tnn.writer import apply_half_weights, convert
from edgeseg.quantize.plan import PrecisionPlan
from tests import tnn_reference as ref
from tests.tnn_nets import golden_torch_net, make_model, minmax_table, ops_zoo_model, ort_run, vi

COMPONENTS = ["backbone", "neck", "head"]

GOLDEN = [  # (type, inputs, outputs) for the golden net, in order
    ("Convolution", 1, 1), ("Convolution", 1, 1), ("HardSwish", 1, 1), ("Convolution", 1, 1),
    ("Convolution", 1, 1), ("Add", 2, 1),
    ("Pooling", 1, 1), ("Upsample", 1, 1), ("Upsample", 1, 1), ("Concat", 2, 1),
    ("Pooling", 1, 1), ("Reshape", 1, 1), ("Permute", 1, 1), ("MatMul", 1, 1), ("Add", 1, 1),
    ("LayerNorm", 3, 1), ("Permute", 1, 1), ("MatMul", 2, 1), ("Mul", 1, 1), ("Softmax", 1, 1),
    ("MatMul", 2, 1), ("Sigmoid", 1, 1), ("Convolution", 1, 1), ("Reshape", 1, 1), ("MatMul", 2, 1),
    ("Reshape", 1, 1),
]


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    return golden_torch_net(tmp_path_factory.mktemp("golden") / "golden.onnx")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)


def _outputs(result, got, want):
    return {k: (got[result.name_map["outputs"][k]], w) for k, w in want.items()}


def _cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_same_model(a: fmt.TnnModel, b: fmt.TnnModel) -> None:
    assert a.inputs == b.inputs and a.outputs == b.outputs
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers):
        assert (x.type, x.name, x.inputs, x.outputs) == (y.type, y.name, y.inputs, y.outputs)
        assert set(x.params) == set(y.params)
        for key, value in x.params.items():
            if isinstance(value, float):
                assert np.float32(value) == np.float32(y.params[key]), (x.name, key)
            else:
                assert value == y.params[key], (x.name, key)
        assert set(x.resource or {}) == set(y.resource or {}), x.name
        for key, value in (x.resource or {}).items():
            got = y.resource[key]
            if isinstance(value, np.ndarray):
                assert got.dtype == value.dtype and got.shape == value.shape, (x.name, key)
                assert np.array_equal(got, value), (x.name, key)
            else:
                assert got == value, (x.name, key)
    assert set(a.constants) == set(b.constants)
    for key, value in a.constants.items():
        assert b.constants[key].dtype == value.dtype and np.array_equal(b.constants[key], value)
    assert set(a.blob_scales) == set(b.blob_scales)
    for blob, res in a.blob_scales.items():
        for key, value in res.items():
            assert b.blob_scales[blob][key].dtype == value.dtype and np.array_equal(b.blob_scales[blob][key], value)


def _round_trip(model: fmt.TnnModel) -> fmt.TnnModel:
    return attach_resources(parse_proto_text(fmt.proto_text(model)), fmt.model_bytes(model))


# --------------------------------------------------------------------------- structure


def test_golden_structure(golden, tmp_path):
    result = export_tnn(golden, tmp_path)
    model = read_tnn(result.proto_path)
    assert [(layer.type, len(layer.inputs), len(layer.outputs)) for layer in model.layers] == GOLDEN
    by = {layer.name: layer for layer in model.layers}
    stem = by["/backbone/stem/stem.0/Conv"]
    assert stem.params["activation_type"] == 1 and stem.params["bias"] == 1  # BN folded, ReLU fused
    assert by["/backbone/pw/pw.0/Conv"].params["activation_type"] == 2  # ReLU6 (Clip 0..6) fused
    dw = by["/backbone/dw/Conv"].params
    assert (dw["group"], dw["input_channel"], dw["dilation_h"], dw["pad_h"]) == (8, 1, 2, 2)
    assert by["/backbone/grouped/Conv"].params["group"] == 4
    nearest, bilinear = by["/neck/Resize"].params, by["/neck/Resize_1"].params
    assert (nearest["mode"], nearest["output_h"]) == (1, 16)
    assert (bilinear["mode"], bilinear["align_corners"], bilinear["output_w"]) == (2, 0, 16)
    assert by["/head/Softmax"].params["axis"] == 2  # opset 17 default -1, written non-negative
    ln = by["/head/norm/LayerNormalization"]
    assert ln.params["reduce_dims_size"] == 1
    assert [model.constants[b].shape for b in ln.inputs[1:]] == [(16,), (16,)]
    assert by["/head/proj/MatMul"].params["weight_position"] == 1
    assert by["/head/proj/MatMul"].resource["weight"].shape == (32, 16)
    assert by["/head/MatMul"].params["weight_position"] == -1 and by["/head/MatMul"].resource is None
    assert by["/head/AveragePool"].params["kernel_h"] == 4  # adaptive pool exported as a fixed window
    assert result.test_flags == ["-mt", "TNN", "-mp", "golden.tnnproto", "-dt", "ARM", "-pr", "HIGH"]


def test_files_are_exactly_the_serialised_conversion_and_read_back_equal(golden, tmp_path):
    result = export_tnn(golden, tmp_path)
    conv = convert(onnx.load(str(golden)))
    assert result.proto_path.read_text() == fmt.proto_text(conv.model)
    assert result.model_path.read_bytes() == fmt.model_bytes(conv.model)
    _assert_same_model(conv.model, read_tnn(result.proto_path))


def test_golden_numerics_match_onnxruntime(golden, tmp_path, image):
    result = export_tnn(golden, tmp_path)
    got = ref.run(read_tnn(result.proto_path), {"image": image})
    for name, (g, w) in _outputs(result, got, ort_run(golden, {"image": image})).items():
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4, err_msg=name)


def test_ops_zoo_numerics_match_onnxruntime_and_round_trip():
    model = ops_zoo_model()
    conv = convert(model)
    assert conv.problems == []
    types = [layer.type for layer in conv.model.layers]
    # asymmetric conv pads -> a Pad layer, then a conv with no padding; BN folded into it
    assert types[:2] == ["Pad", "Convolution"] and "BatchNormCxx" not in types
    assert conv.model.layers[1].params["pad_h"] == 0 and conv.model.layers[0].params["pad_b"] == 1
    assert {"Power", "Sqrt", "HardSigmoid", "Clip", "StridedSliceV2", "Gather", "ReduceMean",
            "Softmax", "InnerProduct", "SplitV", "Upsample", "PadV2"} - set(types) == {"PadV2"}
    # Squeeze/Unsqueeze become Reshapes (TNN's ARM kernels for them are NCHW-only)
    assert "Squeeze" not in types and "Unsqueeze" not in types
    assert next(layer for layer in conv.model.layers if layer.name == "squeeze").params["shape"] == [1, 3, 5]
    sl = next(layer for layer in conv.model.layers if layer.type == "StridedSliceV2").params
    # ONNX axes [3, 1] are written ascending (ARM walks them in order), negative starts made concrete
    assert sl == {"begins": [0, 10], "ends": [6, 0], "axes": [1, 3], "strides": [1, -2]}
    back = _round_trip(conv.model)
    _assert_same_model(conv.model, back)
    x = np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype(np.float32)
    got = ref.run(back, {"x": x})
    for name, want in ort_run(model, {"x": x}).items():
        np.testing.assert_allclose(got[conv.output_map()[name]], want, atol=1e-5, rtol=1e-4, err_msg=name)


def test_standalone_batchnorm_and_opset11_softmax_axis():
    rng = np.random.default_rng(2)
    inits = {"g": rng.uniform(0.5, 2, 3).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32),
             "m": rng.standard_normal(3).astype(np.float32), "v": rng.uniform(0.5, 2, 3).astype(np.float32)}
    nodes = [helper.make_node("Add", ["x", "x"], ["a"], name="double"),
             helper.make_node("BatchNormalization", ["a", "g", "b", "m", "v"], ["bn"], name="bn"),
             helper.make_node("Softmax", ["bn"], ["y"], axis=1, name="softmax")]  # opset 11: over C*H*W
    model = make_model(nodes, [vi("x", [1, 3, 4, 5])], [vi("y", [1, 3, 4, 5])], inits, opset=11)
    conv = convert(model)
    assert [layer.type for layer in conv.model.layers] == ["Add", "BatchNormCxx", "Reshape", "Softmax", "Reshape"]
    assert conv.model.layers[3].params["axis"] == 1 and conv.model.layers[2].params["shape"] == [1, 60]
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    got = ref.run(_round_trip(conv.model), {"x": x})
    np.testing.assert_allclose(got[conv.output_map()["y"]], ort_run(model, {"x": x})["y"], atol=1e-6, rtol=1e-4)


def test_gelu_and_written_out_layernorm_fuse_into_single_layers(tmp_path):
    import torch
    from torch import nn

    from edgeseg.models.layers import PortableLayerNorm

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.GELU(), PortableLayerNorm(8)).eval()
    with torch.no_grad():
        net[2].weight.uniform_(0.5, 1.5)
        net[2].bias.uniform_(-1, 1)
    path = tmp_path / "gelu_ln.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 4, 8), str(path), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"])
    onnx_ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Erf", "ReduceMean", "Sqrt"} <= onnx_ops
    conv = convert(onnx.load(str(path)))
    assert [layer.type for layer in conv.model.layers] == ["MatMul", "Add", "GELU", "LayerNorm"]
    assert conv.fused == {"GELU": 1, "LayerNorm": 1}
    x = np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32)
    got = ref.run(_round_trip(conv.model), {"x": x})
    np.testing.assert_allclose(got[conv.output_map()["y"]], ort_run(path, {"x": x})["y"], atol=2e-5, rtol=1e-4)


# --------------------------------------------------------------------------- precision plans


def test_fp16_plan_writes_half_weights_only_for_fp16_components(golden, tmp_path, image):
    plan = PrecisionPlan.parse("head=fp16", COMPONENTS)
    result = export_tnn(golden, tmp_path, plan=plan)
    model = read_tnn(result.proto_path)
    by = {layer.name: layer for layer in model.layers}
    for name in ("/backbone/stem/stem.0/Conv", "/backbone/grouped/Conv"):
        assert by[name].resource["filter"].dtype == np.float32
    assert by["/head/mask/Conv"].resource["filter"].dtype == np.float16
    assert by["/head/mask/Conv"].resource["bias"].dtype == np.float16
    assert by["/head/proj/MatMul"].resource["weight"].dtype == np.float16
    assert by["/head/proj/Add"].resource["element"].dtype == np.float16
    ln = by["/head/norm/LayerNormalization"]
    # constant blobs stay float32: x86 and naive TNN read them as float32 whatever they hold
    assert all(model.constants[b].dtype == np.float32 for b in ln.inputs[1:])
    assert result.half_arrays == 5  # mask conv filter+bias, proj MatMul, proj Add, the *0.25
    assert result.test_flags[-2:] == ["-pr", "NORMAL"]
    assert any("one precision per network" in w for w in result.warnings)
    # half weights: the output moves, but only by fp16 rounding
    got = ref.run(model, {"image": image})
    for name, (g, w) in _outputs(result, got, ort_run(golden, {"image": image})).items():
        assert _cos(g, w) > 0.9999 and np.abs(g - w).max() < 1e-2, name


@pytest.mark.parametrize("device", ["arm", "x86", "naive"])
def test_all_fp16_plan_is_smaller_and_still_correct(golden, tmp_path, image, device):
    """Each backend reads the files its own way: x86 and naive read constant blobs (LayerNorm
    scale/bias) as float32 bytes, so half constants gave NaN there (seen with a TNN x86 build)."""
    fp32 = export_tnn(golden, tmp_path / "a")
    fp16 = export_tnn(golden, tmp_path / "b", plan=PrecisionPlan.parse("*=fp16", COMPONENTS),
                      device="x86" if device == "x86" else "arm")
    assert fp16.model_path.stat().st_size < 0.6 * fp32.model_path.stat().st_size
    model = read_tnn(fp16.proto_path)
    assert "LayerNorm" in {layer.type for layer in model.layers} and model.constants
    assert all(arr.dtype != np.float16 for arr in model.constants.values())
    got = ref.run(model, {"image": image}, device=device)
    for name, (g, w) in _outputs(fp16, got, ort_run(golden, {"image": image})).items():
        assert np.isfinite(g).all() and _cos(g, w) > 0.999, name


def test_reference_reads_half_constants_as_x86_does():
    """The interpreter's model of x86/naive: float16 bytes read as float32, the rest past the buffer."""
    half = np.array([1.0, 2.0, 3.0], np.float16)
    seen = ref.read_as_float32(half)
    assert seen[0] == np.frombuffer(half.tobytes()[:4], "<f4")[0] and np.isnan(seen[1:]).all()
    np.testing.assert_array_equal(ref.read_as_float32(np.array([1.5, -2.0], np.float32)), [1.5, -2.0])


@pytest.fixture(scope="module")
def golden_table(golden):
    rng = np.random.default_rng(7)
    feeds = [{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    return minmax_table(onnx.load(str(golden)), golden, feeds)


def test_int8_backbone_payloads_and_folded_scales(golden, golden_table, tmp_path):
    plan = PrecisionPlan.parse("backbone=int8", COMPONENTS)
    # x86: the golden head's attention MatMul cannot live in an int8 network on ARM (see below)
    result = export_tnn(golden, tmp_path, plan=plan, table=golden_table, device="x86")
    model = read_tnn(result.proto_path)
    fp32 = convert(onnx.load(str(golden))).model
    float_by = {layer.name: layer for layer in fp32.layers}
    by = {layer.name: layer for layer in model.layers}
    quantized = [layer for layer in model.layers if fmt.is_quantized(layer.type)]
    assert [layer.type for layer in quantized] == ["QuantizedConvolution"] * 2 + ["QuantizedConvolution"] * 2 + [
        "QuantizedAdd"]
    assert by["/backbone/act/HardSwish"].type == "HardSwish"  # not an int8 layer type: stays float
    assert "/backbone/act/HardSwish" in result.kept_float
    assert all(not fmt.is_quantized(layer.type) for layer in model.layers if layer.name.startswith("/head"))
    for layer in quantized:
        for blob in (*layer.inputs, *layer.outputs):
            res = model.blob_scales[blob]
            assert (res["scale"].dtype, res["zero_point"].dtype, res["bias"].dtype) == (np.float32, np.int8, np.int32)
        if layer.type != "QuantizedConvolution":
            continue
        r, w = layer.resource, float_by[layer.name].resource["filter"]
        out_ch = w.shape[0]
        assert r["filter"].dtype == np.int8 and r["filter"].shape == w.shape
        assert (r["bias"].dtype, r["bias"].shape) == (np.int32, (out_ch,))
        assert (r["zero_point"].dtype, r["zero_point"].shape) == (np.int8, (out_ch,))
        assert (r["scale"].dtype, r["scale"].shape) == (np.float32, (out_ch,))
        in_scale = float(model.blob_scales[layer.inputs[0]]["scale"][0])
        want = np.abs(w.reshape(out_ch, -1)).max(axis=1) / 127.0 * in_scale  # input scale folded in
        np.testing.assert_allclose(r["scale"], want, rtol=1e-6)
        np.testing.assert_allclose(r["filter"].astype(np.float32) * (r["scale"] / in_scale).reshape(-1, 1, 1, 1), w,
                                   atol=float(np.abs(w).max()) / 127)
    # the graph input's scale is the calibration table's amax / 127
    assert model.blob_scales["image"]["scale"][0] == pytest.approx(golden_table.ranges["image"].amax / 127)
    # int8 weights: 1 byte per weight instead of 4
    convs = [layer for layer in quantized if layer.type == "QuantizedConvolution"]
    quant_bytes = sum(layer.resource["filter"].nbytes for layer in convs)
    float_bytes = sum(float_by[layer.name].resource["filter"].nbytes for layer in convs)
    assert quant_bytes * 4 == float_bytes
    _assert_same_model(model, _round_trip(model))


def test_int8_backbone_numerics_track_fp32(golden, golden_table, tmp_path, image):
    plan = PrecisionPlan.parse("backbone=int8", COMPONENTS)
    result = export_tnn(golden, tmp_path, plan=plan, table=golden_table, device="x86")
    got = ref.run(read_tnn(result.proto_path), {"image": image}, device="x86")
    for name, (g, w) in _outputs(result, got, ort_run(golden, {"image": image})).items():
        assert _cos(g, w) > 0.99, name
        assert np.abs(g - w).max() < 0.1 * np.abs(w).max(), name  # magnitudes too, not just direction
        assert not np.allclose(g, w, atol=1e-6), name  # it really went through int8


def test_int8_round_trip_of_in_memory_quantized_model(golden, golden_table):
    conv = convert(onnx.load(str(golden)))
    plan = PrecisionPlan.parse("backbone=int8,neck=int8,head=fp16", COMPONENTS)
    apply_half_weights(conv.model, {"head"})
    report = quantize_model(conv.model, plan.precision_of, golden_table, conv.range_source, conv.tensor_shape)
    assert "/neck/Concat_1" in report.quantized and "/neck/MaxPool" in report.quantized  # follows an int8 Add
    _assert_same_model(conv.model, _round_trip(conv.model))


def test_int8_plan_needs_a_table_and_every_range(golden, golden_table, tmp_path):
    plan = PrecisionPlan.parse("backbone=int8", COMPONENTS)
    with pytest.raises(EdgesegError, match="no calibration table"):
        export_tnn(golden, tmp_path / "a", plan=plan)
    partial = type(golden_table)("minmax", {k: v for k, v in golden_table.ranges.items() if "stem" not in k})
    with pytest.raises(EdgesegError, match="no range") as err:
        export_tnn(golden, tmp_path / "b", plan=plan, table=partial, device="x86")
    assert "calibrate" in err.value.fix
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
    stale = type(golden_table)("minmax", golden_table.ranges, model_sha256="0" * 64)
    with pytest.raises(EdgesegError, match="different ONNX file"):
        export_tnn(golden, tmp_path / "c", plan=plan, table=stale, device="x86")


def test_plan_must_cover_the_graph_components(golden, tmp_path):
    with pytest.raises(EdgesegError, match="does not cover"):
        export_tnn(golden, tmp_path, plan=PrecisionPlan({"backbone": "fp16"}))


# --------------------------------------------------------------------------- names, errors, manifest


def test_names_are_sanitised_and_mapped_back(tmp_path):
    nodes = [helper.make_node("Relu", ["in put:0"], ['a,"b"'], name="my relu, v1"),
             helper.make_node("Sigmoid", ['a,"b"'], ["out 'x'"], name="sig:moid")]
    model = make_model(nodes, [vi("in put:0", [1, 2, 3])], [vi("out 'x'", [1, 2, 3])])
    result = export_tnn(model, tmp_path, name="names")
    text = result.proto_path.read_text()
    for bad in ("in put", "a,", "'x'", "my relu", "sig:moid"):
        assert bad not in text
    back = read_tnn(result.proto_path)
    assert list(back.inputs) == ["in_put_0"]
    assert result.name_map["blobs"]["in put:0"] == "in_put_0"
    assert result.name_map["layers"]["my relu, v1"] == "my_relu__v1"
    out_blob = result.name_map["outputs"]["out 'x'"]
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(1, 2, 3)
    np.testing.assert_allclose(ref.run(back, {"in_put_0": x})[out_blob], 1 / (1 + np.exp(-np.maximum(x, 0))),
                               rtol=1e-6)


def test_unknown_op_is_one_clear_error_and_nothing_is_written(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="ok_relu"),
             helper.make_node("TopK", ["r", "k"], ["v", "i"], axis=-1, name="pick_best"),
             helper.make_node("Where", ["c", "v", "v"], ["y"], name="choose")]
    model = make_model(nodes, [vi("x", [1, 8]), vi("c", [1, 3], onnx.TensorProto.BOOL)], [vi("y", [1, 3])],
                       {"k": np.array([3], np.int64)})
    out = tmp_path / "out"
    with pytest.raises(EdgesegError) as err:
        export_tnn(model, out)
    text = str(err.value)
    assert "2 problem(s)" in text and "TopK" in text and "pick_best" in text and "Where" in text and "choose" in text
    assert "host" in text  # the fix is named
    assert not out.exists()


def test_dynamic_input_is_refused_with_the_fix(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["batch", 3])], [vi("y", ["batch", 3])])
    with pytest.raises(EdgesegError, match="dynamic shape") as err:
        export_tnn(model, tmp_path / "o")
    assert "--input-size" in str(err.value)


def test_manifest_records_the_artifact_and_its_flags(golden, tmp_path):
    Manifest(model="golden", components={c: {"module": c} for c in COMPONENTS}).save(tmp_path)
    plan = PrecisionPlan.parse("*=fp16", COMPONENTS)
    result = export_tnn(golden, tmp_path, plan=plan, device="arm")
    assert result.manifest_path == tmp_path / "manifest.json"
    entry = json.loads(result.manifest_path.read_text())["artifacts"]["golden.tnnproto"]
    assert entry["target"] == "tnn"
    assert entry["tnn"]["test_flags"] == ["-mt", "TNN", "-mp", "golden.tnnproto", "-dt", "ARM", "-pr", "NORMAL"]
    assert entry["tnn"]["model_file"] == "golden.tnnmodel"
    assert entry["tnn"]["name_map"]["outputs"] == {"kernels": "kernels", "masks": "masks"}
    assert entry["precision"]["precisions"] == {c: "fp16" for c in COMPONENTS}


def test_no_manifest_no_entry(golden, tmp_path):
    assert export_tnn(golden, tmp_path / "bare").manifest_path is None
    assert not (tmp_path / "bare" / "manifest.json").exists()


def test_int8_add_and_concat_only_where_tnn_has_int8_kernels():
    from edgeseg.quantize.cache import CalibrationTable, TensorRange

    def layer(t, name, ins, outs, params=None):
        return fmt.TnnLayer(t, name, ins, outs, params or {}, component="c")

    model = fmt.TnnModel(inputs={"a": ([1, 4, 2, 2], 0), "b": ([1, 4, 1, 1], 0), "v": ([1, 4], 0)}, outputs=["y"],
                         layers=[layer("Add", "same", ["a", "a"], ["s"], {"weight_input_index": 1}),
                                 layer("Add", "broadcast", ["s", "b"], ["t"], {"weight_input_index": 1}),
                                 layer("Concat", "cat2d", ["v", "v"], ["u"], {"axis": 1}),
                                 layer("Concat", "cat4d", ["s", "t"], ["y"], {"axis": 1})])
    shapes = {"a": [1, 4, 2, 2], "b": [1, 4, 1, 1], "s": [1, 4, 2, 2], "t": [1, 4, 2, 2], "v": [1, 4],
              "u": [1, 8], "y": [1, 8, 2, 2]}
    table = CalibrationTable("minmax", {k: TensorRange(1.0) for k in shapes})
    report = quantize_model(model, lambda c: "int8", table, {k: k for k in shapes}, shapes.get)
    assert report.quantized == ["same", "cat4d"]
    assert "broadcast" in report.kept_float["broadcast"] and "4-D" in report.kept_float["cat2d"]
    assert set(model.blob_scales) == {"a", "s", "t", "y"}


def test_node_level_refusals_name_the_node_and_the_fix():
    cases = {
        # ceil_mode: ONNX Runtime drops a last window that starts in the padding (3x3), TNN would not (4x4)
        "pool": (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1],
                                  ceil_mode=1, name="pool"), {}, "last-window"),
        # half-pixel nearest with a 1.5x scale picks different pixels than TNN's floor(dst * in / out)
        "resize": (helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest", name="resize"),
                   {"sc": np.array([1, 1, 1.5, 1.5], np.float32)}, "asymmetric"),
        "cast": (helper.make_node("Cast", ["x"], ["y"], to=onnx.TensorProto.INT32, name="cast"), {}, "float"),
        # TNN's INT_MIN "before 0" end is rewritten in place by its shape inference: refuse
        "flip": (helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"], name="flip"),
                 {"s": np.array([-1], np.int64), "e": np.array([-9], np.int64), "a": np.array([3], np.int64),
                  "st": np.array([-1], np.int64)}, "reverse"),
    }
    for key, (node, inits, fix_word) in cases.items():
        model = make_model([node], [vi("x", [1, 1, 5, 5])], [vi("y", None)], inits)
        [problem] = convert(model).problems
        assert problem.node == key and fix_word in problem.fix + problem.reason, (key, problem)
    ok = make_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                      ceil_mode=1, name="pool")], [vi("x", [1, 1, 8, 8])], [vi("y", None)])
    conv = convert(ok)
    assert conv.problems == []
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(ref.run(conv.model, {"x": x})["y"], ort_run(ok, {"x": x})["y"])


def test_nc4hw4_memory_model_agrees_with_nchw_only_for_2d_blobs_with_c_multiple_of_4():
    x = np.arange(2 * 8, dtype=np.float64).reshape(2, 8)
    assert np.array_equal(ref.nchw_kernel_reads(x), x) and np.array_equal(ref.nchw_kernel_wrote(x), x)
    for shape in ((2, 6), (1, 16, 16), (1, 4, 3, 3)):  # padded channels, or spatial dims: they differ
        y = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) + 1
        assert not np.array_equal(ref.nchw_kernel_reads(y), y)
        assert not np.array_equal(ref.nchw_kernel_wrote(y), y)
    z = np.random.default_rng(0).standard_normal((1, 16, 16))
    np.testing.assert_allclose(ref.nchw_kernel_wrote(z.reshape(1, 16, 16)).size, z.size)


def test_int8_on_arm_writes_attention_as_layout_agnostic_2d_matmuls(golden, golden_table, tmp_path, image):
    """TNN adds no layout reformats to an int8 network, and ARM's MatMul reads NCHW only; the
    writer makes every float MatMul of two activations a 2-D one whose operands have the
    same memory in NC4HW4 and NCHW, so an int8 backbone can feed an attention head on ARM."""
    plan = PrecisionPlan.parse("backbone=int8", COMPONENTS)
    result = export_tnn(golden, tmp_path / "arm", plan=plan, table=golden_table)  # ARM: allowed now
    tnn = read_tnn(result.proto_path)
    assert any(fmt.is_quantized(layer.type) for layer in tnn.layers)
    shape_of = {o: layer.params["shape"] for layer in tnn.layers if layer.type == "Reshape" for o in layer.outputs}
    mms = [layer for layer in tnn.layers if layer.type == "MatMul"]
    assert len(mms) == 3  # attention scores, attention x tokens, kernels x features
    for layer in mms:
        for blob in layer.inputs:
            assert len(shape_of[blob]) == 2 and shape_of[blob][-1] % 4 == 0, (layer.name, blob)
    want = ort_run(golden, {"image": image})
    got = ref.run(tnn, {"image": image})  # models the NC4HW4 memory NCHW-only kernels read on ARM
    for name, (g, w) in _outputs(result, got, want).items():
        assert _cos(g, w) > 0.99, name
    # The control: the same int8 network with the batched MatMuls a float network gets is
    # what a TNN build computed wrong on ARM (cosine 0.67); the layout model sees it too.
    plain = convert(onnx.load(str(golden)))
    quantize_model(plain.model, plan.precision_of, golden_table, plain.range_source, plain.tensor_shape)
    bad = ref.run(plain.model, {"image": image})
    outs = {o: plain.output_map()[o] for o in want}
    assert min(_cos(bad[outs[o]], want[o]) for o in want) < 0.9
    assert min(_cos(ref.run(plain.model, {"image": image}, device="x86")[outs[o]], want[o]) for o in want) > 0.99


def test_int8_on_arm_pads_matmul_dims_that_are_not_multiples_of_4(tmp_path):
    """A [6x9] x [9x6] product (tokens, channels not multiples of 4), with a constant left
    operand too: zero-padded to multiples of 4, cropped back, right on ARM's layouts."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/backbone/Conv"),
             helper.make_node("Reshape", ["c", "shape"], ["t"], name="/head/Reshape"),
             helper.make_node("Transpose", ["t"], ["tt"], name="/head/Transpose", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "tt"], ["y"], name="/head/MatMul"),
             helper.make_node("MatMul", ["q", "t"], ["z"], name="/head/MatMul_1")]
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((6, 3, 1, 1)).astype(np.float32), "shape": np.array([1, 6, 9], np.int64),
             "q": rng.standard_normal((1, 5, 6)).astype(np.float32)}
    head = {n.name: "head" for n in nodes[1:]}
    model = make_model(nodes, [vi("x", [1, 3, 3, 3])], [vi("y", [1, 6, 6]), vi("z", [1, 5, 9])], inits,
                       components=head)
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    x = rng.standard_normal((1, 3, 3, 3)).astype(np.float32)
    table = minmax_table(model, path, [{"x": x}])
    plan = PrecisionPlan({"backbone": "int8", "head": "fp32"})
    result = export_tnn(path, tmp_path / "out", plan=plan, table=table)
    tnn = read_tnn(result.proto_path)
    assert "Pad" in [layer.type for layer in tnn.layers] and "StridedSliceV2" in [layer.type for layer in tnn.layers]
    mms = [layer for layer in tnn.layers if layer.type == "MatMul"]
    assert [len(layer.inputs) for layer in mms] == [2, 1] and mms[1].resource["weight"].shape == (5, 8)
    got = ref.run(tnn, {"x": x})
    want = ort_run(path, {"x": x})
    for name in ("y", "z"):
        assert _cos(got[result.name_map["outputs"][name]], want[name]) > 0.99, name


def test_int8_arm_network_rewrites_layernorm_and_linear_into_nc4hw4_layers(tmp_path):
    import warnings

    import torch
    from torch import nn

    torch.manual_seed(0)

    class Net(nn.Module):  # conv backbone, then a token MLP with LayerNorm (no attention)
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1))
            self.head = nn.Sequential(nn.Linear(8, 12), nn.LayerNorm(12))

        def forward(self, x):
            return self.head(self.backbone(x).flatten(2).transpose(1, 2))

    path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), torch.randn(1, 3, 16, 16), str(path), opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["y"])
    from edgeseg.export.tags import tag_graph
    from edgeseg.models.base import ComponentMap

    model = onnx.load(str(path))
    tag_graph(model, ComponentMap({"backbone": "backbone", "head": "head"}))
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    table = minmax_table(model, path, [{"image": x}])
    plan = PrecisionPlan.parse("*=int8", ["backbone", "head"])
    result = export_tnn(path, tmp_path / "out", plan=plan, table=table)  # ARM: allowed
    tnn = read_tnn(result.proto_path)
    types = [layer.type for layer in tnn.layers]
    assert "LayerNorm" not in types and "MatMul" not in types
    assert "QuantizedInnerProduct" in types and "ReduceMean" in types  # Linear -> int8 InnerProduct
    fp32 = [layer.type for layer in read_tnn(export_tnn(path, tmp_path / "fp32").proto_path).layers]
    assert "LayerNorm" in fp32 and "MatMul" in fp32  # float networks keep the fused layers
    got = ref.run(tnn, {"image": x})[result.name_map["outputs"]["y"]]
    want = ort_run(path, {"image": x})["y"]
    assert _cos(got, want) > 0.99
