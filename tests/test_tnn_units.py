"""TNN honours plan exceptions below the component level, layer by layer.

A unit (``backbone/grouped=fp16``) decides its layers' precision inside its component:
int8 Quantized layers only for int8 units, half resources only for fp16 ones. The files
are read back and run with tests/tnn_reference.py (TNN's layer semantics in numpy) and
compared with ONNX Runtime on the source graph.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeseg.errors import EdgesegError
from edgeseg.export.manifest import Manifest
from edgeseg.export.tnn import export_tnn, read_tnn
from edgeseg.export.tnn import format as fmt
from edgeseg.quantize.plan import PrecisionPlan
from tests import tnn_reference as ref
from tests.tnn_nets import golden_torch_net, minmax_table, ort_run

COMPONENTS = ["backbone", "neck", "head"]
BACKBONE_CONVS = ["/backbone/stem/stem.0/Conv", "/backbone/dw/Conv", "/backbone/pw/pw.0/Conv",
                  "/backbone/grouped/Conv"]


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    return golden_torch_net(tmp_path_factory.mktemp("golden") / "golden.onnx")


@pytest.fixture(scope="module")
def table(golden):
    rng = np.random.default_rng(7)
    feeds = [{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    return minmax_table(onnx.load(str(golden)), golden, feeds)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)


def _cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _outputs(result, model, image, golden):
    got = ref.run(model, {"image": image}, device=result.device)  # ARM int8: its NC4HW4 memory model
    want = ort_run(golden, {"image": image})
    return {k: (got[result.name_map["outputs"][k]], w) for k, w in want.items()}


def test_fp16_unit_inside_an_int8_component_stays_float_with_half_weights(golden, table, tmp_path, image):
    plan = PrecisionPlan.parse("backbone=int8,backbone/grouped=fp16", COMPONENTS)
    result = export_tnn(golden, tmp_path, plan=plan, table=table, device="x86")
    model = read_tnn(result.proto_path)
    by = {layer.name: layer for layer in model.layers}
    grouped = by["/backbone/grouped/Conv"]
    assert grouped.type == "Convolution" and grouped.resource["filter"].dtype == np.float16
    for name in BACKBONE_CONVS[:3]:  # the rest of the component is int8
        assert by[name].type == "QuantizedConvolution" and by[name].resource["filter"].dtype == np.int8, name
    assert "/backbone/grouped/Conv" not in result.quantized_layers
    assert result.precisions == {"backbone": "int8", "backbone/grouped": "fp16", "neck": "fp32", "head": "fp32"}
    assert result.half_arrays == 2  # the grouped conv's filter and bias, nothing else
    assert all(layer.resource is None or all(np.asarray(v).dtype != np.float16 for v in layer.resource.values())
               for layer in model.layers if layer.name != "/backbone/grouped/Conv")
    for name, (g, w) in _outputs(result, model, image, golden).items():
        assert _cos(g, w) > 0.99, name


def test_int8_unit_inside_an_fp32_network_is_the_only_quantized_layer(golden, table, tmp_path, image):
    plan = PrecisionPlan.parse("*=fp32,head/mask=int8", COMPONENTS)
    result = export_tnn(golden, tmp_path, plan=plan, table=table, device="x86")
    model = read_tnn(result.proto_path)
    quantized = [layer.name for layer in model.layers if fmt.is_quantized(layer.type)]
    assert quantized == ["/head/mask/Conv"] == result.quantized_layers
    mask = next(layer for layer in model.layers if layer.name == "/head/mask/Conv")
    assert set(mask.inputs) | set(mask.outputs) <= set(model.blob_scales)  # its blobs carry scales
    assert len(model.blob_scales) == 2  # and no other blob does
    assert result.test_flags[-2:] == ["-pr", "HIGH"]
    outputs = _outputs(result, model, image, golden)
    g, w = outputs["masks"]
    assert _cos(g, w) > 0.99 and not np.allclose(g, w, atol=1e-6)  # it really went through int8
    g, w = outputs["kernels"]  # the attention branch never touches the int8 conv
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-4)


def test_an_int8_unit_makes_the_whole_network_int8_for_tnn_on_arm(golden, table, tmp_path, image):
    """TNN keeps every blob NC4HW4 once any layer is int8: one int8 conv in the head is
    enough for the head's attention MatMul to need the ARM int8 layout (2-D MatMuls whose
    NC4HW4 and NCHW memory agree), as for a whole int8 component."""
    plan = PrecisionPlan.parse("*=fp32,head/mask=int8", COMPONENTS)
    result = export_tnn(golden, tmp_path / "arm", plan=plan, table=table, device="arm")
    model = read_tnn(result.proto_path)
    assert [layer.name for layer in model.layers if fmt.is_quantized(layer.type)] == ["/head/mask/Conv"]
    shape_of = {o: layer.params["shape"] for layer in model.layers if layer.type == "Reshape" for o in layer.outputs}
    activation_mms = [layer for layer in model.layers if layer.type == "MatMul" and len(layer.inputs) == 2]
    assert activation_mms
    for layer in activation_mms:
        for blob in layer.inputs:
            assert len(shape_of[blob]) == 2 and shape_of[blob][-1] % 4 == 0, (layer.name, blob)
    for name, (g, w) in _outputs(result, model, image, golden).items():
        assert _cos(g, w) > 0.99, name


def test_fp32_unit_inside_an_fp16_component_keeps_float32_weights(golden, tmp_path, image):
    Manifest(model="golden", components={c: {"module": c} for c in COMPONENTS}).save(tmp_path)
    plan = PrecisionPlan.parse("head=fp16,head/proj=fp32", COMPONENTS)
    result = export_tnn(golden, tmp_path, plan=plan, device="arm")
    model = read_tnn(result.proto_path)
    by = {layer.name: layer for layer in model.layers}
    assert by["/head/proj/MatMul"].resource["weight"].dtype == np.float32
    assert by["/head/proj/Add"].resource["element"].dtype == np.float32
    assert by["/head/mask/Conv"].resource["filter"].dtype == np.float16
    assert result.half_arrays == 3  # mask conv filter + bias, the attention's *0.25
    assert any("fp32 components and units also run fp16" in w for w in result.warnings)
    entry = json.loads(result.manifest_path.read_text())["artifacts"]["golden.tnnproto"]
    assert entry["precision"]["exceptions"] == {"head/proj": "fp32"}
    for name, (g, w) in _outputs(result, model, image, golden).items():
        assert _cos(g, w) > 0.9999, name


def test_a_unit_missing_from_the_graph_is_refused_unless_it_is_another_graph(golden, tmp_path):
    plan = PrecisionPlan.parse("*=fp16,head/nothing_here=fp32", COMPONENTS)
    with pytest.raises(EdgesegError, match="matches no node"):
        export_tnn(golden, tmp_path / "a", plan=plan)
    # the features graph of an export lacks the frame graph's heads: skipped there
    result = export_tnn(golden, tmp_path / "b", plan=plan, other_graph=True)
    assert result.precisions == {"backbone": "fp16", "neck": "fp16", "head": "fp16"}
