"""Layer groups and plan exceptions below the component level, on a real zoo graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgeseg.errors import EdgesegError
from edgeseg.export.tags import get_component
from edgeseg.quantize.cache import CalibrationTable, TensorRange
from edgeseg.quantize.calibrate import select_tensors
from edgeseg.quantize.plan import PrecisionPlan
from edgeseg.quantize.qdq import quantize_model
from edgeseg.quantize.units import layer_groups, node_precisions, unit_members, unit_of

COMPS = ["backbone", "mask_decoder", "instance_decoder"]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model("mobileinst_test", input_size=(64, 64)).eval()
    res = export_onnx(model, tmp_path_factory.mktemp("units") / "mi", graphs=("frame",))
    proto = onnx.load(res.onnx_path)
    table = CalibrationTable(method="minmax", ranges={t.name: TensorRange(amax=4.0, min=-4.0, max=4.0)
                                                      for t in select_tensors(proto)})
    return proto, table


def test_layer_groups_partition_a_component_into_its_blocks(graph):
    proto, _ = graph
    groups = layer_groups(proto, "instance_decoder", max_nodes=20)
    names = [g.name for g in groups]
    members = [x for g in groups for x in g.nodes]
    comp_nodes = [n.name for n in proto.graph.node if get_component(n) == "instance_decoder"]
    assert sorted(members) == sorted(comp_nodes) and len(set(members)) == len(members)  # a partition
    assert "instance_decoder/cls_head" in names  # a head branch is its own group
    assert any(n.startswith("instance_decoder/global_decoder") for n in names)
    assert all(len(g.nodes) <= 20 or "/" not in g.name.split("/", 1)[1] for g in groups)
    # every group name is a unit the plan can name, covering exactly its nodes
    for g in groups:
        assert sorted(unit_members(proto, g.name)) == sorted(g.nodes), g.name


def test_an_exception_keeps_one_head_float_inside_an_int8_component(graph):
    proto, table = graph
    plan = PrecisionPlan.parse("*=int8,instance_decoder/cls_head=fp32", COMPS)
    q, report = quantize_model(proto, plan, table)
    onnx.checker.check_model(q)
    assert {get_component(n) for n in q.graph.node} == set(COMPS)  # real tags restored
    head = [n for n in q.graph.node if unit_of(n) == "instance_decoder/cls_head"]
    assert head
    producer = {o: n for n in q.graph.node for o in n.output}
    # the head's matmul reads float weights (no DequantizeLinear in front of it) ...
    mm = [n for n in head if n.op_type in ("MatMul", "Gemm")]
    assert mm and not any(producer.get(x) is not None and producer[x].op_type == "DequantizeLinear"
                          for n in mm for x in n.input[1:2])
    # ... while the objectness head next to it is quantized
    obj = [n for n in q.graph.node if n.name.startswith("/instance_decoder/objectness_head/")
           and n.op_type in ("MatMul", "Gemm")]
    assert obj and any(producer[x].op_type == "DequantizeLinear" for n in obj for x in n.input if x in producer)
    assert report.plan["instance_decoder/cls_head"] == "fp32"


def test_fp16_unit_in_an_fp32_component_runs_and_differs_only_there(graph):
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    proto, table = graph
    q, _ = quantize_model(proto, PrecisionPlan.parse("*=fp32,mask_decoder/mask_proj=fp16", COMPS), table)
    f16 = [n for n in q.graph.node if unit_of(n) == "mask_decoder/mask_proj"]
    assert f16 and any(n.op_type == "Cast" for n in q.graph.node)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        a, b = Path(d) / "a.onnx", Path(d) / "b.onnx"
        onnx.save(proto, a)
        onnx.save(q, b)
        ra, rb = OnnxRuntimeRuntime(a), OnnxRuntimeRuntime(b)
        feeds = ra.random_feeds(1)
        oa, ob = ra.run(feeds), rb.run(feeds)
    assert not np.array_equal(oa["mask_features"], ob["mask_features"])
    np.testing.assert_allclose(oa["mask_features"], ob["mask_features"], atol=2e-2, rtol=2e-2)


def test_node_precisions_follow_the_longest_unit(graph):
    proto, _ = graph
    plan = PrecisionPlan.parse("*=int8,instance_decoder=fp16,instance_decoder/cls_head=fp32", COMPS)
    prec = node_precisions(proto, plan)
    assert prec[next(n.name for n in proto.graph.node if n.name.startswith("/instance_decoder/cls_head/"))] == "fp32"
    assert prec[next(n.name for n in proto.graph.node if n.name.startswith("/instance_decoder/kernel_head/"))] == "fp16"
    assert prec[next(n.name for n in proto.graph.node if n.name.startswith("/backbone/"))] == "int8"


def test_a_unit_that_matches_nothing_is_refused(graph):
    proto, table = graph
    with pytest.raises(EdgesegError, match="matches no node"):
        quantize_model(proto, PrecisionPlan.parse("*=int8,instance_decoder/nothing_here=fp16", COMPS), table)
