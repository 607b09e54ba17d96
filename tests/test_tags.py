"""Component tagging: scopes, propagation to renamed/fused nodes, boundaries."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from edgeseg.export import tags
from edgeseg.models.base import ComponentMap

CMAP = ComponentMap({"backbone": "backbone", "decoder": "decoder", "head": "decoder/head"})


def _graph(nodes):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_longest_scope_wins():
    assert CMAP.component_for_scope("/backbone/stem/Conv") == "backbone"
    assert CMAP.component_for_scope("/decoder/fuse/Add") == "decoder"
    assert CMAP.component_for_scope("/decoder/head/MatMul") == "head"
    assert CMAP.component_for_scope("/Relu_3") is None
    assert CMAP.component_for_scope("/backbone_extra/Conv") is None  # prefix of a name, not a scope


def test_renamed_nodes_take_producer_then_consumer_component():
    m = _graph([
        helper.make_node("Relu", ["x"], ["a"], name="fused_first"),          # no scope: consumer -> backbone
        helper.make_node("Relu", ["a"], ["b"], name="/backbone/act/Relu"),
        helper.make_node("Relu", ["b"], ["c"], name="Relu_renamed"),          # producer -> backbone
        helper.make_node("Relu", ["c"], ["d"], name="/decoder/head/Relu"),
        helper.make_node("Relu", ["d"], ["out"], name=""),                    # producer -> head, gets a name
    ])
    counts = tags.tag_graph(m, CMAP)
    got = {n.name: tags.get_component(n) for n in m.graph.node}
    assert got["fused_first"] == "backbone"
    assert got["Relu_renamed"] == "backbone"
    assert got["/decoder/head/Relu"] == "head"
    assert tags.untagged_nodes(m) == []
    assert all(n.name for n in m.graph.node)
    assert counts == {"backbone": 3, "head": 2}


def test_isolated_node_without_scope_is_an_error_unless_default():
    m = _graph([helper.make_node("Relu", ["x"], ["out"], name="lonely")])
    with pytest.raises(ValueError, match="could not be tagged"):
        tags.tag_graph(m, CMAP)
    tags.tag_graph(m, CMAP, default="backbone")
    assert tags.get_component(m.graph.node[0]) == "backbone"


def test_tags_survive_serialisation_and_boundaries_are_found():
    m = _graph([
        helper.make_node("Relu", ["x"], ["a"], name="/backbone/Relu"),
        helper.make_node("Relu", ["a"], ["b"], name="/backbone/Relu_1"),
        helper.make_node("Relu", ["b"], ["out"], name="/decoder/Relu"),
    ])
    tags.tag_graph(m, CMAP)
    m2 = onnx.load_from_string(m.SerializeToString())
    assert [tags.get_component(n) for n in m2.graph.node] == ["backbone", "backbone", "decoder"]
    assert tags.component_boundary_tensors(m2) == {"backbone": ["b"], "decoder": ["out"]}
    assert tags.nodes_by_component(m2) == {"backbone": ["/backbone/Relu", "/backbone/Relu_1"],
                                           "decoder": ["/decoder/Relu"]}
