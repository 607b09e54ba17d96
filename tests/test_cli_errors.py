"""Bad input through the CLI: one `error:` line with its `fix:`, a non-zero exit code and
no traceback (issue 12, item 6), for inputs that used to end in a stack trace."""

from __future__ import annotations

import contextlib
import io
import json

import pytest


def run(*args) -> tuple[int, str, str]:
    """``edgeseg ARGS`` in process: exit code, stdout, stderr."""
    from edgeseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, out.getvalue(), err.getvalue()


def assert_one_error(code: int, err: str, *needles: str) -> str:
    """Exit 1, stderr = 'error: PROBLEM' + '  fix: FIX' and nothing else; returns the problem line."""
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("  fix: "), err
    for n in needles:
        assert n in err, err
    return lines[0]


# ----------------------------------------------------------------------- weights files
@pytest.mark.parametrize("content, says", [
    (b"hello world\n", "it is text (starting 'hello world')"),
    (b"", "it is empty"),
    (b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01h\x01u.\x00garbage", "cannot read"),  # a damaged pickle
])
def test_a_file_that_is_not_a_checkpoint_is_one_error(tmp_path, content, says):
    (tmp_path / "weights.pth").write_bytes(content)
    code, out, err = run("export", "mobileinst_test", "--weights", tmp_path / "weights.pth", "-o", tmp_path / "o")
    assert_one_error(code, err, "weights.pth", says)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- input size
@pytest.mark.parametrize("size, says", [
    ("100032", "larger than the 4096 pixels per side"),
    ("640x100032", "larger than the 4096 pixels per side"),
    ("0", "sides must be positive"),
    ("0x64", "sides must be positive"),
])
def test_absurd_input_sizes_are_refused_before_building_anything(tmp_path, size, says):
    code, out, err = run("export", "mobileinst_test", "--input-size", size, "-o", tmp_path / "o")
    problem = assert_one_error(code, err, says)
    assert "multiple of 1" not in problem
    assert not (tmp_path / "o").exists()


def test_the_size_limit_also_holds_for_the_python_api():
    from edgeseg.errors import EdgesegError
    from edgeseg.models import create_model

    with pytest.raises(EdgesegError, match="4096"):
        create_model("mobileinst_test", input_size=(100032, 100032))


# ------------------------------------------------------- a model its manifest does not describe
@pytest.fixture()
def folder(tmp_path):
    from tests.bench_helpers import tiny_artifact_folder

    return tiny_artifact_folder(tmp_path / "art")


@pytest.fixture()
def images(tmp_path):
    import numpy as np
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(d / f"{i}.png")
    return d


def _foreign_onnx(path):
    from tests.bench_helpers import tiny_conv_onnx

    return tiny_conv_onnx(path, size=48, channels=4)  # another model: other input shape and weights


@pytest.mark.parametrize("verb", ["calibrate", "bench", "quantize"])
def test_a_foreign_model_dropped_beside_a_manifest_is_refused(folder, images, verb):
    _foreign_onnx(folder / "foreign.onnx")
    args = {"calibrate": ["--images", images],
            "bench": ["--runs", 2, "--warmup", 0],
            "quantize": ["--plan", "*=fp16", "--no-fidelity"]}[verb]
    code, out, err = run(verb, folder / "foreign.onnx", *args)
    assert_one_error(code, err, "foreign.onnx is not one of the files recorded in", "folder of its own")


@pytest.mark.parametrize("verb", ["calibrate", "bench"])
def test_a_recorded_model_replaced_by_another_is_refused(folder, images, verb):
    _foreign_onnx(folder / "tiny.onnx")  # same name, other file: the sha256 in the manifest differs
    args = ["--images", images] if verb == "calibrate" else ["--runs", 2, "--warmup", 0]
    code, out, err = run(verb, folder, *args)
    assert_one_error(code, err, "tiny.onnx is not the file recorded in", "sha256", "replaced or changed")


def test_a_hand_written_manifest_with_other_inputs_is_refused(folder, images):
    """A manifest listing no artifacts (written by hand): the graph's input is compared."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"] = {}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _foreign_onnx(folder / "tiny.onnx")
    code, out, err = run("calibrate", folder / "tiny.onnx", "--images", images)
    assert_one_error(code, err, "takes 'image' [1, 3, 48, 48]", "describes input 'image' [1, 3, 32, 32]")


def test_the_recorded_model_still_calibrates(folder, images, tmp_path):
    code, out, err = run("calibrate", folder / "tiny.onnx", "--images", images, "-o", tmp_path / "t.json")
    assert code == 0, err


# -------------------------------------------------------------------- COCO segmentations
@pytest.mark.parametrize("segmentation, says", [
    ("garbage", "segmentation is a str"),
    ([[1, 2, 3]], "polygon 0 has 3 coordinates"),
    ([[1, 2, 3, 4]], "polygon 0 has 4 coordinates"),
    ([["a", 1, 2, 3, 4, 5]], "polygon 0 is not a list of numbers"),
    ({"size": [32, 32], "counts": [5, 5]}, "RLE runs cover 10 pixels, the image has 1024"),
    ({"size": [32, 32], "counts": "zzzz"}, "not COCO's compressed encoding"),
    ({"size": [16, 16], "counts": [256]}, "RLE size [16, 16] is not the image's [32, 32]"),
])
def test_garbage_segmentation_names_the_annotation(tmp_path, folder, segmentation, says):
    """Before: pycocotools tracebacks, or (RLE not covering the image) an eval that never ended."""
    import numpy as np
    from PIL import Image

    (tmp_path / "val").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "val" / "a.png")
    ok = [[2, 2, 20, 2, 20, 20, 2, 20]]
    gt = {"images": [{"id": 7, "file_name": "a.png", "width": 32, "height": 32}],
          "categories": [{"id": 1, "name": "thing"}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "segmentation": ok, "bbox": [2, 2, 18, 18],
                           "area": 324, "iscrowd": 0},
                          {"id": 42, "image_id": 7, "category_id": 1, "segmentation": segmentation,
                           "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    code, out, err = run("eval", folder, "--dataset", tmp_path / "gt.json", "--images", tmp_path / "val")
    assert_one_error(code, err, "annotation 42 (image 7)", says)


# ----------------------------------------------------- a TensorRT cache as a calibration table
def test_quantize_reads_a_tensorrt_cache_passed_as_calib(folder, images, tmp_path):
    """Before: "Expecting value: line 1 column 1". The cache holds the same ranges, so the
    quantized model is the one the JSON table gives."""
    import onnx
    from onnx import numpy_helper

    code, out, err = run("calibrate", folder / "tiny.onnx", "--images", images, "-o", folder / "t.json",
                         "--trt-cache", folder / "t.calib")
    assert code == 0, err
    outputs = {}
    for calib in ("t.json", "t.calib"):
        dst = folder / f"q-{calib.replace('.', '-')}.onnx"
        code, out, err = run("quantize", folder / "tiny.onnx", "--plan", "int8", "--calib", folder / calib,
                             "--no-fidelity", "-o", dst)
        assert code == 0, err
        q = onnx.load(str(dst))
        scales = {n.input[1] for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
        outputs[calib] = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer if i.name in scales}
    assert outputs["t.json"] and outputs["t.json"].keys() == outputs["t.calib"].keys()
    for name, value in outputs["t.json"].items():
        assert (value == outputs["t.calib"][name]).all(), name


def test_a_calib_file_of_neither_format_says_what_to_pass(folder, tmp_path):
    (tmp_path / "model.calib").write_bytes(b"\x00\x01binary")
    code, out, err = run("quantize", folder / "tiny.onnx", "--plan", "int8", "--calib", tmp_path / "model.calib")
    assert_one_error(code, err, "neither an edgeseg calibration table", "TensorRT calibration cache",
                     "edgeseg calibrate")
