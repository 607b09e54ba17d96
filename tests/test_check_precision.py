"""``edgeseg check --plan``: what each target will actually run, per component and per unit.

On MobileInst's test variant at 64x64 (exported once per module). The predictions come
from the converters' own rules (the QDQ writer, the TNN converter in memory, TFLite's
denylist over its activation fusions); tests/test_tflite_units.py checks the TFLite ones
against a real conversion.
"""

from __future__ import annotations

import json

import onnx
import pytest

from edgeseg.cli import main
from edgeseg.export.compat.precision import qdq_precisions, target_runs
from edgeseg.export.tags import get_component
from edgeseg.quantize.plan import PrecisionPlan

COMPS = ["backbone", "mask_decoder", "instance_decoder"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import torch

    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    torch.manual_seed(0)
    res = export_onnx(create_model("mobileinst_test", input_size=(64, 64)).eval(),
                      tmp_path_factory.mktemp("check") / "mi", graphs=("frame",))
    return res.folder


@pytest.fixture(scope="module")
def model(folder):
    return onnx.load(str(folder / "mobileinst_test.onnx"))


def _check(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["check", *map(str, args)])
    return e.value.code, capsys.readouterr().out


def _row(target: dict, name: str) -> dict:
    return next(r for r in target["runs"]["rows"] if r["name"] == name)


def test_qdq_view_reads_the_writers_placement(model):
    plan = PrecisionPlan.parse("*=int8,instance_decoder/cls_head=fp16", COMPS)
    prec = qdq_precisions(model, plan)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(prec[c] == "int8" for c in convs)
    # LayerNorm's pieces sit outside any Q/DQ pair: they compute in fp32
    norms = [n.name for n in model.graph.node if n.op_type in ("ReduceMean", "Sqrt")]
    assert norms and all(prec[x] == "fp32" for x in norms)
    head = next(n.name for n in model.graph.node if n.name.startswith("/instance_decoder/cls_head/")
                and n.op_type == "Gemm")
    assert prec[head] == "fp16"


def test_every_target_for_a_plan_with_an_exception(folder, capsys):
    code, out = _check(capsys, folder, "--plan", "*=int8,instance_decoder/cls_head=fp16", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True  # int8 TNN on ARM: attention as 2-D layout-agnostic MatMuls
    assert doc["plan"]["exceptions"] == {"instance_decoder/cls_head": "fp16"}
    by = {(t["target"], t["runs"]["variant"]): t for t in doc["targets"]}
    assert [t for t, _ in by] == ["onnxruntime", "tflite", "tnn", "tensorrt", "tensorrt"]
    ort = by[("onnxruntime", "QDQ ONNX, simulated or fused int8")]
    strong = by[("tensorrt", ">= 10, strongly typed")]
    weak = by[("tensorrt", "8.5/8.6, weak typing")]
    tfl = by[("tflite", "LiteRT, XNNPACK CPU")]
    tnn = by[("tnn", "arm")]
    for t in (ort, strong, weak):
        head = _row(t, "instance_decoder/cls_head")
        assert (head["planned"], head["runs"], head["unit"]) == ("fp16", {"fp16": 1}, "instance_decoder/cls_head")
    # TFLite keeps fp16 units' weights float16 and computes fp32 on the CPU
    head = _row(tfl, "instance_decoder/cls_head")
    assert head["runs"] == {"fp32": 1} and "float16 weights" in head["differences"][0]["reason"]
    # TNN: the float layers of a network with int8 layers run fp32; ARM runs the plan (its
    # attention MatMuls float, written so that NC4HW4 and NCHW memory agree)
    head = _row(tnn, "instance_decoder/cls_head")
    assert head["runs"] == {"fp32": 1} and "network with int8 layers" in head["differences"][0]["reason"]
    assert tnn["ok"] is True and not tnn["runs"]["error"]
    # int8 components: the QDQ ONNX (and TensorRT >= 10) computes LayerNorm's pieces in fp32,
    # TFLite in int8 (Softmax at its fixed 1/256 output scale), TensorRT 8.x constrains them to int8
    ids = _row(ort, "instance_decoder")
    assert any("ReduceMean" in d["ops"] and d["runs"] == "fp32" for d in ids["differences"])
    assert _row(strong, "instance_decoder")["runs"] == ids["runs"]
    tfl_ids = _row(tfl, "instance_decoder")
    assert tfl_ids["as_planned"] and any("1/256" in n["reason"] and "Softmax" in n["ops"] for n in tfl_ids["notes"])
    assert _row(weak, "instance_decoder")["runs"] == {"int8": sum(ids["runs"].values())}
    # every counted node is in exactly one row
    assert sum(r["ops"] for r in ort["runs"]["rows"]) == sum(r["ops"] for r in tfl["runs"]["rows"])


def test_tnn_one_precision_per_network_shows_on_an_fp32_unit(folder, capsys):
    code, out = _check(capsys, folder, "--target", "tnn", "--plan", "*=fp16,instance_decoder/cls_head=fp32", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["target"] == "tnn" and "items" in doc  # the compat report, with what runs beside it
    head = next(r for r in doc["runs"]["rows"] if r["name"] == "instance_decoder/cls_head")
    assert head["planned"] == "fp32" and head["runs"] == {"fp16": 1}
    assert "-pr NORMAL" in head["differences"][0]["reason"]
    code, out = _check(capsys, folder, "--target", "tnn", "--tnn-device", "x86", "--plan",
                       "*=fp16,instance_decoder/cls_head=fp32", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["device"] == "x86"
    comp = next(r for r in doc["runs"]["rows"] if r["name"] == "instance_decoder")
    assert set(comp["runs"]) == {"fp32"} and "x86" in comp["differences"][0]["reason"]
    head = next(r for r in doc["runs"]["rows"] if r["name"] == "instance_decoder/cls_head")
    assert head["as_planned"]


def test_tflite_keeps_an_int8_conv_float_when_its_fused_activation_is_float(model):
    """lateral.0.0 is the conv of the lateral.0 block; its ReLU (lateral.0.2) stays in the fp32
    mask decoder, and TFLite fuses the two: the fused op must stay float."""
    plan = PrecisionPlan.parse("*=fp32,mask_decoder/lateral.0/lateral.0.0=int8,mask_decoder/mask_proj=int8", COMPS)
    (tfl,), _ = target_runs(model, plan, ("tflite",))
    rows = {r.name: r for r in tfl.rows}
    lateral = rows["mask_decoder/lateral.0/lateral.0.0"]
    assert lateral.planned == "int8" and dict(lateral.runs) == {"fp32": 1}
    assert "fused op stays float" in lateral.differences[0].reason
    assert dict(rows["mask_decoder/mask_proj"].runs) == {"int8": 1}  # its output is a graph output: no fusion


def test_tensorrt_alone_needs_a_plan_and_shows_both_paths(folder, capsys):
    code, _ = _check(capsys, folder, "--target", "tensorrt")
    assert code != 0
    code, out = _check(capsys, folder, "--target", "tensorrt", "--plan", "*=fp16,backbone/trans=fp32", "--json")
    doc = json.loads(out)
    assert code == 0 and [t["runs"]["variant"] for t in doc["targets"]] == ["8.5/8.6, weak typing",
                                                                           ">= 10, strongly typed"]
    for t in doc["targets"]:
        assert _row(t, "backbone/trans")["runs"] == {"fp32": _row(t, "backbone/trans")["ops"]}


def test_a_unit_that_matches_no_node_is_one_clear_error(folder, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["check", str(folder), "--plan", "*=int8,instance_decoder/no_such_head=fp16"])
    err = capsys.readouterr().err
    assert e.value.code != 0 and "matches no node" in err and "Traceback" not in err


def test_the_table_output_names_units_and_reasons(folder, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")  # rich wraps at the terminal width
    code, out = _check(capsys, folder, "--target", "tflite", "--plan", "*=int8,instance_decoder/cls_head=fp16")
    assert code == 0
    assert "instance_decoder/cls_head" in out and "float16 weights" in out
    assert "tflite (LiteRT, XNNPACK CPU): what runs" in out


def test_rows_cover_every_component_node_once(model):
    plan = PrecisionPlan.parse("*=int8,instance_decoder/global_decoder=fp16,instance_decoder/cls_head=fp32", COMPS)
    (ort,), _ = target_runs(model, plan, ("onnxruntime",))
    counted = {n.name for n in model.graph.node if n.op_type not in
               ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Gather", "Slice", "Split",
                "Constant", "Identity", "Cast", "Expand", "Tile", "ConstantOfShape", "Range", "Size", "Dropout")}
    assert sum(r.counted for r in ort.rows) == len(counted)
    ids = sum(1 for n in model.graph.node if get_component(n) == "instance_decoder" and n.name in counted)
    assert sum(r.counted for r in ort.rows if r.component == "instance_decoder") == ids
    assert [r.name for r in ort.rows] == ["backbone", "mask_decoder", "instance_decoder",
                                         "instance_decoder/global_decoder", "instance_decoder/cls_head"]
