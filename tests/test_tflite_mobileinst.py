"""MobileInst (zoo test variant, 128x128) through the CLI: `edgeseg export --to tflite`,
FP32 parity with ONNX Runtime, then `edgeseg eval` and `edgeseg bench` on the .tflite."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.cli import main
from edgeseg.export.manifest import Manifest
from edgeseg.runtimes.base import load_runtime
from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
from tests.tflite_helpers import cosine, first_image, synth_images

pytestmark = pytest.mark.tflite


def _cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("mobileinst-tflite")
    images = synth_images(root / "synth", size=128, count=4)
    out = root / "mi"
    assert _cli("export", "mobileinst_test", "--input-size", 128, "--num-classes", 4, "--graphs", "frame",
                "-o", out, "--to", "tflite") == 0
    return out, images, root / "synth"


def test_cli_writes_the_tflite_artifact(exported):
    out, _, _ = exported
    m = Manifest.load(out)
    entry = m.artifact("mobileinst_test.fp32.tflite")
    assert entry["kind"] == "tflite" and entry["source"] == "mobileinst_test.onnx"
    assert set(entry["components"]) == {"backbone", "mask_decoder", "instance_decoder"}
    assert entry["unmapped_ops"] == []
    assert (out / "mobileinst_test.fp32.tflite").stat().st_size > 10_000


def test_fp32_matches_onnxruntime_on_a_real_image(exported):
    out, images, _ = exported
    onnx_path = out / "mobileinst_test.onnx"
    x = first_image(images, onnx_path)
    ref = OnnxRuntimeRuntime(onnx_path).run({"image": x})
    with load_runtime(out / "mobileinst_test.fp32.tflite") as rt:
        got = rt.run({"image": x})
    assert set(got) == set(ref) == {"logits", "objectness", "kernels", "mask_features", "masks"}
    for name in ref:
        assert got[name].shape == ref[name].shape, name
        err = float(np.max(np.abs(got[name] - ref[name])))
        scale = float(np.max(np.abs(ref[name])))
        print(f"mobileinst_test fp32 {name}: max abs error {err:.2e} (max |ref| {scale:.3g}), "
              f"cosine {cosine(got[name], ref[name]):.8f}")
        assert err <= 1e-4 * max(1.0, scale), name
        assert cosine(got[name], ref[name]) > 0.99999, name


def test_eval_gives_the_same_ap_as_onnx(exported, tmp_path):
    """FP32 parity means identical predictions, so mask AP must match ONNX Runtime's."""
    out, images, synth = exported
    ann = synth / "coco" / "annotations" / "val.json"
    results = {}
    for name in ("mobileinst_test.onnx", "mobileinst_test.fp32.tflite"):
        dest = tmp_path / f"{name}.json"
        assert _cli("eval", out / name, "--dataset", ann, "--images", images, "-o", dest) == 0
        results[name] = json.loads(dest.read_text())
    onnx_run, tflite_run = results.values()
    assert tflite_run["backend"] == "tflite" and onnx_run["backend"] == "onnxruntime"
    assert tflite_run["images"] == onnx_run["images"] == 4
    # Random weights: AP itself is meaningless, but the predictions (and so every metric
    # and the detection count) must be the same.
    assert tflite_run["detections"] == onnx_run["detections"] > 0
    for k, v in onnx_run["metrics"].items():
        assert tflite_run["metrics"][k] == (pytest.approx(v, abs=1e-6) if v is not None else None), k


def test_bench_runs_the_tflite_file(exported, tmp_path):
    out, _, _ = exported
    report = tmp_path / "bench.json"
    assert _cli("bench", out / "mobileinst_test.fp32.tflite", "--runs", 3, "--warmup", 1, "-o", report) == 0
    data = json.loads(report.read_text())
    assert data["runtime"]["backend"] == "tflite" and data["runtime"]["threads_intra_op"] == 1
    assert data["latency"]["n"] == 3 and data["latency"]["p50_ms"] > 0


def test_inspect_lists_ops_per_component(exported, capsys):
    out, _, _ = exported
    assert _cli("inspect", out / "mobileinst_test.fp32.tflite", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["components"]) == {"backbone", "mask_decoder", "instance_decoder"}
    assert sum(sum(ops.values()) for ops in data["components"].values()) == data["ops"]
    assert data["quantized_tensors"] == 0
    assert data["inputs"] == {"image": [1, 128, 128, 3]}
