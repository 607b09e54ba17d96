"""Never delete a user's file; check every output before the work (issue 12, items 4 and 5).

Each CLI case here failed before the fix: `export -o DIR` deleted DIR's files, `-o ../proj`
from inside proj deleted important.txt, and unwritable outputs surfaced as OSError
tracebacks after the work.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from edgeseg.errors import EdgesegError
from edgeseg.utils import outputs


def run(*args) -> tuple[int, str, str]:
    """The CLI in process: exit code, stdout, stderr (lets a test forbid the work itself)."""
    from edgeseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, out.getvalue(), err.getvalue()


def listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_work(monkeypatch):
    """Make any model build, export, calibration or quantization fail the test: the
    refusals under test must come before them."""
    def forbidden(*a, **k):
        raise AssertionError("the work started before the output was checked")

    import edgeseg.cli.export as cli_export
    import edgeseg.quantize.calibrate as calibrate
    import edgeseg.quantize.qdq as qdq

    monkeypatch.setattr(cli_export, "build_model", forbidden)
    monkeypatch.setattr(calibrate, "calibrate", forbidden)
    monkeypatch.setattr(qdq, "quantize_file", forbidden)


# ============================================================================ the rules, as functions
def test_folder_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    new = outputs.check_output_folder(tmp_path / "new", outputs.EXPORT)
    assert new.owned == set() and not new.existed
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("mine")
    with pytest.raises(EdgesegError, match="not empty and is not an edgeseg artifact folder") as e:
        outputs.check_output_folder(user, outputs.EXPORT)
    assert "--overwrite" in e.value.fix
    allowed = outputs.check_output_folder(user, outputs.EXPORT, overwrite=True)
    assert allowed.foreign and allowed.owned == set()
    (user / "m.onnx").write_text("a user's model")
    with pytest.raises(EdgesegError, match="m.onnx is in the way"):  # even with --overwrite
        outputs.check_output_folder(user, outputs.EXPORT, overwrite=True, expected=["m.onnx"])
    for bad in (".", tmp_path, tmp_path.parent):
        with pytest.raises(EdgesegError, match="current folder|above the current"):
            outputs.check_output_folder(bad, outputs.EXPORT, overwrite=True)
    with pytest.raises(EdgesegError, match="holds the input"):
        outputs.check_output_folder(user, outputs.EXPORT, overwrite=True, inputs=[user / "thesis.tex"])


def test_manifest_lists_what_edgeseg_wrote(tmp_path):
    from edgeseg.export.manifest import Manifest

    m = Manifest(model="m")
    m.add_artifact("m.onnx", kind="onnx")
    m.add_artifact("m.mixed.onnx", kind="onnx", fidelity={"num_images": 2})
    m.add_artifact("m.tnnproto", target="tnn", tnn={"model_file": "m.tnnmodel"})
    m.add_files("m.fp32.tflite.log")
    m.save(tmp_path)
    assert outputs.EXPORT.owned(tmp_path) == {
        "manifest.json", "m.onnx", "m.mixed.onnx", "m.mixed.fidelity.json", "m.mixed.fidelity.md",
        "m.tnnproto", "m.tnnmodel", "m.fp32.tflite.log"}
    (tmp_path / "manifest.json").write_text('{"name": "a user manifest, not ours"}')
    assert outputs.EXPORT.owned(tmp_path) is None


def test_file_rules_recognise_edgeseg_files(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    def onnx_file(path, producer):
        node = helper.make_node("Relu", ["x"], ["y"])
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        onnx.save(helper.make_model(g, producer_name=producer), path)

    ours = {"r.json": json.dumps({"format": "edgeseg-benchmark-report"}),
            "r.md": outputs.mark_text("# report\n", ".md"),
            "r.html": outputs.mark_text("<!doctype html><html><head><title>x</title></head></html>", ".html"),
            "results.json": json.dumps([{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [None],
                                         "track_id": 3}])}
    theirs = {"mine.json": json.dumps({"format": "coco"}), "notes.md": "# my notes\n",
              "results2.json": json.dumps([{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": []}]),
              "t.calib": "TRT-8502-EntropyCalibration2\n", "data.npy": ""}
    for name, text in {**ours, **theirs}.items():
        (tmp_path / name).write_text(text)
    onnx_file(tmp_path / "q.onnx", "edgeseg")
    onnx_file(tmp_path / "user.onnx", "pytorch")
    np.save(tmp_path / "data.npy", np.zeros(3))
    for name in [*ours, "q.onnx"]:
        assert outputs.written_by_edgeseg(tmp_path / name), name
        outputs.check_output_file(tmp_path / name)  # replaced without --overwrite
    for name in [*theirs, "user.onnx"]:
        assert not outputs.written_by_edgeseg(tmp_path / name), name
        with pytest.raises(EdgesegError, match="edgeseg did not write it") as e:
            outputs.check_output_file(tmp_path / name, flag="-o")
        assert "--overwrite" in e.value.fix
        outputs.check_output_file(tmp_path / name, overwrite=True)
    with pytest.raises(EdgesegError, match="is a folder, but a file name is needed"):
        outputs.check_output_file(tmp_path)


def test_unwritable_location_is_found_before_the_work(tmp_path, monkeypatch):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(EdgesegError, match="file.txt is a file, not a folder"):
        outputs.check_output_file(blocker / "r.json")
    with pytest.raises(EdgesegError, match="is a file, but a folder is needed"):
        outputs.check_output_folder(blocker, outputs.EXPORT)
    locked = tmp_path / "locked"
    locked.mkdir()
    # Tests run as root here, for whom permission bits do not apply: fake what access(2)
    # says for this one folder instead.
    real_access = os.access
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    with pytest.raises(EdgesegError, match="no permission to write in .*locked"):
        outputs.check_output_file(locked / "deep" / "r.json")


# ============================================================================ export
def test_export_refuses_a_folder_of_user_files_before_any_work(tmp_path, monkeypatch, no_work):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    out.mkdir()
    (out / "important.txt").write_text("the user's")
    before = listing(out)
    code, _, err = run("export", "mobileinst_test", "-o", out)
    assert code == 1 and "is not empty and is not an edgeseg artifact folder" in err and "--overwrite" in err
    assert "Traceback" not in err and listing(out) == before


@pytest.mark.parametrize("where", [".", "../proj", "..", "data"])
def test_export_into_the_current_folder_or_the_inputs_is_refused(tmp_path, monkeypatch, no_work, where):
    """The reported case: `-o ../proj` from inside proj deleted important.txt."""
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "important.txt").write_text("keep")
    (proj / "data" / "ckpt.safetensors").write_bytes(b"weights")
    monkeypatch.chdir(proj)
    before = listing(tmp_path)
    code, _, err = run("export", "mobileinst_test", "--weights", "data/ckpt.safetensors", "-o", where,
                       "--overwrite")
    assert code == 1 and ("current folder" in err or "above the current" in err or "holds the input" in err), err
    assert listing(tmp_path) == before


@pytest.mark.slow
def test_export_keeps_user_files_and_replaces_its_own(tmp_path, monkeypatch):
    """Before: an existing DIR was renamed away and deleted, user files included, exit 0."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "art"
    out.mkdir()
    (out / "important.txt").write_text("the user's")
    args = ["export", "mobileinst_test", "--input-size", "64", "--graphs", "frame", "-o", out]
    code, _, err = run(*args, "--overwrite")
    assert code == 0, err
    assert (out / "important.txt").read_text() == "the user's"
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "mobileinst_test.old.onnx").write_bytes(b"an artifact of the earlier export")
    manifest["artifacts"]["mobileinst_test.old.onnx"] = {"kind": "onnx"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run(*args)  # an earlier export: no --overwrite needed, its files replaced
    assert code == 0, err
    assert (out / "important.txt").read_text() == "the user's"
    assert not (out / "mobileinst_test.old.onnx").exists()
    assert sorted(p.name for p in out.iterdir()) == ["important.txt", "manifest.json", "mobileinst_test.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temporary folder left


def test_export_output_under_a_file_fails_before_the_work(tmp_path, monkeypatch, no_work):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = run("export", "mobileinst_test", "-o", tmp_path / "notes.txt" / "out")
    assert code == 1 and "notes.txt is a file, not a folder" in err and "Traceback" not in err


def test_tnn_arm_int8_is_refused_before_the_export(tmp_path, monkeypatch):
    """Before: refused after 23 s of export + calibration, leaving the ONNX behind."""
    from tests.quant_models import make_images

    import edgeseg.export.onnx as onnx_export

    images = make_images(tmp_path / "imgs", n=3, size=(64, 64))
    monkeypatch.chdir(tmp_path)

    def forbidden(*a, **k):
        raise AssertionError("exported although the model decides the refusal")

    import edgeseg.export.compat.tnn as tnn_compat

    monkeypatch.setattr(onnx_export, "export_into", forbidden)
    # A module TNN's ARM int8 networks could never run (none of ours today: attention is
    # written as layout-agnostic MatMuls when its dims allow, which the graph check decides).
    monkeypatch.setattr(tnn_compat, "ARM_INT8_BLOCKING_MODULES",
                        {"edgeseg.models.layers.MultiHeadAttention": "attention: a MatMul of two activations"})
    code, _, err = run("export", "mobileinst_test", "--input-size", "64", "-o", tmp_path / "out", "--to", "tnn",
                       "--plan", "mixed", "--calib", images)
    assert code == 1 and "int8 TNN on ARM" in err and "attention" in err and "--tnn-device x86" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


@pytest.mark.slow
def test_tnn_graph_refusal_comes_before_calibration_and_leaves_nothing(tmp_path, monkeypatch):
    """The ONNX-level preflight (for what the model-level list does not know) runs right
    after each graph's export: no calibration, no folder left behind."""
    from tests.quant_models import make_images

    import edgeseg.export.compat.tnn as tnn_compat
    import edgeseg.quantize.pipeline as pipeline

    images = make_images(tmp_path / "imgs", n=3, size=(64, 64))
    monkeypatch.chdir(tmp_path)
    assert tnn_compat.ARM_INT8_BLOCKING_MODULES == {}  # no module is refused from the model alone
    # A layer ARM's int8 networks cannot run that only the exported graph shows: Softmax
    # stands in for such a layer here (none of MobileInst's are, since attention MatMuls
    # are written layout-agnostic), so the graph-level check refuses the export.
    monkeypatch.setattr(tnn_compat, "ARM_NCHW_ONLY", tnn_compat.ARM_NCHW_ONLY | {"Softmax"})

    def forbidden(*a, **k):
        raise AssertionError("calibrated although the exported graph decides the refusal")

    monkeypatch.setattr(pipeline, "run_calibration", forbidden)
    code, _, err = run("export", "mobileinst_test", "--input-size", "64", "-o", tmp_path / "out", "--to", "tnn",
                       "--plan", "mixed", "--calib", images)
    assert code == 1 and "Softmax" in err and "stop the tnn (arm) export" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]  # no folder, no temporary


# ============================================================================ calibrate, quantize, bench
def test_calibrate_quantize_bench_check_outputs_first(tmp_path, no_work):
    from tests.bench_helpers import tiny_conv_onnx
    from tests.quant_models import make_images, make_model

    model = make_model(tmp_path / "art")
    bare = tiny_conv_onnx(tmp_path / "m.onnx")
    images = make_images(tmp_path / "imgs", n=2, size=(16, 16))
    (tmp_path / "blocker").write_text("a file")
    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": true}')
    cases = [
        (["calibrate", model, "--images", images, "-o", tmp_path / "blocker" / "t.json"], "is a file, not a folder"),
        (["calibrate", model, "--images", images, "-o", mine], "edgeseg did not write it"),
        (["calibrate", model, "--images", images, "--trt-cache", tmp_path / "blocker" / "c"], "is a file, not a folder"),
        (["quantize", model, "--plan", "fp16", "-o", tmp_path / "blocker" / "q.onnx"], "is a file, not a folder"),
        (["quantize", model, "--plan", "fp16", "-o", tmp_path], "is a directory"),  # click's own check, exit 2
        (["quantize", model, "--plan", "int8", "--calib", images, "-o", mine], "edgeseg did not write it"),
        (["bench", bare, "-o", tmp_path / "blocker" / "r.json"], "is a file, not a folder"),
        (["bench", bare, "-o", mine], "edgeseg did not write it"),
    ]
    for args, message in cases:
        before = listing(tmp_path)
        code, _, err = run(*args)
        assert code in (1, 2) and message in err and "Traceback" not in err, (args, err)
        assert listing(tmp_path) == before
    assert mine.read_text() == '{"mine": true}'
