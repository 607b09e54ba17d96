"""Engine layer information and trtexec profiles (real published outputs) -> per-component reports."""

import json
import re
from pathlib import Path

import pytest

from edgeseg.errors import EdgesegError
from edgeseg.export.tensorrt.layerinfo import dtype_of, parse_layer_information, precision_report
from edgeseg.export.tensorrt.names import OnnxIndex
from edgeseg.export.tensorrt.profile import (UNATTRIBUTED, component_times, parse_profile_table,
                                             parse_trtexec_profile)

DATA = Path(__file__).parent / "data" / "tensorrt"


def _resnet_index(graph_file: str, head_from: int) -> OnnxIndex:
    """The ONNX nodes named in a published ResNet engine, split into stem / body / head by graph order.

    The engines' ONNX files are not published, so the nodes come from the layer names
    (``Conv_9``: op and position); the split is this test's assumption, the names are real.
    """
    info = parse_layer_information((DATA / graph_file).read_text())
    nodes = {t for layer in info.layers for t in re.findall(r"\b[A-Za-z]+_\d+\b", layer.name)}
    ordered = sorted(nodes, key=lambda t: int(t.rsplit("_", 1)[1]))
    pos = lambda t: int(t.rsplit("_", 1)[1])  # noqa: E731
    return OnnxIndex.from_components({
        "stem": [t for t in ordered if pos(t) <= 12],
        "body": [t for t in ordered if 12 < pos(t) < head_from],
        "head": [t for t in ordered if pos(t) >= head_from]})


def test_data_type_words():
    assert dtype_of("Thirty-two wide channel vectorized row major Int8 format") == "int8"
    assert dtype_of("Channel major FP16 format where channel % 8 == 0") == "fp16"
    assert dtype_of("Row major linear FP32") == "fp32"
    assert dtype_of("Row major linear UInt8 format") == "uint8"
    assert dtype_of("Row major linear BFloat16 format") == "bf16"
    assert dtype_of("Half") == "fp16" and dtype_of("Float") == "fp32" and dtype_of(None) is None


def test_qat_engine_precision_report_finds_the_int8_head():
    """A Q/DQ ResNet engine (A100): every conv runs int8, including the classifier a plan wanted in fp16."""
    idx = _resnet_index("trex_a100_resnet_qat.graph.json", head_from=296)
    info = parse_layer_information((DATA / "trex_a100_resnet_qat.graph.json").read_text())
    assert info.detailed and len(info.layers) == 24 and info.bindings == ["input.1", "476"]
    report = precision_report(info, idx, {"stem": "int8", "body": "int8", "head": "fp16"})
    by = {c.component: c for c in report.components}
    assert by["body"].compute_layers == 19 and by["body"].actual == {"int8": 19}  # 16 block convs + 3 downsamples
    assert by["body"].verdict == "as planned"
    assert by["stem"].actual == {"int8": 1}  # conv1 + pool fused (ConvActPool); QuantizeLinear_2 is a reformat type
    assert by["head"].verdict == "1 layer(s) differ"
    assert by["head"].mismatched[0]["precision"] == "int8" and "Gemm_311" in by["head"].mismatched[0]["layer"]
    assert report.unattributed == ["copied_squeeze_after_(Unnamed Layer* 361) [ElementWise]"]
    assert not report.ok
    md = report.to_markdown()
    assert "| head | fp16 | 1 | int8 1 | 0 | 1 layer(s) differ |" in md
    json.dumps(report.to_dict())  # serialisable


def test_fp16_engine_reformats_count_for_the_layer_they_feed():
    idx = _resnet_index("trex_a100_resnet_fp16.graph.json", head_from=46)
    info = parse_layer_information((DATA / "trex_a100_resnet_fp16.graph.json").read_text())
    report = precision_report(info, idx, {"stem": "fp16", "body": "fp16", "head": "fp16"})
    by = {c.component: c for c in report.components}
    assert all(c.verdict == "as planned" for c in report.components)
    assert by["stem"].reformats == 5  # input reformat + NoOp copies in front of Conv_5..Conv_10
    assert by["head"].reformats == 2 and by["head"].compute_layers == 1  # Gemm_48; the pool is no compute
    assert report.rules["fused name"] > 0 and report.rules["reformat for fused name"] > 0


def test_profile_json_rolls_up_to_components():
    idx = _resnet_index("trex_a100_resnet_fp16.graph.json", head_from=46)
    prof = parse_trtexec_profile((DATA / "trex_a100_resnet_fp16.profile.json").read_text())
    assert prof.iterations == 1 and len(prof.layers) == 36
    assert prof.layers[0].name == "Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1"
    assert prof.layers[0].average_ms == pytest.approx(0.080896) and prof.layers[0].median_ms == pytest.approx(0.080896)
    br = component_times(prof, idx, {"stem": "fp16", "body": "fp16", "head": "fp16"})
    assert sum(c.average_ms for c in br.components) == pytest.approx(prof.total_ms)
    assert br.component("stem").reformat_ms == pytest.approx(0.080896)  # the input reformat feeds Conv_0
    assert sum(c.share for c in br.components) == pytest.approx(1.0)
    assert UNATTRIBUTED not in [c.component for c in br.components]  # every layer named a node
    assert "| stem | fp16 |" in br.to_markdown()


def test_profile_with_unescaped_quote_in_a_name_is_still_read():
    # trtexec writes names without JSON escaping: a quote in a layer name breaks json.loads.
    text = ('[\n  { "count" : 20 }\n, { "name" : "/head/Say"hi"/Conv", "timeMs" : 2.0, "averageMs" : 0.1, '
            '"medianMs" : 0.1, "percentage" : 40 }\n, { "name" : "/head/Relu", "timeMs" : 3.0, "averageMs" : 0.15, '
            '"medianMs" : 0.15, "percentage" : 60 }\n]\n')
    prof = parse_trtexec_profile(text)
    assert prof.iterations == 20 and [l.name for l in prof.layers] == ['/head/Say"hi"/Conv', "/head/Relu"]
    with pytest.raises(EdgesegError, match="lists no layers"):
        parse_trtexec_profile('[{ "count" : 3 }]')


def test_profile_tables_in_both_layouts():
    old = parse_profile_table((DATA / "trtexec_profile_table_times_first_issue3842.txt").read_text())
    assert old.iterations == 2094 and len(old.layers) == 6
    assert old.layers[1].name == ("node_of_gpu_0/conv1_1 + node_of_gpu_0/res_conv1_bn_1 + "
                                  "node_of_gpu_0/res_conv1_bn_2")
    assert (old.layers[1].total_ms, old.layers[1].average_ms, old.layers[1].median_ms) == (47.82, 0.0228, 0.0225)
    new = parse_profile_table((DATA / "trtexec_profile_table_name_first_issue2577.txt").read_text())
    assert new.iterations == 1860 and new.layers[0].name == "/transformer/h.7/attn/Range_1"
    assert new.layers[0].average_ms == 0.0056 and new.layers[0].percentage == 0.3
    fn = parse_profile_table((DATA / "trtexec8.6_profile_table_foreignnode_issue4236.txt").read_text())
    assert len(fn.layers) == 3 and fn.layers[2].average_ms == 0.2402
    idx = OnnxIndex.from_components({"decoder": ["Transpose_7808", "Reshape_7814"]})
    br = component_times(fn, idx, {"decoder": "fp16"})
    assert br.component("decoder").reformat_ms == pytest.approx(0.0146 + 0.0166 + 0.2402)
    with pytest.raises(EdgesegError, match="no '=== Profile"):
        parse_profile_table("nothing here")


def test_names_only_information_is_honest_about_precision():
    info = parse_layer_information((DATA / "trtexec8.4_layerinfo_names_only_hackathon-cn-issue18.json").read_text())
    assert not info.detailed and info.bindings == ["x:0", "z:0"]
    idx = OnnxIndex.from_components({"features": ["Conv__25", "Relu", "MaxPool2d"], "head": ["MatMul", "add_2"]})
    report = precision_report(info, idx, {"features": "int8", "head": "fp16"})
    by = {c.component: c for c in report.components}
    assert by["features"].verdict == "unknown (names only)" and by["features"].actual == {}
    assert "names only" in report.to_markdown()


@pytest.mark.parametrize("text,match", [("not json", "not JSON"), ('{"Bindings": []}', "no 'Layers'"),
                                        ('{"Layers": [{"LayerType": "x"}]}', "has no name")])
def test_bad_layer_information(text, match):
    with pytest.raises(EdgesegError, match=match):
        parse_layer_information(text)
