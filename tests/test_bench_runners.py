"""Pure parts of the device runners: command lines, trtexec flags from a plan, target strings."""

from pathlib import Path

import pytest

from edgeseg.benchmark import runners as R
from edgeseg.benchmark.targets import parse_target
from edgeseg.errors import EdgesegError

NODES = {"backbone": ["/backbone/conv/Conv", "/backbone/Shape", "/backbone/act/Relu"],
         "mask_decoder": ["/mask_decoder/conv/Conv"], "instance_decoder": ["/instance_decoder/MatMul"]}
FLOATS = {"/backbone/conv/Conv", "/backbone/act/Relu", "/mask_decoder/conv/Conv", "/instance_decoder/MatMul"}


def test_taskset_mask():
    assert R.taskset_mask(7) == "80" and R.taskset_mask(0) == "1" and R.taskset_mask(11) == "800"
    with pytest.raises(EdgesegError):
        R.taskset_mask(-1)


def test_benchmark_model_argv_is_exact_single_thread_xnnpack():
    argv = R.BenchmarkModelRunner().argv("/d/bin/benchmark_model", "/d/m m.tflite", 20, 5, 7, 300)
    assert argv == ["/d/bin/benchmark_model", "--graph=/d/m m.tflite", "--num_threads=1", "--use_xnnpack=true",
                    "--num_runs=20", "--warmup_runs=5", "--min_secs=0", "--warmup_min_secs=0", "--max_secs=300"]


def test_tnn_argv_and_model_files(tmp_path):
    r = R.TNNTestRunner()
    assert r.argv("TNNTest", "/d/net.tnnproto", 20, 5, 7, 300) == [
        "TNNTest", "-mt", "TNN", "-mp", "/d/net.tnnproto", "-dt", "ARM", "-th", "1", "-wc", "5", "-ic", "20",
        "-dl", "7"]
    proto = tmp_path / "net.tnnproto"
    proto.write_text("p")
    with pytest.raises(EdgesegError, match="net.tnnmodel is missing"):
        r.model_files(proto)
    proto.with_suffix(".tnnmodel").write_bytes(b"w")
    assert [p.name for p in r.model_files(proto)] == ["net.tnnproto", "net.tnnmodel"]


def test_phone_runner_by_suffix():
    assert R.phone_runner_for(Path("a.tflite")).name == "benchmark_model"
    assert R.phone_runner_for(Path("a.TNNPROTO")).name == "TNNTest"
    with pytest.raises(EdgesegError, match="no phone benchmark runner"):
        R.phone_runner_for(Path("a.onnx"))


def test_trtexec_uniform_plans():
    fp32 = R.trtexec_precision({c: "fp32" for c in NODES}, NODES, FLOATS)
    assert fp32.flags == [] and fp32.layer_spec_mode == "none"
    fp16 = R.trtexec_precision({c: "fp16" for c in NODES}, NODES, FLOATS)
    assert fp16.flags == ["--fp16"]
    int8 = R.trtexec_precision({c: "int8" for c in NODES}, NODES, FLOATS, calib="/d/c.cache")
    assert int8.flags == ["--int8", "--calib=/d/c.cache"] and int8.needs_calibration


def test_trtexec_mixed_plan_lists_float_layers_per_component():
    plan = {"backbone": "int8", "mask_decoder": "int8", "instance_decoder": "fp16"}
    p = R.trtexec_precision(plan, NODES, FLOATS, calib="/d/c.cache")
    assert p.flags == ["--fp16", "--int8", "--calib=/d/c.cache", "--precisionConstraints=obey",
                       "--layerPrecisions=/backbone/conv/Conv:int8,/backbone/act/Relu:int8,"
                       "/mask_decoder/conv/Conv:int8,/instance_decoder/MatMul:fp16"]
    assert "/backbone/Shape" not in p.flags[-1]  # a shape computation has no int8 variant
    assert p.layers == {"fp16": 1, "int8": 3} and p.layer_spec_mode == "explicit"


def test_trtexec_explicit_qdq_leaves_int8_to_the_qdq_nodes():
    plan = {"backbone": "int8", "mask_decoder": "int8", "instance_decoder": "fp16"}
    p = R.trtexec_precision(plan, NODES, FLOATS, explicit_quantization=True)
    assert p.flags == ["--fp16", "--int8", "--precisionConstraints=obey",
                       "--layerPrecisions=/instance_decoder/MatMul:fp16"]
    assert not p.needs_calibration
    all_int8 = R.trtexec_precision({c: "int8" for c in NODES}, NODES, FLOATS, explicit_quantization=True)
    assert all_int8.flags == ["--int8"]


def test_trtexec_wildcard_when_the_list_is_too_long(monkeypatch):
    monkeypatch.setattr(R, "MAX_LAYER_SPEC_CHARS", 80)
    plan = {"backbone": "fp16", "mask_decoder": "fp16", "instance_decoder": "fp32"}
    p = R.trtexec_precision(plan, NODES, FLOATS)
    assert p.layer_spec_mode == "wildcard"
    assert p.flags[-1] == "--layerPrecisions=*:fp16,/instance_decoder/MatMul:fp32"


def test_trtexec_plan_errors():
    with pytest.raises(EdgesegError, match="no calibration cache"):
        R.trtexec_precision({"backbone": "int8"}, NODES, FLOATS)
    with pytest.raises(EdgesegError, match="no nodes tagged"):
        R.trtexec_precision({"neck": "fp16", "backbone": "fp32"}, NODES, FLOATS)
    with pytest.raises(EdgesegError, match="cannot be written in --layerPrecisions"):
        R.trtexec_precision({"a": "fp16", "b": "fp32"}, {"a": ["x,y"], "b": ["z"]}, None)
    with pytest.raises(EdgesegError, match="no TensorRT equivalent"):
        R.trtexec_precision({"backbone": "int4"}, NODES, FLOATS)


def test_float_nodes_uses_shape_inference():
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Shape", ["r"], ["s"], name="shape"),
             helper.make_node("Cast", ["s"], ["f"], name="cast", to=TensorProto.FLOAT)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("f", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert R.float_nodes(m) == {"relu", "cast"}
    assert not R.is_qdq_model(m)


def test_trtexec_build_and_time_argv_by_version():
    p = R.TrtexecPlan(["--fp16"], False, "none", {})
    assert R.trtexec_build_argv("trtexec", "/d/m.onnx", "/d/e.engine", p, "8.5.2") == [
        "trtexec", "--onnx=/d/m.onnx", "--saveEngine=/d/e.engine", "--fp16", "--buildOnly"]
    assert R.trtexec_build_argv("trtexec", "m", "e", p, "8.6.1")[-1] == "--skipInference"
    assert R.trtexec_build_argv("trtexec", "m", "e", p, "10.3.0")[-1] == "--skipInference"
    assert R.trt_version_tuple("10.3.0") == (10, 3, 0) and R.trt_version_tuple(None) == ()
    assert R.trtexec_time_argv("trtexec", "/d/e.engine", 50, 10, "/d/t.json") == [
        "trtexec", "--loadEngine=/d/e.engine", "--iterations=60", "--duration=0", "--warmUp=0",
        "--exportTimes=/d/t.json"]


@pytest.mark.parametrize("text, kind, fields", [
    ("local", "local", {}),
    ("adb", "adb", {"serial": None}),
    ("adb:R5CR1234ABC", "adb", {"serial": "R5CR1234ABC"}),
    ("adb:192.168.1.7:5555", "adb", {"serial": "192.168.1.7:5555"}),
    ("ssh://nvidia@xavier", "ssh", {"user": "nvidia", "host": "xavier", "port": None}),
    ("ssh://xavier:2222", "ssh", {"user": None, "host": "xavier", "port": 2222}),
    ("ssh://me@[fe80::1]:22", "ssh", {"user": "me", "host": "fe80::1", "port": 22}),
])
def test_parse_target(text, kind, fields):
    spec = parse_target(text)
    assert spec.kind == kind
    for k, v in fields.items():
        assert getattr(spec, k) == v


@pytest.mark.parametrize("text", ["adb:", "adb:a b", "adb:$(x)", "ssh://", "ssh://a@b:0", "ssh://a b", "tcp://x"])
def test_parse_target_rejects(text):
    with pytest.raises(EdgesegError):
        parse_target(text)
