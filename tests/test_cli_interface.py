"""One interface across verbs, and progress on long steps (issue 12, items 8 and 9)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from tests.quant_models import make_images, make_model


def run(*args) -> tuple[int, str, str]:
    from edgeseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, out.getvalue(), err.getvalue()


# ============================================================================ one plan, one file name
def test_a_plan_has_one_file_name_however_it_is_written(tmp_path):
    """Before: `quantize --plan mixed` wrote .mixed.onnx, `export --plan backbone=int8,...`
    (the same plan) wrote .int8-int8-fp16.onnx."""
    from edgeseg.export.manifest import Manifest
    from edgeseg.quantize.pipeline import default_output, parse_plan

    model = make_model(tmp_path / "art")  # presets: mixed = backbone=int8,neck=int8,head=fp16
    spelled = parse_plan(model, "backbone=int8,neck=int8,head=fp16")
    preset = parse_plan(model, "mixed")
    assert default_output(model, spelled) == default_output(model, preset) == model.with_name("tiny.mixed.onnx")
    assert default_output(model, parse_plan(model, "*=int8")).name == "tiny.int8.onnx"
    other = parse_plan(model, "backbone=int8,*=fp16")
    assert other.name is None and default_output(model, other).name == "tiny.int8-fp16-fp16.onnx"
    assert Manifest.load(model).plan("backbone=int8,neck=int8,head=fp16").file_label() == "mixed"


# ============================================================================ --calib: images or a table
def test_quantize_calib_takes_a_folder_of_images(tmp_path):
    """Before: quantize --calib accepted only a table (a folder was refused by click)."""
    model = make_model(tmp_path / "art")
    images = make_images(tmp_path / "imgs", n=5)
    code, _, err = run("quantize", model, "--plan", "mixed", "--calib", images, "--calib-num", 3)
    assert code == 0, err
    art = tmp_path / "art"
    assert (art / "tiny.mixed.onnx").is_file() and (art / "tiny.kl.calib.json").is_file()
    manifest = json.loads((art / "manifest.json").read_text())
    entry = manifest["artifacts"]["tiny.mixed.onnx"]
    assert entry["calibration"]["table"] == "tiny.kl.calib.json" and entry["calibration"]["num_images"] == 3
    assert entry["fidelity"]["num_images"] == 2  # the two images calibration did not use
    assert [h["step"] for h in manifest["history"]] == ["export", "calibrate", "quantize"]


def test_export_quantize_step_takes_a_table(tmp_path):
    """`export --plan --calib TABLE.json`: the given table, no second calibration."""
    from edgeseg.quantize.pipeline import quantize_exported, run_calibration

    model = make_model(tmp_path / "art")
    table = run_calibration(model, make_images(tmp_path / "imgs", n=3), out=tmp_path / "t.json").table_path
    outcome = quantize_exported(model, "int8", table)
    assert outcome.calibration is None and outcome.quantize.path.name == "tiny.int8.onnx"
    assert outcome.quantize.report.quantized_nodes


@pytest.mark.parametrize("verb", ["quantize", "export"])
def test_calib_that_does_not_exist_is_one_error_in_every_verb(tmp_path, verb):
    model = make_model(tmp_path / "art")
    target = model if verb == "quantize" else "mobileinst_test"
    code, _, err = run(verb, target, "--plan", "int8", "--calib", tmp_path / "nope", "-o", tmp_path / "o")
    assert code == 1 and "--calib" in err and "does not exist" in err and "TABLE.json" in err


# ============================================================================ --tnn-device everywhere
def test_tnn_device_is_spelt_one_way(tmp_path):
    model = make_model(tmp_path / "art")
    code, out, err = run("check", "--help")
    assert code == 0 and "--tnn-device" in out and "--device" not in out.replace("--tnn-device", "")
    a = run("check", model, "--target", "tnn", "--tnn-device", "x86", "--json")
    b = run("check", model, "--target", "tnn", "--device", "x86", "--json")  # the old spelling still works
    assert a[0] == b[0] == 0 and json.loads(a[1])["device"] == json.loads(b[1])["device"] == "x86"
    code, out, _ = run("export", "--help")
    assert "--tnn-device" in out


# ============================================================================ bench DIR with several backends
def _folder_with_onnx_and_tflite(tmp_path) -> Path:
    from edgeseg.export.manifest import Manifest
    from tests.bench_helpers import tiny_artifact_folder

    folder = tiny_artifact_folder(tmp_path / "art")
    (folder / "tiny.fp32.tflite").write_bytes(b"TFL3")
    m = Manifest.load(folder)
    m.add_artifact("tiny.fp32.tflite", kind="tflite", graph="frame", primary=False)
    m.save(folder)
    return folder


def test_bench_folder_with_onnx_and_tflite_asks_which(tmp_path):
    """Before: `bench DIR` silently timed the ONNX file."""
    folder = _folder_with_onnx_and_tflite(tmp_path)
    code, _, err = run("bench", folder, "--runs", 2, "--warmup", 0)
    assert code == 1 and "several backends" in err and "tiny.onnx" in err and "tiny.fp32.tflite" in err
    assert "--backend onnxruntime" in err and "--backend tflite" in err
    code, _, err = run("bench", folder, "--backend", "onnxruntime", "--runs", 2, "--warmup", 0,
                       "-o", tmp_path / "r.json")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["artifact"]["name"] == "tiny.onnx"

    from edgeseg.benchmark.harness import choose_artifact

    assert choose_artifact(folder, "local", "tflite").name == "tiny.fp32.tflite"
    assert choose_artifact(folder, "adb").name == "tiny.fp32.tflite"  # a phone runs only the .tflite
    code, _, err = run("bench", folder, "--backend", "tnn")
    assert code == 1 and "does not run on --target local" in err and "--target adb" in err


def test_bench_backend_help_lists_every_backend():
    from edgeseg.benchmark.harness import BENCH_BACKENDS

    code, out, _ = run("bench", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for name in BENCH_BACKENDS:
        assert name in flat
    assert set(BENCH_BACKENDS) == {"onnxruntime", "torch", "tflite", "tnn", "tensorrt"}
    code, _, err = run("bench", "x.onnx", "--backend", "tvm")
    assert code == 2 and "onnxruntime" in err and "tensorrt" in err  # click lists the choices


# ============================================================================ models
def test_models_shows_input_size_and_shipped_weights():
    code, out, _ = run("models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["mobileinst_topformer_synth"]["input_size"] == [256, 256]
    assert rows["mobileinst_topformer_synth"]["shipped_weights"] == "mobileinst_topformer_synth.safetensors"
    assert rows["mobileinst_topformer"]["input_size"] == [640, 640]
    assert rows["mobileinst_topformer"]["shipped_weights"] is None
    code, out, _ = run("models")
    assert "256x256" in out and "shipped" in out


# ============================================================================ progress
def test_export_reports_every_step_of_every_graph(tmp_path, monkeypatch, capsys):
    """Before: export printed nothing until the summary (seconds to minutes)."""
    from edgeseg.export.onnx import EXPORT_STEPS, export_onnx
    from tests.tiny_models import TinySegModel

    monkeypatch.setenv("EDGESEG_PROGRESS", "1")
    export_onnx(TinySegModel().eval(), tmp_path / "out")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("exporting ")]
    assert [ln.split(": ", 2)[2].split(" (")[0] for ln in lines] == list(EXPORT_STEPS)
    assert lines[-1].split(" (")[1].startswith(f"{len(EXPORT_STEPS)}/{len(EXPORT_STEPS)}")


def test_tflite_conversion_stages_reach_the_parent(tmp_path):
    """The converter runs in a child process (minutes, silent before): the parent now sees
    each stage it reports."""
    import subprocess
    import sys

    from edgeseg.export.tflite import _wait_showing_stages

    stage = tmp_path / "stage.txt"
    child = ("import time, pathlib, sys\n"
             "p = pathlib.Path(sys.argv[1])\n"
             "for s in ('onnx2tf', 'SavedModel', 'converting'):\n"
             "    p.write_text(s); time.sleep(0.8)\n")
    seen = []
    proc = subprocess.Popen([sys.executable, "-c", child, str(stage)])
    _wait_showing_stages(proc, stage, timeout=60, on_stage=seen.append)
    assert proc.returncode == 0 and seen == ["onnx2tf", "SavedModel", "converting"]
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    with pytest.raises(subprocess.TimeoutExpired):
        _wait_showing_stages(slow, stage, timeout=1, on_stage=seen.append)
    slow.kill()
    slow.wait()
