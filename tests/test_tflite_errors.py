"""TFLite export error paths: one clear EdgesegError each, and no partial artifact.

Most failures are caught before TensorFlow starts (fast); one test drives a Flex op all
the way into the TFLite converter to check the child process's error path.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.errors import EdgesegError
from edgeseg.export import tags
from edgeseg.export.manifest import Manifest
from edgeseg.export.tflite import export_tflite
from tests.tflite_helpers import synth_images, tiny_export

pytestmark = pytest.mark.tflite


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tflite-errors")
    return tiny_export(root / "tiny"), synth_images(root / "synth", count=2)


def _snapshot(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _assert_nothing_new(folder, before, allow_log=None):
    after = _snapshot(folder)
    new = set(after) - set(before) - ({allow_log} if allow_log else set())
    assert not new, f"partial artifacts left: {sorted(new)}"
    assert after.get("manifest.json") == before.get("manifest.json"), "manifest was modified"


def _one_op_model(op_type: str, path, domain: str = ""):
    """conv -> OP -> output, tagged like `edgeseg export` does."""
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], name="/backbone/conv/Conv"),
             helper.make_node(op_type, ["c"], ["out"], name=f"/head/{op_type}", domain=domain)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 16, 16])], [w])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    for n, comp in zip(model.graph.node, ("backbone", "head")):
        tags.set_component(n, comp)
    onnx.save(model, str(path))
    return path


def test_corrupt_onnx(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf at all" * 10)
    before = _snapshot(tmp_path)
    with pytest.raises(EdgesegError) as e:
        export_tflite(bad, plan="fp32")
    assert "not a readable ONNX model" in e.value.problem and "re-export" in e.value.fix
    _assert_nothing_new(tmp_path, before)


def test_missing_onnx(tmp_path):
    with pytest.raises(EdgesegError, match="not found"):
        export_tflite(tmp_path / "nope.onnx")


def test_int8_without_images(tiny):
    result, _ = tiny
    before = _snapshot(result.folder)
    with pytest.raises(EdgesegError) as e:
        export_tflite(result.onnx_path, plan="int8", calib_source="tflite", images=None)
    assert "representative images" in e.value.problem and "--calib DIR" in e.value.fix
    _assert_nothing_new(result.folder, before)


def test_int8_with_missing_image_folder(tiny, tmp_path):
    result, _ = tiny
    before = _snapshot(result.folder)
    with pytest.raises(EdgesegError, match="does not exist"):
        export_tflite(result.onnx_path, plan="int8", calib_source="tflite", images=tmp_path / "no-such-dir")
    _assert_nothing_new(result.folder, before)


def test_int8_with_empty_image_folder(tiny, tmp_path):
    result, _ = tiny
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(EdgesegError, match="no JPEG/PNG images"):
        export_tflite(result.onnx_path, plan="int8", calib_source="tflite", images=tmp_path / "empty")


def test_int8_from_our_table_needs_a_table(tiny):
    result, images = tiny
    with pytest.raises(EdgesegError) as e:
        export_tflite(result.onnx_path, plan="int8", images=images)
    assert "no calibration table" in e.value.problem and "--calib-source tflite" in e.value.fix


def test_table_of_another_model_is_refused(tiny, tmp_path):
    from edgeseg.quantize.cache import CalibrationTable, TensorRange

    result, images = tiny
    table = CalibrationTable("kl", {"x": TensorRange(1.0)}, model_sha256="0" * 64)
    with pytest.raises(EdgesegError, match="different ONNX file"):
        export_tflite(result.onnx_path, plan="int8", table=table, images=images)


def test_unknown_plan_component(tiny):
    result, _ = tiny
    with pytest.raises(EdgesegError, match="unknown component 'neckk'") as e:
        export_tflite(result.onnx_path, plan="neckk=int8")
    assert "did you mean neck" in e.value.fix


def test_unknown_calib_source(tiny):
    result, _ = tiny
    with pytest.raises(EdgesegError, match="unknown calibration source"):
        export_tflite(result.onnx_path, calib_source="trt")


def test_int8_io_needs_an_all_int8_plan(tiny):
    result, images = tiny
    with pytest.raises(EdgesegError, match="all-int8 plan"):
        export_tflite(result.onnx_path, plan="mixed", int8_io=True, images=images, calib_source="tflite")


def test_flex_op_is_refused_before_conversion_with_the_fix(tmp_path):
    path = _one_op_model("Erf", tmp_path / "erf.onnx")
    before = _snapshot(tmp_path)
    with pytest.raises(EdgesegError) as e:
        export_tflite(path)
    assert "Erf" in e.value.problem and "approximate='tanh'" in e.value.problem
    assert "/head/Erf" in e.value.problem
    _assert_nothing_new(tmp_path, before)


def test_unknown_op_is_refused(tmp_path):
    path = _one_op_model("FrobnicateV9", tmp_path / "custom.onnx", domain="com.example")
    with pytest.raises(EdgesegError) as e:
        export_tflite(path)
    assert "FrobnicateV9" in e.value.problem and "custom-domain" in e.value.problem


def test_op_without_onnx2tf_converter_is_refused(tmp_path, monkeypatch):
    # Every standard op onnx2tf lacks is refused from its ops folder; simulate one going missing.
    from edgeseg.export.tflite import compat

    real = compat._onnx2tf_has
    monkeypatch.setattr(compat, "_onnx2tf_has", lambda op, d: False if op == "Relu" else real(op, d))
    path = _one_op_model("Relu", tmp_path / "relu.onnx")
    with pytest.raises(EdgesegError, match="onnx2tf has no converter for Relu"):
        export_tflite(path)


def test_flex_op_inside_the_converter_fails_cleanly(tmp_path, monkeypatch):
    """With the preflight bypassed, Erf reaches TFLite's converter (builtins only): the child
    process must report the op by name, leave no artifact and keep its log."""
    from edgeseg.export.tflite import compat

    monkeypatch.setattr(compat, "FLEX_OPS", {})
    path = _one_op_model("Erf", tmp_path / "erf.onnx")
    before = _snapshot(tmp_path)
    with pytest.raises(EdgesegError) as e:
        export_tflite(path)
    assert "TFLite has no builtin kernel for: Erf" in e.value.problem
    log = tmp_path / "erf.fp32.tflite.log"
    assert str(log) in e.value.fix and log.is_file()
    _assert_nothing_new(tmp_path, before, allow_log=log.name)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_untagged_nodes_only_take_uniform_plans(tmp_path):
    path = _one_op_model("Relu", tmp_path / "m.onnx")
    model = onnx.load(str(path))
    del model.graph.node[1].metadata_props[:]  # an ONNX file not (fully) made by `edgeseg export`
    onnx.save(model, str(path))
    with pytest.raises(EdgesegError) as e:
        export_tflite(path, plan="backbone=fp16,*=fp32")
    assert "carry no component tag" in e.value.problem and "/head/Relu" in e.value.problem


def test_missing_toolchain_is_one_clear_error(monkeypatch):
    import importlib.util

    from edgeseg.export import tflite

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx2tf" else real(name, *a))
    with pytest.raises(EdgesegError) as e:
        tflite.check_toolchain()
    assert "onnx2tf" in e.value.problem and "--no-deps onnx2tf" in e.value.fix


def test_corrupt_tflite_file(tmp_path):
    from edgeseg.runtimes.base import load_runtime

    bad = tmp_path / "m.tflite"
    bad.write_bytes(b"TFL3" * 64)
    with pytest.raises(EdgesegError, match="cannot load m.tflite"):
        load_runtime(bad)


def test_runtime_refuses_a_manifest_that_does_not_describe_the_file(tiny, tmp_path):
    from edgeseg.runtimes.tflite import TFLiteRuntime

    result, _ = tiny
    res = export_tflite(result.onnx_path, out_dir=tmp_path / "fp32")
    entry = json.loads((tmp_path / "fp32" / "manifest.json").read_text())["artifacts"][res.path.name]
    io = [dict(e) for e in entry["io"]]
    io[0]["key"] = "not_there"
    with pytest.raises(EdgesegError, match="has no input 'not_there'"):
        TFLiteRuntime(res.path, io=io)
    assert Manifest.load(tmp_path / "fp32").artifact(res.path.name)["kind"] == "tflite"


def test_wrong_fp32_conversion_is_refused_and_located(tmp_path):
    """A real onnx2tf layout bug: softmax over flattened H*W, reshaped back, in an
    *unsimplified* graph converts to wrong values. The parity gate must refuse it and name
    the first wrong tensor, leaving no artifact."""
    import torch

    from edgeseg.models.base import ComponentMap

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Conv2d(4, 4, 1)
            self.head = torch.nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.backbone(x)
            return self.head(torch.softmax(y.flatten(2), dim=-1).reshape(y.shape))

    torch.manual_seed(0)
    path = tmp_path / "raw.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, as in export/onnx.py
        torch.onnx.export(Net().eval(), (torch.randn(1, 4, 8, 8),), str(path), opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["out"])
    model = onnx.load(str(path))
    tags.tag_graph(model, ComponentMap({"backbone": "backbone", "head": "head"}), default="head")
    onnx.save(model, str(path))
    before = _snapshot(tmp_path)
    with pytest.raises(EdgesegError) as e:
        export_tflite(path)
    assert "FP32 TFLite output differs from ONNX Runtime" in e.value.problem
    assert "first wrong tensor is '/Reshape_1_output_0' from ONNX node /Reshape_1 (Reshape" in e.value.problem
    assert "simplify" in e.value.fix
    _assert_nothing_new(tmp_path, before, allow_log="raw.fp32.tflite.log")
