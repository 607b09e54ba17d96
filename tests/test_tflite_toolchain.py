"""The TFLite toolchain is installed as the tflite extra says, and `edgeseg check --target tflite`.

These tests FAIL (never skip) when the extra is missing: CI installs it
(`scripts/setup.sh .venv test,tflite`), so a missing package is a broken set-up.
"""

from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.cli import main
from edgeseg.export import tags

pytestmark = pytest.mark.tflite


def _version(dist: str) -> tuple[int, ...]:
    return tuple(int(x) for x in metadata.version(dist).split(".")[:3])


def test_toolchain_is_installed_with_the_verified_versions():
    from edgeseg.export.tflite import check_toolchain

    check_toolchain()  # raises EdgesegError naming the missing packages and the install command
    assert _version("ai-edge-litert") >= (2, 3, 0)  # 2.1.x: wrong int8 BATCH_MATMUL under XNNPACK
    assert _version("tensorflow-cpu")[:2] == (2, 21)
    assert _version("onnx2tf") >= (1, 29, 0)
    # The --no-deps install must not have dragged the full `tensorflow` wheel in.
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("tensorflow")


def test_litert_interpreter_runs_with_xnnpack(tmp_path):
    """One thread, and XNNPACK takes the graph (delegated ops show up as a DELEGATE node)."""
    from ai_edge_litert import interpreter as litert

    from edgeseg.export.tflite.flatbuffer import describe
    from edgeseg.runtimes.tflite import TFLiteRuntime

    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32, name="x")])
        def f(self, x):
            return {"y": tf.nn.relu(x * 2.0 + 1.0)}

    m = M()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.f.get_concrete_function()], m)
    path = tmp_path / "m.tflite"
    path.write_bytes(conv.convert())
    rt = TFLiteRuntime(path, threads=1)
    assert rt.delegated
    x = np.linspace(-2, 2, 8, dtype=np.float32)[None]
    np.testing.assert_allclose(rt.run({"x": x})["y"], np.maximum(x * 2 + 1, 0), rtol=1e-6)
    assert describe(path.read_bytes()).signature_outputs.keys() == {"y"}
    # The check can fail: without the default delegates there is no DELEGATE node.
    rt.interpreter = litert.Interpreter(
        model_path=str(path), experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    rt.interpreter.allocate_tensors()
    assert not rt.delegated


def _model(tmp_path, op_type, component="head"):
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], name="/backbone/conv/Conv"),
             helper.make_node(op_type, ["c"], ["out"], name=f"/{component}/{op_type}")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 16, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for n, comp in zip(model.graph.node, ("backbone", component)):
        tags.set_component(n, comp)
    path = tmp_path / f"{op_type}.onnx"
    onnx.save(model, str(path))
    return path


def _check(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main(["check", *map(str, args)])
    return e.value.code


def test_check_lists_a_flex_op_with_its_fix(tmp_path, capsys):
    path = _model(tmp_path, "Erf")
    assert _check(path, "--target", "tflite", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["target"] == "tflite" and report["ok"] is False
    (item,) = report["items"]
    assert item["op_type"] == "Erf" and item["nodes"] == ["/head/Erf"] and item["component"] == "head"
    assert "Flex" in item["reason"] and "approximate='tanh'" in item["fix"]


def test_check_passes_a_convertible_graph(tmp_path, capsys):
    assert _check(_model(tmp_path, "Relu"), "--target", "tflite") == 0
    assert "OK" in capsys.readouterr().out


def test_check_warns_about_int8_softmax_over_many_elements(tmp_path, capsys):
    # Softmax over the last axis of 1x4x16x16: 16 elements is fine; reshape to 256 is not.
    shape = numpy_helper.from_array(np.asarray([1, 4, 256], np.int64), "shape")
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], name="/backbone/conv/Conv"),
             helper.make_node("Reshape", ["c", "shape"], ["r"], name="/head/Reshape"),
             helper.make_node("Softmax", ["r"], ["out"], name="/head/Softmax", axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 256])], [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for n, comp in zip(model.graph.node, ("backbone", "head", "head")):
        tags.set_component(n, comp)
    path = tmp_path / "sm.onnx"
    onnx.save(model, str(path))
    assert _check(path, "--target", "tflite", "--plan", "int8", "--json") == 0  # a warning, not an error
    (item,) = json.loads(capsys.readouterr().out)["items"]
    assert item["severity"] == "warn" and item["op_type"] == "Softmax" and "256 elements" in item["reason"]
    assert "keep head in fp16" in item["fix"]
    assert _check(path, "--target", "tflite", "--plan", "backbone=int8,head=fp16", "--json") == 0
    assert json.loads(capsys.readouterr().out)["items"] == []
