"""YolactEdge's graphs through TNN (read back and run with the reference interpreter) and
the target preflights of every precision plan."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import torch

    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        # 72x72: P4 is 5x5 and P3 9x9, so the top-down upsampling is not an exact x2 (as 35 -> 69 at 550)
        model = create_model("yolact_edge_test", num_classes=3, input_size=(72, 72)).eval()
        out = tmp_path_factory.mktemp("ye_targets") / "art"
        export_onnx(model, out)
    finally:
        torch.set_num_threads(before)
    return out


@pytest.mark.parametrize("graph", ["", ".flow", ".warped"])
def test_every_graph_converts_to_tnn_and_computes_what_onnx_runtime_does(folder, graph, tmp_path):
    from edgeseg.export.tnn import read_tnn
    from edgeseg.export.tnn.writer import export_tnn
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
    from tests import tnn_reference as ref

    onnx_path = folder / f"yolact_edge_test{graph}.onnx"
    result = export_tnn(onnx_path, tmp_path)
    rt = OnnxRuntimeRuntime(onnx_path)
    feeds = rt.random_feeds(2)
    if graph == ".flow":  # a non-zero flow: the untrained flow net is the identity
        feeds["key_lat3"] = feeds["key_lat3"] * 3
    want = rt.run(feeds)
    got = ref.run(read_tnn(result.proto_path), feeds)
    for name, a in want.items():
        b = np.asarray(got[name]).reshape(a.shape)
        assert np.abs(a - b).max() <= 1e-3 * max(1.0, float(np.abs(a).max())), name


def test_the_tnn_and_tflite_preflights_accept_all_16_plans_of_the_frame_graph(folder):
    from edgeseg.export.tflite import preflight as tflite_preflight
    from edgeseg.export.tnn.writer import preflight as tnn_preflight
    from edgeseg.quantize.plan import all_combinations

    plans = all_combinations(["backbone", "fpn", "protonet", "prediction_head"])
    assert len(plans) == 16
    for plan in plans:
        tnn_preflight(folder / "yolact_edge_test.onnx", plan, "arm")   # raises with its fix when refused
        tflite_preflight(folder / "yolact_edge_test.onnx", plan)


def test_the_video_graphs_get_flow_net_in_their_plan(folder):
    from edgeseg.export.graph_settings import plan_for_graph
    from edgeseg.quantize.plan import PrecisionPlan

    plan = PrecisionPlan.parse("yolact_edge", ["backbone", "fpn", "protonet", "prediction_head"],
                               {"yolact_edge": "backbone=int8,fpn=int8,protonet=fp16,prediction_head=fp16"})
    flow = plan_for_graph(folder / "yolact_edge_test.flow.onnx", plan)
    assert flow.precisions["flow_net"] == "int8" and flow.precisions["backbone"] == "int8"
    assert plan_for_graph(folder / "yolact_edge_test.warped.onnx", plan).precisions == plan.precisions
