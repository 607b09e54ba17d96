"""TensorRT layer names <-> ONNX nodes <-> components: the matching rules, on real TensorRT names."""

import json
from pathlib import Path

import pytest

from edgeseg.export.tensorrt.names import (LayerMatch, NetworkLayer, OnnxIndex, assign_components,
                                           match_engine_layer, metadata_nodes, split_top_level)

DATA = Path(__file__).parent / "data" / "tensorrt"


def _index(**components: list[str]) -> OnnxIndex:
    return OnnxIndex.from_components(components)


def test_split_respects_brackets():
    name = "MatMul + (Unnamed Layer* 21) [Shuffle] + PWN(PWN(a + b), c) + {ForeignNode[x + y...z]}"
    assert split_top_level(name, " + ") == ["MatMul", "(Unnamed Layer* 21) [Shuffle]", "PWN(PWN(a + b), c)",
                                            "{ForeignNode[x + y...z]}"]
    assert split_top_level("PWN(relu_1), add_1", ", ") == ["PWN(relu_1)", "add_1"]


def test_metadata_of_tensorrt_10_layer_info():
    # The Metadata value of a fused layer in NVIDIA/TensorRT issue #4020 (TensorRT 10, 24.06 container).
    meta = ("[ONNX Layer: resnetv15_stage3_conv0_fwd]\u001e[ONNX Layer: resnetv15_stage3_batchnorm0_fwd]"
            "\u001e[ONNX Layer: resnetv15_stage3_relu0_fwd]")
    assert metadata_nodes(meta) == ["resnetv15_stage3_conv0_fwd", "resnetv15_stage3_batchnorm0_fwd",
                                    "resnetv15_stage3_relu0_fwd"]
    idx = _index(stage3=["resnetv15_stage3_conv0_fwd", "resnetv15_stage3_batchnorm0_fwd",
                         "resnetv15_stage3_relu0_fwd"])
    m = match_engine_layer("resnetv15_stage3_conv0_fwd + resnetv15_stage3_batchnorm0_fwd", idx, meta)
    assert m.rule == "metadata" and len(m.nodes) == 3  # the metadata also names the fused ReLU
    assert metadata_nodes("") == [] and metadata_nodes(None) == []


def test_torch_scope_names_fuse_and_match():
    # TensorRT 10.0.1.6 layer names of RT-DETR (NVIDIA/TensorRT issue #4048): torch module scopes.
    idx = _index(backbone=["/model/backbone/conv1/conv1_1/conv/Conv", "/model/backbone/conv1/conv1_1/act/Relu",
                           "/model/backbone/MaxPool"])
    name = "/model/backbone/conv1/conv1_1/conv/Conv + /model/backbone/conv1/conv1_1/act/Relu"
    m = match_engine_layer(name, idx)
    assert (m.kind, m.rule, m.nodes) == ("fused", "fused name", ["/model/backbone/conv1/conv1_1/conv/Conv",
                                                                  "/model/backbone/conv1/conv1_1/act/Relu"])
    r = match_engine_layer(f"Reformatting CopyNode for Input Tensor 0 to {name}", idx)
    assert r.kind == "reformat" and r.nodes == m.nodes and r.rule == "reformat for fused name"


def test_pointwise_and_foreign_node_ranges():
    idx = _index(a=["relu_1", "add_1"], b=["Transpose_7808", "Mul_7810", "Reshape_7814"], c=["Softmax_7820"])
    assert match_engine_layer("PWN(PWN(relu_1), add_1)", idx).nodes == ["relu_1", "add_1"]
    # A Myelin region names its first and last nodes only: it covers everything between them.
    m = match_engine_layer("{ForeignNode[Transpose_7808...Reshape_7814]}", idx)
    assert (m.kind, m.rule, m.nodes) == ("myelin", "ForeignNode range", ["Transpose_7808", "Mul_7810", "Reshape_7814"])
    # TensorRT 8.6 (issue #4236): the first end is a generated layer, the last a fused pair.
    m = match_engine_layer("{ForeignNode[(Unnamed Layer* 3274) [Shuffle]...Transpose_7808 + Reshape_7814]}", idx)
    assert m.rule == "ForeignNode end" and m.nodes == ["Transpose_7808", "Reshape_7814"]
    assert m.unmatched == ["(Unnamed Layer* 3274) [Shuffle]"]


def test_tensorrt_8_4_generated_names():
    """Every name of a real names-only layer info (TensorRT 8.4) resolves or is reported unmatched."""
    info = json.loads((DATA / "trtexec8.4_layerinfo_names_only_hackathon-cn-issue18.json").read_text())
    idx = _index(features=["Conv__25", "Relu", "MaxPool2d", "Conv__27", "Relu_1", "MaxPool2d_1", "MaxPool2d_1__22",
                           "Reshape"],
                 head=["MatMul", "add_2", "Relu_2", "MatMul_1", "add_3", "y"])
    idx.initializers |= {"b3/read:0", "b4/read:0"}
    idx.consumers.update({"b3/read:0": ["add_2"], "b4/read:0": ["add_3"]})
    got = {name: match_engine_layer(name, idx) for name in info["Layers"]}
    assert got["Conv__25 + Relu"].nodes == ["Conv__25", "Relu"]
    mm = got[info["Layers"][7]]
    # weight b3/read:0 -> the node reading it; unsqueeze_node_after_<weight> -> same node
    assert mm.nodes == ["MatMul", "add_2", "Relu_2"] and mm.kind == "fused"
    assert "(Unnamed Layer* 21) [Shuffle]" in mm.unmatched
    assert got["copied_squeeze_after_add_3"].nodes == ["add_3"]
    assert got["copied_squeeze_after_add_3"].rule == "derived name"
    assert got["Reformatting CopyNode for Output Tensor 0 to MaxPool2d"].nodes == ["MaxPool2d"]
    assert got["(Unnamed Layer* 52) [Shuffle]"].nodes == [] and got["(Unnamed Layer* 52) [Shuffle]"].kind == "generated"
    assert got["y + z"].nodes == ["y"] and got["y + z"].unmatched == ["z"]


def test_tensor_and_weight_names_resolve_through_the_graph():
    import onnx
    from onnx import TensorProto, helper

    from edgeseg.export.tags import set_component

    nodes = [helper.make_node("Conv", ["x", "conv1.weight"], ["/b/conv/Conv_output_0"], name="/b/conv/Conv"),
             helper.make_node("Relu", ["/b/conv/Conv_output_0"], ["r"], name="/b/act/Relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="/h/MatMul")]
    for n in nodes:
        set_component(n, "backbone" if n.name.startswith("/b") else "head")
    w = helper.make_tensor("conv1.weight", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [1, 1], [1.0])
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])], [w, w2])
    idx = OnnxIndex.from_model(helper.make_model(g))
    assert idx.node_of("/b/conv/Conv_output_0") == "/b/conv/Conv"  # a tensor: its producer
    assert idx.node_of("conv1.weight") == "/b/conv/Conv"  # a weight: the node reading it
    assert idx.node_of("unsqueeze_node_after_w2") == "/h/MatMul"
    assert idx.component["/h/MatMul"] == "head"
    m = match_engine_layer("conv1.weight + /b/conv/Conv + /b/act/Relu", idx)
    assert m.nodes == ["/b/conv/Conv", "/b/act/Relu"]
    assert isinstance(m, LayerMatch)
    assert onnx.checker.check_model(helper.make_model(g)) is None


def test_network_layers_get_their_node_or_their_neighbours_component():
    idx = _index(backbone=["/backbone/conv/Conv", "/backbone/act/Relu"], head=["/head/MatMul", "/head/Add"])
    idx.producer.update({"c1": "/backbone/conv/Conv", "r1": "/backbone/act/Relu", "m": "/head/MatMul"})
    layers = [
        NetworkLayer("/backbone/conv/Conv", outputs=["c1"]),  # name
        NetworkLayer("(Unnamed Layer* 1) [Activation]", inputs=["c1"], outputs=["r1"]),  # output tensor
        NetworkLayer("(Unnamed Layer* 2) [Shuffle]", inputs=["r1"], outputs=["s"]),  # input neighbour
        NetworkLayer("/head/MatMul", inputs=["s"], outputs=["m"]),
        NetworkLayer("/head/Add_bias", inputs=["m"], outputs=["o"]),  # name prefix
        NetworkLayer("x", metadata="[ONNX Layer: /head/Add]", outputs=["o2"]),  # metadata (TensorRT 10)
        NetworkLayer("(Unnamed Layer* 9) [Constant]", outputs=["k"]),  # output neighbour
        NetworkLayer("/head/Add", inputs=["o", "k"], outputs=["o3"]),
        NetworkLayer("(Unnamed Layer* 11) [Constant]", outputs=["lonely"]),  # nothing to go by
    ]
    got = [(a.component, a.rule) for a in assign_components(layers, idx)]
    assert got == [("backbone", "name"), ("backbone", "output tensor"), ("backbone", "input neighbour"),
                   ("head", "name"), ("head", "name prefix"), ("head", "metadata"), ("head", "output neighbour"),
                   ("head", "name"), (None, "no match")]


@pytest.mark.parametrize("name,kind", [("Conv_0 + Relu_1", "fused"), ("MaxPool_2", "layer"),
                                       ("PWN(a)", "pointwise"), ("{ForeignNode[a...b]}", "myelin"),
                                       ("Reformatting CopyNode for Input Tensor 0 to X", "reformat"),
                                       ("(Unnamed Layer* 52) [Shuffle]", "generated")])
def test_layer_kinds(name, kind):
    assert match_engine_layer(name, _index(c=["a", "b", "X", "MaxPool_2"])).kind == kind
