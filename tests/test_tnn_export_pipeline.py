"""`edgeseg export --to tnn`: every graph of an artifact folder converted, plans and tables applied."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeseg.export.tnn import read_tnn
from edgeseg.export.tnn.artifacts import export_tnn_graphs
from edgeseg.export.tnn.writer import convert
from tests import tnn_reference as ref
from tests.tnn_nets import minmax_table, ort_run


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from edgeseg.export.onnx import export_onnx
    from tests.tiny_models import TinySegModel

    import torch

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny") / "tiny_seg"
    return export_onnx(TinySegModel().eval(), out)


def test_mixed_preset_from_the_manifest_with_a_table(tiny_folder, tmp_path):
    onnx_path = tiny_folder.onnx_path
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    table = minmax_table(onnx.load(str(onnx_path)), onnx_path, [{"image": x}])
    table_path = table.save(tmp_path / "table.json")
    # backbone=int8,neck=int8,head=fp16; x86: the head's attention cannot be in an ARM int8 network
    [result] = export_tnn_graphs([onnx_path], "mixed", table_path, device="x86")
    assert result.precisions == {"backbone": "int8", "neck": "int8", "head": "fp16"}
    model = read_tnn(result.proto_path)
    # layer names are deterministic, so a fresh conversion says which component each belongs to
    components = {layer.name: layer.component for layer in convert(onnx.load(str(onnx_path))).model.layers}
    quantized = {components.get(layer.name) for layer in model.layers if layer.type.startswith("Quantized")}
    assert quantized == {"backbone", "neck"}
    half = {components.get(layer.name) for layer in model.layers
            if any(getattr(v, "dtype", None) == np.float16 for v in (layer.resource or {}).values())}
    assert half == {"head"}
    manifest = json.loads((onnx_path.parent / "manifest.json").read_text())
    entry = manifest["artifacts"][result.proto_path.name]
    assert entry["precision"]["name"] == "mixed" and entry["calibration"] == "minmax"
    assert manifest["history"][-1]["step"] == "convert"
    got = ref.run(model, {"image": x}, device="x86")
    for name, want in ort_run(onnx_path, {"image": x}).items():
        g = got[result.name_map["outputs"][name]]
        cos = float(g.ravel() @ want.ravel() / (np.linalg.norm(g) * np.linalg.norm(want)))
        assert cos > 0.99, name


@pytest.mark.slow
def test_cli_export_to_tnn_writes_both_graphs(tmp_path, capsys):
    from edgeseg.cli import main

    out = tmp_path / "mi"
    with pytest.raises(SystemExit) as ex:
        main(["export", "mobileinst_test", "--input-size", "64", "-o", str(out), "--to", "tnn"])
    assert ex.value.code == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert {"mobileinst_test.tnnproto", "mobileinst_test.tnnmodel", "mobileinst_test.features.tnnproto",
            "mobileinst_test.features.tnnmodel"} <= names
    artifacts = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert artifacts["mobileinst_test.tnnproto"]["tnn"]["test_flags"][-2:] == ["-pr", "HIGH"]
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = ref.run(read_tnn(out / "mobileinst_test.tnnproto"), {"image": x})
    outputs = artifacts["mobileinst_test.tnnproto"]["tnn"]["name_map"]["outputs"]
    for name, want in ort_run(out / "mobileinst_test.onnx", {"image": x}).items():
        np.testing.assert_allclose(got[outputs[name]], want, atol=1e-4, rtol=1e-3, err_msg=name)
