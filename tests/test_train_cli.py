"""``edgeseg train`` end to end: the checkpoint it writes opens in ``edgeseg eval`` and
``edgeseg export --weights`` with no other flags, and both agree on AP."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from edgeseg.data.synthetic import SynthConfig, generate


def run(*args) -> tuple[int, str, str]:
    """The CLI in process; exit code, stdout, stderr."""
    from edgeseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """mobileinst_test over-fitted on 2 images (so its AP is not trivially 0), stored in float16."""
    root = tmp_path_factory.mktemp("train_cli")
    generate(root / "shapes", SynthConfig(train=2, val=2, videos=0, val_videos=0, height=64, width=64, seed=3,
                                          max_objects=3))
    coco = root / "shapes" / "coco"
    ckpt = root / "tiny.safetensors"
    code, out, err = run("train", "mobileinst_test", "--dataset", coco / "annotations/train.json",
                         "--images", coco / "train", "--val-dataset", coco / "annotations/train.json",
                         "--val-images", coco / "train", "--iters", 30, "--batch-size", 2, "--lr", 1e-2,
                         "--warmup", 3, "--input-size", 64, "--scale-jitter", "1,1", "--threads", 1,
                         "--save-fp16", "--log-every", 10, "-o", ckpt)
    assert code == 0, err
    return root, coco, ckpt, out, err


def test_train_prints_progress_the_val_table_and_writes_a_float16_checkpoint(trained):
    from safetensors import safe_open

    _, _, ckpt, out, err = trained
    assert "iter 10/30" in err and "iter 30/30" in err and "loss" in err
    assert "val mask AP" in out and "wrote" in out
    with safe_open(str(ckpt), framework="pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}
    assert "torch.float16" in dtypes and "torch.float32" not in dtypes
    assert ckpt.with_name("tiny.state.safetensors").is_file()


def test_checkpoint_evaluates_and_exports_with_no_other_flags_and_both_agree(trained):
    root, coco, ckpt, _, _ = trained
    ann, images = coco / "annotations/train.json", coco / "train"
    code, out, err = run("eval", ckpt, "--dataset", ann, "--images", images, "-o", root / "torch.json")
    assert code == 0, err
    torch_res = json.loads((root / "torch.json").read_text())
    assert torch_res["backend"] == "torch" and torch_res["model"] == "mobileinst_test"

    art = root / "onnx"
    code, out, err = run("export", "mobileinst_test", "--weights", ckpt, "--simplifier", "none", "-o", art)
    assert code == 0, err
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["model_cfg"]["num_classes"] == 4 and manifest["input"]["height"] == 64
    code, out, err = run("eval", art, "--dataset", ann, "--images", images, "-o", root / "onnx.json")
    assert code == 0, err
    onnx_res = json.loads((root / "onnx.json").read_text())
    assert onnx_res["backend"] == "onnxruntime"
    assert torch_res["detections"] > 0 and torch_res["metrics"]["AP50"] > 0  # it learned its 2 images
    for k in ("AP", "AP50", "AP75"):
        assert onnx_res["metrics"][k] == pytest.approx(torch_res["metrics"][k], abs=1.0), k


def test_help_shows_an_example():
    code, out, _ = run("train", "--help")
    assert code == 0
    assert "Examples:" in out and "edgeseg train mobileinst_topformer_synth" in out and "--weights zoo" in out


def test_cli_errors_are_one_clear_message(trained, tmp_path):
    _, coco, _, _, _ = trained
    code, out, err = run("train", "mobileinst_test", "--dataset", coco / "annotations/train.json",
                         "--images", coco / "train", "--input-size", 96, "-o", tmp_path / "x.safetensors")
    assert code == 1 and "not a multiple of 64" in err and "fix:" in err and "Traceback" not in err
    code, out, err = run("train", "mobileinst_test", "--dataset", coco / "annotations/train.json",
                         "--images", coco / "train", "--scale-jitter", "big", "-o", tmp_path / "x.safetensors")
    assert code == 1 and "--scale-jitter" in err
    assert not list(Path(tmp_path).iterdir())
