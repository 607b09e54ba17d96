"""TNN preflight (`edgeseg check --target tnn`) and the export's refusal of ARM-incompatible graphs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from edgeseg.cli import main
from edgeseg.errors import EdgesegError
from edgeseg.export import compat
from edgeseg.export.compat.tnn import ARM_FP16, ARM_KERNELS
from edgeseg.export.tnn import export_tnn, read_tnn
from edgeseg.quantize.plan import PrecisionPlan
from tests.tnn_nets import make_model, vi


def einsum_model():
    nodes = [helper.make_node("Einsum", ["k", "f"], ["m"], equation="bnc, bcd -> bnd", name="kernels_x_features"),
             helper.make_node("Relu", ["m"], ["y"], name="relu")]
    return make_model(nodes, [vi("k", [1, 4, 8]), vi("f", [1, 8, 16])], [vi("y", [1, 4, 16])],
                      component="mask_decoder")


def _item(report, op, severity=None):
    items = [i for i in report.items if i.op_type == op and severity in (None, i.severity)]
    assert len(items) == 1, report.items
    return items[0]


def test_einsum_fails_on_arm_with_the_fix_named():
    report = compat.check(einsum_model(), "tnn", device="arm")
    assert not report.ok
    item = _item(report, "Einsum")
    assert item.severity == "error" and item.nodes == ["kernels_x_features"] and item.component == "mask_decoder"
    assert "no ARM kernel" in item.reason
    assert "use MatMul instead of Einsum" in item.fix


def test_arm_export_refuses_and_writes_nothing_but_x86_exports(tmp_path):
    with pytest.raises(EdgesegError) as err:
        export_tnn(einsum_model(), tmp_path / "arm", name="m")
    assert "use MatMul instead of Einsum" in str(err.value) and "kernels_x_features" in str(err.value)
    assert not (tmp_path / "arm").exists()
    result = export_tnn(einsum_model(), tmp_path / "x86", device="x86", name="m")
    assert result.test_flags[result.test_flags.index("-dt") + 1] == "X86"
    layer = read_tnn(result.proto_path).layers[0]
    # TNN separates Einsum operands with ';' because ',' would split the proto line
    assert (layer.type, layer.params["equation"]) == ("Einsum", "bnc;bcd->bnd")
    assert compat.check(einsum_model(), "tnn", device="x86").ok


def test_lone_erf_fails_on_arm_but_gelu_pattern_does_not():
    lone = make_model([helper.make_node("Erf", ["x"], ["y"], name="erf")], [vi("x", [1, 4])], [vi("y", [1, 4])])
    item = _item(compat.check(lone, "tnn"), "Erf")
    assert item.severity == "error" and "GELU" in item.fix
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    gelu = make_model(nodes, [vi("x", [1, 4])], [vi("y", [1, 4])],
                      {"sqrt2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)})
    report = compat.check(gelu, "tnn")
    assert report.ok and not [i for i in report.items if i.op_type == "Erf"]


def test_softmax_over_axis_0_and_unbroadcastable_matmul_fail_on_arm():
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=0, name="sm0"),
             helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")]
    model = make_model(nodes, [vi("x", [2, 3]), vi("a", [2, 1, 4, 5]), vi("b", [1, 3, 5, 6])],
                       [vi("s", [2, 3]), vi("y", [2, 3, 4, 6])])
    report = compat.check(model, "tnn")
    assert "axis 0" in _item(report, "Softmax").reason
    assert "batch" in _item(report, "MatMul").reason and _item(report, "MatMul").severity == "error"
    ok = make_model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
                    [vi("a", [1, 3, 4, 5]), vi("b", [3, 5, 6])], [vi("y", [1, 3, 4, 6])])
    assert compat.check(ok, "tnn").ok  # leading 1s pair up fine


def test_fp16_warnings_follow_the_plan():
    model = make_model([helper.make_node("HardSwish", ["x"], ["y"], name="hs")], [vi("x", [1, 4, 2, 2])],
                       [vi("y", [1, 4, 2, 2])])
    item = _item(compat.check(model, "tnn"), "HardSwish")
    assert item.severity == "warn" and "x*ReLU6(x+3)/6" in item.fix
    fp32 = PrecisionPlan.parse("*=fp32", ["backbone"])
    assert compat.check(model, "tnn", plan=fp32).items == []
    fp16 = PrecisionPlan.parse("*=fp16", ["backbone"])
    assert compat.check(model, "tnn", plan=fp16).warnings


def test_unmapped_ops_are_listed_once_per_op_with_all_nodes():
    nodes = [helper.make_node("Where", ["c", "x", "x"], ["w1"], name="where_a"),
             helper.make_node("Where", ["c", "w1", "x"], ["w2"], name="where_b")]
    model = make_model(nodes, [vi("c", [1, 4], onnx.TensorProto.BOOL), vi("x", [1, 4])], [vi("w2", [1, 4])])
    report = compat.check(model, "tnn")
    item = _item(report, "Where")
    assert item.nodes == ["where_a", "where_b"] and "mask" in item.fix
    assert report.to_dict()["errors"] == 1


def test_kernel_tables_are_consistent():
    assert ARM_FP16 <= ARM_KERNELS
    assert {"Einsum", "Shape", "Where", "Erf", "Range", "TopK", "GatherND"}.isdisjoint(ARM_KERNELS)
    assert {"HardSwish", "Upsample"}.isdisjoint(ARM_FP16)


def test_registry_and_unknown_target():
    assert "tnn" in compat.CHECKERS
    with pytest.raises(EdgesegError, match="unknown target"):
        compat.check(einsum_model(), "caffe")


# --------------------------------------------------------------------------- CLI


def _run(argv, capsys):
    with pytest.raises(SystemExit) as ex:
        main(argv)
    out = capsys.readouterr()
    return ex.value.code, out.out, out.err


def test_cli_check_exits_1_on_errors_and_0_when_clean(tmp_path, capsys):
    bad, good = tmp_path / "bad.onnx", tmp_path / "good.onnx"
    onnx.save(einsum_model(), str(bad))
    onnx.save(make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 4])], [vi("y", [1, 4])]), str(good))
    code, out, _ = _run(["check", str(bad), "--target", "tnn"], capsys)
    assert code == 1 and "Einsum" in out and "FAILS" in out
    code, out, _ = _run(["check", str(bad), "--target", "tnn", "--device", "x86"], capsys)
    assert code == 0 and "OK" in out
    code, out, _ = _run(["check", str(good), "--json"], capsys)
    assert code == 0 and json.loads(out)["ok"] is True
    code, _, err = _run(["check", str(tmp_path / "missing.onnx")], capsys)
    assert code == 1 and "not found" in err


def test_cli_inspect_dumps_tnn_and_onnx(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(einsum_model(), str(path))
    result = export_tnn(path, tmp_path, device="x86")
    code, out, _ = _run(["inspect", str(result.proto_path), "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["layer_types"] == {"Einsum": 1, "ReLU": 1}
    assert data["layers"][0]["params"]["equation"] == "bnc;bcd->bnd"
    code, out, _ = _run(["inspect", str(result.model_path)], capsys)
    assert code == 0 and "Einsum" in out
    code, out, _ = _run(["inspect", str(path), "--json"], capsys)
    assert json.loads(out)["components"] == {"mask_decoder": {"Einsum": 1, "Relu": 1}}
    code, _, err = _run(["inspect", str(tmp_path / "m.tnnmodel.bak")], capsys)
    assert code != 0


def test_reversed_slices_and_edge_padding_fail_on_arm_only():
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"], name="flip_w"),
             helper.make_node("Pad", ["y", "p"], ["z"], mode="edge", name="edge")]
    model = make_model(nodes, [vi("x", [1, 2, 3, 4])], [vi("z", [1, 2, 3, 5])],
                       {"s": np.array([-1], np.int64), "e": np.array([0], np.int64), "a": np.array([3], np.int64),
                        "st": np.array([-1], np.int64), "p": np.array([0, 0, 0, 1, 0, 0, 0, 0], np.int64)})
    assert "edge" in _item(compat.check(model, "tnn"), "Pad", "error").reason
    item = _item(compat.check(model, "tnn"), "StridedSliceV2", "error")
    assert item.nodes == ["flip_w"] and "host" in item.fix
    assert compat.check(model, "tnn", device="x86").ok
