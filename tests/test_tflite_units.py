"""TFLite honours plan exceptions below the component level, op by op.

One conversion of MobileInst's test variant at 64x64 with a plan that has both kinds of
exception: an fp16 unit inside an int8 component (``instance_decoder/cls_head``, the
class head writing ``logits``) and an int8 unit inside an fp32 component
(``mask_decoder/mask_proj``, the conv writing ``mask_features``). The op types are read
from the flatbuffer; where possible the ops are found through the graph outputs they
write (the signature), not through our own op -> unit map.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeseg.export.tags import get_component
from edgeseg.export.tflite import export_tflite
from edgeseg.export.tflite import flatbuffer as fb
from edgeseg.runtimes.base import load_runtime
from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
from tests.tflite_helpers import cosine, first_image, synth_images

pytestmark = pytest.mark.tflite

# lateral.0.0 is a conv whose ReLU (lateral.0.2) stays in the fp32 mask decoder: TFLite fuses
# the two, and the fused op must stay float (what `edgeseg check` predicts, checked below).
PLAN = ("backbone=int8,mask_decoder=fp32,instance_decoder=int8,"
        "instance_decoder/cls_head=fp16,mask_decoder/mask_proj=int8,mask_decoder/lateral.0/lateral.0.0=int8")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    import torch

    from edgeseg.data.images import select_images
    from edgeseg.export.manifest import input_spec_of
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model
    from edgeseg.quantize.calibrate import calibrate

    root = tmp_path_factory.mktemp("tflite-units")
    images = synth_images(root / "synth", size=64, count=2)
    torch.manual_seed(0)
    res = export_onnx(create_model("mobileinst_test", input_size=(64, 64), num_classes=4).eval(), root / "mi",
                      graphs=("frame",))
    table = calibrate(res.onnx_path, select_images(images, input_spec_of(res.manifest)), method="minmax")
    result = export_tflite(res.onnx_path, plan=PLAN, table=table, images=images, num_images=2)
    return res.onnx_path, images, result


def _producer_of_output(view, key):
    """The op computing a graph output: through the DEQUANTIZE that float outputs get."""
    producer = view.producers()
    op = view.ops[producer[view.signature_outputs[key]]]
    if op.op_type == "DEQUANTIZE" and op.inputs[0] in producer:
        op = view.ops[producer[op.inputs[0]]]
    return op


def test_fp16_unit_in_an_int8_component_stays_float_with_fp16_weights(converted):
    _, _, result = converted
    view = fb.describe(result.path.read_bytes())
    head = _producer_of_output(view, "logits")
    assert head.op_type == "FULLY_CONNECTED"
    assert view.op_dtypes(head)["outputs"] == ["float32"]
    weights = view.ops[view.producers()[head.inputs[1]]]  # float16 constant behind a DEQUANTIZE
    assert weights.op_type == "DEQUANTIZE" and view.tensors[weights.inputs[0]].dtype == "float16"
    # every other FULLY_CONNECTED (all in the int8 instance decoder) computes in int8
    others = [op for op in view.ops if op.op_type == "FULLY_CONNECTED" and op.index != head.index]
    assert others and all(view.tensors[op.outputs[0]].dtype == "int8" for op in others)


def test_int8_unit_in_an_fp32_component_is_quantized_alone(converted):
    onnx_path, _, result = converted
    view = fb.describe(result.path.read_bytes())
    proj = _producer_of_output(view, "mask_features")
    assert proj.op_type == "CONV_2D" and view.tensors[proj.outputs[0]].dtype == "int8"
    assert view.tensors[proj.inputs[1]].dtype == "int8"  # int8 weights
    # the rest of the mask decoder stays float: its other convs (all of them, counted in the ONNX)
    model = onnx.load(str(onnx_path))
    mask_convs = sum(n.op_type == "Conv" and get_component(n) == "mask_decoder" for n in model.graph.node)
    float_convs = [op for op in view.ops if op.op_type == "CONV_2D" and view.tensors[op.outputs[0]].dtype == "float32"]
    assert len(float_convs) == mask_convs - 1
    # and the summary written to the manifest says the same, per component and per unit
    units = result.entry["units"]
    assert units["mask_decoder/mask_proj"]["int8_ops"] == 1 and units["mask_decoder/mask_proj"]["float_ops"] == 0
    assert units["instance_decoder/cls_head"]["int8_ops"] == 0 and units["instance_decoder/cls_head"]["float_ops"] == 1
    assert result.entry["components"]["backbone"]["float_ops"] == 0
    assert result.entry["precision"]["exceptions"] == {"instance_decoder/cls_head": "fp16",
                                                       "mask_decoder/mask_proj": "int8",
                                                       "mask_decoder/lateral.0/lateral.0.0": "int8"}
    side = json.loads(result.report.read_text())
    assert {u for oc in side["op_components"] for u in oc.get("units", [])} == {
        "instance_decoder/cls_head", "mask_decoder/mask_proj", "mask_decoder/lateral.0/lateral.0.0"}


def test_check_predicts_what_the_file_runs_per_component_and_unit(converted):
    """`edgeseg check --plan` (no TensorFlow) against the converted file, row by row."""
    from edgeseg.export.compat.precision import target_runs
    from edgeseg.quantize.plan import PrecisionPlan

    onnx_path, _, result = converted
    model = onnx.load(str(onnx_path))
    plan = PrecisionPlan.parse(PLAN, ["backbone", "mask_decoder", "instance_decoder"])
    (predicted,), _ = target_runs(model, plan, ("tflite",))
    view = fb.describe(result.path.read_bytes())
    side = json.loads(result.report.read_text())
    actual: dict[str, set[str]] = {}
    for oc in side["op_components"]:
        op = view.ops[oc["index"]]
        if op.op_type in ("QUANTIZE", "DEQUANTIZE"):
            continue  # conversions, not computation
        name = (oc.get("units") or oc["components"])[0]
        dtype = view.tensors[op.outputs[0]].dtype
        actual.setdefault(name, set()).add("int8" if dtype == "int8" else "float")
    for row in predicted.rows:
        want = {"int8" if p == "int8" else "float" for p in row.runs}
        assert actual.get(row.name) == want, (row.name, dict(row.runs), actual.get(row.name))
    lateral = next(r for r in predicted.rows if r.name == "mask_decoder/lateral.0/lateral.0.0")
    assert lateral.planned == "int8" and set(lateral.runs) == {"fp32"}  # the fusion kept it float


def test_the_mixed_file_runs_and_the_float_head_stays_close(converted):
    onnx_path, images, result = converted
    x = first_image(images, onnx_path)
    want = OnnxRuntimeRuntime(onnx_path).run({"image": x})
    with load_runtime(result.path) as rt:
        got = rt.run({"image": x})
    for name in want:
        assert np.isfinite(got[name]).all(), name
    print(f"logits cosine {cosine(got['logits'], want['logits']):.5f}, "
          f"mask_features cosine {cosine(got['mask_features'], want['mask_features']):.5f}")
    assert cosine(got["mask_features"], want["mask_features"]) > 0.9
