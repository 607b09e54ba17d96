"""End to end on a real zoo model: `edgeseg export mobileinst_test --plan ... --calib DIR`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeseg.export.tags import get_component
from tests.quant_models import make_images


@pytest.mark.slow
def test_export_plan_calib_on_mobileinst(tmp_path):
    from click.testing import CliRunner

    from edgeseg.cli import cli

    images = make_images(tmp_path / "imgs", n=6, size=(96, 128))
    out = tmp_path / "mi"
    res = CliRunner().invoke(cli, ["export", "mobileinst_test", "--input-size", "128", "--graphs", "frame",
                                   "-o", str(out), "--plan", "backbone=int8,mask_decoder=int8,*=fp16",
                                   "--calib", str(images), "--calib-num", "4"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [h["step"] for h in manifest["history"]] == ["export", "calibrate", "quantize"]
    # The spelled-out plan is MobileInst's "mixed" preset: same file name as `quantize --plan mixed`.
    name = "mobileinst_test.mixed.onnx"
    entry = manifest["artifacts"][name]
    assert entry["fidelity"]["num_images"] == 2  # 6 images, 4 calibrate, 2 held out
    assert all(o["cosine"] > 0.9 for o in entry["fidelity"]["outputs"])

    src = onnx.load(out / "mobileinst_test.onnx")
    q = onnx.load(out / name)
    # FP16 component untouched in op types apart from its boundary casts; fp32 I/O kept.
    assert [(o.name, o.type.tensor_type.elem_type) for o in q.graph.output] == \
        [(o.name, o.type.tensor_type.elem_type) for o in src.graph.output]
    # Attention: MatMuls between two activations in int8 components read two DequantizeLinears.
    producer = {o: n for n in q.graph.node for o in n.output}
    inits = {t.name for t in q.graph.initializer}
    act_mm = [n for n in q.graph.node if n.op_type == "MatMul" and get_component(n) == "backbone"
              and all(producer.get(x) is not None and producer[x].input[0] not in inits for x in n.input)]
    assert act_mm, "TopFormer's attention MatMuls should be quantized on both inputs"
    assert all(producer[x].op_type == "DequantizeLinear" for n in act_mm for x in n.input)

    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    rt = OnnxRuntimeRuntime(out / name)
    outs = rt.run(rt.random_feeds())
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in outs.values())
