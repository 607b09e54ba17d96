"""BlitzMask to TNN: fp32, fp16 and int8 *on ARM* (its graph has no activation MatMul, so an
int8 network's NC4HW4 blobs meet no NCHW-only kernel), preflight clean, and the files run by
the numpy TNN interpreter agree with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeseg.export.compat import check
from edgeseg.export.tnn import read_tnn
from edgeseg.export.tnn.artifacts import export_tnn_graphs
from tests import tnn_reference as ref
from tests.tnn_nets import minmax_table, ort_run


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import torch

    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    torch.manual_seed(0)
    return export_onnx(create_model("blitzmask_test", num_classes=3).eval(), tmp_path_factory.mktemp("bm") / "bm")


@pytest.mark.parametrize("plan", ["int8", "mixed", "*=fp16", None])
def test_preflight_is_clean_on_arm(folder, plan):
    from edgeseg.quantize.plan import PrecisionPlan

    spec = PrecisionPlan.parse(plan, ("backbone", "fpn", "head"), {"mixed": "backbone=int8,fpn=int8,head=fp16"}) \
        if plan else None
    report = check(str(folder.onnx_path), "tnn", device="arm", plan=spec)
    assert report.ok, [i.to_dict() for i in report.errors]


@pytest.mark.parametrize("plan,min_cosine", [(None, 0.99999), ("*=fp16", 0.999), ("int8", 0.98)])
def test_tnn_files_match_onnxruntime(folder, tmp_path, plan, min_cosine):
    onnx_path = folder.onnx_path
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    table_path = None
    if plan == "int8":
        table_path = minmax_table(onnx.load(str(onnx_path)), onnx_path, [{"image": x}]).save(tmp_path / "t.json")
    [result] = export_tnn_graphs([onnx_path], plan, table_path, device="arm")
    model = read_tnn(result.proto_path)
    if plan == "int8":
        assert sum(layer.type.startswith("Quantized") for layer in model.layers) > 50
    got = ref.run(model, {"image": x})
    for name, want in ort_run(onnx_path, {"image": x}).items():
        g = got[result.name_map["outputs"][name]].astype(np.float64).ravel()
        w = want.astype(np.float64).ravel()
        assert float(g @ w / (np.linalg.norm(g) * np.linalg.norm(w))) > min_cosine, name
