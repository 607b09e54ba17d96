"""ONNX -> TFLite on the tiny three-component model: FP32 parity, INT8 from our table,
per-component float fallback, fp16 weights, int8 I/O, manifest and artifacts.

Every artifact is converted once per module (TFLite conversions take seconds each).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.export.tflite import flatbuffer as fb
from edgeseg.export.manifest import Manifest
from edgeseg.export.tflite import export_tflite
from edgeseg.runtimes.base import load_runtime
from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
from tests.tflite_helpers import cosine, first_image, synth_images, tiny_export

pytestmark = pytest.mark.tflite

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from edgeseg.data.images import select_images
    from edgeseg.export.manifest import input_spec_of
    from edgeseg.quantize.calibrate import calibrate

    root = tmp_path_factory.mktemp("tflite")
    images = synth_images(root / "synth")
    result = tiny_export(root / "tiny")
    table = calibrate(result.onnx_path, select_images(images, input_spec_of(result.manifest)), method="kl")
    return {"onnx": result.onnx_path, "images": images, "table": table, "folder": result.folder}


@pytest.fixture(scope="module")
def fp32(setup):
    return export_tflite(setup["onnx"], plan="fp32", images=setup["images"])


@pytest.fixture(scope="module")
def int8(setup):
    return export_tflite(setup["onnx"], plan="int8", table=setup["table"], images=setup["images"])


@pytest.fixture(scope="module")
def mixed(setup):
    # The model's preset "mixed" = backbone=int8,neck=int8,head=fp16 (tests/tiny_models.py).
    return export_tflite(setup["onnx"], plan="mixed", table=setup["table"], images=setup["images"])


def _run_both(setup, artifact):
    x = first_image(setup["images"], setup["onnx"])
    ref = OnnxRuntimeRuntime(setup["onnx"]).run({"image": x})
    with load_runtime(artifact) as rt:  # by suffix, through the generic loader bench/eval use
        got = rt.run({"image": x})
    return ref, got


# ------------------------------------------------------------------ FP32
def test_fp32_matches_onnxruntime(setup, fp32):
    ref, got = _run_both(setup, fp32.path)
    assert set(got) == set(ref) == {"logits", "masks", "features"}
    for name in ref:
        assert got[name].shape == ref[name].shape, name
        err = float(np.max(np.abs(got[name] - ref[name])))
        print(f"fp32 {name}: max abs error {err:.2e}, cosine {cosine(got[name], ref[name]):.8f}")
        assert err < 1e-4, name
        assert cosine(got[name], ref[name]) > 0.99999, name


def test_fp32_runtime_presents_onnx_names_shapes_and_layout(setup, fp32):
    with load_runtime(fp32.path) as rt:
        assert rt.backend == "tflite" and rt.delegated  # XNNPACK, as on a phone
        assert [(i.name, i.shape, i.dtype) for i in rt.inputs()] == [("image", [1, 3, 64, 64], "float32")]
        assert {o.name: o.shape for o in rt.outputs()} == {"logits": [1, 4, 3], "masks": [1, 4, 32, 32],
                                                           "features": [1, 16, 32, 32]}
    # The file itself takes NHWC: the runtime transposes, as the manifest records.
    view = fb.describe(fp32.path.read_bytes())
    assert view.tensors[view.signature_inputs["image"]].shape == [1, 64, 64, 3]
    io = {e["name"]: e for e in fp32.entry["io"]}
    assert io["image"]["perm"] == [0, 2, 3, 1]
    with load_runtime(fp32.path, layout="native") as rt:
        assert rt.inputs()[0].shape == [1, 64, 64, 3]


def test_fp32_is_all_float_and_every_op_is_mapped(fp32):
    view = fb.describe(fp32.path.read_bytes())
    assert all(t.dtype in ("float32", "int32", "int64", "bool") for t in view.tensors)
    assert fp32.unmapped_ops == []
    assert set(fp32.entry["components"]) == {"backbone", "neck", "head"}
    assert all(c["int8_ops"] == 0 for c in fp32.entry["components"].values())


def test_manifest_entry_and_files(setup, fp32):
    folder = setup["folder"]
    m = Manifest.load(folder)
    entry = m.artifact(fp32.path.name)
    assert fp32.path.name == "tiny_seg.fp32.tflite"
    assert entry["kind"] == "tflite" and entry["source"] == "tiny_seg.onnx"
    assert entry["precision"]["precisions"] == {"backbone": "fp32", "neck": "fp32", "head": "fp32"}
    assert entry["calibration"] is None  # nothing was quantized
    assert entry["parity"]["reference"] == "onnxruntime fp32"
    assert all(p["cosine"] > 0.99999 for p in entry["parity"]["outputs"])
    assert "onnx2tf" in entry["versions"] and "ai-edge-litert" in entry["versions"]
    assert any(h["step"] == "export-tflite" for h in m.history)
    # The ONNX entry is untouched and still primary; log and conversion report sit beside the file.
    assert m.artifact("tiny_seg.onnx")["primary"] is True
    log = (folder / entry["log"]).read_text()
    assert "onnx_op_type" in log and "\x1b[" not in log  # onnx2tf's narration, without terminal colours
    assert "/backbone/stem/stem.0/Conv" in log  # the name table maps work names back to ONNX
    side = json.loads((folder / entry["report"]).read_text())
    assert {o["index"] for o in side["op_components"]} == set(range(len(fb.describe(fp32.path.read_bytes()).ops)))
    # No build folder left behind.
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ INT8
def test_int8_runs_and_backbone_output_stays_close(setup, int8):
    ref, got = _run_both(setup, int8.path)
    for name in ref:
        assert got[name].shape == ref[name].shape and np.all(np.isfinite(got[name])), name
        print(f"int8 {name}: max abs error {np.max(np.abs(got[name] - ref[name])):.3g}, "
              f"cosine {cosine(got[name], ref[name]):.5f}")
    # `features` is backbone + neck (convs): int8 must stay close. The head's softmax runs
    # over 32*32 positions at a fixed 1/256 output scale, so its outputs are not bounded here.
    assert cosine(got["features"], ref["features"]) > 0.99
    view = fb.describe(int8.path.read_bytes())
    assert sum(op.op_type == "CONV_2D" and view.tensors[op.outputs[0]].dtype == "int8" for op in view.ops) == 3


def test_int8_manifest_says_our_table_was_used(int8):
    calib = int8.entry["calibration"]
    assert calib["source"] == "edgeseg" and int8.calib_source == "edgeseg"
    assert calib["table"]["method"] == "kl"
    assert calib["ranges_from_table"] >= 10
    assert calib["ranges_from_table"] + calib["ranges_from_tflite"] == calib["activation_tensors"]
    assert calib["representative_images"]["count"] == 8


def _int8_params(path):
    view = fb.describe(path.read_bytes())
    return {t.name: t for t in view.tensors if t.dtype == "int8" and len(t.scale) == 1 and not t.constant}


def test_ranges_written_equal_the_table(setup, int8):
    """Read the quantization parameters back from the flatbuffer: scale and zero point of
    every tensor we gave a range must be TFLite's asymmetric int8 encoding of that range."""
    from edgeseg.export.tflite.worker import table_range

    side = json.loads(int8.report.read_text())
    written = side["calibration"]["ranges"]
    params = _int8_params(int8.path)
    checked = 0
    for name, r in written.items():
        if name not in params:
            continue  # e.g. a tensor of a fused op that no longer exists
        expected = table_range(setup["table"].ranges[r["onnx"]].to_dict())
        assert (r["min"], r["max"]) == pytest.approx(expected)
        lo, hi = expected
        t = params[name]
        if t.scale[0] == pytest.approx(1 / 256) and t.zero_point[0] == -128:
            continue  # fixed-scale output (SOFTMAX/LOGISTIC): TFLite keeps its own, by design
        assert t.scale[0] == pytest.approx((hi - lo) / 255, rel=1e-5), name
        assert abs(t.zero_point[0] - (-128 - lo / t.scale[0])) <= 1.0, name
        checked += 1
    assert checked >= 8, f"only {checked} tensors checked"
    # The graph input gets the table's range too: the QUANTIZE op right after it uses it.
    assert any(r["onnx"] == "image" for r in written.values())
    view = fb.describe(int8.path.read_bytes())
    (q,) = [op for op in view.ops if op.op_type == "QUANTIZE" and op.inputs[0] == view.signature_inputs["image"]]
    lo, hi = table_range(setup["table"].ranges["image"].to_dict())
    assert view.tensors[q.outputs[0]].scale[0] == pytest.approx((hi - lo) / 255, rel=1e-5)


def test_fixed_scale_outputs_keep_tflite_scale(int8):
    view = fb.describe(int8.path.read_bytes())
    softmax = [op for op in view.ops if op.op_type == "SOFTMAX"]
    assert softmax
    for op in softmax:
        out = view.tensors[op.outputs[0]]
        assert out.dtype == "int8" and out.scale == [pytest.approx(1 / 256)] and out.zero_point == [-128]


def test_calib_source_tflite_uses_tflite_ranges(setup, int8):
    own = export_tflite(setup["onnx"], plan="int8", images=setup["images"], calib_source="tflite",
                        filename="tiny_seg.int8-tflite-calib.tflite")
    assert own.entry["calibration"]["source"] == "tflite"
    assert own.entry["calibration"]["ranges_from_table"] == 0
    assert own.entry["calibration"]["table"] is None
    ours, theirs = _int8_params(int8.path), _int8_params(own.path)
    common = [n for n in ours if n in theirs]
    assert len(common) >= 8
    # KL clips outliers where TFLite's min/max does not: some scales must differ.
    assert any(abs(ours[n].scale[0] - theirs[n].scale[0]) > 1e-3 * theirs[n].scale[0] for n in common)


# ------------------------------------------------------------------ mixed plan
def test_mixed_plan_keeps_the_head_float_with_fp16_weights(mixed):
    """Checked on the flatbuffer by op type, independently of our op -> component map:
    in the tiny model every FULLY_CONNECTED, SOFTMAX and BATCH_MATMUL is in the head, every
    CONV_2D/DEPTHWISE_CONV_2D in the backbone or neck."""
    view = fb.describe(mixed.path.read_bytes())
    producer = view.producers()
    head_ops = [op for op in view.ops if op.op_type in ("FULLY_CONNECTED", "SOFTMAX", "BATCH_MATMUL")]
    conv_ops = [op for op in view.ops if op.op_type in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(head_ops) == 6 and len(conv_ops) == 4
    for op in head_ops:
        assert view.op_dtypes(op)["outputs"] == ["float32"], op
        assert all(d == "float32" for d in view.op_dtypes(op)["inputs"]), op
    for op in conv_ops:
        assert view.tensors[op.outputs[0]].dtype == "int8", op
    fc_weights = [op.inputs[1] for op in head_ops if op.op_type == "FULLY_CONNECTED"]
    for w in fc_weights:  # float16 constants behind a DEQUANTIZE (fp16 component)
        deq = view.ops[producer[w]]
        assert deq.op_type == "DEQUANTIZE" and view.tensors[deq.inputs[0]].dtype == "float16"
    assert mixed.entry["fp16_constants"] >= 4


def test_mixed_plan_component_summary_and_accuracy(setup, mixed, int8):
    comps = mixed.entry["components"]
    assert comps["head"]["int8_ops"] == 0 and comps["head"]["float_ops"] > 0
    assert comps["backbone"]["float_ops"] == 0 and comps["backbone"]["int8_ops"] > 0
    assert comps["neck"]["float_ops"] == 0 and comps["neck"]["int8_ops"] > 0
    assert mixed.path.name == "tiny_seg.mixed.tflite"  # a preset names the file
    assert mixed.plan.precisions == {"backbone": "int8", "neck": "int8", "head": "fp16"}
    assert mixed.entry["precision"]["name"] == "mixed"
    ref, got = _run_both(setup, mixed.path)
    _, all_int8 = _run_both(setup, int8.path)
    # A float head on int8 features is far closer to FP32 than the all-int8 head, whose
    # softmax over 32*32 positions rounds to zero at TFLite's fixed 1/256 output scale.
    for name in ("logits", "masks"):
        c_mixed, c_int8 = cosine(got[name], ref[name]), cosine(all_int8[name], ref[name])
        print(f"{name}: cosine mixed {c_mixed:.5f}, all-int8 {c_int8:.5f}")
        assert c_mixed > c_int8 + 0.05, name
    assert cosine(got["logits"], ref["logits"]) > 0.99


# ------------------------------------------------------------------ int8 I/O
def test_int8_io_is_quantized_by_the_runtime(setup, int8):
    res = export_tflite(setup["onnx"], plan="int8", table=setup["table"], images=setup["images"],
                        int8_io=True, filename="tiny_seg.int8io.tflite")
    view = fb.describe(res.path.read_bytes())
    assert view.tensors[view.signature_inputs["image"]].dtype == "int8"
    assert all(view.tensors[i].dtype == "int8" for i in view.signature_outputs.values())
    ref, got = _run_both(setup, res.path)
    with load_runtime(res.path) as rt:
        assert rt.inputs()[0].dtype == "float32"  # callers still exchange float32
    _, float_io = _run_both(setup, int8.path)
    assert got["features"].dtype == np.float32
    assert cosine(got["features"], ref["features"]) > 0.99
    assert cosine(got["features"], float_io["features"]) > 0.99


# ------------------------------------------------------------------ flatbuffer helpers
def test_flatbuffer_roundtrip_preserves_the_model(fp32, setup):
    buf = fp32.path.read_bytes()
    again = fb.write_model(fb.read_model(buf))
    a, b = fb.describe(buf), fb.describe(again)
    assert [o.op_type for o in a.ops] == [o.op_type for o in b.ops]
    assert [(t.name, t.shape, t.dtype) for t in a.tensors] == [(t.name, t.shape, t.dtype) for t in b.tensors]
    out = setup["folder"] / "roundtrip.tflite"
    out.write_bytes(again)
    try:
        ref, got = _run_both(setup, fp32.path)
        from edgeseg.runtimes.tflite import TFLiteRuntime

        with TFLiteRuntime(out, io=fp32.entry["io"]) as rt:
            x = first_image(setup["images"], setup["onnx"])
            again_out = rt.run({"image": x})
        for k in got:
            np.testing.assert_array_equal(again_out[k], got[k])
    finally:
        out.unlink()


def test_fp16_weights_pass_on_every_op_matches_fp32_closely(setup, fp32):
    from edgeseg.runtimes.tflite import TFLiteRuntime

    buf = fp32.path.read_bytes()
    view = fb.describe(buf)
    half, n = fb.fp16_weights(buf, range(len(view.ops)))
    after = fb.describe(half)
    f16 = [t for t in after.tensors if t.constant and t.dtype == "float16"]
    assert n == len(f16) >= 8
    # Every weight of a compute op now comes from a DEQUANTIZE of a float16 constant.
    producer = after.producers()
    for op in after.ops:
        if op.op_type in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            assert after.ops[producer[op.inputs[1]]].op_type == "DEQUANTIZE", op
    assert len(half) < len(buf)
    out = setup["folder"] / "half.tflite"
    out.write_bytes(half)
    try:
        x = first_image(setup["images"], setup["onnx"])
        with TFLiteRuntime(out, io=fp32.entry["io"]) as rt:
            got = rt.run({"image": x})
        ref = OnnxRuntimeRuntime(setup["onnx"]).run({"image": x})
        for k in ref:
            assert cosine(got[k], ref[k]) > 0.999, k
    finally:
        out.unlink()


# ------------------------------------------------------------------ fp16, bare files
def test_fp16_plan_stores_float16_weights_and_stays_close(setup, fp32):
    res = export_tflite(setup["onnx"], plan="fp16", images=setup["images"])
    assert res.path.name == "tiny_seg.fp16.tflite" and res.entry["calibration"] is None
    view = fb.describe(res.path.read_bytes())
    producer = view.producers()
    weights = [op.inputs[1] for op in view.ops if op.op_type in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert weights
    for w in weights:  # TFLite's float16 quantization: fp16 constants dequantized at load time
        deq = view.ops[producer[w]]
        assert deq.op_type == "DEQUANTIZE" and view.tensors[deq.inputs[0]].dtype == "float16"
    assert res.path.stat().st_size < fp32.path.stat().st_size
    ref, got = _run_both(setup, res.path)
    for name in ref:
        print(f"fp16 {name}: max abs error {np.max(np.abs(got[name] - ref[name])):.2e}")
        assert cosine(got[name], ref[name]) > 0.999, name


def test_bare_tflite_without_manifest_uses_native_names_and_layout(setup, fp32, tmp_path):
    import shutil

    bare = tmp_path / "copied.tflite"
    shutil.copyfile(fp32.path, bare)
    x = first_image(setup["images"], setup["onnx"])
    ref = OnnxRuntimeRuntime(setup["onnx"]).run({"image": x})
    with load_runtime(bare) as rt:
        (inp,) = rt.inputs()
        assert (inp.name, inp.shape) == ("image", [1, 64, 64, 3])  # signature key, NHWC
        got = rt.run({"image": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
    np.testing.assert_allclose(got["logits"], ref["logits"], atol=1e-4)
