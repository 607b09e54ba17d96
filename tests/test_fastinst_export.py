"""FastInst exported for every target: the query selection and masked attention in ops that
ONNX Runtime, TFLite (builtins) and TNN (ARM kernels) all have; the TopK form is refused by
the TFLite and TNN preflights with its fix; TNN and TFLite outputs match ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgeseg.export import tags
from edgeseg.export.compat import check
from edgeseg.export.onnx import export_onnx
from edgeseg.models import create_model

# Ops a target lacks (TNN ARM: TopK, Where, Equal, GatherElements; TFLite: TopK, GatherElements).
NOT_EVERYWHERE = {"TopK", "GatherElements", "GatherND", "Where", "Equal", "Greater", "Less", "NonZero",
                  "Einsum", "ScatterND", "OneHot", "ArgMax"}


@pytest.fixture(scope="module")
def rank_export(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("fastinst_test").eval()
    return export_onnx(model, tmp_path_factory.mktemp("fastinst") / "rank")


def test_rank_graph_uses_only_ops_every_target_has_and_is_tagged(rank_export):
    proto = onnx.load(str(rank_export.onnx_path))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & NOT_EVERYWHERE, ops & NOT_EVERYWHERE
    assert tags.untagged_nodes(proto) == []
    selector_ops = {n.op_type for n in proto.graph.node if tags.get_component(n) == "query_selector"}
    assert {"Sign", "MaxPool", "ReduceSum", "MatMul", "Softmax"} <= selector_ops
    # The index comparison is computed, not stored: no initializer holds an N x N table.
    biggest = max(int(np.prod(t.dims)) for t in proto.graph.initializer)
    assert biggest < 64 * 64 * 4
    assert all(p.ok for p in rank_export.graphs["frame"].parity)


@pytest.mark.parametrize("target", ["tflite", "tnn"])
def test_rank_graph_passes_the_preflight(rank_export, target):
    report = check(rank_export.onnx_path, target)
    assert report.ok, [(i.op_type, i.reason) for i in report.errors]


def test_mixed_plan_passes_the_tnn_arm_preflight(rank_export):
    # An int8 network on ARM keeps every blob NC4HW4, where TNN has no Gather kernel: the
    # selector squeezes instead of indexing (x[..., 0] exports as Gather).
    from edgeseg.models.fastinst.family import COMPONENTS, PRECISION_PRESETS
    from edgeseg.quantize.plan import PrecisionPlan

    proto = onnx.load(str(rank_export.onnx_path))
    assert "Gather" not in {n.op_type for n in proto.graph.node if tags.get_component(n) == "query_selector"}
    report = check(rank_export.onnx_path, "tnn", device="arm", plan=PrecisionPlan.parse(PRECISION_PRESETS["mixed"], COMPONENTS))
    assert report.ok, [(i.op_type, i.reason) for i in report.errors]


def test_topk_graph_is_refused_by_tflite_and_tnn_with_the_fix(tmp_path):
    torch.manual_seed(0)
    model = create_model("fastinst_test", query_select="topk").eval()
    result = export_onnx(model, tmp_path / "topk")   # ONNX Runtime runs it: parity holds
    assert all(p.ok for p in result.graphs["frame"].parity)
    for target in ("tflite", "tnn"):
        report = check(result.onnx_path, target)
        [item] = [i for i in report.errors if i.op_type == "TopK"]
        assert item.component == "query_selector"
        assert "rank" in item.fix, item.fix


def test_tnn_conversion_matches_onnxruntime(rank_export, tmp_path):
    from edgeseg.export.tnn import read_tnn
    from edgeseg.export.tnn.artifacts import export_tnn_graphs
    from tests import tnn_reference as ref
    from tests.tnn_nets import ort_run

    [result] = export_tnn_graphs([rank_export.onnx_path], None, None, device="arm")
    model = read_tnn(result.proto_path)
    assert any(layer.type == "Sign" for layer in model.layers)
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal((1, 3, 128, 128)).astype(np.float32)
        got = ref.run(model, {"image": x})
        for name, want in ort_run(rank_export.onnx_path, {"image": x}).items():
            g = got[result.name_map["outputs"][name]]
            assert g.shape == want.shape
            assert np.max(np.abs(g - want)) <= 1e-4 * max(1.0, float(np.max(np.abs(want)))), name


@pytest.mark.tflite
@pytest.mark.slow
def test_tflite_builtins_only_and_matches_onnxruntime(rank_export):
    from edgeseg.export.tflite import export_tflite
    from edgeseg.runtimes.base import load_runtime
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    result = export_tflite(rank_export.onnx_path, plan="fp32")
    assert result.path.stat().st_size > 10_000
    x = np.random.default_rng(3).standard_normal((1, 3, 128, 128)).astype(np.float32)
    want = OnnxRuntimeRuntime(rank_export.onnx_path).run({"image": x})
    with load_runtime(result.path) as rt:
        got = rt.run({"image": x})
    for name in want:
        assert np.max(np.abs(got[name] - want[name])) <= 1e-4 * max(1.0, float(np.max(np.abs(want[name])))), name
